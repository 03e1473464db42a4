"""Conventions shared by every backend and by the model."""

import torch

# Bilinear resizing uses align_corners=False (PyTorch's default and the half-pixel convention of
# ONNX/OpenVINO "half_pixel"): source coordinate = (dst + 0.5) * in / out - 0.5, clamped at 0.
# At the same size it is the identity, so an input already at the target size passes through unchanged.
ALIGN_CORNERS = False

# The compiled ops, torch.ops.dfanet.<op>, named once: their schemas are in csrc/ops.cpp (tests/kernels/test_backends.py
# checks that the two agree), the backward refusals (csrc/autograd.cpp) are registered for each, and the Triton backend
# registers dfanet::<op>_triton for those it has kernels for (triton.LAUNCHERS, checked against this list).
OPS = ("dwsep_conv", "xception_block", "conv1x1", "conv3x3", "fc_attention", "upsample_concat", "upsample_add",
       "upsample_labels", "decoder_head")

# Backends a caller may force with backend=...; None picks the best available for the tensor's device.
BACKENDS = ("reference", "cpu", "triton", "cuda")

# Floating dtypes each compiled backend accepts (the reference takes any floating dtype).
BACKEND_DTYPES = {
    "cpu": ("float32",),
    "cuda": ("float32", "float16", "bfloat16"),
    "triton": ("float32", "float16", "bfloat16"),
}


def labels_dtype(num_classes: int) -> torch.dtype:
    """The dtype of per-pixel labels (upsample_labels, DFANet.predict): uint8 holds up to 256 classes (a quarter of
    int32's bytes), int64 (torch.argmax's) beyond. csrc/checks.h has the same rule."""
    return torch.uint8 if num_classes <= 256 else torch.int64
