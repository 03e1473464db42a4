"""PreparedConv / PreparedBlock / PreparedAttention: the public ops' results, their weight checks at construction,
and no crash on a wrong activation at call time (the compiled ops check it again)."""

import pytest
import torch

import dfanet_kernels as dk

from ..op_cases import fc_args
from ..utils import CHECKED_BACKENDS, HAS_CPU_KERNELS, RUNNABLE_BACKENDS, randn
from . import test_xception_block


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
@pytest.mark.parametrize("k, stride, relu", [(1, 1, False), (1, 2, True), (3, 2, True), (3, 1, False)])
def test_conv_equals_the_public_op(backend, k, stride, relu):
    gen = torch.Generator().manual_seed(0)
    x, weight, bias = randn(2, 5, 9, 11, gen=gen), randn(7, 5, k, k, gen=gen), randn(7, gen=gen)
    conv = dk.PreparedConv(weight, bias, stride, relu, backend=backend)
    public = dk.conv1x1 if k == 1 else dk.conv3x3
    assert torch.equal(conv(x), public(x, weight, bias, stride, relu, backend=backend))


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
@pytest.mark.parametrize("shape", [(2, 48, 12, 12, 48, 17, 9, 1, False), (1, 8, 12, 12, 48, 13, 10, 2, True)])
def test_block_equals_the_public_ops(backend, shape):
    args = test_xception_block.make_args(*shape)
    x = args.pop("x")
    block = dk.PreparedBlock(**args, backend=backend)
    assert torch.equal(block(x), dk.xception_block(x, **args, backend=backend))
    inputs = [x[:, :3], torch.nn.functional.avg_pool2d(x[:, 3:], 2)]  # a concatenation of a full and a halved map
    assert torch.equal(block.cat(inputs), dk.xception_block_cat(inputs, **args, backend=backend))


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_attention_equals_the_public_op(backend):
    args = fc_args(2, 17, 5, 7, 40, device="cpu")
    x = args.pop("x")
    assert torch.equal(dk.PreparedAttention(**args, backend=backend)(x), dk.fc_attention(x, **args, backend=backend))


def block_weights(**change):
    weights = dict(dw_weights=[torch.randn(c, 1, 3, 3) for c in (4, 5, 5)],
                   pw_weights=[torch.randn(5, 4, 1, 1), torch.randn(5, 5, 1, 1), torch.randn(6, 5, 1, 1)],
                   pw_biases=[None, torch.randn(5), torch.randn(6)], stride=2,
                   shortcut_weight=torch.randn(6, 4, 1, 1), shortcut_bias=torch.randn(6))
    return {**weights, **change}


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: dk.PreparedConv(torch.randn(6, 4, 5, 5), None), ValueError,
         r"weight: expected Cout x C x 1 x 1 or Cout x C x 3 x 3, got \(6, 4, 5, 5\)"),
        (lambda: dk.PreparedConv(torch.randn(6, 4, 1), None), ValueError, r"weight: expected a 4-D tensor"),
        (lambda: dk.PreparedConv(torch.ones(6, 4, 1, 1, dtype=torch.int32), None), TypeError,
         r"weight: expected a floating dtype"),
        (lambda: dk.PreparedConv(torch.randn(6, 4, 1, 1), torch.randn(5)), ValueError, r"bias: expected shape \(6,\)"),
        (lambda: dk.PreparedConv(torch.randn(6, 4, 1, 1), torch.randn(6).double()), TypeError,
         r"bias: expected dtype torch.float32 \(that of weight\), got torch.float64"),
        (lambda: dk.PreparedConv(torch.randn(6, 4, 1, 1), None, stride=3), ValueError, r"stride: expected 1 or 2"),
        (lambda: dk.PreparedBlock(**block_weights(dw_weights=torch.randn(4, 1, 3, 3))), TypeError,
         r"dw_weights: expected a list of 3"),
        (lambda: dk.PreparedBlock(**block_weights(pw_weights=[torch.randn(5, 4, 1, 1), torch.randn(5, 6, 1, 1),
                                                              torch.randn(6, 5, 1, 1)])), ValueError,
         r"pw_weights\[1\]: expected shape \(5, 5, 1, 1\)"),
        (lambda: dk.PreparedBlock(**block_weights(pw_biases=[None, torch.randn(5).double(), None])), TypeError,
         r"pw_biases\[1\]: expected dtype torch.float32 \(that of dw_weights\[0\]\)"),
        (lambda: dk.PreparedBlock(**block_weights(shortcut_weight=None, shortcut_bias=None)), ValueError,
         r"shortcut_weight: None \(identity\) needs stride 1"),
        (lambda: dk.PreparedAttention(torch.randn(10, 4), None, torch.randn(5, 10, 1, 1), None), ValueError,
         r"conv_weight: expected shape \(4, 10, 1, 1\)"),
        (lambda: dk.PreparedAttention(torch.randn(10, 4), torch.randn(9), torch.randn(4, 10, 1, 1), None), ValueError,
         r"fc_bias: expected shape \(10,\)"),
    ],
)
def test_bad_weights_raise_at_construction_naming_the_argument(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_backend_is_resolved_and_checked_at_construction():
    assert dk.PreparedConv(torch.randn(6, 4, 1, 1), None).backend == ("cpu" if HAS_CPU_KERNELS else "reference")
    with pytest.raises(ValueError, match=r"backend='cuda' is unavailable"):
        dk.PreparedConv(torch.randn(6, 4, 1, 1), None, backend="cuda")
    if HAS_CPU_KERNELS:
        with pytest.raises(TypeError, match=r"fc_weight: backend 'cpu' takes dtype float32, got torch.float64"):
            dk.PreparedAttention(torch.randn(10, 4).double(), None, torch.randn(4, 10, 1, 1).double(), None,
                                 backend="cpu")
        # backend=None: the best backend that takes the weights' dtype.
        double = dk.PreparedAttention(torch.randn(10, 4).double(), None, torch.randn(4, 10, 1, 1).double(), None)
        assert double.backend == "reference"


@pytest.mark.parametrize("backend", CHECKED_BACKENDS)
def test_wrong_activation_raises_not_crashes(backend):
    """Calls skip the Python checks; the compiled ops (and PyTorch's convolutions) still reject a bad input."""
    block = dk.PreparedBlock(**block_weights(), backend=backend)
    with pytest.raises(RuntimeError):
        block(torch.randn(1, 3, 9, 9))  # 3 channels for a block of 4
    with pytest.raises(TypeError, match=r"^x: expected dtype torch.float32 \(that of the prepared weights\)"):
        block(torch.randn(1, 4, 9, 9).double())  # the input's dtype and device are checked, naming it
    attention = dk.PreparedAttention(torch.randn(10, 4), None, torch.randn(4, 10, 1, 1), None, backend=backend)
    with pytest.raises(RuntimeError):
        attention(torch.randn(1, 5, 3, 3))
