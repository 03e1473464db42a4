"""conv1x1 / conv3x3: the CPU kernels (every instruction-set path) against F.conv2d (+ ReLU); conv3x3's Triton and
CUDA kernels against the float64 reference (CUDA on a GPU only: test_cuda_emulated.py runs its kernel on the CPU);
bad input rejected."""

import pytest
import torch

import dfanet_kernels as dk
from dfanet_kernels import reference

from ..op_cases import DEVICES as DEV
from ..op_cases import check, f64, layout_dtypes, on
from ..op_cases import rand as rand_on
from ..utils import (
    CHECKED_BACKENDS,
    LAYOUTS,
    assert_close,
    in_layout,
    needs_cpu_kernels,
    randn,
)

# (N, C, Cout, H, W): the decoder's 48/32/192 -> 32 and 32 -> 19, conv1's 3 -> 8, odd and tiny ones, wide C.
SHAPES_1X1 = [(1, 48, 32, 33, 65), (2, 32, 19, 7, 9), (1, 192, 32, 8, 16), (1, 1, 1, 1, 1), (3, 320, 17, 5, 6)]
SHAPES_3X3 = [(1, 3, 8, 64, 96), (2, 3, 8, 33, 65), (1, 5, 19, 9, 7), (1, 3, 8, 1, 1), (1, 3, 8, 2, 2),
              (1, 1, 33, 4, 9)]

# fp32: C (1x1) or 9 C (3x3) products summed in another order than oneDNN's.
ATOL, RTOL = 2e-5, 1e-5


def make_args(n, c, cout, h, w, k, seed=0, bias=True):
    gen = torch.Generator().manual_seed(seed)
    return randn(n, c, h, w, gen=gen), randn(cout, c, k, k, gen=gen, scale=(c * k * k) ** -0.5), (
        randn(cout, gen=gen) if bias else None)


