"""One process per device under torchrun (DDP): gloo on CPU, nccl on CUDA; one process without it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(name: str | None, local_rank: int = 0) -> torch.device:
    """``name`` as given ("cpu", "cuda", "cuda:1"); None: CUDA if available. Plain "cuda" under torchrun is
    the process's own GPU (LOCAL_RANK)."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = parse_device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: this torch has no CUDA device")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: there is no CUDA device {device.index} "
                             f"(this machine has {torch.cuda.device_count()})")
    return device


def parse_device(name: str) -> torch.device:
    """torch.device(name), with a ValueError naming --device instead of torch's bare RuntimeError."""
    try:
        return torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device: expected cpu, cuda or cuda:N, got {name!r}") from None


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)``; None leaves torch's default. Checked here, where the Python API enters too:
    torch's own error for 0 or less names no option."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"--threads: expected an integer >= 1, got {threads}")
    torch.set_num_threads(threads)


def check_backend(backend: str | None, device: torch.device) -> None:
    """Refuse a fused-op ``backend`` that cannot run on ``device`` here before any work starts, rather than at the
    first forward pass (None: the best available one, always possible)."""
    if backend is None:
        return
    from dfanet_kernels import backends

    reason = backends.unavailable_reason(backend, device)  # a ValueError for an unknown name
    if reason is not None:
        raise ValueError(f"--backend {backend}: unavailable on {device}: {reason}")


@contextmanager
def session(device: str | None) -> Iterator[Context]:
    """Join the process group that torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK), if any, for the ``with`` body;
    leave it after, whatever happens."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    joined = world_size > 1 and not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    try:
        yield Context(rank, world_size, local_rank, dev)
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Sum ``t`` over all processes, in place (no-op in a single process)."""
    if ctx.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def wrap_model(model: nn.Module, ctx: Context, sync_bn: bool) -> nn.Module:
    """The module to train: ``model`` itself in one process, DDP around it under torchrun. ``sync_bn`` swaps
    ``model``'s BatchNorm layers for SyncBatchNorm in place (same parameters and state_dict keys)."""
    if not ctx.distributed:
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
