"""dwsep_conv: every compiled CPU path against the reference, on odd shapes and layouts; bad input is rejected."""

import itertools

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

# (N, C, Cout, H, W): tiny, odd, wide/narrow, and the model's channel counts (12, 17, 48, 240).
SHAPES = [
    (1, 1, 1, 1, 1),
    (3, 3, 5, 7, 7),
    (1, 12, 48, 33, 65),
    (3, 17, 40, 65, 33),
    (1, 48, 192, 7, 250),
    (1, 240, 48, 33, 33),
    (2, 240, 17, 1, 7),
]

# fp32: the kernel sums the same 9 + C products as the reference in another order; with outputs of order 1 the
# rounding difference is a few ulp times sqrt(terms), far below 2e-5.
ATOL, RTOL = 2e-5, 1e-5


def make_args(n, c, cout, h, w, stride, *, bias=True, residual=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ho, wo = dk.conv_output_size(h, stride), dk.conv_output_size(w, stride)
    return dict(
        x=randn(n, c, h, w, gen=gen),
        dw_weight=randn(c, 1, 3, 3, gen=gen, scale=1 / 3),
        dw_bias=randn(c, gen=gen) if bias else None,
        pw_weight=randn(cout, c, 1, 1, gen=gen, scale=c**-0.5),
        pw_bias=randn(cout, gen=gen) if bias else None,
        stride=stride,
        residual=randn(n, cout, ho, wo, gen=gen) if residual else None,
    )


@needs_cpu_kernels
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference_on_odd_shapes(shape, stride, layout):
    args = make_args(*shape, stride)
    args["x"] = in_layout(args["x"], layout)
    args["residual"] = in_layout(args["residual"], layout)
    flags = dict(act_in=True, act_mid=True, act_out=True)
    out = dk.dwsep_conv(**args, **flags, backend="cpu")
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_close(out, reference.dwsep_conv(**args, **flags), ATOL, RTOL)


@needs_cpu_kernels
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("bias, residual", [(True, True), (False, False), (True, False), (False, True)])
@pytest.mark.parametrize("act_in, act_mid, act_out", list(itertools.product([False, True], repeat=3)))
def test_every_activation_bias_residual_combination(act_in, act_mid, act_out, bias, residual, stride):
    args = make_args(3, 17, 12, 13, 9, stride, bias=bias, residual=residual, seed=1)
    flags = dict(act_in=act_in, act_mid=act_mid, act_out=act_out)
    assert_close(dk.dwsep_conv(**args, **flags, backend="cpu"), reference.dwsep_conv(**args, **flags), ATOL, RTOL)


@needs_cpu_kernels
def test_activations_change_the_result():
    """Guards the test above: with inputs of both signs each ReLU point must matter, or the flags are ignored."""
    args = make_args(1, 8, 8, 9, 9, 1, seed=2)
    outs = [dk.dwsep_conv(**args, **{flag: True}, backend="cpu") for flag in ("act_in", "act_mid", "act_out")]
    plain = dk.dwsep_conv(**args, backend="cpu")
    for out in outs:
        assert (out - plain).abs().max() > 1e-3


@needs_cpu_kernels
def test_opcheck_cpu_op():
    args = make_args(2, 5, 7, 9, 6, 2, seed=3)
    op_args = (args["x"], args["dw_weight"], args["dw_bias"], args["pw_weight"], args["pw_bias"], 2, True, False, True,
               args["residual"])
    torch.library.opcheck(torch.ops.dfanet.dwsep_conv.default, op_args)


@pytest.mark.parametrize("backend", CHECKED_BACKENDS)
@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(x=torch.randn(3, 9, 9)), ValueError, "x: expected a 4-D tensor"),
        (dict(x=torch.randint(0, 5, (1, 4, 9, 9))), TypeError, "x: expected a floating dtype"),
        (dict(x=torch.randn(1, 4, 0, 9)), ValueError, "x: expected a non-empty"),
        (dict(dw_weight=torch.randn(4, 1, 5, 5)), ValueError, "dw_weight: expected shape (4, 1, 3, 3)"),
        (dict(dw_weight=torch.randn(4, 1, 3, 3, dtype=torch.float64)), TypeError, "dw_weight: expected dtype"),
        (dict(dw_bias=torch.randn(5)), ValueError, "dw_bias: expected shape (4,)"),
        (dict(pw_weight=torch.randn(6, 5, 1, 1)), ValueError, "pw_weight: expected shape (6, 4, 1, 1)"),
        (dict(pw_weight=torch.randn(6, 4)), ValueError, "pw_weight: expected a 4-D tensor"),
        (dict(pw_weight=torch.randn(0, 4, 1, 1), pw_bias=None), ValueError,
         "pw_weight: expected at least one output channel, got shape (0, 4, 1, 1)"),
        (dict(dw_weight=torch.randn(4, 1, 3, 3, device="meta")), ValueError,
         "dw_weight: expected device cpu (that of x), got meta"),
        (dict(residual=torch.randn(1, 6, 5, 5, device="meta")), ValueError, "residual: expected device cpu"),
        (dict(pw_bias=torch.randn(6, dtype=torch.float16)), TypeError, "pw_bias: expected dtype torch.float32"),
        (dict(pw_bias=torch.randn(7)), ValueError, "pw_bias: expected shape (6,)"),
        (dict(stride=3), ValueError, "stride: expected 1 or 2, got 3"),
        (dict(stride=True), TypeError, "stride: expected the int 1 or 2, got bool True"),
        (dict(stride=2.0), TypeError, "stride: expected the int 1 or 2, got float 2.0"),
        (dict(residual=torch.randn(1, 6, 9, 9)), ValueError, "residual: expected shape (1, 6, 5, 5)"),
        (dict(x=[[1.0]]), TypeError, "x: expected a torch.Tensor, got list"),
        (dict(backend="tpu"), ValueError, "backend: expected one of"),
    ],
)
def test_bad_input_raises_naming_the_argument(change, error, message, backend):
    args = dict(
        x=torch.randn(1, 4, 9, 9), dw_weight=torch.randn(4, 1, 3, 3), dw_bias=torch.randn(4),
        pw_weight=torch.randn(6, 4, 1, 1), pw_bias=torch.randn(6), stride=2, residual=None, backend=backend,
    )
    args.update(change)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        dk.dwsep_conv(**args)


@needs_cpu_kernels
def test_cpu_backend_rejects_other_dtypes_before_the_kernel():
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    w = dict(dw_weight=torch.randn(4, 1, 3, 3, dtype=torch.float64), dw_bias=None,
             pw_weight=torch.randn(2, 4, 1, 1, dtype=torch.float64), pw_bias=None)
    with pytest.raises(TypeError, match="x: backend 'cpu' takes dtype float32, got torch.float64"):
        dk.dwsep_conv(x, **w, backend="cpu")


@needs_cpu_kernels
def test_direct_op_call_with_bad_shape_raises_not_crashes():
    """torch.ops.dfanet.* skips the Python checks; the C++ checks must still stop a bad call."""
    x = torch.randn(1, 4, 5, 5)
    with pytest.raises(RuntimeError, match="dw_weight: expected shape"):
        torch.ops.dfanet.dwsep_conv(x, torch.randn(3, 1, 3, 3), None, torch.randn(2, 4, 1, 1), None, 1, False, False,
                                    False, None)
