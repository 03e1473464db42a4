"""conv1x1 / conv3x3: the CPU kernels (every instruction-set path) against F.conv2d (+ ReLU); bad input rejected."""

import pytest
import torch

import dfanet_kernels as dk
from dfanet_kernels import reference

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
