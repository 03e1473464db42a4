"""FC-attention channel scaling in Triton (``dfanet::fc_attention_triton``).

``out = x * relu(conv_w @ (fc_w @ mean_hw(x) + fc_b) + conv_b)`` per sample, in four launches that materialise only
small fp32 vectors (N x SPLIT x C partial sums, N x K hidden, N x C scale):

1. ``_pool_partial_kernel``: SPLIT programs per (sample, channel tile) sum interleaved pixel tiles, so even a
   batch-1 pool of a 64 x 64 map spreads over many SMs (deterministic: no atomics).
2. ``_fc_hidden_kernel``: finishes the mean and computes a tile of ``fc_w @ pooled + fc_b`` (K = 1000 in DFANet).
3. ``_fc_scale_kernel``: ``relu(conv_w @ hidden + conv_b)``.
4. ``_scale_kernel``: one pass over x writing ``x * scale`` (NHWC).

The two mat-vecs are done with broadcast-multiply + tl.sum: a matrix-vector product has one column, below
tl.dot's minimum tile of 16.
"""

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ._common import (
    INTERPRET,
    TILE_ELEMENTS,
    TILE_WARPS,
    channel_block,
    check,
    check_activation,
    check_same,
    empty_nhwc,
    interpreter_tracing,
    is_nhwc,
    launchable,
    pixel_block,
    relu,
    static,
)

# ---------------------------------------------------------------------------------------------------------------
# Tuning constants
# ---------------------------------------------------------------------------------------------------------------
# All four kernels are memory/latency bound (DFANet A: C <= 192, K = 1000, at most 64 x 64 pixels per sample
# at 1024 x 1024 input), so tile sizes follow from the shapes instead of autotuning.
_MAX_BLOCK_C = 64 if not INTERPRET else 256  # channel tile of the pool and scale kernels (TILE_ELEMENTS values)
_MAX_SPLIT = 32  # pool programs per (sample, channel tile): 32 x 3 tiles x batch 1 = 96 programs on 132 SMs
_BLOCK_K = 64  # hidden units per program of the first mat-vec (1000 -> 16 programs per sample)
_MATVEC_BLOCK = 128  # reduction tile of both mat-vecs (TILE_WARPS warps: 4 spilled the weight tile)


