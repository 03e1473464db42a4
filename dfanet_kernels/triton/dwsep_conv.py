"""Fused depthwise-separable convolution in Triton (``dfanet::dwsep_conv_triton``).

``out = act_out(pw(act_mid(dw3x3(act_in(x)) + dw_bias)) + pw_bias) + residual``, dw3x3 with padding 1 and stride 1
or 2. A program owns a tile of BLOCK_P output pixels (flattened over N, Ho, Wo) x BLOCK_CO output channels. For each
BLOCK_CI slice of the input channels it computes the depthwise result of its pixels in registers (nine masked NHWC
loads, fp32) and feeds it straight to ``tl.dot`` with the matching slice of the pointwise weight: the depthwise
result never goes to memory.
"""

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from ._common import INTERPRET, empty_nhwc, interpreter_dot_fp32

# ---------------------------------------------------------------------------------------------------------------
# Tuning constants
# ---------------------------------------------------------------------------------------------------------------
# tl.dot needs every tile dimension >= 16, so channel tiles are padded with masks (DFANet has C, Cout in 8..288).
# DFANet's maps are small at batch 1 (enc4 of backbone 3 at 1024x1024 input is 16x16 = 256 pixels), so the configs
# include a 32-pixel tile that still gives the GPU enough programs; the larger tiles are for batch 8 and the big
# enc2 maps. BLOCK_CO >= Cout avoids recomputing the depthwise result per Cout tile; BLOCK_CO = 128 covers Cout <= 128
# in one tile, and Cout = 192 (DFANet A's enc4) takes two. Kept to six configs: each distinct (C, Cout, P, stride)
# is tuned once per process, and DFANet A has about 15 of them per input size.
_GPU_CONFIGS = [
    triton.Config({"BLOCK_P": 32, "BLOCK_CO": 64, "BLOCK_CI": 32}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_P": 64, "BLOCK_CO": 64, "BLOCK_CI": 32}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_P": 128, "BLOCK_CO": 64, "BLOCK_CI": 32}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_P": 64, "BLOCK_CO": 128, "BLOCK_CI": 32}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_P": 128, "BLOCK_CO": 128, "BLOCK_CI": 32}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_P": 64, "BLOCK_CO": 32, "BLOCK_CI": 16}, num_warps=4, num_stages=2),
]
# The interpreter runs programs one at a time: one config, big tiles, few programs.
_INTERPRET_CONFIGS = [triton.Config({"BLOCK_P": 64, "BLOCK_CO": 64, "BLOCK_CI": 64}, num_warps=4)]


