"""A whole Xception block in one Triton launch (``dfanet::xception_block_triton``): the counterpart of
csrc/cuda/xception_block.cu, ``sep3(sep2(sep1(x))) + shortcut(x)`` with ``sep_i = pw_i(dw3x3_i(relu(.))) + pb_i``.

A program owns TILE x TILE output pixels of one image (all output channels) and, like the CUDA kernel, recomputes
the halos instead of exchanging them: y1 on the tile + 2 pixels ((TILE + 4)^2 region pixels), y2 on the tile + 1,
each with the ReLU of the next conv applied by its producer (relu(0) = 0 keeps the zero padding outside the map).
A depthwise 3x3 needs each region pixel's neighbours, which a Triton tile in registers cannot give (no indexing
across a tensor's lanes), so y1 and y2 go to a per-program scratch region of global memory, fp32: 24 KB a program
at DFANet's mid widths up to 16, written and read back by the same program (from L2 on a GPU, never a full map),
with ``tl.debug_barrier()`` (bar.sync: the block's global writes are visible to its threads after it) between the
stages. The launch is persistent, one program per SM looping over the tiles, so the scratch is sized by the GPU,
not the map.

The GEMMs are ``tl.dot`` over (region pixels, flattened and padded to a power of two) x (channels, padded to 16):
sep1's K is the input channels, read in place from up to MAX_SOURCES sources (each bilinearly resized to the
block's H x W as upsample.py computes it: the concatenation is never written) with the ReLU and depthwise 3x3
applied on the way; sep2's and sep3's K is the mid channels, their depthwise computed from the scratch. The
projection shortcut is one more K range of sep3's GEMM (the input at the strided output pixels); the identity
shortcut is added from the input as the output is stored. Output channels go in BLOCK_N passes, each recomputing
sep3's depthwise (9 FMAs a value) instead of holding a 192-wide accumulator.

Not taken (the launcher composes upsample_concat + three dwsep_conv launches + a cuDNN 1x1 instead, as the CUDA
glue does): mid widths past MAX_MID (y1's accumulator would be too wide). More than MAX_SOURCES inputs are
concatenated first, then read by the block kernel as one.

Precision: y1 and y2 stay in fp32 for every dtype; what feeds a tl.dot is rounded to the weight dtype
(fp16/bf16 tensor cores), as dwsep_conv does; the output is rounded once.
"""

import functools

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from .. import reference
from ._common import (
    INTERPRET,
    accumulate_dot,
    bilinear_axis,
    bilinear_blend,
    check,
    check_activation,
    check_same,
    empty_nhwc,
    interpreter_dot_fp32,
    interpreter_tracing,
    is_nhwc,
    launchable,
    needs_int64,
    pixel_offsets,
    relu,
    source_args,
    static,
    widen,
)
from .dwsep_conv import dwsep_conv_forward
from .upsample import MAX_SOURCES, upsample_concat_forward

# ---------------------------------------------------------------------------------------------------------------
# Tuning constants (untimed: no GPU was at hand when this was written, 2026-12; the compile test records the
# registers and spills of these choices)
# ---------------------------------------------------------------------------------------------------------------
# Output tile edge. 8: y1 is computed on 12 x 12 = 144 pixels padded to 256 rows of the GEMM, y2 on 100 padded to
# 128, the output on 64 (no padding) — sep3, 4x wider than the mids in DFANet, wastes nothing. 4 would waste less
# in sep1 (64 rows, no padding) but recompute 4x the output's pixels in y1.
TILE = 8
# Widest C1, C2 the kernel takes: y1's accumulator is (TILE + 4)^2 padded x C1 padded fp32 values (64 a thread
# at 8 warps for 64 channels). DFANet's mids are 8..48; the CUDA kernel's limit is the same.
MAX_MID = 64
# K steps of the GEMMs (tl.dot needs >= 16) and the output-channel pass width (a 64 x 64 fp32 accumulator, 16
# values a thread).
_BLOCK_K, _MAX_BLOCK_N = 16, 64
_WARPS = 8
# One stage: with Triton's default 3 the K loops' gathered tap tiles are multi-buffered in shared memory, 314 KB a
# program for fp32 (more than an SM has; sm_90, Triton 3.9, 2026-12), as in dwsep_conv.py.
_STAGES = 1
# Persistent grid: as many programs as fit the SMs at once, so the scratch (programs x 24-96 KB) is only what is in
# flight: one, as compiled for sm_90 the kernel takes ~254 registers a thread at 8 warps (the whole register file;
# Triton 3.9, 2026-12). Devices without SMs to count (meta tensors of the offline compile) assume an H100's 132.
_PROGRAMS_PER_SM = 1
_ASSUMED_SMS = 132
# The interpreter runs programs one after another with whole-tile NumPy ops: one K and N step per GEMM. (Its tile
# stays the GPU's: 16 x 16 ran the tests' small maps slower, its padded regions twice the size.)
_INTERPRET_BLOCK_K, _INTERPRET_MAX_BLOCK_N = 64, 256


