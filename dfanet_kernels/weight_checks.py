"""The weight checks of each weighted op, shared by the public ops (``ops.py``, every call) and the ``Prepared*`` ops
(``prepared.py``, once): the same errors, each naming the argument, either way. Built from ``_checks``."""

from __future__ import annotations

from typing import Sequence

import torch

from . import _checks


def check_conv_weights(k: int, c: int, ref: torch.Tensor, ref_name: str, weight, bias, stride) -> None:
    """A k x k conv's weight, bias and stride for an input of ``c`` channels, against ``ref``'s dtype and device."""
    weight = _checks.weight_4d("weight", weight)
    _checks.like("weight", weight, ref, ref_name, (weight.shape[0], c, k, k))
    _checks.optional_like("bias", bias, ref, ref_name, (weight.shape[0],))
    _checks.stride(stride)


def check_block_lists(dw_weights, pw_weights, pw_biases) -> None:
    """An Xception block's three per-layer weight lists are lists of 3."""
    for name, seq in (("dw_weights", dw_weights), ("pw_weights", pw_weights), ("pw_biases", pw_biases)):
        if not isinstance(seq, (list, tuple)) or len(seq) != 3:
            raise TypeError(f"{name}: expected a list of 3, got {seq!r:.80}")


def check_block_weights(c: int, ref: torch.Tensor, ref_name: str, dw_weights, pw_weights, pw_biases, stride,
                        shortcut_weight, shortcut_bias) -> None:
    """The weights of an Xception block whose input has ``c`` channels, against ``ref``'s dtype and device."""
    check_block_lists(dw_weights, pw_weights, pw_biases)
    channels = [c]
    for i in range(3):
        _checks.like(f"dw_weights[{i}]", dw_weights[i], ref, ref_name, (channels[i], 1, 3, 3))
        pw = _checks.weight_4d(f"pw_weights[{i}]", pw_weights[i])
        _checks.like(f"pw_weights[{i}]", pw, ref, ref_name, (pw.shape[0], channels[i], 1, 1))
        channels.append(pw.shape[0])
        _checks.optional_like(f"pw_biases[{i}]", pw_biases[i], ref, ref_name, (channels[-1],))
    _checks.stride(stride)
    if shortcut_weight is None:
        if stride != 1 or channels[3] != c:
            raise ValueError(f"shortcut_weight: None (identity) needs stride 1 and {c} output channels, got stride "
                             f"{stride} and {channels[3]} channels")
        if shortcut_bias is not None:
            raise ValueError("shortcut_bias: given without shortcut_weight")
    else:
        _checks.like("shortcut_weight", shortcut_weight, ref, ref_name, (channels[3], c, 1, 1))
        _checks.optional_like("shortcut_bias", shortcut_bias, ref, ref_name, (channels[3],))


def check_attention_weights(c: int, ref: torch.Tensor, ref_name: str, fc_weight, fc_bias, conv_weight,
                            conv_bias) -> None:
    """FC-attention weights for an input of ``c`` channels, against ``ref``'s dtype and device."""
    fc_weight = _checks.tensor("fc_weight", fc_weight, ndim=2)
    hidden = fc_weight.shape[0]
    _checks.like("fc_weight", fc_weight, ref, ref_name, (hidden, c))
    _checks.optional_like("fc_bias", fc_bias, ref, ref_name, (hidden,))
    _checks.like("conv_weight", conv_weight, ref, ref_name, (c, hidden, 1, 1))
    _checks.optional_like("conv_bias", conv_bias, ref, ref_name, (c,))


def check_decoder_weights(low_channels: Sequence[int], high_channels: Sequence[int], ref: torch.Tensor,
                          ref_name: str, low_weights, low_biases, fuse_weight, fuse_bias, high_weights, high_biases,
                          classifier_weight, classifier_bias) -> None:
    """decoder_head's weights for low-level maps of ``low_channels`` and high-level maps of ``high_channels``
    channels, against ``ref``'s dtype and device: 1x1 convs to the fuse conv's width D, the classifier's from D."""
    fuse_weight = _checks.weight_4d("fuse_weight", fuse_weight)
    d = fuse_weight.shape[0]
    _checks.like("fuse_weight", fuse_weight, ref, ref_name, (d, d, 1, 1))
    _checks.optional_like("fuse_bias", fuse_bias, ref, ref_name, (d,))
    for kind, channels, weights, biases in (("low", low_channels, low_weights, low_biases),
                                            ("high", high_channels, high_weights, high_biases)):
        for name, seq in ((f"{kind}_weights", weights), (f"{kind}_biases", biases)):
            if not isinstance(seq, (list, tuple)) or len(seq) != len(channels):
                raise TypeError(f"{name}: expected a list of {len(channels)} (one per {kind}-level map), got "
                                f"{seq!r:.80}")
        for i, c in enumerate(channels):
            _checks.like(f"{kind}_weights[{i}]", weights[i], ref, ref_name, (d, c, 1, 1))
            _checks.optional_like(f"{kind}_biases[{i}]", biases[i], ref, ref_name, (d,))
    classifier_weight = _checks.weight_4d("classifier_weight", classifier_weight)
    _checks.like("classifier_weight", classifier_weight, ref, ref_name, (classifier_weight.shape[0], d, 1, 1))
    _checks.optional_like("classifier_bias", classifier_bias, ref, ref_name, (classifier_weight.shape[0],))