# ---------------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------------
@triton.autotune(configs=_INTERPRET_CONFIGS if INTERPRET else _GPU_CONFIGS, key=["C", "COUT", "P", "STRIDE"])
@triton.jit
def _dwsep_conv_kernel(
    x_ptr, dw_w_ptr, dw_b_ptr, pw_w_ptr, pw_b_ptr, res_ptr, out_ptr,
    P, C, COUT, H, W, HO, WO,
    sx_n, sx_c, sx_h, sx_w,
    sdw_c, sdw_h, sdw_w, sdw_b,
    spw_o, spw_i, spw_b,
    sr_n, sr_c, sr_h, sr_w,
    so_n, so_c, so_h, so_w,
    STRIDE: tl.constexpr,
    ACT_IN: tl.constexpr, ACT_MID: tl.constexpr, ACT_OUT: tl.constexpr,
    HAS_DW_BIAS: tl.constexpr, HAS_PW_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr,
):
    pid_p = tl.program_id(0)
    pid_co = tl.program_id(1)
    # int64 pixel indices: N * H * W * C overflows int32 for large batches/images.
    offs_p = pid_p.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = offs_p < P
    ow = offs_p % WO
    oh = (offs_p // WO) % HO
    n = offs_p // (WO * HO)
    offs_co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    mask_co = offs_co < COUT

    x_pix = x_ptr + n * sx_n  # [BLOCK_P] pointers to each pixel's sample
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
                ptrs = x_pix[:, None] + (ih * sx_h + iw * sx_w)[:, None] + offs_ci[None, :] * sx_c
                # Padding reads 0, and relu(0) = 0: act_in needs no special case at the border.
                xv = tl.load(ptrs, mask=ok[:, None] & mask_ci[None, :], other=0.0).to(tl.float32)
                if ACT_IN:
                    xv = tl.maximum(xv, 0.0)
                wv = tl.load(dw_w_ptr + offs_ci * sdw_c + kh * sdw_h + kw * sdw_w, mask=mask_ci, other=0.0)
                dw += xv * wv.to(tl.float32)[None, :]
        if HAS_DW_BIAS:
            dw += tl.load(dw_b_ptr + offs_ci * sdw_b, mask=mask_ci, other=0.0).to(tl.float32)[None, :]
        if ACT_MID:
            dw = tl.maximum(dw, 0.0)
        pw = tl.load(
            pw_w_ptr + offs_ci[:, None] * spw_i + offs_co[None, :] * spw_o,
            mask=mask_ci[:, None] & mask_co[None, :],
            other=0.0,
        )
        # The depthwise result is rounded to the weight dtype (fp16/bf16 run on tensor cores; a no-op for fp32)
        # as an unfused fp16 conv would round it. fp32 uses full-precision FMAs ("ieee"), not TF32, so results
        # match the fp32 reference to ~1e-6; input_precision is ignored for fp16/bf16.
        a = dw.to(pw.dtype)
        if DOT_FP32:
            # Interpreter only (see _common.interpreter_dot_fp32): products of bf16 values are exact in fp32, so this is
            # the tensor-core result.
            acc += tl.dot(a.to(tl.float32), pw.to(tl.float32), input_precision="ieee")
        else:
            acc += tl.dot(a, pw, input_precision="ieee")

    if HAS_PW_BIAS:
        acc += tl.load(pw_b_ptr + offs_co * spw_b, mask=mask_co, other=0.0).to(tl.float32)[None, :]
    if ACT_OUT:
        acc = tl.maximum(acc, 0.0)
    mask = mask_p[:, None] & mask_co[None, :]
    if HAS_RESIDUAL:
        r_ptrs = res_ptr + (n * sr_n + oh * sr_h + ow * sr_w)[:, None] + offs_co[None, :] * sr_c
        acc += tl.load(r_ptrs, mask=mask, other=0.0).to(tl.float32)
    o_ptrs = out_ptr + (n * so_n + oh * so_h + ow * so_w)[:, None] + offs_co[None, :] * so_c
    tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------------------------
# Host launcher and registration
# ---------------------------------------------------------------------------------------------------------------
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
    """The Triton kernel behind ``dfanet_kernels.dwsep_conv(..., backend="triton")``; arguments are checked there.

    Takes any memory layout (the kernel reads through strides, so NCHW input is not copied) and returns NHWC.
    """
    torch._check(stride in (1, 2), lambda: f"stride: expected 1 or 2, got {stride}")
    n, c, h, w = x.shape
    cout = pw_weight.shape[0]
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    out = empty_nhwc(x, (n, cout, ho, wo))
    p = n * ho * wo
    # An absent bias/residual is never read (its HAS_* flag is off); x stands in for its pointer.
    dw_b = x if dw_bias is None else dw_bias
    pw_b = x if pw_bias is None else pw_bias
    res = out if residual is None else residual

    def grid(meta):
        return (triton.cdiv(p, meta["BLOCK_P"]), triton.cdiv(cout, meta["BLOCK_CO"]))

    wrap_triton(_dwsep_conv_kernel)[grid](
        x, dw_weight, dw_b, pw_weight, pw_b, res, out,
        p, c, cout, h, w, ho, wo,
        *x.stride(),
        dw_weight.stride(0), dw_weight.stride(2), dw_weight.stride(3), dw_b.stride(0),
        pw_weight.stride(0), pw_weight.stride(1), pw_b.stride(0),
        *res.stride(),
        *out.stride(),
        STRIDE=stride,
        ACT_IN=act_in, ACT_MID=act_mid, ACT_OUT=act_out,
        HAS_DW_BIAS=dw_bias is not None, HAS_PW_BIAS=pw_bias is not None, HAS_RESIDUAL=residual is not None,
        DOT_FP32=interpreter_dot_fp32(x.dtype),
    )
    return out
