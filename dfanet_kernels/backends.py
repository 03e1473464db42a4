"""Which backends exist on this machine, and which one a call runs on.

The compiled library (``dfanet_kernels/_C.abi3.so``, built by setup.py) is loaded once, here. It is a plain shared
library of torch ops, not a Python module (C++ programs load the same file: examples/cpp), so it is loaded with
``torch.ops.load_library``, whose static initialisers register the ops. If it is missing or broken the package still
imports and runs on the reference backend, with one warning that says how to rebuild.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import torch

from .constants import BACKEND_DTYPES, BACKENDS

REBUILD_HINT = "rebuild with `pip install --no-build-isolation -e .` (see README, 'Install')"
# setup.py's extension dfanet_kernels._C, built with py_limited_api: the one name it has on every Python version.
# (A `_C.cpython-*.so` beside it is a stale build of the old Python-module form, never loaded.)
LIBRARY_PATH = Path(__file__).with_name("_C.abi3.so")


def _load_compiled_library() -> Path | None:
    """LIBRARY_PATH once loaded, or None (with a warning) if it is missing or cannot be loaded."""
    try:
        if not LIBRARY_PATH.is_file():
            raise OSError(f"{LIBRARY_PATH} is not built")
        torch.ops.load_library(LIBRARY_PATH)
    except OSError as err:  # a missing or ABI-incompatible build: keep working on the reference backend
        warnings.warn(
            f"dfanet_kernels: the compiled kernels could not be loaded ({err}); the 'cpu' and 'cuda' backends are "
            f"unavailable and ops fall back to the slow reference backend. To fix: {REBUILD_HINT}.",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    return LIBRARY_PATH


# Everything below is fixed for the life of the process, so it is worked out once, at import: the choice of backend
# is then plain Python over constants, which torch.compile traces without graph breaks.
_LIBRARY = _load_compiled_library()
_COMPILED_KERNELS = {
    key: _LIBRARY is not None and torch._C._dispatch_has_kernel_for_dispatch_key("dfanet::dwsep_conv", key)
    for key in ("CPU", "CUDA")
}
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None
# On CPU tensors Triton runs only under its interpreter (slow; meant for testing), chosen before triton is imported.
_TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_CUDA_AVAILABLE = torch.cuda.is_available()


def compiled_library() -> Path | None:
    """The path of the loaded compiled library (for a C++ program to load too), or None if it could not be loaded."""
    return _LIBRARY


def _has_triton(device: torch.device) -> bool:
    if not _TRITON_INSTALLED:
        return False
    if device.type == "cuda":
        return _CUDA_AVAILABLE
    return device.type == "cpu" and _TRITON_INTERPRET


def unavailable_reason(backend: str, device: torch.device) -> str | None:
    """None if ``backend`` can run on ``device``; otherwise a sentence saying why not."""
    if backend == "reference":
        return None
    if backend == "cpu":
        if device.type != "cpu":
            return f"backend 'cpu' runs on CPU tensors, got a tensor on {device}"
        return None if _COMPILED_KERNELS["CPU"] else f"the compiled CPU kernels are not built; {REBUILD_HINT}"
    if backend == "cuda":
        if device.type != "cuda":
            return f"backend 'cuda' runs on CUDA tensors, got a tensor on {device}"
        return None if _COMPILED_KERNELS["CUDA"] else (
            "the CUDA kernels are not built (torch without CUDA or no nvcc at build time); "
            f"{REBUILD_HINT} on a machine with a CUDA build of torch"
        )
    if backend == "triton":
        if device.type not in ("cuda", "cpu"):
            return f"backend 'triton' runs on CUDA tensors, got a tensor on {device}"
        if not _TRITON_INSTALLED:
            return "Triton is not installed (`pip install triton`)"
        if not _has_triton(device):
            return "Triton needs CUDA tensors (CPU tensors only under TRITON_INTERPRET=1, for testing)"
        from . import triton as triton_kernels  # imports Triton and registers the ops, on first use only

        return triton_kernels.unavailable_reason()
    raise ValueError(f"backend: expected one of {BACKENDS} or None, got {backend!r}")


_FALLBACKS_WARNED: set[tuple[str, torch.dtype]] = set()


def resolve(backend: str | None, device: torch.device, dtype: torch.dtype | None = None) -> str:
    """The backend a call runs on: the one asked for (checked), or the fastest available for ``device`` that takes
    ``dtype`` (the reference, with a warning once, where no compiled backend takes it: float64, or fp16 on CPU)."""
    if backend is None:
        preference = {"cpu": ("cpu",), "cuda": ("cuda", "triton")}.get(device.type, ())
        available = [b for b in preference if unavailable_reason(b, device) is None]
        dtype_name = None if dtype is None else str(dtype).removeprefix("torch.")
        chosen = next((b for b in available if dtype_name is None or dtype_name in BACKEND_DTYPES[b]), "reference")
        fell_back = chosen == "reference" and available and dtype is not None and dtype.is_floating_point
        if fell_back and (device.type, dtype) not in _FALLBACKS_WARNED and not torch.compiler.is_compiling():
            _FALLBACKS_WARNED.add((device.type, dtype))
            warnings.warn(f"dfanet_kernels: no compiled backend on {device.type} takes {dtype_name} "
                          f"({', '.join(f'{b}: {BACKEND_DTYPES[b]}' for b in available)}); backend=None runs the "
                          "slow reference ops", RuntimeWarning, stacklevel=3)
        return chosen
    reason = unavailable_reason(backend, device)
    if reason is not None:
        raise ValueError(f"backend={backend!r} is unavailable: {reason}")
    return backend


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """The backends that can run on ``device`` here, best first after 'reference'."""
    device = torch.device(device)
    return [b for b in BACKENDS if unavailable_reason(b, device) is None]
