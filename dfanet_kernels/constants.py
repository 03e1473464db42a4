"""Conventions shared by every backend and by the model."""

# Bilinear resizing uses align_corners=False (PyTorch's default and the half-pixel convention of
# ONNX/OpenVINO "half_pixel"): source coordinate = (dst + 0.5) * in / out - 0.5, clamped at 0.
# At the same size it is the identity, so an input already at the target size passes through unchanged.
ALIGN_CORNERS = False

# Backends a caller may force with backend=...; None picks the best available for the tensor's device.
BACKENDS = ("reference", "cpu", "triton", "cuda")

# Floating dtypes each compiled backend accepts (the reference takes any floating dtype).
BACKEND_DTYPES = {
    "cpu": ("float32",),
    "cuda": ("float32", "float16", "bfloat16"),
    "triton": ("float32", "float16", "bfloat16"),
}
