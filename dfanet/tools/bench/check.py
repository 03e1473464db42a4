"""Check, then time (docs/benchmarking.md): an output is compared with its reference before it is timed, and one
that disagrees is reported, not timed. Tolerances are per precision, as max |out - ref| / max |ref|."""

from __future__ import annotations

import contextlib

import torch

# Whole model on the CPU against eager fp32: fp32 runtimes land near 1e-6, a silent bf16 path near 1e-2. bf16 on
# purpose (OpenVINO bf16) lands at 1.0e-2 on DFANet A at 512x1024 (argmax 99.6% of pixels equal), bf16's 2^-8
# rounding carried through ~40 layers; 5x that still catches a broken one.
CPU_MODEL_TOLERANCE = {"fp32": 1e-3, "bf16": 5e-2}
# Whole model on a GPU against eager, whose cuDNN convs run in TF32 (10-bit mantissa) by default while the fused
# paths use full fp32: 1e-2 of the logit scale; fp16/bf16 round every layer's output.
GPU_MODEL_TOLERANCE = {"fp32": 1e-2, "fp16": 5e-2, "bf16": 2e-1}
# One op against its torch sequence computed exactly (no TF32): a few ulp in fp32, one rounding of the output in
# fp16/bf16 with fp32 accumulation.
OP_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 2e-2}
# Labels (upsample_labels, DFANet.predict) against the argmax of the reference's values: a label may differ only
# where two of its pixel's values lie within rounding of each other (tests/utils.py FP32_MODEL_TOLERANCE's argmax).
LABELS_AGREEMENT = 0.999


def compare(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max |out - ref| / max |ref|, fraction of pixels with the same argmax over channels; 1.0 if not N x C x H x W).
    A non-finite output is infinitely wrong; a shape other than the reference's raises ValueError."""
    if out.shape != ref.shape:
        raise ValueError(f"output shape {tuple(out.shape)} differs from the reference's {tuple(ref.shape)}")
    out, ref = out.float(), ref.float()
    if not torch.isfinite(out).all():
        return float("inf"), 0.0
    rel = float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
    agree = float((out.argmax(1) == ref.argmax(1)).float().mean()) if out.dim() == 4 else 1.0
    return rel, agree


def labels_agreement(out: torch.Tensor, ref: torch.Tensor) -> float:
    """The fraction of pixels whose labels equal the reference's; a shape other than the reference's raises
    ValueError."""
    if out.shape != ref.shape:
        raise ValueError(f"output shape {tuple(out.shape)} differs from the reference's {tuple(ref.shape)}")
    return float((out == ref).float().mean())


@contextlib.contextmanager
def exact_fp32():
    """cuDNN convolutions in full fp32 (TF32 is their default): the reference an fp32 kernel is checked against."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved
