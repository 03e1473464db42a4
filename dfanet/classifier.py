"""The ImageNet classifier form of the modified Xception (conv1, enc2-enc4, global pool, FC): what backbone
pretraining trains, and what :meth:`dfanet.DFANet.load_pretrained_backbone` reads."""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvBNReLU, make_stage
from .variants import get_variant


class XceptionClassifier(nn.Module):
    """Xception A or B as an image classifier. Its ``conv1``, ``stages`` and ``fc`` share DFANet's layer shapes."""

    def __init__(self, variant: str = "A", num_classes: int = 1000):
        super().__init__()
        spec = get_variant(variant)
        self.conv1 = ConvBNReLU(3, spec.stem_channels, 3, stride=2)
        in_channels = (spec.stem_channels, *spec.stage_channels[:2])
        self.stages = nn.ModuleList(
            make_stage(cin, widths, blocks) for cin, (widths, blocks) in zip(in_channels, spec.stages)
        )
        self.fc = nn.Linear(spec.stage_channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for stage in self.stages:
            x = stage(x)
        return self.fc(x.mean(dim=(2, 3)))
