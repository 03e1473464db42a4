"""The weighted ops with their weights checked once, for a caller that runs the same weights on many inputs.

A ``Prepared*`` object checks its weights when it is made -- the public op's checks, with the same errors naming the
argument -- and picks the backend for their device. Calling it checks only that the input is a tensor of the weights'
dtype and device (an error naming ``x``), not the rest of the public op's checks: in DFANet's fused forward (57 op
calls) those took ~1.1 ms, a quarter of the whole forward at 64 x 64 (1 thread, this VM). Meant for activations that
the library's own ops made from checked inputs, as in ``dfanet.fused``, which checks the image at its first conv and
prepares every layer when it folds the weights. A wrong activation shape still fails before any kernel runs: the
compiled ops check every argument again (RuntimeError), and the reference backend is PyTorch's own convolutions.

On the CPU backend the weights are also laid out as the kernels read them (``cpu_layout``), so no call packs them."""

from __future__ import annotations

from typing import Sequence

import torch

from . import _checks, backends, cpu_layout, dispatch
from .weight_checks import (
    check_attention_weights,
    check_block_lists,
    check_block_weights,
    check_conv_weights,
    check_decoder_weights,
)


class PreparedConv:
    """``conv1x1`` or ``conv3x3`` (by the weight's size) of fixed weights: ``PreparedConv(weight, ...)(x)``.

    Args: weight: Cout x C x 1 x 1 or Cout x C x 3 x 3; bias: Cout or None; stride: 1 or 2; relu; backend: as for
    the public ops, resolved now for the weight's device (``.backend`` says which).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1, relu: bool = False,
                 backend: str | None = None):
        weight = _checks.floating("weight", _checks.tensor("weight", weight, ndim=4))
        k = weight.shape[-1]
        if k not in (1, 3):
            raise ValueError(f"weight: expected Cout x C x 1 x 1 or Cout x C x 3 x 3, got {tuple(weight.shape)}")
        check_conv_weights(k, weight.shape[1], weight, "weight", weight, bias, stride)
        self.backend = backends.resolve(backend, weight.device, weight.dtype)
        dispatch.check_conv_dtype(self.backend, "weight", weight, k)
        if self.backend == "cpu":
            weight, bias = cpu_layout.dense(weight), cpu_layout.bias(bias)
        self.weight, self.bias, self.stride, self.relu = weight, bias, stride, _checks.flag("relu", relu)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _checks.input_like("x", x, self.weight)
        return dispatch.run_conv(self.backend, x, self.weight, self.bias, self.stride, self.relu)


class PreparedBlock:
    """``xception_block`` of fixed weights: ``block(x)``, or ``block.cat(inputs)`` for ``xception_block_cat``.

    Args: as for :func:`dfanet_kernels.xception_block` after ``x``; the block's input channels are dw_weights[0]'s.
    """

    def __init__(self, dw_weights: Sequence[torch.Tensor], pw_weights: Sequence[torch.Tensor],
                 pw_biases: Sequence[torch.Tensor | None], stride: int = 1, shortcut_weight: torch.Tensor | None = None,
                 shortcut_bias: torch.Tensor | None = None, backend: str | None = None):
        check_block_lists(dw_weights, pw_weights, pw_biases)
        dw0 = _checks.floating("dw_weights[0]", _checks.tensor("dw_weights[0]", dw_weights[0], ndim=4))
        check_block_weights(dw0.shape[0], dw0, "dw_weights[0]", dw_weights, pw_weights, pw_biases, stride,
                            shortcut_weight, shortcut_bias)
        self.backend = backends.resolve(backend, dw0.device, dw0.dtype)
        dispatch.check_backend_dtype(self.backend, "dw_weights[0]", dw0)
        if self.backend == "cpu":
            dw_weights = [cpu_layout.depthwise(w) for w in dw_weights]
            pw_weights = [cpu_layout.dense(w) for w in pw_weights]
            pw_biases = [cpu_layout.bias(b) for b in pw_biases]
            if shortcut_weight is not None:
                shortcut_weight, shortcut_bias = cpu_layout.dense(shortcut_weight), cpu_layout.bias(shortcut_bias)
        self.weights = (tuple(dw_weights), tuple(pw_weights), tuple(pw_biases), stride, shortcut_weight,
                        shortcut_bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _checks.input_like("x", x, self.weights[0][0])
        return dispatch.run_block(self.backend, [x], *self.weights)

    def cat(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The block of ``upsample_concat(inputs, inputs[0]'s H x W)``, the concatenation never written on the CPU and
        CUDA backends."""
        for i, t in enumerate(inputs):
            _checks.input_like(f"inputs[{i}]", t, self.weights[0][0])
        return dispatch.run_block(self.backend, list(inputs), *self.weights)


