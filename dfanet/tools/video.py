"""Segment videos through PyAV as a stream: frames are decoded, segmented and encoded a batch at a time, never the
whole video in memory, with the input's size, frame rate and timestamps. Decoding and encoding run in a thread each,
a few frames ahead of and behind the model, so that they overlap its forward pass."""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from ..model import MIN_INPUT_SIZE, DFANet
from ..training.images import MAX_PIXELS, normalize
from ..training.io import atomic_path
from .formats import PICTURE_FORMATS, render

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")
# --out's suffix picks the container and codec: H.264 in MP4 plays everywhere but is lossy (a colour's edges blur a
# little); FFV1 in Matroska is lossless, every pixel of the mask exact, in larger files (30 frames of 512x1024 colour
# masks: 3.6x H.264's size; overlays, as noisy as the video: 45x).
ENCODINGS = {".mp4": ("mp4", "libx264"), ".mkv": ("matroska", "ffv1")}
# Frames decoded ahead of the model and frames waiting for the encoder, per batch: enough for each thread to keep
# working while the model runs, few enough that memory stays a few frames whatever the video's length.
QUEUED_BATCHES = 2


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


@contextmanager
def open_video(path: Path) -> Iterator:
    """The PyAV container of ``path`` and its first video stream, with errors that name the file."""
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as err:
        raise ValueError(f"video: {path}: cannot read ({err})") from None
    with container:
        if not container.streams.video:
            raise ValueError(f"video: {path} has no video stream")
        yield container, container.streams.video[0]


def check_video(path: Path, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse, before any output is written, a video that cannot be opened, has no video stream, or whose frames
    are smaller than DFANet takes or larger than ``max_pixels``; only the headers are read."""
    with open_video(path) as (_, stream):
        width, height = stream.codec_context.width, stream.codec_context.height
    if min(width, height) < MIN_INPUT_SIZE:
        raise ValueError(f"video: {path} has {width}x{height} (WxH) frames; DFANet takes images of at least "
                         f"{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}")
    if width * height > max_pixels:
        raise ValueError(f"video: {path} has {width}x{height} (WxH) frames, {width * height} pixels, over the limit "
                         f"of {max_pixels} (dfanet predict --max-pixels raises it)")


def check_video_format(fmt: str, path: Path) -> None:
    if fmt not in PICTURE_FORMATS:
        raise ValueError(f"--format {fmt}: ids need an exact, lossless picture per input, so only images take it; "
                         f"the video {path} takes {' or '.join(PICTURE_FORMATS)}")


def decoded_frames(container, stream, path: Path) -> Iterator:
    """Each frame of ``stream`` as (H x W x 3 uint8 RGB, its normalised 3 x H x W tensor, pts, time base)."""
    import av

    size = stream.codec_context.width, stream.codec_context.height
    try:
        for index, frame in enumerate(container.decode(stream)):
            if (frame.width, frame.height) != size:
                raise ValueError(f"video: {path}: frame {index} is {frame.width}x{frame.height} (WxH), the video "
                                 f"{size[0]}x{size[1]}; a video whose frame size changes is not supported")
            rgb = frame.to_ndarray(format="rgb24")
            yield rgb, normalize(rgb), frame.pts, frame.time_base
    except (av.FFmpegError, OSError) as err:
        raise ValueError(f"video: {path}: cannot decode ({err})") from None


def add_output_stream(output, stream, codec: str):
    """A stream of ``codec`` with the input's size, frame rate and time base (the muxer may round the time base:
    Matroska's is always 1/1000, so timestamps keep the millisecond)."""
    out = output.add_stream(codec, rate=stream.average_rate or stream.guessed_rate)
    out.width, out.height = stream.codec_context.width, stream.codec_context.height
    if codec == "ffv1":
        out.pix_fmt = "bgr0"  # RGB as it is: no conversion to YUV, so lossless means the exact colours
    else:
        # 4:2:0 plays everywhere but needs an even width and height; 4:4:4 keeps any size (fewer players take it).
        out.pix_fmt = "yuv420p" if out.width % 2 == 0 and out.height % 2 == 0 else "yuv444p"
    out.time_base = stream.time_base
    return out


def prefetched(items: Iterator, depth: int, pool: ThreadPoolExecutor) -> Iterator:
    """``items``, drawn by ``pool``'s one thread up to ``depth`` ahead of the caller; its error is raised here."""
    end = object()
    pending = deque(pool.submit(next, items, end) for _ in range(depth))
    while (item := pending.popleft().result()) is not end:
        pending.append(pool.submit(next, items, end))
        yield item


def batches(items: Iterator, size: int) -> Iterator[list]:
    while batch := list(islice(items, size)):
        yield batch


@torch.no_grad()
def predict_video(model: DFANet, path: Path, out: Path, fmt: str = "color", batch_size: int = 1) -> int:
    """Write the ``fmt`` picture of every frame of the video ``path`` to the video ``out`` (container and codec from
    its suffix, :data:`ENCODINGS`), with a progress bar in frames per second on a terminal. Returns the number of
    frames."""
    import av
    from tqdm import tqdm

    check_video_format(fmt, path)
    container_format, codec = ENCODINGS[out.suffix.lower()]
    depth = QUEUED_BATCHES * batch_size
    count = 0
    with open_video(path) as (container, stream), atomic_path(out) as tmp, \
            av.open(str(tmp), "w", format=container_format) as output:
        encoder = add_output_stream(output, stream, codec)

        def encode(rgb: np.ndarray, labels: np.ndarray, pts: int, time_base) -> None:
            picture = render(labels, Image.fromarray(rgb), fmt, model.num_classes)
            frame = av.VideoFrame.from_ndarray(np.asarray(picture), format="rgb24")
            frame.pts, frame.time_base = pts, time_base
            output.mux(encoder.encode(frame))

        # Each pool's one thread owns its container; leaving the pools (before the containers close) waits for them.
        with ThreadPoolExecutor(1, "decode") as decoding, ThreadPoolExecutor(1, "encode") as encoding, \
                tqdm(total=stream.frames or None, desc=path.name, unit="frame", disable=None) as bar:
            frames = prefetched(decoded_frames(container, stream, path), depth, decoding)
            written: deque[Future] = deque()
            for batch in batches(frames, batch_size):
                labels = model.predict(torch.stack([tensor for _, tensor, _, _ in batch])).numpy()
                for (rgb, _, pts, time_base), frame_labels in zip(batch, labels):
                    written.append(encoding.submit(encode, rgb, frame_labels, pts, time_base))
                count += len(batch)
                bar.update(len(batch))
                while len(written) > depth:
                    written.popleft().result()  # bounds the queue, and raises the encoder's error here
            for future in written:
                future.result()
        output.mux(encoder.encode(None))  # flush the frames the encoder still holds
    log.info("%s -> %s (%d frames)", path, out, count)
    return count