def tiles(c0: int, c1: int, c2: int, c3: int, interpret: bool = INTERPRET) -> dict:
    """The kernel's constexpr tile sizes for channel counts C0 -> C1 -> C2 -> C3."""
    return _tiles(static(c0), static(c1), static(c2), static(c3), interpret)


@functools.lru_cache(maxsize=None)
def _tiles(c0: int, c1: int, c2: int, c3: int, interpret: bool) -> dict:
    block_k, max_block_n = (_INTERPRET_BLOCK_K, _INTERPRET_MAX_BLOCK_N) if interpret else (_BLOCK_K, _MAX_BLOCK_N)
    c1p, c2p = (max(16, triton.next_power_of_2(c)) for c in (c1, c2))
    return dict(
        TILE=TILE, BLOCK_R1=triton.next_power_of_2((TILE + 4) ** 2), BLOCK_R2=triton.next_power_of_2((TILE + 2) ** 2),
        BLOCK_R3=max(16, triton.next_power_of_2(TILE * TILE)), C1P=c1p, C2P=c2p,
        BLOCK_K=min(block_k, c1p, c2p), BLOCK_KIN=max(16, min(block_k, triton.next_power_of_2(c0))),
        BLOCK_N=max(16, min(max_block_n, triton.next_power_of_2(c3))),
    )


# ---------------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------------
@triton.jit
def _source_tile(src, n, h, w, offs_c, mask, C, H, W, s_n, s_c, s_h, s_w, scale_h, scale_w, SAME,
                 NHWC: tl.constexpr, IDX64: tl.constexpr):
    """fp32 [pixels, channels] tile of one source resized to the block's H x W, at map pixels (n, h, w) (h, w:
    vectors over the tile's pixels) and the source's channels ``offs_c``."""
    if NHWC:
        cols = offs_c[None, :]
    else:  # a channel times its stride may pass 2**31 too
        cols = widen(offs_c, IDX64)[None, :] * s_c
    if SAME:
        at = pixel_offsets(n, h, w, H, W, C, s_n, s_h, s_w, NHWC, IDX64)
        val = tl.load(src + at[:, None] + cols, mask=mask, other=0.0).to(tl.float32)
    else:
        h0, h1, lh0, lh1 = bilinear_axis(h, scale_h, H)
        w0, w1, lw0, lw1 = bilinear_axis(w, scale_w, W)
        a = tl.load(src + pixel_offsets(n, h0, w0, H, W, C, s_n, s_h, s_w, NHWC, IDX64)[:, None] + cols, mask=mask,
                    other=0.0).to(tl.float32)
        b = tl.load(src + pixel_offsets(n, h0, w1, H, W, C, s_n, s_h, s_w, NHWC, IDX64)[:, None] + cols, mask=mask,
                    other=0.0).to(tl.float32)
        c = tl.load(src + pixel_offsets(n, h1, w0, H, W, C, s_n, s_h, s_w, NHWC, IDX64)[:, None] + cols, mask=mask,
                    other=0.0).to(tl.float32)
        d = tl.load(src + pixel_offsets(n, h1, w1, H, W, C, s_n, s_h, s_w, NHWC, IDX64)[:, None] + cols, mask=mask,
                    other=0.0).to(tl.float32)
        val = bilinear_blend(a, b, c, d, lh0[:, None], lh1[:, None], lw0[:, None], lw1[:, None])
    return val


