"""Segment images with a (fused) DFANet and write colourised masks."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..model import MIN_INPUT_SIZE, DFANet
from ..training.images import IMAGE_SUFFIXES, normalize, open_image
from ..training.io import atomic_path
from .palette import colorize, overlay

log = logging.getLogger(__name__)

def load_image(path: str | os.PathLike) -> tuple[Image.Image, torch.Tensor]:
    """The RGB image and its normalised 1 x 3 x H x W tensor."""
    with open_image(path) as opened:
        try:
            image = opened.convert("RGB")
        except OSError as err:  # a header that reads but pixels that do not (a truncated file)
            raise ValueError(f"{path}: cannot read as an image ({err})") from err
    return image, normalize(np.asarray(image))[None]


def load_model(weights: str | None, variant: str, num_classes: int, backend: str | None) -> DFANet:
    model = DFANet(num_classes=num_classes, variant=variant, fused=True, backend=backend)
    if weights is None:
        log.warning("no --weights given: the model has random weights, so the masks show only that it runs")
    else:
        from ..pretrained import load_weights

        load_weights(model, weights)
    return model.eval()


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Image files from files and folders (a folder contributes its images, sorted)."""
    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            paths.append(item)
        else:
            raise FileNotFoundError(f"image: no such file or folder: {item}")
    if not paths:
        raise ValueError(f"no images found in {inputs}")
    return paths


def output_paths(images: list[Path], out: str) -> list[Path]:
    """``out`` itself for one image given as a .png path; otherwise ``out/<stem>.png`` per image. Two images with
    one stem (a/x.png and b/x.png, x.png and x.jpg) are refused before any work: one mask would overwrite the
    other."""
    out_path = Path(out)
    is_png = out_path.suffix.lower() == ".png" and not out_path.is_dir()
    if len(images) == 1 and is_png:
        return [out_path]
    if is_png:
        raise ValueError(f"--out: with {len(images)} images, expected a folder, got the file name {out}")
    if out_path.suffix and not out_path.is_dir():
        raise ValueError(f"--out: expected a .png file name or a folder, got {out}")
    outs = [out_path / f"{p.stem}.png" for p in images]
    refuse_collisions(images, outs)
    return outs


def refuse_collisions(images: list[Path], outs: list[Path]) -> None:
    """A ValueError if two different images would be written to one output file (the same image twice is fine)."""
    first_image: dict[Path, Path] = {}
    for image, out in zip(images, outs):
        earlier = first_image.setdefault(out, image)
        if earlier.resolve() != image.resolve():
            raise ValueError(f"--out: {earlier} and {image} would both be written to {out}; predict them into "
                             "separate --out folders")


def check_images(images: list[Path]) -> None:
    """Refuse, before any mask is written, an image that cannot be read or that is smaller than DFANet takes; only
    the headers are read."""
    for path in images:
        with open_image(path) as image:
            width, height = image.size
        if min(width, height) < MIN_INPUT_SIZE:
            raise ValueError(f"image: {path} is {width}x{height} (WxH); DFANet takes images of at least "
                             f"{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}")


@torch.no_grad()
def predict_files(model: DFANet, images: list[Path], outs: list[Path], with_overlay: bool = False) -> None:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    check_images(images)
    # disable=None: a bar on a terminal only, never in piped output; the redirect keeps log lines off the bar.
    with logging_redirect_tqdm(), tqdm(list(zip(images, outs)), desc="predict", unit="img", disable=None) as bar:
        for image_path, out_path in bar:
            image, tensor = load_image(image_path)
            mask = model(tensor)[0].argmax(0).to(torch.uint8 if model.num_classes <= 256 else torch.int32).numpy()
            picture = colorize(mask, model.num_classes)
            if with_overlay:
                picture = overlay(image, picture)
            with atomic_path(out_path) as tmp:
                picture.save(tmp, format="PNG")
            log.info("%s -> %s", image_path, out_path)
