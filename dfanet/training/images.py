"""Image files and the network's input convention, shared by the data sets and ``dfanet predict``: which suffixes
count as images, opening a file with errors that name it, a pixel limit checked before any pixel is decoded, 8-bit
RGB from the modes Pillow reads (16-bit scaled, float refused), and the ImageNet normalisation the backbone expects."""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from PIL import Image

# ImageNet statistics: the normalisation the backbone is pretrained with.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")

# The largest image opened by default: 64 Mi pixels (8192 x 8192), 32x a Cityscapes frame. Decoded as RGB it is
# 192 MiB, and the fused forward at that size needs several GiB more; `dfanet predict --max-pixels` raises it.
MAX_PIXELS = 64 * 2**20

# Pillow modes whose pixels are integers of up to 16 bits: scaled to 8 bits (65535 -> 255) rather than clipped.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def open_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """``Image.open(path)`` (lazy: only the header is read), with errors that name the file; an image of more than
    ``max_pixels`` pixels is refused before any pixel is decoded."""
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own bomb check would refuse what the caller allows
    try:
        with warnings.catch_warnings():  # Pillow warns between its limit and twice it: refused below, with a reason
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"image: no such file: {path}") from None
    except Image.DecompressionBombError as err:  # Pillow's own limit, twice Image.MAX_IMAGE_PIXELS
        raise ValueError(f"image: {path} is over the limit of {max_pixels} pixels ({err})") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read as an image ({err})") from err
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ValueError(f"image: {path} is {width}x{height} (WxH), {width * height} pixels, over the limit of "
                         f"{max_pixels} (dfanet predict --max-pixels raises it)")
    return image


def rgb_array(image: Image.Image, path: str | os.PathLike) -> np.ndarray:
    """The H x W x 3 uint8 RGB pixels of ``image``: 16-bit greyscale scaled to 8 bits; float images (mode F) and
    32-bit integers beyond 16 bits refused naming the file, since their range is not known."""
    try:
        if image.mode in SIXTEEN_BIT_MODES:
            values = np.asarray(image)
            if values.min() < 0 or values.max() > 65535:
                raise ValueError(f"image: {path} holds {image.mode} values from {values.min()} to {values.max()}; "
                                 "expected 8- or 16-bit pixels")
            grey = ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2)
        if image.mode == "F":
            raise ValueError(f"image: {path} is a 32-bit float image (mode F), whose range is not known; convert it "
                             "to 8-bit RGB first")
        return np.asarray(image.convert("RGB"))
    except OSError as err:  # a header that reads but pixels that do not (a truncated file)
        raise ValueError(f"{path}: cannot decode ({err})") from err


def normalize(array: np.ndarray) -> torch.Tensor:
    """An H x W x 3 uint8 RGB array -> the 3 x H x W float tensor the network takes (ImageNet mean/std)."""
    tensor = torch.from_numpy(np.asarray(array, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (tensor - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
