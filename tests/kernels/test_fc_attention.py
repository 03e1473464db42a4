"""fc_attention: the compiled CPU path against the reference; bad input is rejected."""

import pytest
import torch

import dfanet_kernels as dk
from dfanet_kernels import reference

from ..utils import (
    CHECKED_BACKENDS,
    LAYOUTS,
    RUNNABLE_BACKENDS,
    assert_close,
    in_layout,
    needs_cpu_kernels,
    randn,
)

# (N, C, H, W, K): K is the hidden width (1000 in DFANet).
SHAPES = [(1, 1, 1, 1, 1), (3, 3, 7, 7, 10), (1, 17, 33, 65, 1000), (3, 48, 1, 250, 37), (1, 240, 65, 33, 1000),
          (2, 192, 16, 32, 1000)]

# fp32: the pooled mean and two mat-vecs reduce over up to 250 x 250 and 1000 terms in an order that differs from
# ATen's; a relative error of 1e-5 on order-1 outputs is a few ulp per reduction step.
ATOL, RTOL = 1e-5, 1e-5


def make_args(n, c, h, w, k, *, bias=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return dict(
        x=randn(n, c, h, w, gen=gen),
        fc_weight=randn(k, c, gen=gen, scale=c**-0.5),
        fc_bias=randn(k, gen=gen) if bias else None,
        conv_weight=randn(c, k, 1, 1, gen=gen, scale=max(k, 1) ** -0.5),
        conv_bias=randn(c, gen=gen) if bias else None,
    )


@needs_cpu_kernels
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(shape, layout, bias):
    args = make_args(*shape, bias=bias)
    args["x"] = in_layout(args["x"], layout)
    out = dk.fc_attention(**args, backend="cpu")
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_close(out, reference.fc_attention(**args), ATOL, RTOL)


@needs_cpu_kernels
@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_empty_hidden_layer_scales_by_relu_conv_bias(backend):
    """K = 0: the mat-vecs are empty sums, so the scale is relu(conv_bias) (and 0 without a bias)."""
    args = make_args(2, 17, 5, 3, 0, seed=5)
    assert_close(dk.fc_attention(**args, backend=backend), reference.fc_attention(**args), ATOL, RTOL)
    args["conv_bias"] = None
    assert torch.equal(dk.fc_attention(**args, backend=backend), torch.zeros_like(args["x"]))


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_nan_input_gives_nan_scales_like_torch_relu(backend):
    """relu(NaN) = NaN: a NaN in the pooled mean must not become a scale of 0 (max(NaN, 0) = 0 would hide it)."""
    args = make_args(1, 4, 2, 2, 3, seed=6)
    args["x"][0, 0, 0, 0] = float("nan")
    out, expected = dk.fc_attention(**args, backend=backend), reference.fc_attention(**args)
    assert expected.isnan().all() and torch.equal(out.isnan(), expected.isnan())


def test_scale_is_per_sample():
    """Each sample is scaled by its own pooled vector: swapping samples swaps outputs."""
    args = make_args(2, 6, 5, 5, 8, seed=4)
    out = dk.fc_attention(**args, backend="cpu")
    args["x"] = args["x"].flip(0)
    assert_close(dk.fc_attention(**args, backend="cpu"), out.flip(0), 0, 0)


@needs_cpu_kernels
def test_opcheck_cpu_op():
    a = make_args(2, 5, 4, 3, 7, seed=5)
    torch.library.opcheck(
        torch.ops.dfanet.fc_attention.default, (a["x"], a["fc_weight"], a["fc_bias"], a["conv_weight"], a["conv_bias"])
    )


@pytest.mark.parametrize("backend", CHECKED_BACKENDS)
@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(x=torch.randn(4, 9, 9)), ValueError, r"x: expected a 4-D tensor"),
        (dict(x=torch.randn(1, 4, 9, 0)), ValueError, r"x: expected a non-empty"),
        (dict(fc_weight=torch.randn(8, 5)), ValueError, r"fc_weight: expected shape \(8, 4\)"),
        (dict(fc_weight=torch.randn(8, 4, 1)), ValueError, r"fc_weight: expected a 2-D tensor"),
        (dict(fc_bias=torch.randn(9)), ValueError, r"fc_bias: expected shape \(8,\)"),
        (dict(conv_weight=torch.randn(4, 9, 1, 1)), ValueError, r"conv_weight: expected shape \(4, 8, 1, 1\)"),
        (dict(conv_bias=torch.randn(4).double()), TypeError, r"conv_bias: expected dtype torch.float32"),
        (dict(conv_bias=torch.randn(4, device="meta")), ValueError, r"conv_bias: expected device cpu"),
    ],
)
def test_bad_input_raises_naming_the_argument(change, error, message, backend):
    args = dict(x=torch.randn(1, 4, 9, 9), fc_weight=torch.randn(8, 4), fc_bias=torch.randn(8),
                conv_weight=torch.randn(4, 8, 1, 1), conv_bias=torch.randn(4), backend=backend)
    args.update(change)
    with pytest.raises(error, match=message):
        dk.fc_attention(**args)
