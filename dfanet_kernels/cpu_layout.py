"""Weights laid out as the CPU kernels read them, so that a call reads them in place instead of packing a copy.

The CPU ops take weights in any layout and pack them per call (csrc/cpu/common.h, ``PackedWeights``): the 1x1 and
dense weights transposed to input-channel rows of output channels padded to a multiple of 16 floats, the depthwise
weights tap-major, biases padded. A weight that already is a view of that packed layout -- these functions make
one: same shape and values, other strides, the padding zeros in its storage -- is read where it lies. The
``Prepared*`` ops lay out their weights this way once, when a model is folded: that took packing (and zeroing its
buffer) out of every call, about a third of the fixed cost of a small block call.
"""

from __future__ import annotations

import torch

# The padding of every packed row, in floats: kPad in csrc/cpu/isa.h (the widest vector, 16 fp32 lanes).
PAD = 16


def _padded(n: int) -> int:
    return -(-n // PAD) * PAD


def dense(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (Cout x C x k x k) as a view of rows [(c * k + kh) * k + kw][Cout padded]."""
    cout, c, k, _ = weight.shape
    ldo = _padded(cout)
    rows = torch.zeros(c * k * k, ldo, dtype=weight.dtype, device=weight.device)
    rows[:, :cout] = weight.permute(1, 2, 3, 0).reshape(c * k * k, cout)
    return rows.as_strided(weight.shape, (1, k * k * ldo, k * ldo, ldo))


def depthwise(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (C x 1 x 3 x 3) as a view of rows [kh * 3 + kw][C padded]."""
    c = weight.shape[0]
    ldc = _padded(c)
    taps = torch.zeros(9, ldc, dtype=weight.dtype, device=weight.device)
    taps[:, :c] = weight.reshape(c, 9).t()
    return taps.as_strided(weight.shape, (1, 9 * ldc, 3 * ldc, ldc))


def bias(b: torch.Tensor | None) -> torch.Tensor | None:
    """``b`` (n) as the first n floats of a zero-padded vector; None stays None."""
    if b is None:
        return None
    padded = torch.zeros(_padded(b.shape[0]), dtype=b.dtype, device=b.device)
    padded[: b.shape[0]] = b
    return padded[: b.shape[0]]
