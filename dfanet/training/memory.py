"""Whether a training run's settings fit the machine's memory, checked before any work: a run that cannot fit is
refused with the flags to change, instead of growing until the kernel's OOM killer ends it (24 GB seen used by
`dfanet train`'s defaults, 48 crops of 1024 x 1024, on a 2-CPU machine)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

# Peak bytes live in torch's allocator during one fp32 training step (forward, cross-entropy, backward) per input
# pixel of the batch: linear in batch x H x W. Measured on the CPU with torch.profiler's memory events, 2026-12-07
# (torch 2.13; batch 1-4 at 128x128 to 512x512 gave the same figure to 0.3%). Not counted: oneDNN's scratch memory,
# so the estimate is a lower bound. A' has A's widths.
TRAIN_BYTES_PER_PIXEL = {"A": 1183, "A'": 1183, "B": 917}
# A loader batch per pixel: the float32 RGB crop and its int64 labels; each worker holds DataLoader's default
# prefetch of 2 batches, and the training process one more.
SAMPLE_BYTES_PER_PIXEL = 3 * 4 + 8
PREFETCH_BATCHES = 2


def training_bytes(variant: str, batch: int, crop: tuple[int, int], amp: bool = False) -> int:
    """The activations of one training step of ``batch`` crops (fp16 autocast: half, an estimate)."""
    pixels = batch * crop[0] * crop[1]
    return pixels * TRAIN_BYTES_PER_PIXEL[variant] // (2 if amp else 1)


def loader_bytes(batch: int, crop: tuple[int, int], workers: int) -> int:
    """The loader's batches in flight: ``workers`` x the prefetch, plus the one being trained on."""
    return (workers * PREFETCH_BATCHES + 1) * batch * crop[0] * crop[1] * SAMPLE_BYTES_PER_PIXEL


def available_host_bytes() -> int | None:
    """Memory the process can still take: MemAvailable, or less where a cgroup (a container) limits it."""
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    available = next((int(line.split()[1]) * 1024 for line in meminfo.splitlines()
                      if line.startswith("MemAvailable:")), None)
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return available
    if limit != "max" and available is not None:
        available = min(available, int(limit) - used)
    return available


def available_device_bytes(device: torch.device) -> int:
    """Free memory of the GPU ``device``."""
    return torch.cuda.mem_get_info(device)[0]


def processes_on_this_machine() -> int:
    """torchrun's processes on this node (LOCAL_WORLD_SIZE), 1 without torchrun."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def check_training_memory(variant: str, batch: int, crop: tuple[int, int], workers: int, amp: bool,
                          device: torch.device) -> None:
    """A ValueError naming the flags to change when ``batch`` crops per process need more memory than there is: on a
    GPU its step against the GPU's free memory (one process per GPU), and on the host the loaders' batches, with
    the steps too on the CPU, of every process on this machine."""
    step = training_bytes(variant, batch, crop, amp)
    loader = loader_bytes(batch, crop, workers)
    processes = processes_on_this_machine()
    if device.type == "cuda":
        needs = [("GPU", step, available_device_bytes(device)), ("host", loader * processes, available_host_bytes())]
    else:
        needs = [("host", (step + loader) * processes, available_host_bytes())]
    gib = 2**30
    for place, need, free in needs:
        if free is not None and need > free:
            raise ValueError(
                f"dfanet train: DFANet {variant} on {batch} crop(s) of {crop[0]}x{crop[1]} per process needs about "
                f"{need / gib:.1f} GiB of {place} memory ({processes} process(es) here; a training step "
                f"{step / gib:.1f} GiB, the loader's batches {loader / gib:.1f} GiB per process), but "
                f"{free / gib:.1f} GiB is available: lower --batch-size or --crop (or --workers), or spread the "
                "batch over more GPUs with torchrun")
