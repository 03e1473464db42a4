"""Small data sets in the real on-disk layouts, drawn from seeded shapes: Cityscapes, CamVid, ImageFolder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Cityscapes label ids (cityscapesscripts) and a colour for each: road (train id 0), building (2), vegetation (8),
# car (13); "ego vehicle" (id 1) is ignored in training and evaluation.
ROAD, BUILDING, VEGETATION, CAR, EGO_VEHICLE = 7, 11, 21, 26, 1
COLOURS = {ROAD: (110, 90, 120), BUILDING: (200, 120, 60), VEGETATION: (60, 170, 60), CAR: (40, 60, 210)}
TRAIN_IDS = {ROAD: 0, BUILDING: 2, VEGETATION: 8, CAR: 13}


def draw_scene(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image and its label-id mask: road background, a building and a vegetation rectangle, a car disc,
    and an ignored strip along the bottom; colours jittered per image and per pixel."""
    h, w = size
    mask = np.full((h, w), ROAD, dtype=np.uint8)
    for label in (BUILDING, VEGETATION):
        rh, rw = rng.integers(h // 4, h // 2 + 1), rng.integers(w // 5, w // 2 + 1)
        top, left = rng.integers(0, h - rh), rng.integers(0, w - rw)
        mask[top:top + rh, left:left + rw] = label
    yy, xx = np.mgrid[:h, :w]
    r = rng.integers(h // 8, h // 5 + 1)
    cy, cx = rng.integers(r, h - r), rng.integers(r, w - r)
    mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = CAR
    mask[h - h // 12:] = EGO_VEHICLE
    image = np.zeros((h, w, 3), dtype=np.float32)
    for label, colour in COLOURS.items():
        image[mask == label] = np.asarray(colour) + rng.uniform(-20, 20, 3)
    image[mask == EGO_VEHICLE] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_cityscapes(root: Path, splits: dict[str, int], size=(96, 128), seed: int = 0, cities: int = 2) -> Path:
    """``root/leftImg8bit/<split>/<city>/<city>_000000_<n>_leftImg8bit.png`` and the matching
    ``gtFine/.../<...>_gtFine_labelIds.png``, ``splits[split]`` images per split spread over ``cities`` cities."""
    rng = np.random.default_rng(seed)
    for split, count in splits.items():
        for n in range(count):
            city = f"city{n % cities}"
            stem = f"{city}_000000_{n:06d}"
            image, mask = draw_scene(rng, size)
            save_png(image, root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            save_png(mask, root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
    return root


def cityscapes_mask_path(root: Path, split: str, index: int = 0, cities: int = 2) -> Path:
    city = f"city{index % cities}"
    return root / "gtFine" / split / city / f"{city}_000000_{index:06d}_gtFine_labelIds.png"


def make_camvid(root: Path, splits: dict[str, int], size=(64, 80), seed: int = 0) -> Path:
    """``root/<split>/<name>.png`` and ``root/<split>annot/<name>.png`` with values 0-10 and 11 (void)."""
    rng = np.random.default_rng(seed)
    for split, count in splits.items():
        for n in range(count):
            mask = rng.integers(0, 12, size, dtype=np.uint8)
            image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            save_png(image, root / split / f"0001TP_{n:06d}.png")
            save_png(mask, root / f"{split}annot" / f"0001TP_{n:06d}.png")
    return root


def make_imagefolder(root: Path, per_class: int = 4, size=(40, 48), seed: int = 0) -> Path:
    """Two classes of flat-coloured noisy images: ``root/red/*.png``, ``root/blue/*.png``."""
    rng = np.random.default_rng(seed)
    for name, colour in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        for n in range(per_class):
            image = np.clip(np.asarray(colour) + rng.normal(0, 20, (*size, 3)), 0, 255).astype(np.uint8)
            save_png(image, root / name / f"{n}.jpg" if n % 2 else root / name / f"{n}.png")
    return root
