"""Glue shared by the Triton kernels: the interpreter switch, output allocation, launch-size helpers."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

# TRITON_INTERPRET=1 runs every program of a launch one after another in NumPy (CPU tensors, CI). Triton reads the
# variable when a kernel is decorated, so it is read once here, when dfanet_kernels.triton is imported. Under the
# interpreter the launchers skip autotuning (one config: timing would be meaningless) and use large tiles, because
# the interpreter's cost grows with the number of programs, not the tile size.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# DFANET_TRITON_AUTOTUNE=0 (read at import): tiles chosen from the shape instead of timing configs on the first
# call of each new shape, which costs minutes of compiling on a cold Triton cache (see dwsep_conv.py). Never under
# the interpreter, where timings mean nothing.
AUTOTUNE = not INTERPRET and os.environ.get("DFANET_TRITON_AUTOTUNE", "1") != "0"


def launchable(kernel):
    """``kernel`` ready to launch inside a triton_op: through wrap_triton, so torch.compile and torch.export trace
    the launch. Under the interpreter there is nothing to trace and the kernel is launched as it is (what torch 2.13's
    wrap_triton does there too; torch 2.11's refuses Triton's InterpretedFunction with a RuntimeError)."""
    return kernel if INTERPRET else wrap_triton(kernel)


def empty_nhwc(like: torch.Tensor, shape) -> torch.Tensor:
    """An uninitialised N x C x H x W tensor with NHWC (channels_last) storage, like every compiled backend returns."""
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=torch.channels_last)


def static(v) -> int:
    """``v`` as a Python int. Under torch.compile with dynamic shapes a size may be symbolic; whatever decides a
    tile size or another constexpr must be concrete, so it is specialised (guarded) here."""
    return int(v)


def is_nhwc(t: torch.Tensor) -> bool:
    """Dense channels_last storage: element (n, c, h, w) at ((n * H + h) * W + w) * C + c.

    The kernels take a constexpr fast path for such tensors: offsets from C alone, whose divisibility by 16 lets
    Triton prove alignment and vectorise along channels; other layouts go through (unspecialised) strides.
    """
    return bool(t.is_contiguous(memory_format=torch.channels_last))


@triton.jit
def relu(v):
    # where, not maximum: NaN stays NaN as in torch.relu (max.f32 would turn it into 0).
    return tl.where(v < 0.0, 0.0, v)


@triton.jit
def widen(v, IDX64: tl.constexpr):
    """``v`` as int64 where IDX64 (some element offset may reach 2**31, see needs_int64), else as it is (int32)."""
    if IDX64:
        v = v.to(tl.int64)
    return v


@triton.jit
def pixel_offsets(n, h, w, H, W, C, s_n, s_h, s_w, NHWC: tl.constexpr, IDX64: tl.constexpr):
    """Element offsets of pixels (n, h, w) of a map: dense NHWC from C alone (vectorisable), else strided."""
    n, h, w = widen(n, IDX64), widen(h, IDX64), widen(w, IDX64)
    if NHWC:
        off = ((n * H + h) * W + w) * C
    else:
        off = n * s_n + h * s_h + w * s_w
    return off


@triton.jit
def bilinear_axis(dst, scale, size):
    """The two source taps (i0, i1) and weights (l0, l1) of output coordinate(s) ``dst`` along an axis of ``size``
    source pixels, align_corners=False: PyTorch's area_pixel_compute_source_index in fp32; trunc == floor because
    src >= 0 after the clamp. ``scale`` (in / out) is cast because Inductor (torch.compile) passes Python floats as
    fp64, Triton's launcher as fp32."""
    src = tl.maximum(tl.cast(scale, tl.float32) * (dst.to(tl.float32) + 0.5) - 0.5, 0.0)
    i0 = tl.minimum(src.to(tl.int32), size - 1)
    i1 = i0 + (i0 < size - 1).to(tl.int32)
    l1 = src - i0.to(tl.float32)
    return i0, i1, 1.0 - l1, l1


@triton.jit
def bilinear_blend(a, b, c, d, lh0, lh1, lw0, lw1):
    """The reference's order of operations: h0 * (w0 * a + w1 * b) + h1 * (w0 * c + w1 * d); a, b the upper row's
    taps, c, d the lower's, each weight shaped to broadcast against them."""
    return lh0 * (lw0 * a + lw1 * b) + lh1 * (lw0 * c + lw1 * d)


@triton.jit
def accumulate_dot(acc, a, w, IS_FP32: tl.constexpr, DOT_FP32: tl.constexpr):
    """``acc + a @ w`` in fp32. ``a`` (an fp32 depthwise result or input tile) is rounded to the weight dtype first
    (fp16/bf16 run on tensor cores; a no-op for fp32), as an unfused fp16 conv would round it."""
    a = a.to(w.dtype)
    if DOT_FP32:
        # Interpreter only (see interpreter_dot_fp32): products of bf16 values are exact in fp32, so this is the
        # tensor-core result.
        acc += tl.dot(a.to(tl.float32), w.to(tl.float32), input_precision="ieee")
    elif IS_FP32:
        # fp32 FMAs ("ieee"), not tl.dot's default TF32 (10-bit mantissa), so results match the fp32 reference to
        # ~1e-6. "tf32x3" (three TF32 tensor-core products, about as accurate) is the faster alternative to measure
        # on a GPU.
        acc += tl.dot(a, w, input_precision="ieee")
    else:
        acc += tl.dot(a, w)
    return acc


