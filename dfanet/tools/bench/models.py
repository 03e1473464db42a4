"""The model every comparison times: one seeded random DFANet, and twins with its weights (method:
docs/benchmarking.md, "Check, then time": randomised BatchNorm statistics so that the folding is exercised)."""

from __future__ import annotations

import torch

from ...model import DFANet
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
