"""Which backends exist on this machine, and which one a call runs on.

The compiled library (``dfanet_kernels._C``) is loaded once, here. If it is missing or broken the package still
imports and runs on the reference backend, with one warning that says how to rebuild.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import warnings

import torch

from .constants import BACKENDS

_REBUILD_HINT = "rebuild with `pip install --no-build-isolation -e .` (see README, 'Install')"


@functools.cache
def compiled_library():
    """The loaded ``dfanet_kernels._C`` module, or None (with a warning) if it could not be loaded."""
    try:
        return importlib.import_module("dfanet_kernels._C")
    except ImportError as err:  # a missing or ABI-incompatible build: keep working on the reference backend
        warnings.warn(
            f"dfanet_kernels: the compiled kernels could not be loaded ({err}); the 'cpu' and 'cuda' backends are "
            f"unavailable and ops fall back to the slow reference backend. To fix: {_REBUILD_HINT}.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _has_cpu_kernels() -> bool:
    return compiled_library() is not None and torch._C._dispatch_has_kernel_for_dispatch_key(
        "dfanet::dwsep_conv", "CPU"
    )


def _has_cuda_kernels() -> bool:
    return compiled_library() is not None and torch._C._dispatch_has_kernel_for_dispatch_key(
        "dfanet::dwsep_conv", "CUDA"
    )


def _has_triton(device: torch.device) -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    if device.type == "cuda":
        return True
    # On CPU tensors Triton runs only under its interpreter (slow; meant for testing).
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def unavailable_reason(backend: str, device: torch.device) -> str | None:
    """None if ``backend`` can run on ``device``; otherwise a sentence saying why not."""
    if backend == "reference":
        return None
    if backend == "cpu":
        if device.type != "cpu":
            return f"backend 'cpu' runs on CPU tensors, got a tensor on {device}"
        return None if _has_cpu_kernels() else f"the compiled CPU kernels are not built; {_REBUILD_HINT}"
    if backend == "cuda":
        if device.type != "cuda":
            return f"backend 'cuda' runs on CUDA tensors, got a tensor on {device}"
        return None if _has_cuda_kernels() else (
            "the CUDA kernels are not built (torch without CUDA or no nvcc at build time); "
            f"{_REBUILD_HINT} on a machine with a CUDA build of torch"
        )
    if backend == "triton":
        if device.type not in ("cuda", "cpu"):
            return f"backend 'triton' runs on CUDA tensors, got a tensor on {device}"
        if importlib.util.find_spec("triton") is None:
            return "Triton is not installed (`pip install triton`)"
        if not _has_triton(device):
            return "Triton needs CUDA tensors (CPU tensors only under TRITON_INTERPRET=1, for testing)"
        from . import triton as triton_kernels  # imports Triton and registers the ops, on first use only

        return triton_kernels.unavailable_reason()
    raise ValueError(f"backend: expected one of {BACKENDS} or None, got {backend!r}")


# Availability does not change while a process runs, so torch.compile may treat the choice as a constant instead of
# tracing the import machinery behind it.
@torch.compiler.assume_constant_result
def resolve(backend: str | None, device: torch.device) -> str:
    """The backend a call runs on: the one asked for (checked), or the fastest available for ``device``."""
    if backend is None:
        preference = {"cpu": ("cpu",), "cuda": ("cuda", "triton")}.get(device.type, ())
        return next((b for b in preference if unavailable_reason(b, device) is None), "reference")
    reason = unavailable_reason(backend, device)
    if reason is not None:
        raise ValueError(f"backend={backend!r} is unavailable: {reason}")
    return backend


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """The backends that can run on ``device`` here, best first after 'reference'."""
    device = torch.device(device)
    return [b for b in BACKENDS if unavailable_reason(b, device) is None]
