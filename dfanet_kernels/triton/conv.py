"""Dense 3x3 convolution + bias + optional ReLU in Triton (``dfanet::conv3x3_triton``): DFANet's stem (conv1, 3 -> 8
channels, stride 2, on the network's input).

padding 1, stride 1 or 2, any input and output channel counts. A program computes BLOCK_W consecutive pixels of one
output row x BLOCK_CO output channels: per input channel and tap one masked load of the row's pixels (through the
input's strides, so an NCHW image is read in place: the model converts nothing before it) and one of the tap's
BLOCK_CO weights, an outer-product FMA in fp32, then bias, ReLU and one NHWC store of the tile (at the stem, 8
consecutive output channels of a pixel: a 16-byte store in fp16/bf16).
"""

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ._common import (
    INTERPRET,
    TILE_ELEMENTS,
    TILE_WARPS,
    check,
    check_activation,
    check_same,
    empty_nhwc,
    interpreter_tracing,
    launchable,
    needs_int64,
    relu,
    static,
    widen,
)

# ---------------------------------------------------------------------------------------------------------------
# Tuning constants
# ---------------------------------------------------------------------------------------------------------------
# Output channels a program computes: the next power of two of Cout up to this (the stem's 8 take one tile with no
# masked lanes, so its stores need no channel mask); wider Couts take several tiles, each re-reading the input rows
# (from L2). The pixel tile fills _common.TILE_ELEMENTS values, within the row. The interpreter prefers few, large
# programs.
_MAX_BLOCK_CO = 64 if not INTERPRET else 256


# ---------------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------------
# Sizes and the strides that do not set a vector width are not specialised (each specialisation compiles its own
# variant); s_w is: 1 for an NCHW image, which makes a row's taps unit-stride loads.
@triton.jit(do_not_specialize=["C", "H", "W", "HO", "WO", "s_n", "s_c", "s_h", "sw_o", "sw_i", "sw_h", "sw_w",
                               "s_b"])
def _conv3x3_kernel(
    out_ptr,  # N x HO x WO x COUT, dense NHWC
    x_ptr, C, H, W, s_n, s_c, s_h, s_w,  # N x C x H x W in any layout, read through its strides
    w_ptr, sw_o, sw_i, sw_h, sw_w,  # COUT x C x 3 x 3, any strides
    b_ptr, s_b,  # COUT, any stride (read only where HAS_BIAS)
    HO, WO,
    STRIDE: tl.constexpr,
    COUT: tl.constexpr,  # the stem's 8 as a constant: the store offsets' 8-channel runs are then provably contiguous
    HAS_BIAS: tl.constexpr, RELU: tl.constexpr,
    IDX64: tl.constexpr,  # some element offset reaches 2**31 (see _common.needs_int64)
    BLOCK_W: tl.constexpr, BLOCK_CO: tl.constexpr,
):
    # The row (n, oh) is a scalar: its division and the vertical taps' bounds are worked out once per program.
    row = tl.program_id(0)  # n * HO + oh
    n = row // HO
    oh = row - n * HO
    ow = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    co = tl.program_id(2) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    in_row = ow < WO
    in_co = co < COUT
    x_n = x_ptr + widen(n, IDX64) * s_n
    w_co = w_ptr + widen(co, IDX64) * sw_o
    acc = tl.zeros((BLOCK_W, BLOCK_CO), tl.float32)
    # The channel strides are widened, not ci (a Python int under the interpreter); they are never specialised.
    s_c, sw_i = widen(s_c, IDX64), widen(sw_i, IDX64)
    for ci in range(C):
        x_c = x_n + ci * s_c
        w_c = w_co + ci * sw_i
        for kh in tl.static_range(3):
            ih = oh * STRIDE + kh - 1
            x_h = x_c + widen(ih, IDX64) * s_h
            # A row outside the image as a row of width 0: the row's bound folds into the column mask (a scalar
            # condition and-ed into a tensor mask also turns it into int32 under Triton 3.9's interpreter). Pixels
            # past the output row read inside the image and are never stored.
            w_in = tl.where((ih >= 0) & (ih < H), W, 0)
            for kw in tl.static_range(3):
                iw = ow * STRIDE + (kw - 1)
                v = tl.load(x_h + widen(iw, IDX64) * s_w, mask=(iw >= 0) & (iw < w_in), other=0.0)
                wt = tl.load(w_c + kh * sw_h + kw * sw_w, mask=in_co, other=0.0)
                acc += v.to(tl.float32)[:, None] * wt.to(tl.float32)[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + co * s_b, mask=in_co, other=0.0).to(tl.float32)[None, :]
    if RELU:
        acc = relu(acc)
    o_ptrs = out_ptr + ((widen(row, IDX64) * WO + ow) * COUT)[:, None] + co[None, :]
    tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=in_row[:, None] & in_co[None, :])


