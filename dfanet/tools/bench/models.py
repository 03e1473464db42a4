"""The model every comparison times: one seeded random DFANet, and twins with its weights (method:
docs/benchmarking.md, "Check, then time": randomised BatchNorm statistics so that the folding is exercised)."""

from __future__ import annotations

from pathlib import Path

import torch

from dfanet_kernels.constants import labels_dtype

from ...model import DFANet
from ...pt2 import Pt2Model, export_pt2, load_pt2
from ...testing import randomize_batchnorm


def build_model(variant: str = "A", num_classes: int = 19, seed: int = 0) -> DFANet:
    """An eval-mode unfused DFANet with seeded random weights and randomised BatchNorm statistics."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG state alone
        torch.manual_seed(seed)
        model = DFANet(num_classes=num_classes, variant=variant, fused=False)
    randomize_batchnorm(model, seed + 1)
    return model.eval()


def build_twin(model: DFANet, fused: bool, backend: str | None = None) -> DFANet:
    """A new eval-mode DFANet with ``model``'s weights (on its device and dtype) and the given ``fused`` setting."""
    twin = DFANet(num_classes=model.num_classes, variant=model.variant.name, fused=fused, backend=backend)
    twin.load_state_dict(model.state_dict())
    weight = next(model.parameters())
    return twin.to(weight.device, weight.dtype).eval()


def random_input(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A seeded N x 3 x H x W input (on the CPU; move it where it runs)."""
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def forward_labels(model: DFANet, x: torch.Tensor) -> torch.Tensor:
    """``model(x).argmax(1)`` in ``predict``'s label dtype: the labels a user of forward gets, the row ``predict`` is
    timed and measured against."""
    return model(x).argmax(1).to(labels_dtype(model.num_classes))


def aoti_package(fused: DFANet, x: torch.Tensor, path: Path) -> Pt2Model:
    """The fused model compiled by AOTInductor for ``x``'s shape on its device (``dfanet export --format pt2``:
    dfanet.pt2.export_pt2) into ``path``, and loaded back (dfanet.pt2.load_pt2): the fused model in another runtime."""
    n, _, h, w = x.shape
    return load_pt2(export_pt2(fused, path, n, h, w).path)
