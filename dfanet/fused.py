"""DFANet's fused inference path: BN folded into the convolutions, the network run through dfanet_kernels' ops.

Folding happens once and is redone whenever a parameter or buffer changes (load_state_dict, more training, an
in-place edit, .to()): the cache is keyed on every tensor's version counter and storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

import dfanet_kernels as dk

from .layers import ConvBNReLU, XceptionBlock

if TYPE_CHECKING:
    from .model import DFANet


@dataclass
class FoldedConv:
    """A conv with BN folded in, plus its ReLU, run by the library's conv1x1 / conv3x3 (the CPU kernels, NHWC out;
    F.conv2d, i.e. cuDNN, on the other backends)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: int = 1
    relu: bool = False

    @classmethod
    def of(cls, block: ConvBNReLU, name: str) -> "FoldedConv":
        weight, bias = dk.fold_conv_bn(block.conv, block.bn, name)
        return cls(weight, bias, block.conv.stride[0], block.has_relu)

    def run(self, x: torch.Tensor, backend: str | None) -> torch.Tensor:
        conv = dk.conv1x1 if self.weight.shape[-1] == 1 else dk.conv3x3
        return conv(x, self.weight, self.bias, self.stride, self.relu, backend=backend)


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


@dataclass(frozen=True)
class Concat:
    """A channel concatenation not yet computed (what FusedRunner.concat returns): ``upsample_concat(inputs, size)``.

    DFANet.run hands every concatenation straight to ``stage``, whose first block reads it without writing it
    (``xception_block_cat``): at 1024 x 1024 the second and third backbones' enc2 input alone is 63 MB."""

    inputs: tuple[torch.Tensor, ...]
    size: tuple


class FusedRunner:
    """Computes each piece of DFANet.run with the fused ops on folded weights."""

    def __init__(self, folded: FoldedDFANet, backend: str | None):
        self.folded = folded
        self.backend = backend

    def stem(self, x):
        # The CPU conv3x3 reads the image in its own layout and writes NHWC: the one layout conversion of the network
        # happens inside it. The GPU backends convert the image to channels_last first.
        if dk.backends.resolve(self.backend, x.device) != "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.folded.stem.run(x, self.backend)

    def _block(self, block: FoldedBlock, x: torch.Tensor | Concat) -> torch.Tensor:
        # One call per block: on the CPU the intermediate maps stay in cache (dfanet_kernels.xception_block), and a
        # Concat input is read by the kernel without being written (dfanet_kernels.xception_block_cat).
        sc = block.shortcut
        args = ([c.dw_weight for c in block.convs], [c.pw_weight for c in block.convs],
                [c.pw_bias for c in block.convs], block.convs[0].stride,
                None if sc is None else sc.weight, None if sc is None else sc.bias)
        if isinstance(x, Concat):
            if tuple(x.inputs[0].shape[-2:]) != x.size:  # not DFANet's case: the kernel resizes to inputs[0]'s size
                x = dk.upsample_concat(x.inputs, x.size, backend=self.backend)
            else:
                return dk.xception_block_cat(list(x.inputs), *args, backend=self.backend)
        return dk.xception_block(x, *args, backend=self.backend)

    def stage(self, backbone, stage, x):
        for block in self.folded.stages[backbone][stage]:
            x = self._block(block, x)
        return x

    def attention(self, backbone, x):
        # The scaled map is written, not the scale vector handed to its consumers (the decoder's 1x1 reduce and the
        # next backbone's first block): measured here (2 threads, 1024x1024) fc_attention on 192 ch at 64 x 64 takes
        # 0.33 ms, of which the scaled write is at most a copy pass, 0.18 ms: < 1% of the forward for all three
        # backbones, 3 MB each and off the memory peak, against per-sample scaled weights in two consumers.
        a = self.folded.attention[backbone]
        return dk.fc_attention(x, a.fc_weight, a.fc_bias, a.conv_weight, a.conv_bias, backend=self.backend)

    def concat(self, inputs, size):
        return Concat(tuple(inputs), tuple(size))

    def add(self, inputs, size):
        return dk.upsample_add(inputs, tuple(size), backend=self.backend)

    def reduce_low(self, backbone, x):
        return self.folded.low_reduce[backbone].run(x, self.backend)

    def fuse_low(self, x):
        return self.folded.low_fuse.run(x, self.backend)

    def reduce_high(self, backbone, x):
        return self.folded.high_reduce[backbone].run(x, self.backend)

    def classify(self, x):
        return self.folded.classifier.run(x, self.backend)


def _weights_signature(model: "DFANet") -> tuple:
    # Walks the module tree by hand: Module.parameters()/buffers() (named_modules with memo sets and name building)
    # took ~2 ms per forward here, as much as several kernels; this walk reads the same tensors in ~0.2 ms.
    signature = []
    stack = [model]
    while stack:
        module = stack.pop()
        for tensors in (module._parameters, module._buffers):
            for t in tensors.values():
                if t is not None:
                    signature.append((t._version, t.data_ptr(), t.device))
        stack.extend(m for m in module._modules.values() if m is not None)
    return tuple(signature)


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
