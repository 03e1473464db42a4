"""Fused depthwise-separable convolution in Triton (``dfanet::dwsep_conv_triton``).

``out = act_out(pw(act_mid(dw3x3(act_in(x)) + dw_bias)) + pw_bias) + residual``, dw3x3 with padding 1 and stride 1
or 2. A program owns a tile of BLOCK_P output pixels (flattened over N, Ho, Wo) x BLOCK_CO output channels. For each
BLOCK_CI slice of the input channels it computes the depthwise result of its pixels in registers (nine masked NHWC
loads, fp32) and feeds it straight to ``tl.dot`` with the matching slice of the pointwise weight: the depthwise
result never goes to memory.
"""

import functools

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ._common import (
    AUTOTUNE,
    INTERPRET,
    accumulate_dot,
    check,
    check_activation,
    check_same,
    empty_nhwc,
    interpreter_dot_fp32,
    interpreter_tracing,
    is_nhwc,
    launchable,
    needs_int64,
    relu,
    static,
    vector_width,
    widen,
)

# ---------------------------------------------------------------------------------------------------------------
# Tuning constants
# ---------------------------------------------------------------------------------------------------------------
# Channel tiles follow from the shape (DFANet: C in {8, 12, ..., 288}, Cout in {12, 24, 48, 96, 192}); tl.dot needs
# every tile dimension >= 16, so they are padded with masks:
# - BLOCK_CO = next power of two of Cout, 16..128: one Cout tile computes the depthwise result once for all outputs
#   up to 128 (Cout = 192 takes two tiles, i.e. the depthwise result twice, instead of a 256-wide fp32 accumulator).
# - BLOCK_CI = 16 where C % 32 is 1..16 (C = 48, 144, 240: no masked lanes in the depthwise loop; C = 12 masks 4
#   of 16 instead of 20 of 32), else 32.
# The pixel tile (BLOCK_P, warps, stages) is picked per size class of P = N * Ho * Wo: DFANet's maps are small at
# batch 1 (16 x 16 pixels in backbone 3's enc4 at 1024 x 1024 input: 32-pixel tiles keep enough programs for the
# SMs) and large at batch 8 (8 x 256 x 256 in enc2: 128-pixel tiles). With DFANET_TRITON_AUTOTUNE=1 (the default on
# a GPU) the autotuner instead times all four configs once per (C, Cout, stride, size class). DFANet A has 15
# distinct (C, Cout, stride) and each compiled variant takes seconds on a cold Triton cache, so autotuning costs
# minutes on a fresh machine; bench/gpu_check.sh and the GPU tests therefore run with the size-class choice
# (DFANET_TRITON_AUTOTUNE=0).
# num_stages=1: with more stages Triton multi-buffers the nine gathered tap tiles in shared memory (cp.async); for
# fp32 that is 186 KB at 64 pixels x 128 channels and 338 KB at 128 x 128 (more than any GPU has; compiled for
# sm_90 with Triton 3.9), against 24-32 KB with one stage. The C loop is short (1..9 steps), so there is little to
# pipeline; one 2-stage config stays in the list for the autotuner to try.
CONFIGS = [
    triton.Config({"BLOCK_P": 32}, num_warps=4, num_stages=1),  # size class 0: P <= 4096
    triton.Config({"BLOCK_P": 64}, num_warps=4, num_stages=1),  # size class 1: P <= 65536
    triton.Config({"BLOCK_P": 128}, num_warps=8, num_stages=1),  # size class 2
    triton.Config({"BLOCK_P": 64}, num_warps=4, num_stages=2),
]
# Output tiles of at least this many values (BLOCK_P x BLOCK_CO) take 8 warps: fewer accumulator values a thread.
_PIXELS_X_CHANNELS_PER_8_WARPS = 8192
# The interpreter runs programs one after another: big tiles, few programs.
_INTERPRET_CONFIG = triton.Config({"BLOCK_P": 128}, num_warps=4, num_stages=1)
_INTERPRET_MAX_CHANNEL_TILE = 64


def channel_tiles(c: int, cout: int, interpret: bool = INTERPRET) -> tuple[int, int]:
    """(BLOCK_CO, BLOCK_CI) for C input and Cout output channels (see the tuning notes above)."""
    return _channel_tiles(static(c), static(cout), interpret)


