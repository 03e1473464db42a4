"""Glue shared by the Triton kernels: the interpreter switch, output allocation, launch-size helpers."""

from __future__ import annotations

import os

import torch
import triton

# TRITON_INTERPRET=1 runs every program of a launch one after another in NumPy (CPU tensors, CI). Triton reads the
# variable when a kernel is decorated, so it is read once here, when dfanet_kernels.triton is imported. Under the
# interpreter the launchers skip autotuning (one config: timing would be meaningless) and use large tiles, because
# the interpreter's cost grows with the number of programs, not the tile size.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def empty_nhwc(like: torch.Tensor, shape) -> torch.Tensor:
    """An uninitialised N x C x H x W tensor with NHWC (channels_last) storage, like every compiled backend returns."""
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=torch.channels_last)


def channel_block(channels: int, cap: int) -> int:
    """A power-of-two channel tile (Triton tiles are powers of two) covering ``channels``, at most ``cap``."""
    return min(triton.next_power_of_2(channels), cap)


def pixel_block(block_c: int, elements: int) -> int:
    """The pixel tile that makes a [pixels, block_c] tile hold about ``elements`` values (at least 16)."""
    return max(16, elements // block_c)


def interpreter_dot_fp32(dtype: torch.dtype) -> bool:
    """Whether tl.dot must take fp32 operands: only bf16 under the interpreter.

    Triton 3.9's interpreter keeps bf16 tiles as uint16 NumPy arrays and multiplies those integers in tl.dot
    (results ~1e10; checked 2026). On a GPU bf16 goes to the tensor cores as it should.
    """
    return INTERPRET and dtype == torch.bfloat16