@needs_cpu_kernels
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("op, k, shape",
                         [("conv1x1", 1, s) for s in SHAPES_1X1] + [("conv3x3", 3, s) for s in SHAPES_3X3],
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_matches_reference_on_every_path(every_isa, op, k, shape, stride, relu):
    x, w, b = make_args(*shape, k)
    out = getattr(dk, op)(x, w, b, stride, relu, backend="cpu")
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_close(out, reference.conv(x, w, b, stride, relu), ATOL, RTOL)


@needs_cpu_kernels
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op, k", [("conv1x1", 1), ("conv3x3", 3)])
def test_any_input_layout(op, k, layout):
    x, w, _ = make_args(2, 3, 8, 17, 23, k, seed=1, bias=False)
    x = in_layout(x, layout)
    assert_close(getattr(dk, op)(x, w, None, 2, True, backend="cpu"), reference.conv(x, w, None, 2, True), ATOL, RTOL)


# conv3x3 on the GPU backends, (N, C, Cout, H, W): the stem's 3 -> 8 at an odd size; 5 -> 13 with batch 2 (Cout
# neither a power of two nor a multiple of 8: masked channel lanes on Triton, a last partial group of channels on
# CUDA); 1 x 1 and 2 x 3 images (every tap meets the border). Each at stride 1 and 2, with bias and ReLU or with
# neither, in every layout and dtype the backend's op tests take (op_cases.layout_dtypes): NCHW (the image as it
# comes), channels_last and a strided view, all read in place. Tolerances: op_cases.DTYPES against the float64
# reference on the same rounded inputs: fp32 sums at most 45 products in another order (~1e-6); fp16/bf16
# accumulate in fp32 and round the output once (the format's unit roundoff, relative, the weights scaled to keep
# the outputs O(1)).
GPU_SHAPES_3X3 = [(1, 3, 8, 13, 17), (2, 5, 13, 13, 17), (1, 3, 8, 1, 1), (2, 5, 8, 2, 3)]
GPU_CASES = [
    on(backend, shape, stride, (i + stride) % 2 == 0, *ld,
       id=f"{'x'.join(map(str, shape))}-s{stride}-{'relu-bias' if (i + stride) % 2 == 0 else 'plain'}-{name}")
    for backend in ("triton", "cuda") for i, shape in enumerate(GPU_SHAPES_3X3) for stride in (1, 2)
    for name, ld in layout_dtypes(backend, (ATOL, RTOL))
]


@pytest.mark.parametrize("backend, shape, stride, fused, layout, dtype, atol, rtol", GPU_CASES)
def test_conv3x3_gpu_kernels_match_reference(backend, shape, stride, fused, layout, dtype, atol, rtol):
    """``fused``: with bias and ReLU (the stem), else neither."""
    n, c, cout, h, w = shape
    gen = torch.Generator().manual_seed(3)
    x = in_layout(rand_on(n, c, h, w, gen=gen, device=DEV[backend], dtype=dtype), layout)
    weight = rand_on(cout, c, 3, 3, gen=gen, device=DEV[backend], scale=(9 * c) ** -0.5, dtype=dtype)
    bias = rand_on(cout, gen=gen, device=DEV[backend], dtype=dtype) if fused else None
    out = dk.conv3x3(x, weight, bias, stride, fused, backend=backend)
    check(out, reference.conv(f64(x), f64(weight), f64(bias), stride, fused), atol, rtol, backend)


@pytest.mark.parametrize("backend", [on("triton"), on("cuda")])
def test_conv3x3_gpu_dtype_checks(backend):
    """conv3x3 runs the backend's kernel (float32/float16/bfloat16 only: others are refused naming the argument);
    conv1x1 stays F.conv2d there, which takes any floating dtype."""
    gen = torch.Generator().manual_seed(4)
    x = rand_on(1, 3, 5, 5, gen=gen, device=DEV[backend], dtype=torch.float64)
    weight3, weight1 = (rand_on(8, 3, k, k, gen=gen, device=DEV[backend], dtype=torch.float64) for k in (3, 1))
    message = f"backend '{backend}' takes dtype float32/float16/bfloat16, got torch.float64"
    with pytest.raises(TypeError, match=f"x: {message}"):
        dk.conv3x3(x, weight3, None, 2, True, backend=backend)
    with pytest.raises(TypeError, match=f"weight: {message}"):
        dk.PreparedConv(weight3, None, 2, True, backend=backend)
    out = dk.conv1x1(x, weight1, None, 2, True, backend=backend)
    assert_close(out.cpu(), reference.conv(x, weight1, None, 2, True).cpu(), ATOL, RTOL)


@needs_cpu_kernels
@pytest.mark.parametrize("op, k", [("conv1x1", 1), ("conv3x3", 3)])
def test_opcheck_cpu_op(op, k):
    x, w, b = make_args(2, 3, 5, 7, 6, k, seed=2)
    torch.library.opcheck(getattr(torch.ops.dfanet, op).default, (x, w, b, 2, True))


@pytest.mark.parametrize("backend", CHECKED_BACKENDS)
@pytest.mark.parametrize(
    "op, change, error, message",
    [
        (dk.conv1x1, dict(x=torch.randn(4, 9, 9)), ValueError, r"x: expected a 4-D tensor"),
        (dk.conv1x1, dict(weight=torch.randn(6, 4, 3, 3)), ValueError, r"weight: expected shape \(6, 4, 1, 1\)"),
        (dk.conv3x3, dict(weight=torch.randn(6, 4, 1, 1)), ValueError, r"weight: expected shape \(6, 4, 3, 3\)"),
        (dk.conv3x3, dict(weight=torch.randn(6, 4)), ValueError, r"weight: expected a 4-D tensor"),
        (dk.conv1x1, dict(bias=torch.randn(7)), ValueError, r"bias: expected shape \(6,\)"),
        (dk.conv3x3, dict(stride=3), ValueError, r"stride: expected 1 or 2, got 3"),
        (dk.conv1x1, dict(weight=torch.randn(6, 5, 1, 1)), ValueError, r"weight: expected shape \(6, 4, 1, 1\)"),
        (dk.conv1x1, dict(weight=torch.randn(0, 4, 1, 1), bias=None), ValueError,
         r"weight: expected at least one output channel, got shape \(0, 4, 1, 1\)"),
        (dk.conv3x3, dict(weight=torch.randn(6, 4, 3, 3).double()), TypeError,
         r"weight: expected dtype torch.float32 \(that of x\), got torch.float64"),
        (dk.conv3x3, dict(weight=torch.randn(6, 4, 3, 3, device="meta")), ValueError,
         r"weight: expected device cpu \(that of x\), got meta"),
        (dk.conv1x1, dict(x=torch.randint(0, 9, (1, 4, 9, 9))), TypeError, r"x: expected a floating dtype"),
        (dk.conv3x3, dict(x=torch.randn(1, 4, 0, 9)), ValueError, r"x: expected a non-empty"),
    ],
)
def test_bad_input_raises_naming_the_argument(op, change, error, message, backend):
    k = 1 if op is dk.conv1x1 else 3
    args = dict(x=torch.randn(1, 4, 9, 9), weight=torch.randn(6, 4, k, k), bias=torch.randn(6), stride=1,
                relu=True, backend=backend)
    args.update(change)
    with pytest.raises(error, match=message):
        op(**args)


@needs_cpu_kernels
def test_direct_op_call_with_bad_shape_raises_not_crashes():
    with pytest.raises(RuntimeError, match="weight: expected shape"):
        torch.ops.dfanet.conv3x3(torch.randn(1, 4, 5, 5), torch.randn(2, 3, 3, 3), None, 1, False)