@functools.lru_cache(maxsize=None)  # per launch otherwise: Python ints, few distinct layers
def _channel_tiles(c: int, cout: int, interpret: bool) -> tuple[int, int]:
    if interpret:
        return (max(16, min(triton.next_power_of_2(cout), _INTERPRET_MAX_CHANNEL_TILE)),
                max(16, min(triton.next_power_of_2(c), _INTERPRET_MAX_CHANNEL_TILE)))
    return max(16, min(triton.next_power_of_2(cout), 128)), 16 if 0 < c % 32 <= 16 else 32


def _size_class(p: int) -> int:
    """0: up to 4096 output pixels (batch-1 deep maps), 1: up to 65536, 2: more."""
    p = static(p)
    return 0 if p <= 4096 else 1 if p <= 65536 else 2


def default_config(p: int, c: int, cout: int) -> triton.Config:
    """All three tiles, warps and stages for P output pixels, C -> Cout channels, without autotuning."""
    return _default_config(_size_class(p), static(c), static(cout))


@functools.lru_cache(maxsize=None)
def _default_config(size_class: int, c: int, cout: int) -> triton.Config:
    pixels = _INTERPRET_CONFIG if INTERPRET else CONFIGS[size_class]
    block_co, block_ci = channel_tiles(c, cout)
    # A 64 x 128 fp32 accumulator over 4 warps is 64 values a thread and spilled (Cout = 96 at 128 x 128 pixels:
    # 255 registers + 40 B, sm_90, Triton 3.9); over 8 warps it fits in 206 registers.
    warps = pixels.num_warps
    if not INTERPRET and pixels.kwargs["BLOCK_P"] * block_co >= _PIXELS_X_CHANNELS_PER_8_WARPS:
        warps = max(warps, 8)
    return triton.Config({**pixels.kwargs, "BLOCK_CO": block_co, "BLOCK_CI": block_ci},
                         num_warps=warps, num_stages=pixels.num_stages)


# ---------------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------------
@triton.autotune(configs=CONFIGS, key=["C", "COUT", "P_CLASS", "STRIDE"])
# Specialisation (an int divisible by 16 or equal to 1 compiles its own variant, seconds each) only where it sets a
# vector width: C and COUT, through the dense NHWC offsets. Pixel-axis sizes, the conv stride (1 or 2: one variant
# for both) and the strides of the general-layout path are not: one variant serves every NCHW or strided input.
@triton.jit(do_not_specialize=["P", "P_CLASS", "H", "W", "HO", "WO", "STRIDE", "sx_n", "sx_c", "sx_h", "sx_w",
                               "sr_n", "sr_c", "sr_h", "sr_w"])