# ---------------------------------------------------------------------------------------------------------------
# Host launcher and registration
# ---------------------------------------------------------------------------------------------------------------
def tiles(cout: int, wo: int) -> tuple[int, int]:
    """(BLOCK_W, BLOCK_CO) of a launch for Cout output channels and output rows WO pixels wide; num_warps is
    TILE_WARPS. A row segment no wider than the row (at least 16 pixels), so narrow maps do not mask most of a tile."""
    block_co = min(triton.next_power_of_2(static(cout)), _MAX_BLOCK_CO)
    block_w = max(16, TILE_ELEMENTS // block_co)
    return min(block_w, max(16, triton.next_power_of_2(static(wo)))), block_co


def conv3x3_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
                    relu: bool) -> torch.Tensor:
    """``relu(conv2d(x, weight, bias, stride, padding=1))`` (ReLU where ``relu``) as NHWC; the checks of
    csrc/checks.h check_conv. x may have any memory layout (read in place through its strides)."""
    check_activation(x, "x")
    n, c, h, w = x.shape
    check(weight.dim() == 4, lambda: f"weight: expected Cout x C x 3 x 3, got {tuple(weight.shape)}")
    cout = weight.shape[0]
    check_same(weight, x, "weight", (cout, c, 3, 3))
    check_same(bias, x, "bias", (cout,))
    check(stride in (1, 2), lambda: f"stride: expected 1 or 2, got {stride}")
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    out = empty_nhwc(x, (n, cout, ho, wo))
    if interpreter_tracing(x) or out.numel() == 0:  # Cout == 0: nothing to launch
        return out
    block_w, block_co = tiles(cout, wo)
    # CUDA grids: up to 2**31 - 1 programs along x (the output rows), 65535 along y and z.
    check(n * ho < 2**31, lambda: f"x: at most 2**31 - 1 output rows (N * Ho), got {n * ho}")
    check(triton.cdiv(wo, block_w) <= 65535, lambda: f"x: output width {wo} is more than this kernel tiles")
    check(triton.cdiv(cout, block_co) <= 65535, lambda: f"weight: at most {65535 * block_co} output channels")
    launchable(_conv3x3_kernel)[(n * ho, triton.cdiv(wo, block_w), triton.cdiv(cout, block_co))](
        out, x, c, h, w, *x.stride(), weight, *weight.stride(),
        *((x, 0) if bias is None else (bias, bias.stride(0))),  # an absent bias is never read (HAS_BIAS off)
        ho, wo, STRIDE=static(stride), COUT=static(cout), HAS_BIAS=bias is not None, RELU=bool(relu),
        IDX64=needs_int64(x, out, weight), BLOCK_W=block_w, BLOCK_CO=block_co, num_warps=TILE_WARPS,
    )
    return out


# The op (schema from the type hints); conv3x3_forward stays a plain function for eager calls.
conv3x3_triton = triton_op("dfanet::conv3x3_triton", mutates_args=())(conv3x3_forward)