def source_args(t: torch.Tensor, ho: int, wo: int) -> list:
    """Pointer, size, strides and fp32 scales (in / out, as PyTorch computes them) of a map resized to ho x wo."""
    h, w = t.shape[2], t.shape[3]
    return [t, h, w, *t.stride(), static(h) / static(ho), static(w) / static(wo)]


def vector_width(channels: int, like: torch.Tensor) -> int:
    """The largest power of two dividing ``channels`` (the innermost NHWC size) that keeps an access within 16 bytes:
    4 for fp32 and 8 for fp16/bf16 at DFANet's channel counts (all multiples of 4, not all of 16)."""
    width, channels = 1, static(channels)
    while channels % (2 * width) == 0 and 2 * width * like.element_size() <= 16:
        width *= 2
    return width


def needs_int64(*tensors: torch.Tensor | None) -> bool:
    """Whether an element offset into any of ``tensors`` (the largest: the sum of (size - 1) * stride) may reach
    2**31, so that the kernels must index in int64. Runs on every launch: a dense tensor (every offset below its
    numel) skips the sum, 1.3 instead of 8 us for a dwsep launch's five tensors."""
    for t in tensors:
        if t is None:
            continue
        if t.numel() < 2**31 - 1 and (t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)):
            continue
        if sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride())) >= 2**31 - 1:
            return True
    return False


# [pixels, channels] tiles of the bandwidth-bound kernels (upsample, pool, scale): 2048 values over 8 warps, 8 per
# thread. At 32 per thread (4096 values, 4 warps) a channel count that is not a multiple of 16 (no vector accesses:
# one channel per lane, and each lane redoes the index math of 32 pixels) made ptxas spill 4.4 KB per thread (Triton
# 3.6, sm_90): DFANet's final upsample (19 channels) ran 5.3 ms on an H200 where torch takes 0.18 ms. The interpreter
# prefers few, large programs. tests/kernels/test_triton_compile.py checks that these kernels compile without local
# memory.
TILE_ELEMENTS = 2048 if not INTERPRET else 16384
TILE_WARPS = 8


def channel_block(channels: int, cap: int) -> int:
    """A power-of-two channel tile (Triton tiles are powers of two) covering ``channels``, 16 to ``cap``.

    At least 16: narrower tiles save nothing (masked lanes cost no memory traffic) and each width is one more
    compiled kernel variant.
    """
    return max(16, min(triton.next_power_of_2(static(channels)), cap))


def pixel_block(block_c: int, elements: int) -> int:
    """The pixel tile that makes a [pixels, block_c] tile hold about ``elements`` values (at least 16)."""
    return max(16, elements // static(block_c))


def interpreter_dot_fp32(dtype: torch.dtype) -> bool:
    """Whether tl.dot must take fp32 operands: only bf16 under the interpreter.

    Triton 3.9's interpreter keeps bf16 tiles as uint16 NumPy arrays and multiplies those integers in tl.dot
    (results ~1e10; checked 2026). On a GPU bf16 goes to the tensor cores as it should.
    """
    return INTERPRET and dtype == torch.bfloat16


def interpreter_tracing(t: torch.Tensor) -> bool:
    """True when ``t`` has no data to launch on under the interpreter (a fake or meta tensor).

    A triton_op's function doubles as its fake implementation. On a GPU a fake launch through wrap_triton is a
    no-op, but under TRITON_INTERPRET=1 `launchable` hands back the raw interpreted kernel, which would read the
    fake tensors' data. The launchers return their (correctly shaped, NHWC) output early instead, so shape and
    layout propagation can be tested without a GPU.
    """
    if not INTERPRET:
        return False
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor) or t.device.type == "meta"


# Argument checks for direct torch.ops.dfanet.<op>_triton calls, which skip dfanet_kernels.ops' friendlier checks:
# a bad shape must raise, never read out of bounds on the GPU. They mirror csrc/checks.h and work on fake tensors.
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check(cond, message) -> None:
    """``torch._check(cond, message)`` with a fast path for a plain True: the symbolic-shape machinery behind
    torch._check costs microseconds per call and a launch makes ~20 checks. A SymBool (under tracing) or a failed
    check still goes through torch._check."""
    if cond is True:
        return
    torch._check(cond, message)


def check_activation(t: torch.Tensor, name: str) -> None:
    check(t.dim() == 4, lambda: f"{name}: expected a 4-D N x C x H x W tensor, got {t.dim()}-D")
    check(t.numel() > 0, lambda: f"{name}: expected a non-empty tensor, got shape {tuple(t.shape)}")
    check(t.dtype in DTYPES, lambda: f"{name}: the triton backend takes float32/float16/bfloat16, got {t.dtype}")
    check(
        t.device.type in ("cuda", "meta") or (INTERPRET and t.device.type == "cpu"),
        lambda: f"{name}: the triton backend takes CUDA tensors (CPU only under TRITON_INTERPRET=1), got {t.device}",
    )


def check_same(t: torch.Tensor | None, ref: torch.Tensor, name: str, shape) -> None:
    """``t`` (if given) has exactly ``shape`` and ``ref``'s device and dtype."""
    if t is None:
        return
    check(tuple(t.shape) == tuple(shape), lambda: f"{name}: expected shape {tuple(shape)}, got {tuple(t.shape)}")
    check(t.device == ref.device, lambda: f"{name}: expected device {ref.device}, got {t.device}")
    check(t.dtype == ref.dtype, lambda: f"{name}: expected dtype {ref.dtype}, got {t.dtype}")