@triton.jit
def _sep1_source(acc, src, H_S, W_S, s_n, s_c, s_h, s_w, scale_h, scale_w, SAME, C_S, c_off,
                 n, yh, yw, inside, STRIDE, H, W, dw_ptr, pw_ptr, C0, C1, offs_c1,
                 NHWC: tl.constexpr, IDX64: tl.constexpr, IS_FP32: tl.constexpr, DOT_FP32: tl.constexpr,
                 BLOCK_KIN: tl.constexpr):
    """sep1's GEMM over one source's channels (the input's [c_off, c_off + C_S)): relu, depthwise 3x3 at y1's
    region pixels (yh, yw on the Ho x Wo map, stride STRIDE on the input), times pw1's matching rows."""
    for k0 in range(0, C_S, BLOCK_KIN):
        offs_k = k0 + tl.arange(0, BLOCK_KIN)
        mask_k = offs_k < C_S
        dw = tl.zeros([yh.shape[0], BLOCK_KIN], dtype=tl.float32)
        for kh in tl.static_range(3):
            ih = yh * STRIDE - 1 + kh
            row_ok = inside & (ih >= 0) & (ih < H)
            for kw in tl.static_range(3):
                iw = yw * STRIDE - 1 + kw
                ok = row_ok & (iw >= 0) & (iw < W)
                # Padding reads 0, and relu(0) = 0.
                xv = _source_tile(src, n, ih, iw, offs_k, ok[:, None] & mask_k[None, :], C_S, H_S, W_S, s_n, s_c,
                                  s_h, s_w, scale_h, scale_w, SAME, NHWC, IDX64)
                wv = tl.load(dw_ptr + (c_off + offs_k) * 9 + kh * 3 + kw, mask=mask_k, other=0.0)
                dw += relu(xv) * wv.to(tl.float32)[None, :]
        pw = tl.load(pw_ptr + offs_c1[None, :] * C0 + (c_off + offs_k)[:, None],
                     mask=mask_k[:, None] & (offs_c1 < C1)[None, :], other=0.0)
        acc = accumulate_dot(acc, dw, pw, IS_FP32, DOT_FP32)
    return acc


