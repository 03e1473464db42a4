"""Building blocks of DFANet: plain nn.Modules that train with autograd (the unfused path)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SafeBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that uses its running statistics for a training batch holding one value per channel.

    At batch 1 the deepest maps of DFANet are 1 x 1 for small inputs (backbone 3's enc4 is at 1/64 scale), and
    plain BatchNorm2d raises "Expected more than 1 value per channel when training". A single value has no batch
    variance, so this layer normalises it with the running statistics instead (and leaves them unchanged).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class ConvBNReLU(nn.Sequential):
    """k x k convolution (no bias) + BatchNorm + optional ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, relu: bool = True):
        layers = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
            SafeBatchNorm2d(out_channels),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)

    @property
    def conv(self) -> nn.Conv2d:
        return self[0]

    @property
    def bn(self) -> SafeBatchNorm2d:
        return self[1]

    @property
    def has_relu(self) -> bool:
        return len(self) == 3


class SeparableConv(nn.Module):
    """Xception's unit: ReLU -> depthwise 3x3 (stride 1 or 2) -> pointwise 1x1 -> BatchNorm.

    The ReLU comes first (pre-activation), so block outputs and the residual sums stay un-activated, as in Xception.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = SafeBatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pointwise(self.depthwise(F.relu(x))))


class XceptionBlock(nn.Module):
    """Three separable convs (the first one strided) plus a shortcut: identity, or 1x1 conv + BN where shape changes."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int], stride: int = 1):
        super().__init__()
        c1, c2, c3 = widths
        self.sep1 = SeparableConv(in_channels, c1, stride)
        self.sep2 = SeparableConv(c1, c2)
        self.sep3 = SeparableConv(c2, c3)
        needs_projection = stride != 1 or in_channels != c3
        self.shortcut = ConvBNReLU(in_channels, c3, 1, stride, relu=False) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.sep3(self.sep2(self.sep1(x))) + skip


def make_stage(in_channels: int, widths: tuple[int, int, int], num_blocks: int) -> nn.Sequential:
    """An encoder stage: ``num_blocks`` Xception blocks, the first of stride 2."""
    blocks = [XceptionBlock(in_channels, widths, stride=2)]
    blocks += [XceptionBlock(widths[-1], widths) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


class FCAttention(nn.Module):
    """Global pool -> FC (C -> 1000, the ImageNet classifier) -> 1x1 conv (1000 -> C) -> ReLU -> channel scale.

    The paper puts BatchNorm after the 1x1 conv; on the N x C x 1 x 1 vector it has one value per channel at
    batch 1 and cannot train there. The conv's own bias takes its place (BN's affine shift is all that survives
    folding anyway). The conv starts near zero with bias 1, so the attention starts as the identity scale.
    """

    def __init__(self, channels: int, hidden: int = 1000):
        super().__init__()
        self.fc = nn.Linear(channels, hidden)
        self.conv = nn.Conv2d(hidden, channels, 1, bias=True)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.fc(x.mean(dim=(2, 3)))
        return F.relu(self.conv(hidden[:, :, None, None]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale(x)


class Backbone(nn.Module):
    """One modified Xception (enc2, enc3, enc4) with FC attention at its tail."""

    def __init__(self, in_channels: tuple[int, int, int], stages, attention_hidden: int):
        super().__init__()
        self.stages = nn.ModuleList(
            make_stage(cin, widths, num_blocks) for cin, (widths, num_blocks) in zip(in_channels, stages)
        )
        self.fca = FCAttention(stages[-1][0][-1], attention_hidden)


class Decoder(nn.Module):
    """The paper's light decoder: low-level (enc2) and high-level (FC attention) features reduced, upsampled, added."""

    def __init__(self, enc2_channels: int, top_channels: int, channels: int, num_classes: int, num_backbones: int = 3):
        super().__init__()
        self.low_reduce = nn.ModuleList(ConvBNReLU(enc2_channels, channels) for _ in range(num_backbones))
        self.low_fuse = ConvBNReLU(channels, channels)
        self.high_reduce = nn.ModuleList(ConvBNReLU(top_channels, channels) for _ in range(num_backbones))
        self.classifier = nn.Conv2d(channels, num_classes, 1)
