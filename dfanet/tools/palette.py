"""Colours for segmentation masks: the Cityscapes palette for its 19 training ids (from cityscapesscripts)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def palette(num_classes: int) -> np.ndarray:
    """A num_classes x 3 uint8 colour table: Cityscapes' colours first, then fixed pseudo-random ones."""
    from cityscapesscripts.helpers.labels import labels

    colors = [label.color for label in sorted(labels, key=lambda label: label.trainId) if 0 <= label.trainId < 255]
    rng = np.random.default_rng(0)
    while len(colors) < num_classes:
        colors.append(tuple(int(c) for c in rng.integers(0, 256, 3)))
    return np.asarray(colors[:num_classes], dtype=np.uint8)


def colorize(mask: np.ndarray, num_classes: int) -> Image.Image:
    """An RGB image of an H x W array of class ids."""
    if mask.ndim != 2:
        raise ValueError(f"mask: expected an H x W array of class ids, got shape {mask.shape}")
    return Image.fromarray(palette(num_classes)[mask])


def overlay(image: Image.Image, mask_rgb: Image.Image, alpha: float = 0.5) -> Image.Image:
    """The colour mask blended over the input image."""
    return Image.blend(image.convert("RGB").resize(mask_rgb.size), mask_rgb, alpha)