@triton.jit
def _shortcut_source(acc, src, H_S, W_S, s_n, s_c, s_h, s_w, scale_h, scale_w, SAME, C_S, c_off,
                     n, oh, ow, out_ok, STRIDE, sc_ptr, C0, offs_n, mask_n, PROJECTION: tl.constexpr,
                     NHWC: tl.constexpr, IDX64: tl.constexpr, IS_FP32: tl.constexpr, DOT_FP32: tl.constexpr,
                     BLOCK_KIN: tl.constexpr):
    """One source's part of the shortcut at output pixels (oh, ow), channels offs_n: the projection's K range
    over its channels (the input at the strided pixels, no ReLU), or its channels of the identity."""
    if PROJECTION:
        for k0 in range(0, C_S, BLOCK_KIN):
            offs_k = k0 + tl.arange(0, BLOCK_KIN)
            mask_k = offs_k < C_S
            xv = _source_tile(src, n, oh * STRIDE, ow * STRIDE, offs_k, out_ok[:, None] & mask_k[None, :], C_S, H_S,
                              W_S, s_n, s_c, s_h, s_w, scale_h, scale_w, SAME, NHWC, IDX64)
            w = tl.load(sc_ptr + offs_n[None, :] * C0 + (c_off + offs_k)[:, None],
                        mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            acc = accumulate_dot(acc, xv, w, IS_FP32, DOT_FP32)
    else:  # stride 1, C3 == C0: output channel c is input channel c
        local = offs_n - c_off
        mask = out_ok[:, None] & ((local >= 0) & (local < C_S))[None, :]
        acc += _source_tile(src, n, oh, ow, local, mask, C_S, H_S, W_S, s_n, s_c, s_h, s_w, scale_h, scale_w, SAME,
                            NHWC, IDX64)
    return acc


@triton.jit
def _depthwise_scratch(y_ptr, C_P: tl.constexpr, EDGE_IN: tl.constexpr, row, col, valid, offs_k, dw_ptr, C):
    """Depthwise 3x3 over channels offs_k of y (a region EDGE_IN pixels wide in the scratch, C_P fp32 a pixel,
    already ReLU'd and zero outside the map) at the pixels (row, col) of the region one pixel further in."""
    mask_k = offs_k < C
    acc = tl.zeros([row.shape[0], offs_k.shape[0]], dtype=tl.float32)
    for kh in tl.static_range(3):
        for kw in tl.static_range(3):
            at = (row + kh) * EDGE_IN + col + kw
            # .cg: from L2, past the L1 that may hold a line of y from before this program's latest write.
            yv = tl.load(y_ptr + at[:, None] * C_P + offs_k[None, :], mask=valid[:, None], other=0.0,
                         cache_modifier=".cg")
            wv = tl.load(dw_ptr + offs_k * 9 + kh * 3 + kw, mask=mask_k, other=0.0)
            acc += yv * wv.to(tl.float32)[None, :]
    return acc


@triton.jit
def _store_mid(y_ptr, C_P: tl.constexpr, acc, b_ptr, offs_c, C, HAS_BIAS, inside):
    """relu(acc + bias) at the region pixels inside the map, 0 outside (the next conv's zero padding), to the
    scratch: every row and channel of it, the padding's included (zeros there too)."""
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_c, mask=offs_c < C, other=0.0).to(tl.float32)[None, :]
    y = tl.where(inside[:, None], relu(acc), 0.0)
    rows = tl.arange(0, acc.shape[0])
    tl.store(y_ptr + rows[:, None] * C_P + offs_c[None, :], y)


