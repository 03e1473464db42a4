"""Pure-PyTorch reference implementations: the specification every backend is tested against.

These functions take already-validated arguments (see ``dfanet_kernels.ops`` for the public, checked
entry points). They are differentiable and run on any device and floating dtype.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .constants import ALIGN_CORNERS, labels_dtype


def dwsep_conv(
    x: torch.Tensor,
    dw_weight: torch.Tensor,
    dw_bias: torch.Tensor | None,
    pw_weight: torch.Tensor,
    pw_bias: torch.Tensor | None,
    stride: int = 1,
    act_in: bool = False,
    act_mid: bool = False,
    act_out: bool = False,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``act_out(pw(act_mid(dw3x3(act_in(x)) + dw_bias)) + pw_bias) + residual``."""
    if act_in:
        x = F.relu(x)
    y = F.conv2d(x, dw_weight, dw_bias, stride=stride, padding=1, groups=x.shape[1])
    if act_mid:
        y = F.relu(y)
    y = F.conv2d(y, pw_weight, pw_bias)
    if act_out:
        y = F.relu(y)
    if residual is not None:
        y = y + residual
    return y


def xception_block(
    x: torch.Tensor,
    dw_weights: Sequence[torch.Tensor],
    pw_weights: Sequence[torch.Tensor],
    pw_biases: Sequence[torch.Tensor | None],
    stride: int = 1,
    shortcut_weight: torch.Tensor | None = None,
    shortcut_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``sep3(sep2(sep1(x))) + shortcut(x)``: three ``dwsep_conv(act_in=True)`` (no depthwise bias, sep1 strided);
    the shortcut is ``conv2d(x, shortcut_weight, shortcut_bias, stride)`` or the identity."""
    skip = x if shortcut_weight is None else conv(x, shortcut_weight, shortcut_bias, stride)
    y = x
    for i in range(3):
        y = dwsep_conv(y, dw_weights[i], None, pw_weights[i], pw_biases[i], stride if i == 0 else 1, act_in=True,
                       residual=skip if i == 2 else None)
    return y


def xception_block_cat(
    inputs: Sequence[torch.Tensor],
    dw_weights: Sequence[torch.Tensor],
    pw_weights: Sequence[torch.Tensor],
    pw_biases: Sequence[torch.Tensor | None],
    stride: int = 1,
    shortcut_weight: torch.Tensor | None = None,
    shortcut_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``xception_block`` of ``upsample_concat(inputs, inputs[0]'s H x W)``."""
    x = upsample_concat(inputs, inputs[0].shape[-2:])
    return xception_block(x, dw_weights, pw_weights, pw_biases, stride, shortcut_weight, shortcut_bias)


def conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1,
         relu: bool = False) -> torch.Tensor:
    """A k x k convolution with padding ``k // 2`` and optional ReLU (``conv1x1`` / ``conv3x3``)."""
    y = F.conv2d(x, weight, bias, stride, weight.shape[-1] // 2)
    return F.relu(y) if relu else y


def attention_scale(
    x: torch.Tensor,
    fc_weight: torch.Tensor,
    fc_bias: torch.Tensor | None,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
) -> torch.Tensor:
    """The N x C channel scale of FC attention:
    ``relu(conv_weight @ (fc_weight @ mean_hw(x) + fc_bias) + conv_bias)``."""
    pooled = x.mean(dim=(2, 3))
    hidden = F.linear(pooled, fc_weight, fc_bias)
    return F.relu(F.linear(hidden, conv_weight.flatten(1), conv_bias))


def fc_attention(
    x: torch.Tensor,
    fc_weight: torch.Tensor,
    fc_bias: torch.Tensor | None,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
) -> torch.Tensor:
    """``x * attention_scale(x, ...)`` broadcast over H and W."""
    scale = attention_scale(x, fc_weight, fc_bias, conv_weight, conv_bias)
    return x * scale[:, :, None, None]


def resize(t: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with the library's one align_corners choice; a no-op at the same size."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=ALIGN_CORNERS)


def upsample_concat(inputs: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
    """``cat([resize(t, size) for t in inputs], dim=1)``."""
    return torch.cat([resize(t, size) for t in inputs], dim=1)


def upsample_add(inputs: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
    """``sum(resize(t, size) for t in inputs)``."""
    out = resize(inputs[0], size)
    for t in inputs[1:]:
        out = out + resize(t, size)
    return out


def upsample_labels(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``resize(x, size).argmax(1)`` as ``labels_dtype(C)``: the first maximum wins, and a NaN over any number."""
    return resize(x, size).argmax(1).to(labels_dtype(x.shape[1]))


def decode(low: Sequence[torch.Tensor], high: Sequence[torch.Tensor], low_convs: Sequence[Callable],
           fuse: Callable, high_convs: Sequence[Callable], classifier: Callable,
           add: Callable = upsample_add) -> torch.Tensor:
    """The decoder's wiring (paper Fig. 3), for any layers: each low-level map through its conv, resized to low[0]'s
    size and summed (``add(maps, size)``), the fuse conv; each high-level map through its conv, added resized; the
    classifier. The unfused model passes its modules, ``decoder_head`` folded 1x1 convs."""
    size = tuple(low[0].shape[-2:])
    fused = fuse(add([f(x) for f, x in zip(low_convs, low)], size))
    # High-level features are upsampled straight to the low-level size and added there (one resize each).
    return classifier(add([fused, *(f(x) for f, x in zip(high_convs, high))], size))


def decoder_head_with(conv_fn: Callable, add: Callable, low, high, low_weights, low_biases, fuse_weight, fuse_bias,
                      high_weights, high_biases, classifier_weight, classifier_bias) -> torch.Tensor:
    """``decode`` on folded 1x1 weights, each layer ``conv_fn(x, weight, bias, relu)``: ReLU after every conv but
    the classifier."""
    def layer(weight, bias, relu=True):
        return lambda x: conv_fn(x, weight, bias, relu)

    return decode(low, high, [layer(w, b) for w, b in zip(low_weights, low_biases)], layer(fuse_weight, fuse_bias),
                  [layer(w, b) for w, b in zip(high_weights, high_biases)],
                  layer(classifier_weight, classifier_bias, relu=False), add)


def decoder_head(low: Sequence[torch.Tensor], high: Sequence[torch.Tensor], low_weights: Sequence[torch.Tensor],
                 low_biases: Sequence[torch.Tensor | None], fuse_weight: torch.Tensor, fuse_bias: torch.Tensor | None,
                 high_weights: Sequence[torch.Tensor], high_biases: Sequence[torch.Tensor | None],
                 classifier_weight: torch.Tensor, classifier_bias: torch.Tensor | None) -> torch.Tensor:
    """DFANet's decoder up to the logits at ``low[0]``'s size (paper Fig. 3): each low-level map reduced by its 1x1
    conv + ReLU, resized and summed, the fuse 1x1 conv + ReLU; each high-level map reduced likewise and added
    resized; the classifier 1x1 conv (no ReLU)."""
    return decoder_head_with(lambda x, w, b, relu: conv(x, w, b, relu=relu), upsample_add, low, high, low_weights,
                             low_biases, fuse_weight, fuse_bias, high_weights, high_biases, classifier_weight,
                             classifier_bias)
