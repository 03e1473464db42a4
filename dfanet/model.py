"""DFANet (Li et al., CVPR 2019): three aggregated Xception backbones and a light decoder.

The network is written once, in :meth:`DFANet.run`, against a small "runner" interface; the eager runner calls the
nn.Modules (training, ``fused=False``), the fused runner (``dfanet.fused``) calls the fused ops on BN-folded weights.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, Sequence

import torch
from torch import nn

from dfanet_kernels import reference
from dfanet_kernels.constants import BACKENDS

from .fused import FoldCache
from .layers import Backbone, ConvBNReLU, Decoder, FCAttention, XceptionBlock
from .variants import Variant, get_variant

MIN_INPUT_SIZE = 32  # the smallest H and W the network takes (the deepest map is 1/64 of it)


class Runner(Protocol):
    """How each piece of the network is computed; DFANet.run wires the pieces together."""

    def stem(self, x: torch.Tensor) -> torch.Tensor: ...
    # concat's result goes only to stage(): a runner may return a stand-in its stage() reads (FusedRunner's Concat).
    def stage(self, backbone: int, stage: int, x: Any) -> torch.Tensor: ...
    def attention(self, backbone: int, x: torch.Tensor) -> torch.Tensor: ...
    def concat(self, inputs: Sequence[torch.Tensor], size: Sequence[int]) -> Any: ...
    def add(self, inputs: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor: ...
    # The argmax over channels of x resized to size, in labels_dtype (predict's last step instead of add([x])).
    def labels(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor: ...
    # The decoder: the logits at low[0]'s size from the backbones' enc2 (low) and FC-attention (high) outputs.
    def decode(self, low: Sequence[torch.Tensor], high: Sequence[torch.Tensor]) -> torch.Tensor: ...


class EagerRunner:
    """Runs the nn.Modules as they are: the training path and the unfused inference path."""

    def __init__(self, model: "DFANet"):
        self.model = model

    def stem(self, x):
        return self.model.conv1(x)

    def stage(self, backbone, stage, x):
        return self.model.backbones[backbone].stages[stage](x)

    def attention(self, backbone, x):
        return self.model.backbones[backbone].fca(x)

    def concat(self, inputs, size):
        return reference.upsample_concat(inputs, size)

    def add(self, inputs, size):
        return reference.upsample_add(inputs, size)

    def labels(self, x, size):
        return reference.upsample_labels(x, size)

    def decode(self, low, high):
        dec = self.model.decoder
        return reference.decode(low, high, dec.low_reduce, dec.low_fuse, dec.high_reduce, dec.classifier)


def check_input(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"x: expected an N x 3 x H x W image batch, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x: expected a floating dtype (normalised image), got {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError("x: expected a batch of at least one image, got N = 0")
    h, w = x.shape[-2:]
    if h < MIN_INPUT_SIZE or w < MIN_INPUT_SIZE:
        raise ValueError(f"x: expected H and W >= {MIN_INPUT_SIZE}, got {h} x {w}")
    return x


def _fold_before_loading(model: "DFANet", *hook_args) -> None:
    model._fold.load_started()


def _refold_after_loading(model: "DFANet", incompatible_keys) -> None:
    model._fold.refold(model)


class DFANet(nn.Module):
    """DFANet semantic segmentation network.

    Args:
        num_classes: output classes (19 for Cityscapes, 11 for CamVid).
        variant: "A" or "B" (Xception A / B of the paper's Table 1); "A'" is network A, meant for 512 x 1024 input.
        fused: in eval(), fold BatchNorm into the convolutions (once, and again whenever the weights change) and run
            the fused kernels. train() is always the plain nn.Module path. The state_dict is the same either way.
        backend: backend of the fused ops: None picks the best for the input's device; "reference", "cpu",
            "triton" or "cuda" force one.

    ``forward(x)`` takes an N x 3 x H x W normalised image batch (H, W >= 32, any size) and returns N x num_classes
    x H x W logits (channels_last on the fused path).
    """

    def __init__(self, num_classes: int = 19, variant: str = "A", fused: bool = False, backend: str | None = None):
        super().__init__()
        self._fold = FoldCache()  # the fused path's folded weights, built on eval() or the first fused eval forward
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        self.variant: Variant = get_variant(variant)
        self.num_classes = num_classes
        self.fused = fused
        self.backend = backend
        spec = self.variant
        c2, c3, c4 = spec.stage_channels
        self.conv1 = ConvBNReLU(3, spec.stem_channels, 3, stride=2)
        # Backbone n > 1 takes [own lower stage, previous backbone's stage] at each stage (sub-stage aggregation),
        # and [previous enc2, upsampled previous FC-attention output] at enc2 (sub-network aggregation).
        first = (spec.stem_channels, c2, c3)
        later = (c2 + c4, c2 + c3, c3 + c4)
        self.backbones = nn.ModuleList(
            Backbone(first if n == 0 else later, spec.stages, spec.attention_hidden) for n in range(3)
        )
        self.decoder = Decoder(c2, c4, spec.decoder_channels, num_classes)
        self.register_load_state_dict_pre_hook(_fold_before_loading)
        self.register_load_state_dict_post_hook(_refold_after_loading)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, FCAttention):  # start as the identity scale (see FCAttention)
                nn.init.normal_(m.conv.weight, std=0.01)
                nn.init.ones_(m.conv.bias)
            elif isinstance(m, XceptionBlock):  # each residual branch starts at zero: the block starts as its shortcut
                nn.init.zeros_(m.sep3.bn.weight)
        # Small logits at the start keep the first steps' cross-entropy (and gradients) near log(num_classes).
        nn.init.normal_(self.decoder.classifier.weight, std=0.01)

    # The fused path refolds at once on eval(), load_state_dict(), .to() and a backend change (FoldCache.refold):
    # fused optimisers and .data edits change weights without the version bump the fold cache watches, and a compiled
    # model keeps the fold it was traced with.
    @property
    def backend(self) -> str | None:
        return self._backend

    @backend.setter
    def backend(self, value: str | None) -> None:
        if value is not None and value not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS} or None, got {value!r}")
        self._backend = value
        self._fold.refold(self)

    def train(self, mode: bool = True) -> "DFANet":
        super().train(mode)
        self._fold.refold(self)
        return self

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._fold.refold(self)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run_checked(x, to_labels=False)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """One label per pixel: N x H x W, uint8 for up to 256 classes, else int64 (what ``forward(x).argmax(1)``
        gives, except where two logits tie within rounding). Runs without autograd, in the model's current mode.
        Fused in eval, the last step resizes the quarter-size logits and keeps only each pixel's argmax
        (``dfanet_kernels.upsample_labels``): the full-size logits, the largest tensor of the forward, are never
        written. Elsewhere (and on the reference backend) it is exactly ``forward(x).argmax(1)``."""
        return self._run_checked(x, to_labels=True)

    def _run_checked(self, x: torch.Tensor, to_labels: bool) -> torch.Tensor:
        check_input(x)
        x = self._input_for_weights(x)
        if self.fused and not self.training:  # the fused stem takes the image as it is (see FusedRunner.stem)
            if torch.is_autocast_enabled(x.device.type):  # the fused ops' own aten calls stay in their dtype
                with torch.autocast(x.device.type, enabled=False):
                    return self.run(x, self._fold.runner(self), to_labels)
            return self.run(x, self._fold.runner(self), to_labels)
        return self.run(x, EagerRunner(self), to_labels)

    def _input_for_weights(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` checked against the weights' device and dtype (here, not in the first conv, whose message would blame
        the weights). Under autocast another dtype is autocast's business on the module path; the fused ops are not
        autocast ops and run in the weights' dtype, so the fused path converts the image to it."""
        weight = self.conv1.conv.weight
        if x.device != weight.device:
            raise ValueError(f"x: expected a tensor on {weight.device} (where the model's weights are), got {x.device}")
        if x.dtype != weight.dtype:
            if not torch.is_autocast_enabled(x.device.type):
                raise TypeError(f"x: expected dtype {weight.dtype} (that of the model's weights), got {x.dtype}")
            if self.fused and not self.training:
                return x.to(weight.dtype)
        return x

    def run(self, x: torch.Tensor, runner: Runner, to_labels: bool = False) -> torch.Tensor:
        """The DFANet graph (paper Fig. 3), computed piece by piece by ``runner``: the logits at the input size, or
        with ``to_labels`` their argmax over classes (``predict``)."""
        # Every intermediate map is freed when _quarter_logits returns, before the forward's largest allocation, the
        # full-size output (fused at 1024 x 1024 they held 59 MiB next to its 76 MiB; in training autograd keeps them).
        if to_labels:
            return runner.labels(self._quarter_logits(x, runner), x.shape[-2:])
        return runner.add([self._quarter_logits(x, runner)], x.shape[-2:])

    def _quarter_logits(self, x: torch.Tensor, runner: Runner) -> torch.Tensor:
        """Encoder and decoder: the logits at backbone 1's enc2 resolution (1/4 of the input)."""
        stem = runner.stem(x)
        enc2_outputs, attention_outputs = [], []
        previous = None  # (enc2, enc3, enc4, attention) outputs of the previous backbone
        for n in range(len(self.backbones)):
            features = []
            for i in range(3):
                if i == 0:
                    inp = (stem if previous is None
                           else runner.concat([previous[0], previous[3]], previous[0].shape[-2:]))
                else:
                    own = features[-1]
                    inp = own if previous is None else runner.concat([own, previous[i]], own.shape[-2:])
                features.append(runner.stage(n, i, inp))
            features.append(runner.attention(n, features[-1]))
            enc2_outputs.append(features[0])
            attention_outputs.append(features[3])
            previous = features

        return runner.decode(enc2_outputs, attention_outputs)

    def load_pretrained_backbone(self, path: str | os.PathLike) -> dict[str, list[str]]:
        """Load ImageNet-pretrained Xception weights into all three backbones (and conv1).

        The file is a state_dict (or a checkpoint dict holding one under "model" or "state_dict") of an Xception
        classifier with keys ``conv1.*``, ``stages.{0,1,2}.*`` and ``fc.*`` (the 1000-way classifier, which becomes
        the FC-attention FC layer), as written by ``dfanet pretrain``; a "module." prefix is stripped. As in the
        paper every backbone starts from the same weights; tensors whose shape differs (the first block of each
        stage of backbones 2 and 3 sees more input channels) keep their initialisation. Loaded with
        ``weights_only=True``. Returns ``{"loaded": [...], "skipped": [...]}`` (our parameter names).
        """
        from .pretrained import load_backbone_state

        return load_backbone_state(self, path)

    def extra_repr(self) -> str:
        return (f"variant={self.variant.name!r}, num_classes={self.num_classes}, fused={self.fused}, "
                f"backend={self.backend!r}")