# Specialised only where it sets a vector width or a constant offset (the channel counts); the map sizes, strides and
# source sizes are not (one compiled variant serves every map).
@triton.jit(do_not_specialize=[
    "H0", "W0", "sn0", "sc0", "sh0", "sw0", "H1", "W1", "sn1", "sc1", "sh1", "sw1",
    "H2", "W2", "sn2", "sc2", "sh2", "sw2", "H3", "W3", "sn3", "sc3", "sh3", "sw3",
    "H", "W", "HO", "WO", "STRIDE", "TILES_H", "TILES_W", "TILES",
])
def _xception_block_kernel(
    p0, H0, W0, sn0, sc0, sh0, sw0, fh0, fw0, CS0,  # source k: pointer, size, strides, scales, channels
    p1, H1, W1, sn1, sc1, sh1, sw1, fh1, fw1, CS1,
    p2, H2, W2, sn2, sc2, sh2, sw2, fh2, fw2, CS2,
    p3, H3, W3, sn3, sc3, sh3, sw3, fh3, fw3, CS3,
    dw1_ptr, pw1_ptr, pb1_ptr, dw2_ptr, pw2_ptr, pb2_ptr, dw3_ptr, pw3_ptr, pb3_ptr, sc_w_ptr, sc_b_ptr,  # contiguous
    out_ptr, scratch_ptr,  # out: dense NHWC; scratch: y1 and y2 regions of each program, fp32
    H, W, HO, WO, STRIDE, C0, C1, C2, C3, TILES_H, TILES_W, TILES,
    # Runtime flags (never specialised: one compiled kernel serves every combination). inputs[0] sets the block's
    # size: it is never resized.
    SAME1, SAME2, SAME3, HAS_PB1, HAS_PB2, HAS_PB3, HAS_SC_BIAS,
    # Compiled in: each source slot and each shortcut kind is a large share of the code (compile time, registers).
    NUM_SOURCES: tl.constexpr, PROJECTION: tl.constexpr,
    SRC_NHWC: tl.constexpr, IS_FP32: tl.constexpr, DOT_FP32: tl.constexpr, IDX64: tl.constexpr,
    TILE: tl.constexpr, BLOCK_R1: tl.constexpr, BLOCK_R2: tl.constexpr, BLOCK_R3: tl.constexpr,
    C1P: tl.constexpr, C2P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_KIN: tl.constexpr, BLOCK_N: tl.constexpr,
):
    E1: tl.constexpr = TILE + 4  # y1's region edge
    E2: tl.constexpr = TILE + 2  # y2's
    y1_ptr = scratch_ptr + tl.program_id(0) * (BLOCK_R1 * C1P + BLOCK_R2 * C2P)
    y2_ptr = y1_ptr + BLOCK_R1 * C1P
    # Region pixels, flattened row-major over each region's edge; rows past edge^2 are the GEMMs' padding.
    r1 = tl.arange(0, BLOCK_R1)
    row1, col1, valid1 = r1 // E1, r1 % E1, r1 < E1 * E1
    r2 = tl.arange(0, BLOCK_R2)
    row2, col2, valid2 = r2 // E2, r2 % E2, r2 < E2 * E2
    r3 = tl.arange(0, BLOCK_R3)
    row3, col3, valid3 = r3 // TILE, r3 % TILE, r3 < TILE * TILE
    offs_c1 = tl.arange(0, C1P)
    offs_c2 = tl.arange(0, C2P)
    off1 = CS0
    off2 = off1 + CS1
    off3 = off2 + CS2

    for tile in range(tl.program_id(0), TILES, tl.num_programs(0)):
        n = tile // (TILES_H * TILES_W)
        oh0 = (tile // TILES_W) % TILES_H * TILE
        ow0 = tile % TILES_W * TILE

        # ---- sep1: y1 on the tile + 2, the input read in place, source by source.
        yh = oh0 - 2 + row1
        yw = ow0 - 2 + col1
        inside1 = valid1 & (yh >= 0) & (yh < HO) & (yw >= 0) & (yw < WO)
        acc1 = tl.zeros([BLOCK_R1, C1P], dtype=tl.float32)
        acc1 = _sep1_source(acc1, p0, H0, W0, sn0, sc0, sh0, sw0, fh0, fw0, True, CS0, 0, n, yh, yw, inside1,
                            STRIDE, H, W, dw1_ptr, pw1_ptr, C0, C1, offs_c1, SRC_NHWC, IDX64, IS_FP32, DOT_FP32,
                            BLOCK_KIN)
        if NUM_SOURCES > 1:
            acc1 = _sep1_source(acc1, p1, H1, W1, sn1, sc1, sh1, sw1, fh1, fw1, SAME1, CS1, off1, n, yh, yw, inside1,
                                STRIDE, H, W, dw1_ptr, pw1_ptr, C0, C1, offs_c1, SRC_NHWC, IDX64, IS_FP32, DOT_FP32,
                                BLOCK_KIN)
        if NUM_SOURCES > 2:
            acc1 = _sep1_source(acc1, p2, H2, W2, sn2, sc2, sh2, sw2, fh2, fw2, SAME2, CS2, off2, n, yh, yw, inside1,
                                STRIDE, H, W, dw1_ptr, pw1_ptr, C0, C1, offs_c1, SRC_NHWC, IDX64, IS_FP32, DOT_FP32,
                                BLOCK_KIN)
        if NUM_SOURCES > 3:
            acc1 = _sep1_source(acc1, p3, H3, W3, sn3, sc3, sh3, sw3, fh3, fw3, SAME3, CS3, off3, n, yh, yw, inside1,
                                STRIDE, H, W, dw1_ptr, pw1_ptr, C0, C1, offs_c1, SRC_NHWC, IDX64, IS_FP32, DOT_FP32,
                                BLOCK_KIN)
        # y1's last readers, the previous tile's sep2, finished before that tile's second barrier.
        _store_mid(y1_ptr, C1P, acc1, pb1_ptr, offs_c1, C1, HAS_PB1, inside1)
        tl.debug_barrier()

        # ---- sep2: y2 on the tile + 1, from y1.
        inside2 = valid2 & (oh0 - 1 + row2 >= 0) & (oh0 - 1 + row2 < HO) & (ow0 - 1 + col2 >= 0) & (ow0 - 1 + col2 < WO)
        acc2 = tl.zeros([BLOCK_R2, C2P], dtype=tl.float32)
        for k0 in range(0, C1P, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            dw = _depthwise_scratch(y1_ptr, C1P, E1, row2, col2, valid2, offs_k, dw2_ptr, C1)
            pw = tl.load(pw2_ptr + offs_c2[None, :] * C1 + offs_k[:, None],
                         mask=(offs_k < C1)[:, None] & (offs_c2 < C2)[None, :], other=0.0)
            acc2 = accumulate_dot(acc2, dw, pw, IS_FP32, DOT_FP32)
        # y2's last readers, the previous tile's sep3, finished before this tile's first barrier.
        _store_mid(y2_ptr, C2P, acc2, pb2_ptr, offs_c2, C2, HAS_PB2, inside2)
        tl.debug_barrier()

        # ---- sep3 + shortcut: the output tile, BLOCK_N channels a pass.
        oh = oh0 + row3
        ow = ow0 + col3
        out_ok = valid3 & (oh < HO) & (ow < WO)
        for n0 in range(0, C3, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            mask_n = offs_n < C3
            acc = tl.zeros([BLOCK_R3, BLOCK_N], dtype=tl.float32)
            for k0 in range(0, C2P, BLOCK_K):
                offs_k = k0 + tl.arange(0, BLOCK_K)
                dw = _depthwise_scratch(y2_ptr, C2P, E2, row3, col3, valid3, offs_k, dw3_ptr, C2)
                pw = tl.load(pw3_ptr + offs_n[None, :] * C2 + offs_k[:, None],
                             mask=(offs_k < C2)[:, None] & mask_n[None, :], other=0.0)
                acc = accumulate_dot(acc, dw, pw, IS_FP32, DOT_FP32)
            acc = _shortcut_source(acc, p0, H0, W0, sn0, sc0, sh0, sw0, fh0, fw0, True, CS0, 0, n, oh, ow, out_ok,
                                   STRIDE, sc_w_ptr, C0, offs_n, mask_n, PROJECTION, SRC_NHWC, IDX64, IS_FP32,
                                   DOT_FP32, BLOCK_KIN)
            if NUM_SOURCES > 1:
                acc = _shortcut_source(acc, p1, H1, W1, sn1, sc1, sh1, sw1, fh1, fw1, SAME1, CS1, off1, n, oh, ow,
                                       out_ok, STRIDE, sc_w_ptr, C0, offs_n, mask_n, PROJECTION, SRC_NHWC, IDX64,
                                       IS_FP32, DOT_FP32, BLOCK_KIN)
            if NUM_SOURCES > 2:
                acc = _shortcut_source(acc, p2, H2, W2, sn2, sc2, sh2, sw2, fh2, fw2, SAME2, CS2, off2, n, oh, ow,
                                       out_ok, STRIDE, sc_w_ptr, C0, offs_n, mask_n, PROJECTION, SRC_NHWC, IDX64,
                                       IS_FP32, DOT_FP32, BLOCK_KIN)
            if NUM_SOURCES > 3:
                acc = _shortcut_source(acc, p3, H3, W3, sn3, sc3, sh3, sw3, fh3, fw3, SAME3, CS3, off3, n, oh, ow,
                                       out_ok, STRIDE, sc_w_ptr, C0, offs_n, mask_n, PROJECTION, SRC_NHWC, IDX64,
                                       IS_FP32, DOT_FP32, BLOCK_KIN)
            if HAS_PB3:
                acc += tl.load(pb3_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
            if HAS_SC_BIAS:
                acc += tl.load(sc_b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
            at = ((widen(n, IDX64) * HO + oh) * WO + ow) * C3
            tl.store(out_ptr + at[:, None] + offs_n[None, :], acc.to(out_ptr.dtype.element_ty),
                     mask=out_ok[:, None] & mask_n[None, :])
        # The next tile's sep1 overwrites nothing sep3 reads; its sep2 writes y2 only after its first barrier.


# ---------------------------------------------------------------------------------------------------------------
# Host launcher and registration
# ---------------------------------------------------------------------------------------------------------------
def _check(inputs, dw, pw, pb, stride, shortcut_weight, shortcut_bias) -> list[int]:
    """The checks of csrc/checks.h check_xception_block; returns the channel counts [C0, C1, C2, C3]."""
    check(len(inputs) > 0, lambda: "inputs: expected at least one tensor")
    first = inputs[0]
    for i, t in enumerate(inputs):
        check_activation(t, f"inputs[{i}]")
        check(t.device == first.device, lambda: f"inputs[{i}]: expected device {first.device}, got {t.device}")
        check(t.dtype == first.dtype, lambda: f"inputs[{i}]: expected dtype {first.dtype}, got {t.dtype}")
        check(t.shape[0] == first.shape[0], lambda: f"inputs[{i}]: expected batch {first.shape[0]}, got {t.shape[0]}")
    channels = [sum(t.shape[1] for t in inputs)]
    for i in range(3):
        check_same(dw[i], first, f"dw{i + 1}", (channels[i], 1, 3, 3))
        check(pw[i].dim() == 4, lambda: f"pw{i + 1}: expected Cout x C x 1 x 1, got {tuple(pw[i].shape)}")
        channels.append(pw[i].shape[0])
        check_same(pw[i], first, f"pw{i + 1}", (channels[i + 1], channels[i], 1, 1))
        check_same(pb[i], first, f"pb{i + 1}", (channels[i + 1],))
    check(stride in (1, 2), lambda: f"stride: expected 1 or 2, got {stride}")
    if shortcut_weight is None:
        check(stride == 1 and channels[3] == channels[0],
              lambda: f"shortcut_weight: an identity shortcut needs stride 1 and as many output channels as input "
                      f"channels ({channels[0]}), got stride {stride} and {channels[3]}")
        check(shortcut_bias is None, lambda: "shortcut_bias: given without shortcut_weight")
    check_same(shortcut_weight, first, "shortcut_weight", (channels[3], channels[0], 1, 1))
    check_same(shortcut_bias, first, "shortcut_bias", (channels[3],))
    return channels


def _composed(x, dw, pw, pb, stride, shortcut_weight, shortcut_bias) -> torch.Tensor:
    """The block as three dwsep_conv launches (and the shortcut conv on cuDNN): for mid widths past MAX_MID."""
    skip = x if shortcut_weight is None else reference.conv(x, shortcut_weight, shortcut_bias, stride)
    for i in range(3):
        x = dwsep_conv_forward(x, dw[i], None, pw[i], pb[i], stride if i == 0 else 1, True, False, False,
                               skip if i == 2 else None)
    return x


def _programs(tiles: int, device: torch.device) -> int:
    """The persistent grid: every tile its program under the interpreter (nothing to gain from a loop), else at
    most _PROGRAMS_PER_SM per SM."""
    if INTERPRET:
        return tiles
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else _ASSUMED_SMS
    return min(tiles, _PROGRAMS_PER_SM * sms)


def xception_block_forward(
    inputs: list[torch.Tensor],
    dw1: torch.Tensor,
    pw1: torch.Tensor,
    pb1: torch.Tensor | None,
    dw2: torch.Tensor,
    pw2: torch.Tensor,
    pb2: torch.Tensor | None,
    dw3: torch.Tensor,
    pw3: torch.Tensor,
    pb3: torch.Tensor | None,
    stride: int,
    shortcut_weight: torch.Tensor | None,
    shortcut_bias: torch.Tensor | None,
    block_tiles: dict | None = None,
) -> torch.Tensor:
    """Checks the arguments (as csrc/checks.h does), allocates the NHWC output and the scratch, launches the kernel.

    The block's input is the concatenation of ``inputs`` resized to inputs[0]'s size, each read in place in any
    memory layout. ``block_tiles`` (as ``tiles`` returns them) replaces the default choice: the tests run the GPU's
    tiles under the interpreter with it."""
    dw, pw, pb = (dw1, dw2, dw3), (pw1, pw2, pw3), (pb1, pb2, pb3)
    c0, c1, c2, c3 = _check(inputs, dw, pw, pb, stride, shortcut_weight, shortcut_bias)
    n, _, h, w = inputs[0].shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    x = inputs[0]
    if max(static(c1), static(c2)) > MAX_MID or len(inputs) > MAX_SOURCES:
        if len(inputs) > 1:
            x = upsample_concat_forward(list(inputs), [h, w])
        if max(static(c1), static(c2)) > MAX_MID:
            return _composed(x, dw, pw, pb, stride, shortcut_weight, shortcut_bias)
        inputs = [x]
    out = empty_nhwc(x, (n, c3, ho, wo))
    if interpreter_tracing(x):
        return out

    t = block_tiles or tiles(c0, c1, c2, c3)
    tiles_h, tiles_w = triton.cdiv(ho, t["TILE"]), triton.cdiv(wo, t["TILE"])
    total = n * tiles_h * tiles_w
    check(total < 2**31, lambda: f"inputs: at most 2**31 - 1 output tiles, got {total}")
    programs = _programs(total, x.device)
    scratch = torch.empty(programs * (t["BLOCK_R1"] * t["C1P"] + t["BLOCK_R2"] * t["C2P"]), dtype=torch.float32,
                          device=x.device)
    padded = list(inputs) + [x] * (MAX_SOURCES - len(inputs))  # unused slots are never read
    sources = []
    for s in padded:
        sources += [*source_args(s, h, w), s.shape[1]]
    weights = [None if v is None else v.contiguous() for v in (dw1, pw1, pb1, dw2, pw2, pb2, dw3, pw3, pb3,
                                                                 shortcut_weight, shortcut_bias)]
    same = [bool(s.shape[2] == h and s.shape[3] == w) for s in padded[1:]]  # inputs[0] is at h x w
    # An absent bias or shortcut weight is never read (its flag is off); x stands in for its pointer.
    launchable(_xception_block_kernel)[(programs,)](
        *sources, *[x if v is None else v for v in weights], out, scratch,
        h, w, ho, wo, stride, c0, c1, c2, c3, tiles_h, tiles_w, total,
        *same, pb1 is not None, pb2 is not None, pb3 is not None, shortcut_bias is not None,
        NUM_SOURCES=len(inputs), PROJECTION=shortcut_weight is not None, SRC_NHWC=all(is_nhwc(s) for s in inputs),
        IS_FP32=x.dtype == torch.float32, DOT_FP32=interpreter_dot_fp32(x.dtype), IDX64=needs_int64(out, *inputs),
        **t, num_warps=_WARPS, num_stages=_STAGES,
    )
    return out


@triton_op("dfanet::xception_block_triton", mutates_args=())
def xception_block_triton(
    inputs: list[torch.Tensor],
    dw1: torch.Tensor,
    pw1: torch.Tensor,
    pb1: torch.Tensor | None,
    dw2: torch.Tensor,
    pw2: torch.Tensor,
    pb2: torch.Tensor | None,
    dw3: torch.Tensor,
    pw3: torch.Tensor,
    pb3: torch.Tensor | None,
    stride: int,
    shortcut_weight: torch.Tensor | None,
    shortcut_bias: torch.Tensor | None,
) -> torch.Tensor:
    """The op behind ``dfanet_kernels.xception_block_cat(..., backend="triton")``: NHWC output, fp32 accumulation."""
    return xception_block_forward(inputs, dw1, pw1, pb1, dw2, pw2, pb2, dw3, pw3, pb3, stride, shortcut_weight,
                                  shortcut_bias)