class PreparedAttention:
    """``fc_attention`` of fixed weights: ``PreparedAttention(fc_weight, ...)(x)``.

    Args: as for :func:`dfanet_kernels.fc_attention` after ``x``; the input channels are fc_weight's columns.
    """

    def __init__(self, fc_weight: torch.Tensor, fc_bias: torch.Tensor | None, conv_weight: torch.Tensor,
                 conv_bias: torch.Tensor | None, backend: str | None = None):
        fc_weight = _checks.floating("fc_weight", _checks.tensor("fc_weight", fc_weight, ndim=2))
        check_attention_weights(fc_weight.shape[1], fc_weight, "fc_weight", fc_weight, fc_bias, conv_weight,
                                conv_bias)
        self.backend = backends.resolve(backend, fc_weight.device, fc_weight.dtype)
        dispatch.check_backend_dtype(self.backend, "fc_weight", fc_weight)
        self.weights = (fc_weight, fc_bias, conv_weight, conv_bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _checks.input_like("x", x, self.weights[0])
        return dispatch.run_fc_attention(self.backend, x, *self.weights)


class PreparedDecoder:
    """``decoder_head`` of fixed weights: ``PreparedDecoder(low_weights, ...)(low, high)``.

    Args: as for :func:`dfanet_kernels.decoder_head` after ``high``; the maps' channels are the reduce weights'.
    """

    def __init__(self, low_weights: Sequence[torch.Tensor], low_biases: Sequence[torch.Tensor | None],
                 fuse_weight: torch.Tensor, fuse_bias: torch.Tensor | None, high_weights: Sequence[torch.Tensor],
                 high_biases: Sequence[torch.Tensor | None], classifier_weight: torch.Tensor,
                 classifier_bias: torch.Tensor | None, backend: str | None = None):
        ref = _checks.floating("fuse_weight", _checks.weight_4d("fuse_weight", fuse_weight))
        channels = []
        for kind, weights in (("low", low_weights), ("high", high_weights)):
            if not isinstance(weights, (list, tuple)) or (kind == "low" and len(weights) == 0):
                raise TypeError(f"{kind}_weights: expected a {'non-empty ' if kind == 'low' else ''}list of tensors, "
                                f"got {weights!r:.80}")
            channels.append([_checks.weight_4d(f"{kind}_weights[{i}]", w).shape[1] for i, w in enumerate(weights)])
        check_decoder_weights(*channels, ref, "fuse_weight", low_weights, low_biases, fuse_weight, fuse_bias,
                              high_weights, high_biases, classifier_weight, classifier_bias)
        self.backend = backends.resolve(backend, ref.device, ref.dtype)
        dispatch.check_backend_dtype(self.backend, "fuse_weight", ref)
        def dense(w):
            return cpu_layout.dense(w) if self.backend == "cpu" else w

        def bias(b):
            return cpu_layout.bias(b) if self.backend == "cpu" else b

        self.weights = ([dense(w) for w in low_weights], [bias(b) for b in low_biases], dense(fuse_weight),
                        bias(fuse_bias), [dense(w) for w in high_weights], [bias(b) for b in high_biases],
                        dense(classifier_weight), bias(classifier_bias))

    def __call__(self, low: Sequence[torch.Tensor], high: Sequence[torch.Tensor]) -> torch.Tensor:
        ref = self.weights[2]
        for name, maps, weights in (("low", low, self.weights[0]), ("high", high, self.weights[4])):
            if len(maps) != len(weights):
                raise ValueError(f"{name}: expected {len(weights)} maps (one per prepared weight), got {len(maps)}")
            for i, t in enumerate(maps):
                _checks.input_like(f"{name}[{i}]", t, ref)
        return dispatch.run_decoder_head(self.backend, low, high, *self.weights)
