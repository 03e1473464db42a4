"""Segment images with a (fused) DFANet and write colourised masks."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from ..model import MIN_INPUT_SIZE, DFANet
from ..training.images import IMAGE_SUFFIXES, MAX_PIXELS, normalize, open_image, rgb_array
from ..training.io import atomic_path
from .palette import colorize, overlay

log = logging.getLogger(__name__)


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, torch.Tensor]:
    """The 8-bit RGB image and its normalised 1 x 3 x H x W tensor."""
    with open_image(path, max_pixels) as opened:
        rgb = rgb_array(opened, path)
    return Image.fromarray(rgb), normalize(rgb)[None]


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


def output_paths(images: list[Path], out: str, keep: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """``out`` itself for one image given as a .png path; otherwise ``out/<stem>.png`` per image. Refused before any
    work: two images with one stem (a/x.png and b/x.png, x.png and x.jpg: one mask would overwrite the other), a mask
    that would replace an input image or a file of ``keep`` (e.g. the weights), and an ``out`` below a file."""
    out_path = Path(out)
    is_png = out_path.suffix.lower() == ".png" and not out_path.is_dir()
    if len(images) == 1 and is_png:
        outs = [out_path]
    elif is_png:
        raise ValueError(f"--out: with {len(images)} images, expected a folder, got the file name {out}")
    elif out_path.suffix and not out_path.is_dir():
        raise ValueError(f"--out: expected a .png file name or a folder, got {out}")
    else:
        outs = [out_path / f"{p.stem}.png" for p in images]
    refuse_collisions(images, outs)
    refuse_overwriting([*images, *map(Path, keep)], outs)
    refuse_file_in_path(out_path)
    return outs


def refuse_overwriting(inputs: list[Path], outs: list[Path]) -> None:
    """A ValueError if an output is one of the input files (the same path, or another name of the same file)."""
    identities = {}
    for path in inputs:
        try:
            stat = path.stat()
        except OSError:
            continue
        identities[(stat.st_dev, stat.st_ino)] = path
    for out in outs:
        try:
            stat = out.stat()
        except OSError:  # not there (yet): no input can be it
            continue
        given = identities.get((stat.st_dev, stat.st_ino))
        if given is not None:
            raise ValueError(f"--out: the mask {out} would replace the input {given}; predict into another --out "
                             "(an input is never overwritten)")


def refuse_file_in_path(out: Path) -> None:
    """A ValueError if a folder above ``out`` is a file (``--out notes.txt/masks``)."""
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--out: {parent} is a file, so {out} cannot be written below it")
            return


def refuse_collisions(images: list[Path], outs: list[Path]) -> None:
    """A ValueError if two different images would be written to one output file (the same image twice is fine)."""
    first_image: dict[Path, Path] = {}
    for image, out in zip(images, outs):
        earlier = first_image.setdefault(out, image)
        if earlier.resolve() != image.resolve():
            raise ValueError(f"--out: {earlier} and {image} would both be written to {out}; predict them into "
                             "separate --out folders")


def check_images(images: list[Path], max_pixels: int = MAX_PIXELS) -> None:
    """Refuse, before any mask is written, an image that cannot be read, that is smaller than DFANet takes or that has
    more than ``max_pixels`` pixels; only the headers are read."""
    for path in images:
        with open_image(path, max_pixels) as image:
            width, height = image.size
        if min(width, height) < MIN_INPUT_SIZE:
            raise ValueError(f"image: {path} is {width}x{height} (WxH); DFANet takes images of at least "
                             f"{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}")


@torch.no_grad()
def predict_files(model: DFANet, images: list[Path], outs: list[Path], with_overlay: bool = False,
                  max_pixels: int = MAX_PIXELS) -> None:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    check_images(images, max_pixels)
    # disable=None: a bar on a terminal only, never in piped output; the redirect keeps log lines off the bar.
    with logging_redirect_tqdm(), tqdm(list(zip(images, outs)), desc="predict", unit="img", disable=None) as bar:
        for image_path, out_path in bar:
            image, tensor = load_image(image_path, max_pixels)
            mask = model(tensor)[0].argmax(0).to(torch.uint8 if model.num_classes <= 256 else torch.int32).numpy()
            picture = colorize(mask, model.num_classes)
            if with_overlay:
                picture = overlay(image, picture)
            with atomic_path(out_path) as tmp:
                picture.save(tmp, format="PNG")
            log.info("%s -> %s", image_path, out_path)
