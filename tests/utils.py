"""Shared test helpers: input layouts, seeded tensors, a closeness check that says where it failed."""

from __future__ import annotations

import torch

LAYOUTS = ("nchw", "channels_last", "strided")


def in_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``t`` stored NCHW-contiguous, channels_last, or as a non-contiguous view."""
    if layout == "nchw":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # every other element of a twice-as-wide buffer: neither NCHW nor NHWC contiguous
        wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        wide[..., ::2] = t
        view = wide[..., ::2]
        if t.shape[-1] > 1:  # with W == 1 any stride is "contiguous"
            assert not view.is_contiguous() and not view.is_contiguous(memory_format=torch.channels_last)
        return view
    raise ValueError(layout)


def randn(*shape, gen: torch.Generator, scale: float = 1.0, device="cpu", dtype=torch.float32) -> torch.Tensor:
    return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> None:
    """torch.testing.assert_close after an explicit NaN/inf check (a kernel that writes garbage must not pass)."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"non-finite output at {torch.nonzero(~torch.isfinite(actual))[:5].tolist()}"
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol)


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine terms, so folding them is actually tested."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