# ---------------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------------
# Not specialised (see dwsep_conv.py): pixel counts and the general-layout strides never set a vector width.
@triton.jit(do_not_specialize=["HW", "W", "SPLIT", "sx_n", "sx_c", "sx_h", "sx_w"])
def _pool_partial_kernel(
    x_ptr, part_ptr,
    C, HW, W, SPLIT,
    sx_n, sx_c, sx_h, sx_w,  # read only when not X_NHWC
    X_NHWC: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)  # n * SPLIT + s
    n = pid // SPLIT
    s = pid % SPLIT
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    acc = tl.zeros([BLOCK_HW, BLOCK_C], dtype=tl.float32)
    for start in range(s * BLOCK_HW, HW, SPLIT * BLOCK_HW):
        offs_hw = start + tl.arange(0, BLOCK_HW)
        mask_hw = offs_hw < HW
        if X_NHWC:
            ptrs = x_ptr + (n.to(tl.int64) * HW + offs_hw)[:, None] * C + offs_c[None, :]
        else:
            h = (offs_hw // W).to(tl.int64)
            w = (offs_hw % W).to(tl.int64)
            ptrs = x_ptr + (n.to(tl.int64) * sx_n + h * sx_h + w * sx_w)[:, None] + offs_c[None, :] * sx_c
        acc += tl.load(ptrs, mask=mask_hw[:, None] & mask_c[None, :], other=0.0).to(tl.float32)
    tl.store(part_ptr + pid * C + offs_c, tl.sum(acc, axis=0), mask=mask_c)


@triton.jit(do_not_specialize=["HW", "SPLIT"])
def _fc_hidden_kernel(
    part_ptr, fc_w_ptr, fc_b_ptr, hidden_ptr,
    C, K, HW, SPLIT,
    sfw_k, sfw_c, sfb,
    HAS_BIAS: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
):
    n = tl.program_id(0)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_k = offs_k < K
    offs_s = tl.arange(0, BLOCK_S)
    mask_s = offs_s < SPLIT
    acc = tl.zeros([BLOCK_K], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        part = tl.load(
            part_ptr + (n * SPLIT + offs_s)[:, None] * C + offs_c[None, :],
            mask=mask_s[:, None] & mask_c[None, :],
            other=0.0,
        )
        pooled = tl.sum(part, axis=0) / HW  # the mean, as x.mean computes it: sum / count
        w = tl.load(
            fc_w_ptr + offs_k[:, None] * sfw_k + offs_c[None, :] * sfw_c,
            mask=mask_k[:, None] & mask_c[None, :],
            other=0.0,
        ).to(tl.float32)
        acc += tl.sum(w * pooled[None, :], axis=1)
    if HAS_BIAS:
        acc += tl.load(fc_b_ptr + offs_k * sfb, mask=mask_k, other=0.0).to(tl.float32)
    tl.store(hidden_ptr + n * K + offs_k, acc, mask=mask_k)


@triton.jit
def _fc_scale_kernel(
    hidden_ptr, conv_w_ptr, conv_b_ptr, scale_ptr,
    C, K,
    scw_c, scw_k, scb,
    HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
):
    n = tl.program_id(0)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    acc = tl.zeros([BLOCK_C], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        hidden = tl.load(hidden_ptr + n * K + offs_k, mask=mask_k, other=0.0)
        w = tl.load(
            conv_w_ptr + offs_c[:, None] * scw_c + offs_k[None, :] * scw_k,
            mask=mask_c[:, None] & mask_k[None, :],
            other=0.0,
        ).to(tl.float32)
        acc += tl.sum(w * hidden[None, :], axis=1)
    if HAS_BIAS:
        acc += tl.load(conv_b_ptr + offs_c * scb, mask=mask_c, other=0.0).to(tl.float32)
    tl.store(scale_ptr + n * C + offs_c, relu(acc), mask=mask_c)


@triton.jit(do_not_specialize=["P", "HW", "W", "sx_n", "sx_c", "sx_h", "sx_w"])
def _scale_kernel(
    x_ptr, scale_ptr, out_ptr,  # out: dense NHWC
    P, C, HW, W,
    sx_n, sx_c, sx_h, sx_w,  # read only when not X_NHWC
    X_NHWC: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    offs_p = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = offs_p < P
    n = offs_p // HW
    hw = offs_p % HW
    h = hw // W
    w = hw % W
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    mask = mask_p[:, None] & mask_c[None, :]
    dense = offs_p[:, None] * C + offs_c[None, :]  # offs_p = n * HW + h * W + w
    if X_NHWC:
        x = tl.load(x_ptr + dense, mask=mask, other=0.0)
    else:
        x = tl.load(x_ptr + (n * sx_n + h * sx_h + w * sx_w)[:, None] + offs_c[None, :] * sx_c, mask=mask, other=0.0)
    scale = tl.load(scale_ptr + n[:, None] * C + offs_c[None, :], mask=mask, other=0.0)
    y = x.to(tl.float32) * scale
    tl.store(out_ptr + dense, y.to(out_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------------------------
# Host launcher and registration
# ---------------------------------------------------------------------------------------------------------------
def tiles(c: int, hw: int) -> tuple[int, int, int]:
    """(BLOCK_HW of the pool kernel, BLOCK_P of the scale kernel, BLOCK_C of both) over C channels and HW pixels per
    sample; both launch TILE_WARPS warps."""
    block_c = channel_block(c, _MAX_BLOCK_C)
    block_p = pixel_block(block_c, TILE_ELEMENTS)
    return triton.next_power_of_2(min(block_p, static(hw))), block_p, block_c


def fc_attention_forward(
    x: torch.Tensor,
    fc_weight: torch.Tensor,
    fc_bias: torch.Tensor | None,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
) -> torch.Tensor:
    """The Triton kernels behind ``dfanet_kernels.fc_attention(..., backend="triton")``; arguments are checked there.

    Takes any memory layout and returns NHWC. Pool, mat-vecs and scale accumulate in fp32 whatever x's dtype.
    """
    check_activation(x, "x")
    n, c, h, w = x.shape
    check(fc_weight.dim() == 2, lambda: f"fc_weight: expected K x C, got {tuple(fc_weight.shape)}")
    k = fc_weight.shape[0]
    check_same(fc_weight, x, "fc_weight", (k, c))
    check_same(fc_bias, x, "fc_bias", (k,))
    check_same(conv_weight, x, "conv_weight", (c, k, 1, 1))
    check_same(conv_bias, x, "conv_bias", (c,))
    hw = h * w
    out = empty_nhwc(x, (n, c, h, w))
    f32 = dict(dtype=torch.float32, device=x.device)
    if interpreter_tracing(x):
        return out

    block_hw, block_p, block_c = tiles(c, hw)
    split = min(_MAX_SPLIT, triton.cdiv(static(hw), block_hw))
    partial = torch.empty((n * split, c), **f32)
    launchable(_pool_partial_kernel)[(n * split, triton.cdiv(c, block_c))](
        x, partial, c, hw, w, split, *x.stride(), X_NHWC=is_nhwc(x), BLOCK_HW=block_hw, BLOCK_C=block_c,
        num_warps=TILE_WARPS,
    )

    hidden = torch.empty((n, k), **f32)
    fc_b = partial if fc_bias is None else fc_bias  # never read without a bias
    launchable(_fc_hidden_kernel)[(n, triton.cdiv(k, _BLOCK_K))](
        partial, fc_weight, fc_b, hidden, c, k, hw, split,
        fc_weight.stride(0), fc_weight.stride(1), fc_b.stride(0),
        HAS_BIAS=fc_bias is not None, BLOCK_S=triton.next_power_of_2(split), BLOCK_K=_BLOCK_K,
        BLOCK_C=channel_block(c, _MATVEC_BLOCK), num_warps=TILE_WARPS,
    )

    scale = torch.empty((n, c), **f32)
    conv_b = hidden if conv_bias is None else conv_bias
    scale_block_c = channel_block(c, 32)
    launchable(_fc_scale_kernel)[(n, triton.cdiv(c, scale_block_c))](
        hidden, conv_weight, conv_b, scale, c, k,
        conv_weight.stride(0), conv_weight.stride(1), conv_b.stride(0),
        HAS_BIAS=conv_bias is not None, BLOCK_C=scale_block_c, BLOCK_K=_MATVEC_BLOCK, num_warps=TILE_WARPS,
    )

    launchable(_scale_kernel)[(triton.cdiv(n * hw, block_p), triton.cdiv(c, block_c))](
        x, scale, out, n * hw, c, hw, w, *x.stride(), X_NHWC=is_nhwc(x), BLOCK_P=block_p, BLOCK_C=block_c,
        num_warps=TILE_WARPS,
    )
    return out


# The op (its schema from the type hints); fc_attention_forward itself stays a plain function for eager calls.
fc_attention_triton = triton_op("dfanet::fc_attention_triton", mutates_args=())(fc_attention_forward)
