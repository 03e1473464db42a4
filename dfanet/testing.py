"""Helpers for tests and benchmarks of the fused path (light: torch only)."""

from __future__ import annotations

import torch


@torch.no_grad()
def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial running statistics and affine terms (seeded), so that a comparison of the
    fused (BN-folded) path with the unfused one actually exercises the folding: a freshly built model has mean 0,
    variance 1, weight 1 and bias 0 everywhere, which folding leaves (almost) unchanged."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
