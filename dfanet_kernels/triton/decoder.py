"""DFANet's whole decoder head in one Triton launch (``dfanet::decoder_head_triton``): the quarter-resolution logits
from the low-level maps (the backbones' enc2 outputs) and the high-level maps (their FC-attention outputs), on
BN-folded 1x1 weights. ``reference.decoder_head`` is the specification::

    low    = relu(fuse(sum_i resize(relu(low_reduce_i(low_i)))))
    merged = low + sum_j resize(relu(high_reduce_j(high_j)))
    logits = classifier(merged)                                   # at low_maps[0]'s H x W

Before it the GPU backends ran this as ~15 launches (six reduce convs and the fuse conv, each cuDNN + a ReLU, two
upsample_add, the classifier), every reduced map written and read back.

A program owns a BLOCK_H x BLOCK_W tile of output pixels of one image (8 x 8 on a GPU), flattened to BLOCK_P
pixels, with all decoder channels and all classes. The ReLU comes before the resize, so a map cannot be resized
first and convolved after; each map takes one of three paths (``plan``, fixed per launch and slot at compile time):

- at the output size: relu(conv) at the tile's own pixels;
- region: relu(conv) once on the tile's source region (the RH x RW source pixels from the tile's first taps that
  hold all its taps: 4 x 4 for DFANet's high maps, 8 x 8 for its 1/2- and 1/4-size low maps), then the blend as
  one more ``tl.dot``, [BLOCK_P, region] bilinear weights (up to four non-zeros a row, where the pixel's taps are)
  x [region, D], in fp32;
- taps (where the region would cost more MACs or not fit, e.g. maps much larger than the output): relu(conv) at
  each of the four bilinear taps of every pixel, blended with upsample.py's arithmetic (``_common.bilinear_axis``,
  the reference's order of operations).

Each relu(conv) is a loop of ``tl.dot``s over BLOCK_CI-channel chunks read straight from the map (any layout).
Nothing is shared between programs: the halo of a region is recomputed by its neighbours. At DFANet A's shapes
(1024 x 1024 input: enc2 48 channels at 256^2, 128^2 and 64^2; attention 192 channels at 32^2, 16^2, 8^2; 32
decoder channels; 19 classes) that is about 16.5 kMAC a logit pixel, 1.1 GMAC at batch 1 (the unfused decoder:
0.25 GMAC; four taps everywhere would be 89 kMAC, 5.8 GMAC), 0.37 GMAC of it the blends in fp32. Not timed (no GPU
here). A non-finite reduced value in a region makes the whole tile's blend NaN (0 x inf), where the reference's
blend keeps it to the pixels that read it.

The low sum stays in registers (fp32) into the fuse conv, the merged map into the classifier, which runs BLOCK_K
classes a pass; the logits are written once, NHWC. Precision: fp32 accumulation throughout; what feeds a conv's
tl.dot (the inputs, the low sum, the merged map; the blends take fp32) is rounded to the weight dtype first, as the
unfused fp16/bf16 ops round their stored outputs; the logits are rounded once.

Limits (checked, ValueError naming the argument): 1 to MAX_LOW low maps, 0 to MAX_HIGH high maps, at most
MAX_WIDTH decoder channels (the accumulators are [BLOCK_P, D] register tiles). Any channel counts of the maps, any
map sizes (smaller or larger than the output), any number of classes, inputs in any memory layout.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ._common import (
    DTYPES,
    INTERPRET,
    accumulate_dot,
    bilinear_axis,
    empty_nhwc,
    interpreter_dot_fp32,
    interpreter_tracing,
    is_nhwc,
    launchable,
    needs_int64,
    pixel_offsets,
    relu,
    static,
    widen,
)

# ---------------------------------------------------------------------------------------------------------------
# Tuning constants (none timed: no GPU here)
# ---------------------------------------------------------------------------------------------------------------
MAX_LOW = 4  # low-level maps (DFANet: 3)
MAX_HIGH = 4  # high-level maps (DFANet: 3)
MAX_WIDTH = 128  # decoder channels D (DFANet: 32): [BLOCK_P, D] fp32 accumulators, two or three live at once
# Output pixels a program: a tile TILE_W wide (narrower on narrow maps) and TILE_PIXELS / width rows (fewer on
# short maps), at least 16 pixels (tl.dot's minimum). 8 x 8 on a GPU: the taps of neighbouring pixels, in both
# directions, are the same source pixels (L1/L2 hits). The interpreter prefers few, large programs.
_TILE_W = 8 if not INTERPRET else 128
_TILE_PIXELS = 64 if not INTERPRET else 1024
# The most source pixels a program's region may hold (``plan``): DFANet's high maps need 4 x 4 at 8 x 8 tiles, its
# low maps at 1/2 and 1/4 size 8 x 8.
_MAX_REGION = 64 if not INTERPRET else 4096
_REGION = "auto"  # "auto" (by MACs), "always" (where it fits _MAX_REGION) or "never": the tests force both
_MAX_BLOCK_CI = 64 if not INTERPRET else 256  # input-channel chunk of the reduce convs' K loop
_MAX_BLOCK_K = 32 if not INTERPRET else 64  # classes per classifier pass (DFANet's 19 in one)
# Compiled for sm_90 (Triton 3.9, 2026-12) at DFANet's shapes (8 x 8 tiles, 3 + 3 maps, the first at the output size,
# C = 48 / 192, D = 32, K = 19): 4 warps ran at 255 registers and spilled 200-304 B a thread (224 B with 3 stages);
# 8 warps, 1 stage: 128 (fp16/bf16) or 208 (fp32) registers, no spills. The channel loops are short (1-3 chunks):
# nothing to pipeline.
_WARPS = 8
_STAGES = 1


# ---------------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------------
@triton.jit
def _conv_relu_at(src_ptr, at, mask_p, C, s_c, w_ptr, sw_o, sw_i, b_ptr, s_b, D,
                  HAS_BIAS: tl.constexpr, NHWC: tl.constexpr, IDX64: tl.constexpr, IS_FP32: tl.constexpr,
                  DOT_FP32: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_D: tl.constexpr):
    """fp32 [BLOCK_P, BLOCK_D] ``relu(x @ w^T + b)`` at the pixels whose element offsets are ``at`` ([BLOCK_P]);
    ``w`` is D x C (a 1x1 conv weight, strides sw_o, sw_i). Padded channels and masked pixels give 0."""
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    acc = tl.zeros([BLOCK_P, BLOCK_D], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_CI):
        offs_c = c0 + tl.arange(0, BLOCK_CI)
        mask_c = offs_c < C
        if NHWC:
            cols = offs_c[None, :]
        else:
            cols = widen(offs_c, IDX64)[None, :] * s_c
        x = tl.load(src_ptr + at[:, None] + cols, mask=mask_p[:, None] & mask_c[None, :], other=0.0)
        w = tl.load(w_ptr + offs_c[:, None] * sw_i + offs_d[None, :] * sw_o, mask=mask_c[:, None] & mask_d[None, :],
                    other=0.0)
        acc = accumulate_dot(acc, x, w, IS_FP32, DOT_FP32)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_d * s_b, mask=mask_d, other=0.0).to(tl.float32)[None, :]
    return relu(acc)


@triton.jit
def _reduced(src_ptr, n, oh, ow, tile_h0, tile_w0, mask_p, C, H, W, s_n, s_c, s_h, s_w, scale_h, scale_w,
             w_ptr, sw_o, sw_i, b_ptr, s_b, D,
             PLAN: tl.constexpr, HAS_BIAS: tl.constexpr, NHWC: tl.constexpr, IDX64: tl.constexpr,
             IS_FP32: tl.constexpr, DOT_FP32: tl.constexpr,
             BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_D: tl.constexpr):
    """fp32 [BLOCK_P, BLOCK_D]: ``resize(relu(conv(x)))`` at output pixels (n, oh, ow) (n a scalar) of the tile whose
    first pixel is (tile_h0, tile_w0). How (``PLAN``, see ``plan``): one tap at the output size (mode 1); relu(conv)
    at each of the four bilinear taps, blended as upsample.py blends (mode 0); or relu(conv) once on the tile's source
    region, RH x RW pixels from the tile's first taps, blended by one tl.dot with the [pixels, region] matrix of the
    bilinear weights (mode 2)."""
    if (PLAN & 3) == 1:
        at = pixel_offsets(n, oh, ow, H, W, C, s_n, s_h, s_w, NHWC, IDX64)
        val = _conv_relu_at(src_ptr, at, mask_p, C, s_c, w_ptr, sw_o, sw_i, b_ptr, s_b, D, HAS_BIAS, NHWC, IDX64,
                            IS_FP32, DOT_FP32, BLOCK_P, BLOCK_CI, BLOCK_D)
    elif (PLAN & 3) == 2:
        RH: tl.constexpr = 1 << ((PLAN >> 2) & 31)
        RW: tl.constexpr = 1 << ((PLAN >> 7) & 31)
        # The tile's taps are monotone in oh and ow: its first pixel's lower taps are the region's origin, and the
        # launcher sized the region to hold the last pixel's upper taps.
        rh0, _, _, _ = bilinear_axis(tile_h0, scale_h, H)
        rw0, _, _, _ = bilinear_axis(tile_w0, scale_w, W)
        offs_r = tl.arange(0, RH * RW)
        rh = rh0 + offs_r // RW
        rw = rw0 + offs_r % RW
        at = pixel_offsets(n, rh, rw, H, W, C, s_n, s_h, s_w, NHWC, IDX64)
        reduced = _conv_relu_at(src_ptr, at, (rh < H) & (rw < W), C, s_c, w_ptr, sw_o, sw_i, b_ptr, s_b, D,
                                HAS_BIAS, NHWC, IDX64, IS_FP32, DOT_FP32, RH * RW, BLOCK_CI, BLOCK_D)
        h0, h1, lh0, lh1 = bilinear_axis(oh, scale_h, H)
        w0, w1, lw0, lw1 = bilinear_axis(ow, scale_w, W)
        r0 = (h0 - rh0) * RW - rw0  # region index of (h0, w) is r0 + w
        r1 = (h1 - rh0) * RW - rw0
        cols = offs_r[None, :]
        # Taps that coincide (at the map's edges) add their weights, as the reference's blend adds their terms.
        blend = tl.where(cols == (r0 + w0)[:, None], (lh0 * lw0)[:, None], 0.0)
        blend += tl.where(cols == (r0 + w1)[:, None], (lh0 * lw1)[:, None], 0.0)
        blend += tl.where(cols == (r1 + w0)[:, None], (lh1 * lw0)[:, None], 0.0)
        blend += tl.where(cols == (r1 + w1)[:, None], (lh1 * lw1)[:, None], 0.0)
        val = tl.dot(blend, reduced, input_precision="ieee")
    else:
        h0, h1, lh0, lh1 = bilinear_axis(oh, scale_h, H)
        w0, w1, lw0, lw1 = bilinear_axis(ow, scale_w, W)
        lh0, lh1, lw0, lw1 = lh0[:, None], lh1[:, None], lw0[:, None], lw1[:, None]
        # One tap's [BLOCK_P, BLOCK_D] result at a time is blended in, in the reference's order:
        # lh0 * (lw0 * a + lw1 * b) + lh1 * (lw0 * c + lw1 * d).
        at = pixel_offsets(n, h0, w0, H, W, C, s_n, s_h, s_w, NHWC, IDX64)
        row = lw0 * _conv_relu_at(src_ptr, at, mask_p, C, s_c, w_ptr, sw_o, sw_i, b_ptr, s_b, D, HAS_BIAS, NHWC,
                                  IDX64, IS_FP32, DOT_FP32, BLOCK_P, BLOCK_CI, BLOCK_D)
        at = pixel_offsets(n, h0, w1, H, W, C, s_n, s_h, s_w, NHWC, IDX64)
        row += lw1 * _conv_relu_at(src_ptr, at, mask_p, C, s_c, w_ptr, sw_o, sw_i, b_ptr, s_b, D, HAS_BIAS, NHWC,
                                   IDX64, IS_FP32, DOT_FP32, BLOCK_P, BLOCK_CI, BLOCK_D)
        val = lh0 * row
        at = pixel_offsets(n, h1, w0, H, W, C, s_n, s_h, s_w, NHWC, IDX64)
        row = lw0 * _conv_relu_at(src_ptr, at, mask_p, C, s_c, w_ptr, sw_o, sw_i, b_ptr, s_b, D, HAS_BIAS, NHWC,
                                  IDX64, IS_FP32, DOT_FP32, BLOCK_P, BLOCK_CI, BLOCK_D)
        at = pixel_offsets(n, h1, w1, H, W, C, s_n, s_h, s_w, NHWC, IDX64)
        row += lw1 * _conv_relu_at(src_ptr, at, mask_p, C, s_c, w_ptr, sw_o, sw_i, b_ptr, s_b, D, HAS_BIAS, NHWC,
                                   IDX64, IS_FP32, DOT_FP32, BLOCK_P, BLOCK_CI, BLOCK_D)
        val += lh1 * row
    return val


# Per map slot: x, C, H, W, s_n, s_c, s_h, s_w, scale_h, scale_w, w, sw_o, sw_i, b, s_b. Only the channel counts
# (which set the NHWC vector width) and the weights' strides are specialised; sizes, map strides and scales are not.
_SLOT = ("x{}", "C{}", "H{}", "W{}", "sn{}", "sc{}", "sh{}", "sw{}", "fh{}", "fw{}", "w{}", "swo{}", "swi{}", "b{}",
         "sb{}")
_UNSPECIALISED = [f"{kind}{name.format(i)}" for kind in ("l", "h") for i in range(4)
                  for name in ("H{}", "W{}", "sn{}", "sc{}", "sh{}", "sw{}")]


@triton.jit(do_not_specialize=["HO", "WO"] + _UNSPECIALISED)
def _decoder_head_kernel(
    out_ptr,  # N x K x HO x WO logits, dense NHWC
    HO, WO, D, K,
    lx0, lC0, lH0, lW0, lsn0, lsc0, lsh0, lsw0, lfh0, lfw0, lw0, lswo0, lswi0, lb0, lsb0,
    lx1, lC1, lH1, lW1, lsn1, lsc1, lsh1, lsw1, lfh1, lfw1, lw1, lswo1, lswi1, lb1, lsb1,
    lx2, lC2, lH2, lW2, lsn2, lsc2, lsh2, lsw2, lfh2, lfw2, lw2, lswo2, lswi2, lb2, lsb2,
    lx3, lC3, lH3, lW3, lsn3, lsc3, lsh3, lsw3, lfh3, lfw3, lw3, lswo3, lswi3, lb3, lsb3,
    hx0, hC0, hH0, hW0, hsn0, hsc0, hsh0, hsw0, hfh0, hfw0, hw0, hswo0, hswi0, hb0, hsb0,
    hx1, hC1, hH1, hW1, hsn1, hsc1, hsh1, hsw1, hfh1, hfw1, hw1, hswo1, hswi1, hb1, hsb1,
    hx2, hC2, hH2, hW2, hsn2, hsc2, hsh2, hsw2, hfh2, hfw2, hw2, hswo2, hswi2, hb2, hsb2,
    hx3, hC3, hH3, hW3, hsn3, hsc3, hsh3, hsw3, hfh3, hfw3, hw3, hswo3, hswi3, hb3, hsb3,
    fuse_w, sfw_o, sfw_i, fuse_b, sfb,
    cls_w, scw_o, scw_i, cls_b, scb,
    # Compile-time: the map counts, per slot how its taps are computed (12 bits a slot, see ``plan``) and whether
    # it has a bias (bit i). DFANet compiles one variant; as run-time flags every slot's code for every mode would
    # be in every kernel.
    NUM_LOW: tl.constexpr, NUM_HIGH: tl.constexpr, LOW_PLAN: tl.constexpr, HIGH_PLAN: tl.constexpr,
    LOW_BIAS: tl.constexpr, HIGH_BIAS: tl.constexpr, FUSE_BIAS: tl.constexpr, CLS_BIAS: tl.constexpr,
    SRC_NHWC: tl.constexpr,  # every map dense channels_last: offsets from C alone
    IDX64: tl.constexpr, IS_FP32: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_P: tl.constexpr,  # BLOCK_P = BLOCK_H * BLOCK_W
    BLOCK_CI: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # A BLOCK_H x BLOCK_W tile of one image, flattened to BLOCK_P pixels (the divisions are by constexpr powers of
    # two: shifts).
    row_tiles = tl.cdiv(HO, BLOCK_H)
    n = tl.program_id(0) // row_tiles
    offs_p = tl.arange(0, BLOCK_P)
    tile_h0 = (tl.program_id(0) - n * row_tiles) * BLOCK_H
    tile_w0 = tl.program_id(1) * BLOCK_W
    oh = tile_h0 + offs_p // BLOCK_W
    ow = tile_w0 + offs_p % BLOCK_W
    mask_p = (oh < HO) & (ow < WO)

    # The low-level sum, then the fuse conv + ReLU.
    low = _reduced(lx0, n, oh, ow, tile_h0, tile_w0, mask_p, lC0, lH0, lW0, lsn0, lsc0, lsh0, lsw0, lfh0, lfw0,
                   lw0, lswo0, lswi0, lb0, lsb0, D, LOW_PLAN & 4095, LOW_BIAS & 1,
                   SRC_NHWC, IDX64, IS_FP32, DOT_FP32, BLOCK_P, BLOCK_CI, BLOCK_D)
    if NUM_LOW > 1:
        low += _reduced(lx1, n, oh, ow, tile_h0, tile_w0, mask_p, lC1, lH1, lW1, lsn1, lsc1, lsh1, lsw1, lfh1, lfw1,
                        lw1, lswo1, lswi1, lb1, lsb1, D, (LOW_PLAN >> 12) & 4095, (LOW_BIAS >> 1) & 1,
                        SRC_NHWC, IDX64, IS_FP32, DOT_FP32, BLOCK_P, BLOCK_CI, BLOCK_D)
    if NUM_LOW > 2:
        low += _reduced(lx2, n, oh, ow, tile_h0, tile_w0, mask_p, lC2, lH2, lW2, lsn2, lsc2, lsh2, lsw2, lfh2, lfw2,
                        lw2, lswo2, lswi2, lb2, lsb2, D, (LOW_PLAN >> 24) & 4095, (LOW_BIAS >> 2) & 1,
                        SRC_NHWC, IDX64, IS_FP32, DOT_FP32, BLOCK_P, BLOCK_CI, BLOCK_D)
    if NUM_LOW > 3:
        low += _reduced(lx3, n, oh, ow, tile_h0, tile_w0, mask_p, lC3, lH3, lW3, lsn3, lsc3, lsh3, lsw3, lfh3, lfw3,
                        lw3, lswo3, lswi3, lb3, lsb3, D, (LOW_PLAN >> 36) & 4095, (LOW_BIAS >> 3) & 1,
                        SRC_NHWC, IDX64, IS_FP32, DOT_FP32, BLOCK_P, BLOCK_CI, BLOCK_D)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    wf = tl.load(fuse_w + offs_d[:, None] * sfw_i + offs_d[None, :] * sfw_o, mask=mask_d[:, None] & mask_d[None, :],
                 other=0.0)
    merged = accumulate_dot(tl.zeros([BLOCK_P, BLOCK_D], dtype=tl.float32), low, wf, IS_FP32, DOT_FP32)
    if FUSE_BIAS:
        merged += tl.load(fuse_b + offs_d * sfb, mask=mask_d, other=0.0).to(tl.float32)[None, :]
    merged = relu(merged)

    # The high-level maps added at their taps.
    if NUM_HIGH > 0:
        merged += _reduced(hx0, n, oh, ow, tile_h0, tile_w0, mask_p, hC0, hH0, hW0, hsn0, hsc0, hsh0, hsw0, hfh0, hfw0,
                           hw0, hswo0, hswi0, hb0, hsb0, D, HIGH_PLAN & 4095, HIGH_BIAS & 1,
                           SRC_NHWC, IDX64, IS_FP32, DOT_FP32, BLOCK_P, BLOCK_CI, BLOCK_D)
    if NUM_HIGH > 1:
        merged += _reduced(hx1, n, oh, ow, tile_h0, tile_w0, mask_p, hC1, hH1, hW1, hsn1, hsc1, hsh1, hsw1, hfh1, hfw1,
                           hw1, hswo1, hswi1, hb1, hsb1, D, (HIGH_PLAN >> 12) & 4095, (HIGH_BIAS >> 1) & 1,
                           SRC_NHWC, IDX64, IS_FP32, DOT_FP32, BLOCK_P, BLOCK_CI, BLOCK_D)
    if NUM_HIGH > 2:
        merged += _reduced(hx2, n, oh, ow, tile_h0, tile_w0, mask_p, hC2, hH2, hW2, hsn2, hsc2, hsh2, hsw2, hfh2, hfw2,
                           hw2, hswo2, hswi2, hb2, hsb2, D, (HIGH_PLAN >> 24) & 4095, (HIGH_BIAS >> 2) & 1,
                           SRC_NHWC, IDX64, IS_FP32, DOT_FP32, BLOCK_P, BLOCK_CI, BLOCK_D)
    if NUM_HIGH > 3:
        merged += _reduced(hx3, n, oh, ow, tile_h0, tile_w0, mask_p, hC3, hH3, hW3, hsn3, hsc3, hsh3, hsw3, hfh3, hfw3,
                           hw3, hswo3, hswi3, hb3, hsb3, D, (HIGH_PLAN >> 36) & 4095, (HIGH_BIAS >> 3) & 1,
                           SRC_NHWC, IDX64, IS_FP32, DOT_FP32, BLOCK_P, BLOCK_CI, BLOCK_D)

    # The classifier, BLOCK_K classes a pass; each logit written once.
    o_row = out_ptr + (((widen(n, IDX64) * HO + oh) * WO + ow) * K)[:, None]
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        wc = tl.load(cls_w + offs_d[:, None] * scw_i + offs_k[None, :] * scw_o, mask=mask_d[:, None] & mask_k[None, :],
                     other=0.0)
        logits = accumulate_dot(tl.zeros([BLOCK_P, BLOCK_K], dtype=tl.float32), merged, wc, IS_FP32, DOT_FP32)
        if CLS_BIAS:
            logits += tl.load(cls_b + offs_k * scb, mask=mask_k, other=0.0).to(tl.float32)[None, :]
        tl.store(o_row + offs_k[None, :], logits.to(out_ptr.dtype.element_ty), mask=mask_p[:, None] & mask_k[None, :])


# ---------------------------------------------------------------------------------------------------------------
# Host launcher and registration
# ---------------------------------------------------------------------------------------------------------------
def _require(cond, message, error=ValueError) -> None:
    """``cond`` or raise ``error`` (ValueError or TypeError) with ``message()``; a plain True costs nothing, a
    SymBool (under tracing) goes through torch._check_value / _check_type."""
    if cond is True:
        return
    (torch._check_type if error is TypeError else torch._check_value)(cond, message)


def _check_map(t, name: str, first: torch.Tensor | None) -> None:
    _require(isinstance(t, torch.Tensor), lambda: f"{name}: expected a tensor, got {type(t).__name__}", TypeError)
    _require(t.dim() == 4, lambda: f"{name}: expected a 4-D N x C x H x W tensor, got {t.dim()}-D")
    _require(t.numel() > 0, lambda: f"{name}: expected a non-empty tensor, got shape {tuple(t.shape)}")
    _require(t.dtype in DTYPES, lambda: f"{name}: the triton backend takes float32/float16/bfloat16, got {t.dtype}",
             TypeError)
    _require(t.device.type in ("cuda", "meta") or (INTERPRET and t.device.type == "cpu"),
             lambda: f"{name}: the triton backend takes CUDA tensors (CPU only under TRITON_INTERPRET=1), "
                     f"got {t.device}")
    if first is not None:
        _require(t.device == first.device, lambda: f"{name}: expected device {first.device}, got {t.device}")
        _require(t.dtype == first.dtype, lambda: f"{name}: expected dtype {first.dtype}, got {t.dtype}", TypeError)
        _require(t.shape[0] == first.shape[0], lambda: f"{name}: expected batch {first.shape[0]}, got {t.shape[0]}")


def _check_param(t, name: str, shape: tuple, first: torch.Tensor, what: str) -> None:
    """A weight or bias: a tensor of exactly ``shape`` (described by ``what``) on ``first``'s device and dtype."""
    _require(isinstance(t, torch.Tensor), lambda: f"{name}: expected a tensor, got {type(t).__name__}", TypeError)
    _require(tuple(t.shape) == shape, lambda: f"{name}: expected shape {shape} ({what}), got {tuple(t.shape)}")
    _require(t.device == first.device, lambda: f"{name}: expected device {first.device}, got {t.device}")
    _require(t.dtype == first.dtype, lambda: f"{name}: expected dtype {first.dtype}, got {t.dtype}", TypeError)


