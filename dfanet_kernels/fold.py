"""Batch-norm folding: turn conv + BatchNorm (eval statistics) into one conv weight and bias, every weight checked
for finiteness on the way (also for weights used as they are, with :func:`check_finite`)."""

from __future__ import annotations

import torch
from torch import nn

from . import _checks


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise ValueError naming ``name`` if ``tensor`` holds a NaN or inf: the check the folds apply to every weight,
    for a weight that is used without folding (a depthwise conv, a linear layer). Under torch.compile it is an
    assertion inside the graph (no data-dependent branch there)."""
    _checks.finite(name, tensor)


@torch.no_grad()
def fold_bn(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    bn: nn.BatchNorm2d,
    name: str = "conv",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold ``bn`` (its running statistics, as in eval) into a conv's ``weight`` (Cout x ...) and ``bias``.

    ``bn(conv(x)) == conv'(x)`` with ``weight' = weight * s`` and ``bias' = (bias - mean) * s + beta`` per output
    channel, ``s = gamma / sqrt(var + eps)``. Raises ValueError naming ``name`` if any input or result is non-finite
    (a diverged training run or a corrupt checkpoint), so a bad model fails here and not as NaN logits later.
    """
    weight = _checks.floating(f"{name} weight", _checks.tensor(f"{name} weight", weight))
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise TypeError(f"{name}: expected a BatchNorm module to fold, got {type(bn).__name__}")
    cout = weight.shape[0]
    if bias is not None:
        _checks.like(f"{name} bias", bias, weight, "the weight", (cout,))
    if bn.num_features != cout:
        raise ValueError(f"{name}: BatchNorm has {bn.num_features} features, the conv has {cout} output channels")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"{name}: BatchNorm without running statistics (track_running_stats=False) cannot be folded")
    mean, var = bn.running_mean.float(), bn.running_var.float()
    gamma = bn.weight.float() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.float() if bn.bias is not None else torch.zeros_like(mean)
    for part, t in (("weight", weight), ("bias", bias), ("BN running_mean", mean), ("BN running_var", var),
                    ("BN weight", gamma), ("BN bias", beta)):
        if t is not None:
            check_finite(f"{name} {part}", t)
    _checks.non_negative(f"{name} BN running_var", var)
    scale = gamma / torch.sqrt(var + bn.eps)
    folded_weight = weight.float() * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    base = bias.float() if bias is not None else torch.zeros_like(mean)
    folded_bias = (base - mean) * scale + beta
    # Checked in the weight's dtype: a fold that fits fp32 may still overflow fp16.
    folded_weight, folded_bias = folded_weight.to(weight.dtype), folded_bias.to(weight.dtype)
    check_finite(f"{name} folded weight", folded_weight)
    check_finite(f"{name} folded bias", folded_bias)
    return folded_weight, folded_bias


@torch.no_grad()
def fold_conv_bn(
    conv: nn.Conv2d, bn: nn.BatchNorm2d | None, name: str = "conv"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (weight, bias) of ``bn(conv(x))`` as one conv; with ``bn=None`` the conv's own, checked for finiteness."""
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"{name}: expected an nn.Conv2d, got {type(conv).__name__}")
    if bn is not None:
        return fold_bn(conv.weight, conv.bias, bn, name)
    check_finite(f"{name} weight", conv.weight)
    if conv.bias is not None:
        check_finite(f"{name} bias", conv.bias)
    bias = None if conv.bias is None else conv.bias.detach().clone()
    return conv.weight.detach().clone(), bias
