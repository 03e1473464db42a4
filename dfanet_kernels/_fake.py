"""Fake (meta) implementations of the compiled ops, so torch.compile and torch.export can trace through them.

They compute only the output's shape, dtype and layout (channels_last maps; contiguous labels), mirroring
csrc/checks.h.
"""

from __future__ import annotations

import torch

from .backends import compiled_library
from .constants import labels_dtype


def _empty_nhwc(like: torch.Tensor, shape) -> torch.Tensor:
    return like.new_empty(shape).contiguous(memory_format=torch.channels_last)


def _register() -> None:
    @torch.library.register_fake("dfanet::dwsep_conv")
    def _(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, act_in, act_mid, act_out, residual):
        torch._check(stride in (1, 2), lambda: f"stride: expected 1 or 2, got {stride}")
        torch._check(dw_weight.shape == (x.shape[1], 1, 3, 3), lambda: "dw_weight: expected C x 1 x 3 x 3")
        torch._check(pw_weight.shape[1] == x.shape[1], lambda: "pw_weight: expected Cout x C x 1 x 1")
        n, _, h, w = x.shape
        return _empty_nhwc(x, (n, pw_weight.shape[0], (h - 1) // stride + 1, (w - 1) // stride + 1))

    @torch.library.register_fake("dfanet::xception_block")
    def _(inputs, dw1, pw1, pb1, dw2, pw2, pb2, dw3, pw3, pb3, stride, shortcut_weight, shortcut_bias):
        torch._check(stride in (1, 2), lambda: f"stride: expected 1 or 2, got {stride}")
        torch._check(pw1.shape[1] == sum(t.shape[1] for t in inputs), lambda: "pw1: expected C1 x C x 1 x 1")
        x = inputs[0]
        n, _, h, w = x.shape
        return _empty_nhwc(x, (n, pw3.shape[0], (h - 1) // stride + 1, (w - 1) // stride + 1))

    def conv_fake(x, weight, bias, stride, relu):
        torch._check(stride in (1, 2), lambda: f"stride: expected 1 or 2, got {stride}")
        torch._check(weight.shape[1] == x.shape[1], lambda: "weight: expected Cout x C x k x k")
        n, _, h, w = x.shape
        return _empty_nhwc(x, (n, weight.shape[0], (h - 1) // stride + 1, (w - 1) // stride + 1))

    torch.library.register_fake("dfanet::conv1x1")(conv_fake)
    torch.library.register_fake("dfanet::conv3x3")(conv_fake)

    @torch.library.register_fake("dfanet::fc_attention")
    def _(x, fc_weight, fc_bias, conv_weight, conv_bias):
        torch._check(fc_weight.shape[1] == x.shape[1], lambda: "fc_weight: expected K x C")
        return _empty_nhwc(x, x.shape)

    @torch.library.register_fake("dfanet::upsample_concat")
    def _(inputs, size):
        channels = sum(t.shape[1] for t in inputs)
        return _empty_nhwc(inputs[0], (inputs[0].shape[0], channels, size[0], size[1]))

    @torch.library.register_fake("dfanet::upsample_add")
    def _(inputs, size):
        return _empty_nhwc(inputs[0], (inputs[0].shape[0], inputs[0].shape[1], size[0], size[1]))

    @torch.library.register_fake("dfanet::decoder_head")
    def _(low, high, low_weights, low_biases, fuse_weight, fuse_bias, high_weights, high_biases, classifier_weight,
          classifier_bias):
        torch._check(classifier_weight.shape[1] == fuse_weight.shape[0],
                     lambda: "classifier_weight: expected classes x D x 1 x 1")
        n, _, h, w = low[0].shape
        return _empty_nhwc(low[0], (n, classifier_weight.shape[0], h, w))

    @torch.library.register_fake("dfanet::upsample_labels")
    def _(x, size):
        return x.new_empty((x.shape[0], size[0], size[1]), dtype=labels_dtype(x.shape[1]))


if compiled_library() is not None:
    _register()
