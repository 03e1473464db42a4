"""Image files and the network's input convention, shared by the data sets and ``dfanet predict``: which suffixes
count as images, opening a file with errors that name it, and the ImageNet normalisation the backbone expects."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

# ImageNet statistics: the normalisation the backbone is pretrained with.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def open_image(path: str | os.PathLike) -> Image.Image:
    """``Image.open(path)`` (lazy: only the header is read), with errors that name the file."""
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"image: no such file: {path}") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read as an image ({err})") from err


def normalize(array: np.ndarray) -> torch.Tensor:
    """An H x W x 3 uint8 RGB array -> the 3 x H x W float tensor the network takes (ImageNet mean/std)."""
    tensor = torch.from_numpy(np.asarray(array, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (tensor - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