def _check_list(values, name: str, low: int, high: int) -> None:
    _require(isinstance(values, (list, tuple)), lambda: f"{name}: expected a list, got {type(values).__name__}",
             TypeError)
    _require(low <= len(values) <= high, lambda: f"{name}: expected {low} to {high} tensors, got {len(values)}")


def _check(low_maps, high_maps, low_weights, low_biases, fuse_weight, fuse_bias, high_weights, high_biases,
           classifier_weight, classifier_bias) -> tuple[int, int]:
    """Every argument (ValueError for shapes and counts, TypeError for types and dtypes, naming it); returns
    (D, K): the decoder channels and the classes."""
    _check_list(low_maps, "low_maps", 1, MAX_LOW)
    _check_list(high_maps, "high_maps", 0, MAX_HIGH)
    first = low_maps[0]
    for kind, maps in (("low", low_maps), ("high", high_maps)):
        for i, t in enumerate(maps):
            _check_map(t, f"{kind}_maps[{i}]", None if t is first else first)
    for kind, maps, weights, biases in (("low", low_maps, low_weights, low_biases),
                                        ("high", high_maps, high_weights, high_biases)):
        _check_list(weights, f"{kind}_weights", len(maps), len(maps))
        _check_list(biases, f"{kind}_biases", len(maps), len(maps))
    w0 = low_weights[0]
    _require(isinstance(w0, torch.Tensor), lambda: f"low_weights[0]: expected a tensor, got {type(w0).__name__}",
             TypeError)
    _require(w0.dim() == 4, lambda: f"low_weights[0]: expected a 4-D D x C x 1 x 1 conv weight, got {w0.dim()}-D")
    d = w0.shape[0]
    _require(0 < d <= MAX_WIDTH, lambda: f"low_weights[0]: at most {MAX_WIDTH} decoder channels (D), got {d}")
    for kind, maps, weights, biases in (("low", low_maps, low_weights, low_biases),
                                        ("high", high_maps, high_weights, high_biases)):
        for i, t in enumerate(maps):
            c = t.shape[1]
            _check_param(weights[i], f"{kind}_weights[{i}]", (d, c, 1, 1), first,
                         f"D x C x 1 x 1: D = {d} decoder channels, C = {c} channels of {kind}_maps[{i}]")
            if biases[i] is not None:
                _check_param(biases[i], f"{kind}_biases[{i}]", (d,), first, f"D = {d}")
    _check_param(fuse_weight, "fuse_weight", (d, d, 1, 1), first, f"D x D x 1 x 1, D = {d}")
    if fuse_bias is not None:
        _check_param(fuse_bias, "fuse_bias", (d,), first, f"D = {d}")
    _require(isinstance(classifier_weight, torch.Tensor) and classifier_weight.dim() == 4,
             lambda: "classifier_weight: expected a 4-D K x D x 1 x 1 conv weight")
    k = classifier_weight.shape[0]
    _require(k > 0, lambda: "classifier_weight: expected at least one class")
    _check_param(classifier_weight, "classifier_weight", (k, d, 1, 1), first, f"K x D x 1 x 1, D = {d}")
    if classifier_bias is not None:
        _check_param(classifier_bias, "classifier_bias", (k,), first, f"K = {k} classes")
    return static(d), static(k)