def _dwsep_conv_kernel(
    x_ptr, dw_w_ptr, dw_b_ptr, pw_w_ptr, pw_b_ptr, res_ptr, out_ptr,  # out: dense NHWC
    P, P_CLASS, C, COUT, H, W, HO, WO, STRIDE,  # P_CLASS: only an autotuning key
    sx_n, sx_c, sx_h, sx_w,  # read only when not X_NHWC
    sdw_c, sdw_h, sdw_w, sdw_b,
    spw_o, spw_i, spw_b,
    sr_n, sr_c, sr_h, sr_w,  # read only when not RES_NHWC
    # Runtime flags (bools, never specialised): one compiled kernel serves all 64 combinations, which keeps
    # compile time down (each variant takes seconds); the uniform branches cost nothing measurable.
    ACT_IN, ACT_MID, ACT_OUT, HAS_DW_BIAS, HAS_PW_BIAS, HAS_RESIDUAL,
    X_NHWC: tl.constexpr, RES_NHWC: tl.constexpr,  # dense channels_last: offsets from C alone
    IS_FP32: tl.constexpr, DOT_FP32: tl.constexpr,
    C_VEC: tl.constexpr, CO_VEC: tl.constexpr,  # powers of two dividing C and COUT (see _common.vector_width)
    IDX64: tl.constexpr,  # some element offset reaches 2**31 (see _common.needs_int64)
    BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr,
):
    # Restated as multiples of their vector widths, which Triton's alignment analysis then knows (it sees only
    # "divisible by 16 or not"): in fp32 DFANet's 8, 12 and 24 channels get 16-byte NHWC accesses instead of one
    # load per value and per pixel (and the register pressure of that many addresses, which spilled).
    C = (C // C_VEC) * C_VEC
    COUT = (COUT // CO_VEC) * CO_VEC
    pid_p = tl.program_id(0)
    pid_co = tl.program_id(1)
    # int32 pixel indices unless an offset needs 64 bits: the divisions by WO and HO below are a few instructions
    # in int32 but a ~80-instruction software routine each in int64.
    offs_p = widen(pid_p, IDX64) * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = offs_p < P
    ow = offs_p % WO
    rows = offs_p // WO  # n * HO + oh; not offs_p // (WO * HO), whose product would be int32
    oh = rows % HO
    n = rows // HO
    offs_co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    mask_co = offs_co < COUT

    ih0 = oh * STRIDE - 1
    iw0 = ow * STRIDE - 1
    acc = tl.zeros([BLOCK_P, BLOCK_CO], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_CI):
        offs_ci = c0 + tl.arange(0, BLOCK_CI)
        mask_ci = offs_ci < C
        dw = tl.zeros([BLOCK_P, BLOCK_CI], dtype=tl.float32)
        for kh in tl.static_range(3):
            ih = ih0 + kh
            row_ok = mask_p & (ih >= 0) & (ih < H)
            for kw in tl.static_range(3):
                iw = iw0 + kw
                ok = row_ok & (iw >= 0) & (iw < W)
                if X_NHWC:  # C % 16 == 0 lets Triton prove alignment and load whole vectors of channels
                    ptrs = x_ptr + ((n * H + ih) * W + iw)[:, None] * C + offs_ci[None, :]
                else:  # a channel times its stride may pass 2**31 too
                    ptrs = x_ptr + (n * sx_n + ih * sx_h + iw * sx_w)[:, None] + widen(offs_ci, IDX64)[None, :] * sx_c
                # Padding reads 0, and relu(0) = 0: act_in needs no special case at the border.
                xv = tl.load(ptrs, mask=ok[:, None] & mask_ci[None, :], other=0.0).to(tl.float32)
                if ACT_IN:
                    xv = relu(xv)
                wv = tl.load(dw_w_ptr + offs_ci * sdw_c + kh * sdw_h + kw * sdw_w, mask=mask_ci, other=0.0)
                dw += xv * wv.to(tl.float32)[None, :]
        if HAS_DW_BIAS:
            dw += tl.load(dw_b_ptr + offs_ci * sdw_b, mask=mask_ci, other=0.0).to(tl.float32)[None, :]
        if ACT_MID:
            dw = relu(dw)
        pw = tl.load(
            pw_w_ptr + offs_ci[:, None] * spw_i + offs_co[None, :] * spw_o,
            mask=mask_ci[:, None] & mask_co[None, :],
            other=0.0,
        )
        acc = accumulate_dot(acc, dw, pw, IS_FP32, DOT_FP32)

    if HAS_PW_BIAS:
        acc += tl.load(pw_b_ptr + offs_co * spw_b, mask=mask_co, other=0.0).to(tl.float32)[None, :]
    if ACT_OUT:
        acc = relu(acc)
    mask = mask_p[:, None] & mask_co[None, :]
    if HAS_RESIDUAL:
        if RES_NHWC:
            r_ptrs = res_ptr + offs_p[:, None] * COUT + offs_co[None, :]
        else:
            r_ptrs = res_ptr + (n * sr_n + oh * sr_h + ow * sr_w)[:, None] + widen(offs_co, IDX64)[None, :] * sr_c
        acc += tl.load(r_ptrs, mask=mask, other=0.0).to(tl.float32)
    # offs_p = (n * HO + oh) * WO + ow: the dense NHWC output's pixel index.
    tl.store(out_ptr + offs_p[:, None] * COUT + offs_co[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------------------------
# Host launcher and registration
# ---------------------------------------------------------------------------------------------------------------
def dwsep_conv_forward(
    x: torch.Tensor,
    dw_weight: torch.Tensor,
    dw_bias: torch.Tensor | None,
    pw_weight: torch.Tensor,
    pw_bias: torch.Tensor | None,
    stride: int,
    act_in: bool,
    act_mid: bool,
    act_out: bool,
    residual: torch.Tensor | None,
    config: triton.Config | None = None,
) -> torch.Tensor:
    """Checks the arguments (as csrc/checks.h does), allocates the NHWC output and launches the kernel.

    x may have any memory layout: the kernel reads through strides, so NCHW input is not copied. ``config`` (all
    three tiles, warps, stages) replaces the autotuned or default choice: the tests check every config with it.
    """
    check_activation(x, "x")
    n, c, h, w = x.shape
    check_same(dw_weight, x, "dw_weight", (c, 1, 3, 3))
    check_same(dw_bias, x, "dw_bias", (c,))
    check(pw_weight.dim() == 4, lambda: f"pw_weight: expected Cout x C x 1 x 1, got {tuple(pw_weight.shape)}")
    cout = pw_weight.shape[0]
    check_same(pw_weight, x, "pw_weight", (cout, c, 1, 1))
    check_same(pw_bias, x, "pw_bias", (cout,))
    check(stride in (1, 2), lambda: f"stride: expected 1 or 2, got {stride}")
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    check_same(residual, x, "residual", (n, cout, ho, wo))
    out = empty_nhwc(x, (n, cout, ho, wo))
    p = n * ho * wo
    if interpreter_tracing(x):
        return out
    # An absent bias/residual is never read (its HAS_* flag is off); x stands in for its pointer.
    dw_b = x if dw_bias is None else dw_bias
    pw_b = x if pw_bias is None else pw_bias
    res = out if residual is None else residual

    # CUDA grids: up to 2**31 - 1 programs along x (pixel tiles, at least 32 pixels each), 65535 along y.
    block_co, block_ci = channel_tiles(c, cout)
    check(triton.cdiv(cout, block_co) <= 65535,
          lambda: f"pw_weight: at most {65535 * block_co} output channels, got {cout}")

    def grid(meta):
        return (triton.cdiv(p, meta["BLOCK_P"]), triton.cdiv(cout, meta["BLOCK_CO"]))

    args = (
        x, dw_weight, dw_b, pw_weight, pw_b, res, out,
        p, _size_class(p), c, cout, h, w, ho, wo, stride,
        *x.stride(),
        dw_weight.stride(0), dw_weight.stride(2), dw_weight.stride(3), dw_b.stride(0),
        pw_weight.stride(0), pw_weight.stride(1), pw_b.stride(0),
        *res.stride(),
    )
    flags = dict(
        ACT_IN=bool(act_in), ACT_MID=bool(act_mid), ACT_OUT=bool(act_out),
        HAS_DW_BIAS=dw_bias is not None, HAS_PW_BIAS=pw_bias is not None, HAS_RESIDUAL=residual is not None,
        X_NHWC=is_nhwc(x), RES_NHWC=residual is None or is_nhwc(residual),
        IS_FP32=x.dtype == torch.float32, DOT_FP32=interpreter_dot_fp32(x.dtype),
        C_VEC=vector_width(c, x), CO_VEC=vector_width(cout, x),
        IDX64=needs_int64(x, out, residual, dw_weight, pw_weight),
    )
    if config is None and AUTOTUNE:
        launchable(_dwsep_conv_kernel)[grid](*args, **flags, BLOCK_CO=block_co, BLOCK_CI=block_ci)
    else:  # the kernel under the autotuner, launched with one config's tiles, warps and stages
        config = config or default_config(p, c, cout)
        launchable(_dwsep_conv_kernel.fn)[grid](
            *args, **flags, **config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages
        )
    return out


@triton_op("dfanet::dwsep_conv_triton", mutates_args=())
def dwsep_conv_triton(
    x: torch.Tensor,
    dw_weight: torch.Tensor,
    dw_bias: torch.Tensor | None,
    pw_weight: torch.Tensor,
    pw_bias: torch.Tensor | None,
    stride: int,
    act_in: bool,
    act_mid: bool,
    act_out: bool,
    residual: torch.Tensor | None,
) -> torch.Tensor:
    """The op behind ``dfanet_kernels.dwsep_conv(..., backend="triton")``: NHWC output, fp32 accumulation."""
    return dwsep_conv_forward(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, act_in, act_mid, act_out, residual)
