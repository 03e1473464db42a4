"""Bilinear upsample + concat / + add in Triton (``dfanet::upsample_concat_triton``, ``dfanet::upsample_add_triton``),
and upsample + argmax over channels (``dfanet::upsample_labels_triton``).

align_corners=False with PyTorch's source-index rule: ``src = (dst + 0.5) * in / out - 0.5``, clamped at 0, the
upper neighbour clamped at ``in - 1``. An input already at the target size is copied exactly (no 0 * neighbour
term, so inf/NaN and -0.0 pass through as they do in the reference).

One kernel serves both ops: a program computes a [BLOCK_W pixels of one row, BLOCK_C channels] tile of the NHWC
output as the sum of up to MAX_SOURCES resized sources and writes it once. ``upsample_concat`` launches it once per
input, each writing its own channel slice (every output value is still written once); ``upsample_add`` sums up to
MAX_SOURCES inputs in one launch, in fp32 (DFANet's decoder adds at most four). ``upsample_labels`` resizes one
input with the same tile function and keeps, per pixel, the first channel holding the maximum (or the first NaN, as
torch.argmax), a channel tile at a time: it writes one label per pixel, never the resized map.
"""

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ..constants import labels_dtype
from ._common import (
    INTERPRET,
    TILE_ELEMENTS,
    TILE_WARPS,
    bilinear_axis,
    bilinear_blend,
    channel_block,
    check,
    check_activation,
    empty_nhwc,
    interpreter_tracing,
    is_nhwc,
    launchable,
    needs_int64,
    pixel_block,
    pixel_offsets,
    source_args,
    static,
    widen,
)

# ---------------------------------------------------------------------------------------------------------------
# Tuning constants
# ---------------------------------------------------------------------------------------------------------------
# Sources summed by one launch; more inputs chain launches that accumulate into the output (one more read and
# write of it per MAX_SOURCES inputs). Four covers DFANet's decoder ([low] + three high-level maps).
MAX_SOURCES = 4
# Bandwidth-bound gathers: tiles of _common.TILE_ELEMENTS values; no autotuning because the tile follows from the
# channel count. The interpreter prefers few, large programs.
_MAX_BLOCK_C = 64 if not INTERPRET else 256