def _slot_args(t: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, ho: int, wo: int) -> list:
    h, w = t.shape[2], t.shape[3]
    return [t, t.shape[1], h, w, *t.stride(), static(h) / static(ho), static(w) / static(wo),
            weight, weight.stride(0), weight.stride(1),
            weight if bias is None else bias, 0 if bias is None else bias.stride(0)]  # no bias: never read


def tile(ho: int, wo: int) -> tuple[int, int]:
    """(BLOCK_W, BLOCK_H) of an HO x WO output: powers of two, BLOCK_W <= _TILE_W, at least 16 pixels."""
    block_w = min(_TILE_W, triton.next_power_of_2(static(wo)))
    block_h = min(triton.next_power_of_2(static(ho)), max(1, _TILE_PIXELS // block_w))
    while block_w * block_h < 16:
        block_w *= 2
    return block_w, block_h


def plan(t: torch.Tensor, ho: int, wo: int, block_h: int, block_w: int) -> int:
    """How a program computes map ``t``'s resized relu(conv) on its BLOCK_H x BLOCK_W output tile, as the 12-bit
    code the kernel reads: mode (bits 0-1) and, for mode 2, log2 of the region's rows (bits 2-6) and columns (7-11).

    1: ``t`` is at the output size (one tap). 2 (region): relu(conv) once on every source pixel the tile's taps
    read, then the blend as one more tl.dot; 0 (taps): relu(conv) at each pixel's four taps. Along an axis scaled
    by s = in / out, a tile's taps span at most ceil(s * (block - 1)) + 2 source pixels (the lower taps move by
    at most s a pixel, and fp32 rounding of s cannot add another one beyond the + 3), and no more than the map
    holds. Region when its MACs, R * (C + P) (the conv on R region pixels, then the [P, R] blend), are fewer than
    the taps' 4 * P * C and R is at most _MAX_REGION (its [P, R] blend matrix is a register tile); ``_REGION`` forces
    either (tests)."""
    c, h, w = (static(v) for v in t.shape[1:])
    if h == ho and w == wo:
        return 1
    rh = triton.next_power_of_2(min(math.ceil(h / ho * (block_h - 1)) + 3, h))
    rw = triton.next_power_of_2(min(math.ceil(w / wo * (block_w - 1)) + 3, w))
    while rh * rw < 16:  # tl.dot's minimum K
        rw *= 2
    r, p = rh * rw, block_h * block_w
    if r > _MAX_REGION or _REGION == "never" or (_REGION == "auto" and r * (c + p) >= 4 * p * c):
        return 0
    return 2 | (rh.bit_length() - 1) << 2 | (rw.bit_length() - 1) << 7


def _mask(flags) -> int:
    return sum(1 << i for i, f in enumerate(flags) if f)


def _codes(plans) -> int:
    return sum(code << 12 * i for i, code in enumerate(plans))


def decoder_head_forward(
    low_maps: list[torch.Tensor],
    high_maps: list[torch.Tensor],
    low_weights: list[torch.Tensor],
    low_biases: list[torch.Tensor | None],
    fuse_weight: torch.Tensor,
    fuse_bias: torch.Tensor | None,
    high_weights: list[torch.Tensor],
    high_biases: list[torch.Tensor | None],
    classifier_weight: torch.Tensor,
    classifier_bias: torch.Tensor | None,
) -> torch.Tensor:
    """``reference.decoder_head`` in one launch: N x K x H x W logits at low_maps[0]'s size, NHWC."""
    d, k = _check(low_maps, high_maps, low_weights, low_biases, fuse_weight, fuse_bias, high_weights, high_biases,
                  classifier_weight, classifier_bias)
    first = low_maps[0]
    n, _, ho, wo = first.shape
    out = empty_nhwc(first, (n, k, ho, wo))
    if interpreter_tracing(first):
        return out
    maps = list(low_maps) + list(high_maps)
    args = []
    for slots, weights, biases in ((list(low_maps), list(low_weights), list(low_biases)),
                                   (list(high_maps), list(high_weights), list(high_biases))):
        for i in range(4):  # unused slots repeat low slot 0 and are never read
            j = i if i < len(slots) else None
            args += (_slot_args(slots[j], weights[j], biases[j], ho, wo) if j is not None
                     else _slot_args(first, low_weights[0], low_biases[0], ho, wo))
    block_w, block_h = tile(ho, wo)
    plans = [plan(t, ho, wo, block_h, block_w) for t in maps]
    block_ci = max(16, min(triton.next_power_of_2(max(static(t.shape[1]) for t in maps)), _MAX_BLOCK_CI))
    block_d = max(16, triton.next_power_of_2(d))
    block_k = max(16, min(triton.next_power_of_2(k), _MAX_BLOCK_K))
    _require(n * ho < 2**31, lambda: f"low_maps[0]: at most 2**31 - 1 output rows (N * H), got {n * ho}")
    _require(triton.cdiv(wo, block_w) <= 65535, lambda: f"low_maps[0]: width {wo} is more than this kernel tiles")
    nl = len(low_maps)
    launchable(_decoder_head_kernel)[(n * triton.cdiv(ho, block_h), triton.cdiv(wo, block_w))](
        out, ho, wo, d, k, *args,
        fuse_weight, fuse_weight.stride(0), fuse_weight.stride(1),
        fuse_weight if fuse_bias is None else fuse_bias, 0 if fuse_bias is None else fuse_bias.stride(0),
        classifier_weight, classifier_weight.stride(0), classifier_weight.stride(1),
        classifier_weight if classifier_bias is None else classifier_bias,
        0 if classifier_bias is None else classifier_bias.stride(0),
        NUM_LOW=nl, NUM_HIGH=len(high_maps), LOW_PLAN=_codes(plans[:nl]), HIGH_PLAN=_codes(plans[nl:]),
        LOW_BIAS=_mask(b is not None for b in low_biases), HIGH_BIAS=_mask(b is not None for b in high_biases),
        FUSE_BIAS=fuse_bias is not None, CLS_BIAS=classifier_bias is not None,
        SRC_NHWC=all(is_nhwc(t) for t in maps), IDX64=needs_int64(out, *maps),
        IS_FP32=first.dtype == torch.float32, DOT_FP32=interpreter_dot_fp32(first.dtype),
        BLOCK_H=block_h, BLOCK_W=block_w, BLOCK_P=block_h * block_w, BLOCK_CI=block_ci, BLOCK_D=block_d,
        BLOCK_K=block_k, num_warps=_WARPS, num_stages=_STAGES,
    )
    return out


# The op (schema from the type hints); decoder_head_forward stays a plain function for eager calls.
decoder_head_triton = triton_op("dfanet::decoder_head_triton", mutates_args=())(decoder_head_forward)
