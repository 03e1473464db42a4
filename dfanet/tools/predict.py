"""Segment images and videos with a (fused) DFANet and write colour masks, overlays or label-id files."""

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
from .formats import render
from .video import ENCODINGS, VIDEO_SUFFIXES, check_video, check_video_format, is_video, predict_video

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
    """Image and video files from files and folders (a folder contributes its images and videos, sorted)."""
    suffixes = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += sorted(p for p in item.iterdir() if p.suffix.lower() in suffixes)
        elif item.is_file():
            paths.append(item)
        else:
            raise FileNotFoundError(f"image: no such file or folder: {item}")
    if not paths:
        raise ValueError(f"no images or videos found in {inputs}")
    return paths


def output_suffixes(path: Path) -> tuple[str, ...]:
    """The suffixes an output of the input ``path`` may take, the one a folder gets first."""
    return tuple(ENCODINGS) if is_video(path) else (".png",)


def output_paths(inputs: list[Path], out: str, keep: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """``out`` itself for one input given as a file name of its kind (.png for an image, .mp4 or .mkv for a video);
    otherwise ``out/<stem>.png`` per image and ``out/<stem>.mp4`` per video. Refused before any work: two inputs with
    one output (a/x.png and b/x.png, x.png and x.jpg: one mask would overwrite the other), an output that would
    replace an input or a file of ``keep`` (e.g. the weights), and an ``out`` below a file."""
    out_path = Path(out)
    names_a_file = bool(out_path.suffix) and not out_path.is_dir()
    if names_a_file and len(inputs) == 1:
        suffixes = output_suffixes(inputs[0])
        if out_path.suffix.lower() not in suffixes:
            raise ValueError(f"--out: expected a {' or '.join(suffixes)} file name or a folder, got {out}")
        outs = [out_path]
    elif names_a_file:
        raise ValueError(f"--out: with {len(inputs)} inputs, expected a folder, got the file name {out}")
    else:
        outs = [out_path / f"{p.stem}{output_suffixes(p)[0]}" for p in inputs]
    refuse_collisions(inputs, outs)
    refuse_overwriting([*inputs, *map(Path, keep)], outs)
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


def check_inputs(inputs: list[Path], fmt: str = "color", max_pixels: int = MAX_PIXELS) -> None:
    """Refuse, before anything is written, an image or video that cannot be read, that is smaller than DFANet takes
    or that has more than ``max_pixels`` pixels (a frame's, for a video), and a video with a --format that only
    images take; only the headers are read."""
    for path in inputs:
        if is_video(path):
            check_video_format(fmt, path)
            check_video(path, max_pixels)
            continue
        with open_image(path, max_pixels) as image:
            width, height = image.size
        if min(width, height) < MIN_INPUT_SIZE:
            raise ValueError(f"image: {path} is {width}x{height} (WxH); DFANet takes images of at least "
                             f"{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}")


@torch.no_grad()
def predict_files(model: DFANet, inputs: list[Path], outs: list[Path], fmt: str = "color",
                  max_pixels: int = MAX_PIXELS, batch_size: int = 1) -> None:
    """Write the ``fmt`` picture (formats.render) of each image, and of each frame of each video, to its output;
    videos stream ``batch_size`` frames at a time."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    check_inputs(inputs, fmt, max_pixels)
    images = [(path, out) for path, out in zip(inputs, outs) if not is_video(path)]
    videos = [(path, out) for path, out in zip(inputs, outs) if is_video(path)]
    # disable=None: a bar on a terminal only, never in piped output; the redirect keeps log lines off the bar.
    with logging_redirect_tqdm():
        for image_path, out_path in tqdm(images, desc="predict", unit="img", disable=None if images else True):
            image, tensor = load_image(image_path, max_pixels)
            picture = render(model.predict(tensor)[0].numpy(), image, fmt, model.num_classes)
            with atomic_path(out_path) as tmp:
                picture.save(tmp, format="PNG")
            log.info("%s -> %s", image_path, out_path)
        for video_path, out_path in videos:
            predict_video(model, video_path, out_path, fmt, batch_size)
