"""BN folding: conv + BN (eval) equals the folded conv; non-finite weights are caught with the layer's name."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dfanet_kernels as dk

from ..utils import assert_close, randomize_batchnorm


def make(groups=1, bias=False, cin=6, cout=6):
    conv = nn.Conv2d(cin, cout, 3, padding=1, groups=groups, bias=bias)
    bn = nn.BatchNorm2d(cout, eps=1e-3)
    randomize_batchnorm(bn)
    return conv, bn.eval()


@pytest.mark.parametrize("groups, bias", [(1, False), (1, True), (6, False)])
def test_folded_conv_equals_conv_then_bn(groups, bias):
    conv, bn = make(groups, bias)
    x = torch.randn(2, 6, 11, 7)
    weight, b = dk.fold_conv_bn(conv, bn)
    # fp32: folding reassociates one multiply per weight; 1e-5 covers the rounding on order-1 outputs.
    assert_close(F.conv2d(x, weight, b, padding=1, groups=groups), bn(conv(x)), 1e-5, 1e-5)


def test_fold_without_bn_returns_the_conv_weights():
    conv = nn.Conv2d(3, 4, 1)
    weight, bias = dk.fold_conv_bn(conv, None)
    assert torch.equal(weight, conv.weight) and torch.equal(bias, conv.bias)
    assert not weight.requires_grad


@pytest.mark.parametrize("where", ["weight", "bias", "running_var", "running_mean", "bn_weight", "bn_bias"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_weights_are_caught(where, bad):
    conv, bn = make(bias=True)
    target = {"weight": conv.weight, "bias": conv.bias, "running_var": bn.running_var,
              "running_mean": bn.running_mean, "bn_weight": bn.weight, "bn_bias": bn.bias}[where]
    with torch.no_grad():
        target.view(-1)[3] = bad
    with pytest.raises(ValueError, match="enc2.block0 .*expected finite values"):
        dk.fold_conv_bn(conv, bn, name="enc2.block0")


@pytest.mark.parametrize("where", ["weight", "bias"])
def test_non_finite_weights_without_bn_are_caught(where):
    conv = nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        getattr(conv, where).view(-1)[1] = math.nan
    with pytest.raises(ValueError, match=f"head {where}: expected finite values"):
        dk.fold_conv_bn(conv, None, name="head")


def test_fold_that_overflows_is_caught():
    """Finite inputs whose folded product is not: weight 1e38 times a BN scale of 1e3 overflows fp32."""
    conv, bn = make()
    with torch.no_grad():
        conv.weight.view(-1)[5] = 1e38
        bn.weight.fill_(1e3)
        bn.running_var.fill_(1.0)
    with pytest.raises(ValueError, match="layer folded weight: expected finite values"):
        dk.fold_conv_bn(conv, bn, name="layer")


def test_feature_count_mismatch_is_caught():
    conv = nn.Conv2d(3, 4, 1, bias=False)
    with pytest.raises(ValueError, match="BatchNorm has 5 features, the conv has 4 output channels"):
        dk.fold_bn(conv.weight, None, nn.BatchNorm2d(5), name="head")


def test_negative_variance_is_caught():
    conv, bn = make()
    bn.running_var[0] = -1.0
    with pytest.raises(ValueError, match="running_var: expected no negative entries"):
        dk.fold_conv_bn(conv, bn, name="layer")


def test_fold_that_overflows_half_precision_is_caught():
    """The fold fits fp32 but not the fp16 weights it is returned in (6e4 * 100 > 65504)."""
    bn = nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        bn.weight.fill_(100.0)
    with pytest.raises(ValueError, match="head folded weight: expected finite values"):
        dk.fold_bn(torch.full((4, 3, 1, 1), 6e4, dtype=torch.float16), None, bn, name="head")


@pytest.mark.parametrize(
    "weight, bias, bn, error, message",
    [
        (torch.randn(4, 3, 3, 3), torch.tensor([0.5]), nn.BatchNorm2d(4), ValueError,
         r"head bias: expected shape \(4,\), got \(1,\)"),
        (torch.randn(4, 3, 3, 3), torch.randn(4, 1), nn.BatchNorm2d(4), ValueError, r"head bias: expected shape"),
        (torch.ones(4, 3, 1, 1, dtype=torch.int32), None, nn.BatchNorm2d(4), TypeError,
         r"head weight: expected a floating dtype"),
        ([1.0, 2.0], None, nn.BatchNorm2d(4), TypeError, r"head weight: expected a torch.Tensor"),
        (torch.randn(4, 3, 1, 1), None, nn.Conv2d(4, 4, 1), TypeError, r"head: expected a BatchNorm module"),
    ],
)
def test_bad_fold_arguments_raise_naming_them(weight, bias, bn, error, message):
    with pytest.raises(error, match=message):
        dk.fold_bn(weight, bias, bn.eval(), name="head")


def test_fold_conv_bn_takes_a_conv():
    with pytest.raises(TypeError, match=r"head: expected an nn.Conv2d, got Tensor"):
        dk.fold_conv_bn(torch.randn(4, 3, 1, 1), nn.BatchNorm2d(4), name="head")
