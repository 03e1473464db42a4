"""DFANet's fused inference path: BN folded into the convolutions, the network run through dfanet_kernels' ops.

Folding happens once and is redone whenever a parameter or buffer changes (load_state_dict, more training, an
in-place edit, .to()): the cache is keyed on every tensor's version counter and storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

import dfanet_kernels as dk

from .layers import ConvBNReLU, XceptionBlock

if TYPE_CHECKING:
    from .model import DFANet


@dataclass
class FoldedConv:
    """A conv with BN folded in, plus its ReLU: run by oneDNN/cuDNN through F.conv2d (NHWC in, NHWC out)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: int = 1
    relu: bool = False

    @classmethod
    def of(cls, block: ConvBNReLU, name: str) -> "FoldedConv":
        weight, bias = dk.fold_conv_bn(block.conv, block.bn, name)
        return cls(weight, bias, block.conv.stride[0], block.has_relu)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.weight.shape[-1] // 2)
        return F.relu(y) if self.relu else y


@dataclass
class FoldedSeparable:
    dw_weight: torch.Tensor
    pw_weight: torch.Tensor
    pw_bias: torch.Tensor
    stride: int


@dataclass
class FoldedBlock:
    convs: tuple[FoldedSeparable, FoldedSeparable, FoldedSeparable]
    shortcut: FoldedConv | None


@dataclass
class FoldedAttention:
    fc_weight: torch.Tensor
    fc_bias: torch.Tensor
    conv_weight: torch.Tensor
    conv_bias: torch.Tensor


@dataclass
class FoldedDFANet:
    stem: FoldedConv
    stages: list[list[list[FoldedBlock]]]  # [backbone][stage][block]
    attention: list[FoldedAttention]
    low_reduce: list[FoldedConv]
    low_fuse: FoldedConv
    high_reduce: list[FoldedConv]
    classifier: FoldedConv


def _fold_block(block: XceptionBlock, name: str) -> FoldedBlock:
    convs = []
    for i, sep in enumerate((block.sep1, block.sep2, block.sep3), start=1):
        dk._checks.finite(f"{name}.sep{i}.depthwise weight", sep.depthwise.weight)
        pw_weight, pw_bias = dk.fold_bn(sep.pointwise.weight, None, sep.bn, f"{name}.sep{i}")
        convs.append(FoldedSeparable(sep.depthwise.weight.detach().clone(), pw_weight, pw_bias, sep.stride))
    shortcut = None if block.shortcut is None else FoldedConv.of(block.shortcut, f"{name}.shortcut")
    return FoldedBlock(tuple(convs), shortcut)


@torch.no_grad()
def fold_model(model: "DFANet") -> FoldedDFANet:
    """Fold every BatchNorm of ``model`` (eval statistics) into its conv; raises ValueError on non-finite weights."""
    stages = [
        [[_fold_block(b, f"backbones.{n}.stages.{i}.{j}") for j, b in enumerate(stage)] for i, stage in enumerate(bb.stages)]
        for n, bb in enumerate(model.backbones)
    ]
    attention = []
    for n, bb in enumerate(model.backbones):
        conv_weight, conv_bias = dk.fold_conv_bn(bb.fca.conv, None, f"backbones.{n}.fca.conv")
        dk._checks.finite(f"backbones.{n}.fca.fc weight", bb.fca.fc.weight)
        dk._checks.finite(f"backbones.{n}.fca.fc bias", bb.fca.fc.bias)
        attention.append(FoldedAttention(bb.fca.fc.weight.detach().clone(), bb.fca.fc.bias.detach().clone(), conv_weight, conv_bias))
    dec = model.decoder
    classifier_weight, classifier_bias = dk.fold_conv_bn(dec.classifier, None, "decoder.classifier")
    return FoldedDFANet(
        stem=FoldedConv.of(model.conv1, "conv1"),
        stages=stages,
        attention=attention,
        low_reduce=[FoldedConv.of(m, f"decoder.low_reduce.{n}") for n, m in enumerate(dec.low_reduce)],
        low_fuse=FoldedConv.of(dec.low_fuse, "decoder.low_fuse"),
        high_reduce=[FoldedConv.of(m, f"decoder.high_reduce.{n}") for n, m in enumerate(dec.high_reduce)],
        classifier=FoldedConv(classifier_weight, classifier_bias),
    )


class FusedRunner:
    """Computes each piece of DFANet.run with the fused ops on folded weights."""

    def __init__(self, folded: FoldedDFANet, backend: str | None):
        self.folded = folded
        self.backend = backend

    def stem(self, x):
        return self.folded.stem(x)

    def _block(self, block: FoldedBlock, x: torch.Tensor) -> torch.Tensor:
        skip = x if block.shortcut is None else block.shortcut(x)
        y = x
        for i, conv in enumerate(block.convs):
            y = dk.dwsep_conv(
                y, conv.dw_weight, None, conv.pw_weight, conv.pw_bias, conv.stride,
                act_in=True, residual=skip if i == 2 else None, backend=self.backend,
            )
        return y

    def stage(self, backbone, stage, x):
        for block in self.folded.stages[backbone][stage]:
            x = self._block(block, x)
        return x

    def attention(self, backbone, x):
        a = self.folded.attention[backbone]
        return dk.fc_attention(x, a.fc_weight, a.fc_bias, a.conv_weight, a.conv_bias, backend=self.backend)

    def concat(self, inputs, size):
        return dk.upsample_concat(inputs, tuple(size), backend=self.backend)

    def add(self, inputs, size):
        return dk.upsample_add(inputs, tuple(size), backend=self.backend)

    def reduce_low(self, backbone, x):
        return self.folded.low_reduce[backbone](x)

    def fuse_low(self, x):
        return self.folded.low_fuse(x)

    def reduce_high(self, backbone, x):
        return self.folded.high_reduce[backbone](x)

    def classify(self, x):
        return self.folded.classifier(x)


def _weights_signature(model: "DFANet") -> tuple:
    return tuple((t._version, t.data_ptr(), t.device) for t in (*model.parameters(), *model.buffers()))


def fused_runner(model: "DFANet") -> FusedRunner:
    """The fused runner for ``model``'s current weights, folding them again only if they changed."""
    if torch.compiler.is_compiling():  # traced once; guards, not version counters, protect compiled graphs
        cached = model._folded
        folded = cached[1] if cached is not None else fold_model(model)
    else:
        signature = _weights_signature(model)
        if model._folded is None or model._folded[0] != signature:
            model._folded = (signature, fold_model(model))
        folded = model._folded[1]
    return FusedRunner(folded, model.backend)