# ---------------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------------
@triton.jit
def _bilinear_tile(src_ptr, n, oh, ow, offs_c, mask, C, H, W, s_n, s_c, s_h, s_w, scale_h, scale_w, SAME,
                   NHWC: tl.constexpr, IDX64: tl.constexpr):
    """fp32 [BLOCK_W, BLOCK_C] tile of one source resized to the output grid, at output pixels (n, oh, ow): n and
    oh are the program's row (scalars), ow its BLOCK_W columns."""
    if NHWC:
        cols = offs_c[None, :]
    else:  # a channel times its stride may pass 2**31 too
        cols = widen(offs_c, IDX64)[None, :] * s_c
    if SAME:
        at = pixel_offsets(n, oh, ow, H, W, C, s_n, s_h, s_w, NHWC, IDX64)
        val = tl.load(src_ptr + at[:, None] + cols, mask=mask, other=0.0).to(tl.float32)
    else:
        # The vertical taps and weights are the row's, computed once per program.
        h0, h1, lh0, lh1 = bilinear_axis(oh, scale_h, H)
        w0, w1, lw0, lw1 = bilinear_axis(ow, scale_w, W)
        at_a = pixel_offsets(n, h0, w0, H, W, C, s_n, s_h, s_w, NHWC, IDX64)
        at_b = pixel_offsets(n, h0, w1, H, W, C, s_n, s_h, s_w, NHWC, IDX64)
        at_c = pixel_offsets(n, h1, w0, H, W, C, s_n, s_h, s_w, NHWC, IDX64)
        at_d = pixel_offsets(n, h1, w1, H, W, C, s_n, s_h, s_w, NHWC, IDX64)
        a = tl.load(src_ptr + at_a[:, None] + cols, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(src_ptr + at_b[:, None] + cols, mask=mask, other=0.0).to(tl.float32)
        c = tl.load(src_ptr + at_c[:, None] + cols, mask=mask, other=0.0).to(tl.float32)
        d = tl.load(src_ptr + at_d[:, None] + cols, mask=mask, other=0.0).to(tl.float32)
        val = bilinear_blend(a, b, c, d, lh0, lh1, lw0[:, None], lw1[:, None])
    return val


# Specialised (an int divisible by 16 or equal to 1 compiles its own variant, ~7 s each here) only where it sets a
# vector width: C, C_TOTAL, C_OFF through the dense NHWC offsets. Pixel-axis sizes, the source count and the
# general-layout strides are not.
@triton.jit(do_not_specialize=[
    "HO", "WO", "NUM_SOURCES",
    "H0", "W0", "sn0", "sc0", "sh0", "sw0", "H1", "W1", "sn1", "sc1", "sh1", "sw1",
    "H2", "W2", "sn2", "sc2", "sh2", "sw2", "H3", "W3", "sn3", "sc3", "sh3", "sw3",
])
def _upsample_kernel(
    out_ptr,  # dense NHWC with C_TOTAL channels; this launch writes channels [C_OFF, C_OFF + C)
    C, HO, WO, C_TOTAL, C_OFF,
    p0, H0, W0, sn0, sc0, sh0, sw0, fh0, fw0,
    p1, H1, W1, sn1, sc1, sh1, sw1, fh1, fw1,
    p2, H2, W2, sn2, sc2, sh2, sw2, fh2, fw2,
    p3, H3, W3, sn3, sc3, sh3, sw3, fh3, fw3,
    # Runtime values, not constexprs: one compiled kernel serves every number of sources and every same-size /
    # resized mix (the uniform branches cost nothing measurable).
    NUM_SOURCES, SAME0, SAME1, SAME2, SAME3, ACCUMULATE,
    SRC_NHWC: tl.constexpr,  # every source dense channels_last: offsets from C alone
    IDX64: tl.constexpr,  # some element offset reaches 2**31 (see _common.needs_int64)
    BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # A program computes BLOCK_W consecutive pixels of one output row x BLOCK_C channels. The row (n, oh) is a
    # scalar: its division and the vertical taps are done once, not per pixel (a flattened pixel index made each
    # lane divide by WO and HO for every pixel it held).
    row = tl.program_id(0)  # n * HO + oh
    n = row // HO
    oh = row - n * HO
    ow = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (ow < WO)[:, None] & (offs_c < C)[None, :]

    acc = _bilinear_tile(p0, n, oh, ow, offs_c, mask, C, H0, W0, sn0, sc0, sh0, sw0, fh0, fw0, SAME0, SRC_NHWC,
                         IDX64)
    if NUM_SOURCES > 1:
        acc += _bilinear_tile(p1, n, oh, ow, offs_c, mask, C, H1, W1, sn1, sc1, sh1, sw1, fh1, fw1, SAME1, SRC_NHWC,
                              IDX64)
    if NUM_SOURCES > 2:
        acc += _bilinear_tile(p2, n, oh, ow, offs_c, mask, C, H2, W2, sn2, sc2, sh2, sw2, fh2, fw2, SAME2, SRC_NHWC,
                              IDX64)
    if NUM_SOURCES > 3:
        acc += _bilinear_tile(p3, n, oh, ow, offs_c, mask, C, H3, W3, sn3, sc3, sh3, sw3, fh3, fw3, SAME3, SRC_NHWC,
                              IDX64)

    o_ptrs = out_ptr + ((widen(row, IDX64) * WO + ow) * C_TOTAL)[:, None] + (C_OFF + offs_c)[None, :]
    if ACCUMULATE:
        acc += tl.load(o_ptrs, mask=mask, other=0.0).to(tl.float32)
    tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["HO", "WO", "H", "W", "s_n", "s_c", "s_h", "s_w"])
def _upsample_labels_kernel(
    out_ptr,  # N x HO x WO labels, contiguous (uint8 or int64)
    x_ptr, H, W, s_n, s_c, s_h, s_w, fh, fw, C, HO, WO, SAME,
    SRC_NHWC: tl.constexpr, IDX64: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # A program labels BLOCK_W consecutive pixels of one output row, BLOCK_C channels at a time; a later channel tile
    # takes over a pixel only with a strictly greater maximum, so the first maximum wins across tiles too.
    row = tl.program_id(0)  # n * HO + oh
    n = row // HO
    oh = row - n * HO
    ow = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    in_row = ow < WO
    no_channel = C  # what a min-reduction over channel indices gives where no channel qualifies
    best = tl.full((BLOCK_W,), float("-inf"), tl.float32)
    label = tl.zeros((BLOCK_W,), tl.int32)
    first_nan = label + no_channel
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        in_c = (offs_c < C)[None, :]
        val = _bilinear_tile(x_ptr, n, oh, ow, offs_c, in_row[:, None] & in_c, C, H, W, s_n, s_c, s_h, s_w, fh, fw,
                             SAME, SRC_NHWC, IDX64)
        val = tl.where(in_c, val, float("-inf"))
        first_nan = tl.minimum(first_nan, tl.min(tl.where(val != val, offs_c[None, :], no_channel), axis=1))
        top = tl.max(val, axis=1)
        at_top = tl.min(tl.where(val == top[:, None], offs_c[None, :], no_channel), axis=1)
        take = top > best
        best = tl.where(take, top, best)
        label = tl.where(take, at_top, label)
    label = tl.where(first_nan < no_channel, first_nan, label)
    tl.store(out_ptr + widen(row, IDX64) * WO + ow, label.to(out_ptr.dtype.element_ty), mask=in_row)


# ---------------------------------------------------------------------------------------------------------------
# Host launchers and registration
# ---------------------------------------------------------------------------------------------------------------
def _check(inputs: list[torch.Tensor], size: list[int], same_channels: bool) -> tuple[int, int]:
    """The checks of csrc/checks.h check_upsample; returns the output (H, W)."""
    check(len(inputs) > 0, lambda: "inputs: expected at least one tensor")
    check(
        len(size) == 2 and size[0] > 0 and size[1] > 0, lambda: f"size: expected two positive ints, got {size}"
    )
    first = inputs[0]
    for i, t in enumerate(inputs):
        check_activation(t, f"inputs[{i}]")
        check(t.device == first.device, lambda: f"inputs[{i}]: expected device {first.device}, got {t.device}")
        check(t.dtype == first.dtype, lambda: f"inputs[{i}]: expected dtype {first.dtype}, got {t.dtype}")
        check(
            t.shape[0] == first.shape[0], lambda: f"inputs[{i}]: expected batch {first.shape[0]}, got {t.shape[0]}"
        )
        check(
            not same_channels or t.shape[1] == first.shape[1],
            lambda: f"inputs[{i}]: expected {first.shape[1]} channels, got {t.shape[1]}",
        )
    return size[0], size[1]


def tiles(c: int, wo: int) -> tuple[int, int]:
    """(BLOCK_W, BLOCK_C) of a launch over C channels and output rows WO pixels wide; num_warps is TILE_WARPS.
    A row segment no wider than the row (at least 16 pixels), so narrow maps do not mask most of a tile."""
    block_c = channel_block(c, _MAX_BLOCK_C)
    return min(pixel_block(block_c, TILE_ELEMENTS), max(16, triton.next_power_of_2(static(wo)))), block_c


def _launch(out: torch.Tensor, sources: list[torch.Tensor], c_off: int, accumulate: bool) -> None:
    """out[:, c_off:c_off + C] (=|+=) sum of ``sources`` resized to out's size; all sources have C channels."""
    n, _, ho, wo = out.shape
    c = sources[0].shape[1]
    padded = sources + [sources[0]] * (MAX_SOURCES - len(sources))  # unused slots are never read
    args = []
    for t in padded:
        args += source_args(t, ho, wo)
    same = [bool(t.shape[2] == ho and t.shape[3] == wo) for t in padded]
    block_w, block_c = tiles(c, wo)
    # CUDA grids: up to 2**31 - 1 programs along x (the rows), 65535 along y and z.
    check(n * ho < 2**31, lambda: f"size: at most 2**31 - 1 output rows (N * H), got {n * ho}")
    check(triton.cdiv(wo, block_w) <= 65535, lambda: f"size: output width {wo} is more than this kernel tiles")
    check(triton.cdiv(c, block_c) <= 65535, lambda: f"inputs: at most {65535 * block_c} channels each, got {c}")
    launchable(_upsample_kernel)[(n * ho, triton.cdiv(wo, block_w), triton.cdiv(c, block_c))](
        out, c, ho, wo, out.shape[1], c_off, *args,
        NUM_SOURCES=len(sources), SAME0=same[0], SAME1=same[1], SAME2=same[2], SAME3=same[3],
        ACCUMULATE=accumulate, SRC_NHWC=all(is_nhwc(t) for t in sources), IDX64=needs_int64(out, *sources),
        BLOCK_W=block_w, BLOCK_C=block_c, num_warps=TILE_WARPS,
    )


def upsample_concat_forward(inputs: list[torch.Tensor], size: list[int]) -> torch.Tensor:
    """``cat([bilinear(t, size) for t in inputs], dim=1)`` as NHWC, each input read once; checked in ops.py."""
    ho, wo = _check(inputs, size, same_channels=False)
    out = empty_nhwc(inputs[0], (inputs[0].shape[0], sum(t.shape[1] for t in inputs), ho, wo))
    if interpreter_tracing(inputs[0]):
        return out
    c_off = 0
    for t in inputs:
        _launch(out, [t], c_off, accumulate=False)
        c_off += t.shape[1]
    return out


def upsample_add_forward(inputs: list[torch.Tensor], size: list[int]) -> torch.Tensor:
    """``sum(bilinear(t, size) for t in inputs)`` as NHWC in one pass (per MAX_SOURCES inputs); checked in ops.py."""
    ho, wo = _check(inputs, size, same_channels=True)
    out = empty_nhwc(inputs[0], (inputs[0].shape[0], inputs[0].shape[1], ho, wo))
    if interpreter_tracing(inputs[0]):
        return out
    for i in range(0, len(inputs), MAX_SOURCES):
        _launch(out, list(inputs[i:i + MAX_SOURCES]), 0, accumulate=i > 0)
    return out


def upsample_labels_forward(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """``bilinear(x, size).argmax(1)`` as N x H x W labels (``constants.labels_dtype``); checked in ops.py."""
    check_activation(x, "x")
    check(len(size) == 2 and size[0] > 0 and size[1] > 0, lambda: f"size: expected two positive ints, got {size}")
    n, c, h, w = x.shape
    ho, wo = size[0], size[1]
    out = torch.empty((n, ho, wo), dtype=labels_dtype(c), device=x.device)
    if interpreter_tracing(x):
        return out
    block_w, block_c = tiles(c, wo)
    check(n * ho < 2**31, lambda: f"size: at most 2**31 - 1 output rows (N * H), got {n * ho}")
    check(triton.cdiv(wo, block_w) <= 65535, lambda: f"size: output width {wo} is more than this kernel tiles")
    launchable(_upsample_labels_kernel)[(n * ho, triton.cdiv(wo, block_w))](
        out, *source_args(x, ho, wo), c, ho, wo, bool(h == ho and w == wo),
        SRC_NHWC=is_nhwc(x), IDX64=needs_int64(out, x), BLOCK_W=block_w, BLOCK_C=block_c, num_warps=TILE_WARPS,
    )
    return out


# The ops (schemas from the type hints); the *_forward functions stay plain functions for eager calls.
upsample_concat_triton = triton_op("dfanet::upsample_concat_triton", mutates_args=())(upsample_concat_forward)
upsample_add_triton = triton_op("dfanet::upsample_add_triton", mutates_args=())(upsample_add_forward)
upsample_labels_triton = triton_op("dfanet::upsample_labels_triton", mutates_args=())(upsample_labels_forward)
