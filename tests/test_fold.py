"""BN folding: conv + BN (eval) equals the folded conv; non-finite weights are caught with the layer's name."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dfanet_kernels as dk

from .utils import assert_close, randomize_batchnorm


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
    with pytest.raises(ValueError, match="running_var has negative entries"):
        dk.fold_conv_bn(conv, bn, name="layer")
