"""Argument checks shared by the public ops: each failure names the argument, what was expected and what came."""

from __future__ import annotations

import functools
import os
from typing import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def tensor(name: str, t: object, *, ndim: int | None = None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor, got {t.dim()}-D with shape {tuple(t.shape)}")
    return t


def floating(name: str, t: torch.Tensor) -> torch.Tensor:
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a floating dtype {_names(FLOAT_DTYPES)}, got {t.dtype}")
    return t


def activation(name: str, t: object, *, min_hw: int = 1) -> torch.Tensor:
    """A non-empty N x C x H x W floating tensor (any memory layout)."""
    t = floating(name, tensor(name, t, ndim=4))
    if t.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty N x C x H x W tensor, got shape {tuple(t.shape)}")
    h, w = t.shape[-2:]
    if h < min_hw or w < min_hw:
        raise ValueError(f"{name}: expected H and W >= {min_hw}, got {h} x {w}")
    return t


def like(name: str, t: object, ref: torch.Tensor, ref_name: str, shape: Sequence[int]) -> torch.Tensor:
    """A tensor of exactly ``shape`` with ``ref``'s dtype and device."""
    t = tensor(name, t)
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(t.shape)}")
    return _device_and_dtype_of(name, t, ref, ref_name)


def _device_and_dtype_of(name: str, t: torch.Tensor, ref: torch.Tensor, ref_name: str) -> torch.Tensor:
    if t.device != ref.device:
        raise ValueError(f"{name}: expected device {ref.device} (that of {ref_name}), got {t.device}")
    if t.dtype != ref.dtype:
        raise TypeError(f"{name}: expected dtype {ref.dtype} (that of {ref_name}), got {t.dtype}")
    return t


def weight_4d(name: str, t: object) -> torch.Tensor:
    """A 4-D Cout x ... conv weight with at least one output channel (torch's conv2d refuses none)."""
    t = tensor(name, t, ndim=4)
    if t.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one output channel, got shape {tuple(t.shape)}")
    return t


def stride(value: object) -> None:
    """A conv stride: the Python int 1 or 2 (a float, bool or NumPy/tensor scalar would reach the kernels' int
    arguments and fail there without naming it)."""
    if type(value) is not int:
        raise TypeError(f"stride: expected the int 1 or 2, got {type(value).__name__} {value!r}")
    if value not in (1, 2):
        raise ValueError(f"stride: expected 1 or 2, got {value!r}")


def flag(name: str, value: object) -> bool:
    """A real bool: a string such as "False", a number or None would silently switch a ReLU on or off."""
    if type(value) is not bool:
        raise TypeError(f"{name}: expected True or False, got {type(value).__name__} {value!r}")
    return value


def input_like(name: str, t: object, weight: torch.Tensor) -> torch.Tensor:
    """An input for prepared weights: a tensor of the weights' dtype and device (cheap: once per call)."""
    return _device_and_dtype_of(name, tensor(name, t), weight, "the prepared weights")


@functools.lru_cache(maxsize=None)
def _memory_of(device: torch.device) -> int | None:
    """Bytes of memory ``device`` has in all: the host's RAM for the CPU, the GPU's for CUDA; None: no bound (meta)."""
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # a platform without these names
            return None
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return None


def output_fits(name: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> None:
    """An output of ``shape`` that ``device`` could hold at all: a size that cannot be is refused naming ``name``
    and the bytes, before an allocation fails deep inside (std::bad_alloc, a storage-size overflow). Not checked
    inside a graph being compiled: its sizes are the traced model's."""
    if torch.compiler.is_compiling():
        return
    elements = 1
    for extent in shape:
        elements *= int(extent)
    needed = elements * dtype.itemsize
    memory = _memory_of(device)
    if memory is not None and needed > memory:
        raise ValueError(f"{name}: an output of {' x '.join(map(str, shape))} {str(dtype).removeprefix('torch.')} "
                         f"needs {needed} bytes, more than the {device.type} device has ({memory} bytes)")


def optional_like(name: str, t: object, ref: torch.Tensor, ref_name: str, shape: Sequence[int]) -> None:
    if t is not None:
        like(name, t, ref, ref_name, shape)


def finite(name: str, t: torch.Tensor) -> None:
    if torch.compiler.is_compiling():  # no data-dependent branch in a graph: the check runs inside it, when it runs
        torch._assert_async(torch.isfinite(t).all(), f"{name}: expected finite values, found NaN/inf")
    elif not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name}: expected finite values, found {bad} NaN/inf of {t.numel()}")


def non_negative(name: str, t: torch.Tensor) -> None:
    if torch.compiler.is_compiling():
        torch._assert_async((t >= 0).all(), f"{name}: expected no negative entries")
    elif bool((t < 0).any()):
        raise ValueError(f"{name}: expected no negative entries, found {int((t < 0).sum())}")


def size2(name: str, size: object) -> tuple[int, int]:
    if isinstance(size, torch.Size):
        size = tuple(size)
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, (int, torch.SymInt)) and not isinstance(s, bool) for s in size)
    ):
        raise TypeError(f"{name}: expected a pair of ints (H, W), got {size!r}")
    if size[0] < 1 or size[1] < 1:
        raise ValueError(f"{name}: expected H and W >= 1, got {tuple(size)}")
    return size[0], size[1]


def _names(dtypes: Sequence[torch.dtype]) -> str:
    return "/".join(str(d).removeprefix("torch.") for d in dtypes)


def dtype_for_backend(name: str, t: torch.Tensor, backend: str, allowed: Sequence[str]) -> None:
    if str(t.dtype).removeprefix("torch.") not in allowed:
        raise TypeError(f"{name}: backend {backend!r} takes dtype {'/'.join(allowed)}, got {t.dtype}")
