"""Shared test helpers: input layouts, seeded tensors, a closeness check that says where it failed."""

from __future__ import annotations

import pytest
import torch

import dfanet_kernels as dk
from dfanet.testing import randomize_batchnorm  # noqa: F401  (re-exported for the tests)

LAYOUTS = ("nchw", "channels_last", "strided")

# The CPU kernel tests skip without the extension (so the reference-only fallback stays testable);
# tests/kernels/test_backends.py::test_compiled_cpu_kernels_are_built fails the suite if it is missing.
HAS_CPU_KERNELS = "cpu" in dk.available_backends("cpu")
needs_cpu_kernels = pytest.mark.skipif(not HAS_CPU_KERNELS, reason="compiled CPU kernels not built")
# Backends whose argument checks the bad-input tests run through.
CHECKED_BACKENDS = ["reference"] + (["cpu"] if HAS_CPU_KERNELS else [])
# Backends whose results tests compare on CPU tensors (the op tests, tests/kernels/test_<op>.py, take theirs from
# op_cases.on, which also runs CUDA on a GPU): also Triton's kernels, under TRITON_INTERPRET=1
# (tests/conftest.py sets it without a GPU; test_backends.py fails if an installed Triton is unavailable).
RUNNABLE_BACKENDS = CHECKED_BACKENDS + (
    ["triton"] if dk.backends.unavailable_reason("triton", torch.device("cpu")) is None else []
)


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


# An fp32 fused model against the unfused one: the fused path reassociates every conv's sums and folds BN; relative
# to the logit scale the difference stays at a few 1e-6 through ~40 layers (cuDNN's algorithm choice adds ~1e-5);
# 1e-4 leaves headroom yet catches any real error (a wrong tap, a missing bias or ReLU changes logits by O(1) of
# their scale). Argmax may flip only on exact near-ties. (The mean is bounded by the max here.)
FP32_MODEL_TOLERANCE = dict(max_rel=1e-4, mean_rel=1e-4, argmax=0.999)

# A half-precision model against another path (fp16 rounds every layer's output, ~45 layers): DFANet A at 256 x 512,
# batch 2, fp16 vs fp32 on the CPU (reference backend, 2026-11-27) differs by at most 2.0e-3 and on average 3.6e-4
# of the logit scale, argmax agreeing on 99.96% of pixels. Two fp16 paths may each be that far from fp32.
FP16_MODEL_TOLERANCE = dict(max_rel=2e-2, mean_rel=2e-3, argmax=0.99)


def logit_differences(out: torch.Tensor, expected: torch.Tensor) -> tuple[float, float, float]:
    """Max and mean |out - expected| relative to the largest |expected| logit, and the fraction of pixels whose
    argmax class agrees."""
    out, expected = out.float().cpu(), expected.float().cpu()
    assert out.shape == expected.shape, f"shape {tuple(out.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(out).all()
    scale = expected.abs().max()
    diff = (out - expected).abs()
    agreement = (out.argmax(1) == expected.argmax(1)).float().mean()
    return (diff.max() / scale).item(), (diff.mean() / scale).item(), agreement.item()


def assert_logits_close(out: torch.Tensor, expected: torch.Tensor, max_rel: float, mean_rel: float,
                        argmax: float) -> None:
    """Model logits: max and mean |difference| relative to the logit scale, and argmax agreement (a dropped bias late
    in the network shifts the mean, not only the tail)."""
    max_diff, mean_diff, agreement = logit_differences(out, expected)
    assert max_diff <= max_rel, f"max |diff| {max_diff:.2e} of the logit scale"
    assert mean_diff <= mean_rel, f"mean |diff| {mean_diff:.2e} of the logit scale"
    assert agreement >= argmax, f"argmax agrees on {agreement:.4f} of pixels"
