"""Public entry points of the three fused op families.

Each function checks its arguments (a clear ``TypeError``/``ValueError`` naming the argument, never a crash
inside a kernel), picks a backend for the input's device (or the one asked for) and runs it. Every backend
computes what ``dfanet_kernels.reference`` computes; compiled backends return channels_last (NHWC) tensors.
"""

from __future__ import annotations

from typing import Sequence

import torch

from . import _checks, backends, reference
from .constants import BACKEND_DTYPES


def conv_output_size(size: int, stride: int) -> int:
    """Output length of a 3x3 convolution with padding 1: ``size`` (stride 1) or ``ceil(size / 2)`` (stride 2)."""
    return (size - 1) // stride + 1


def _kernel(backend: str, op: str, arg_name: str, t: torch.Tensor):
    """The registered op that runs ``op`` on a compiled backend, after that backend's dtype check.

    The C++ ops (``torch.ops.dfanet.<op>``) dispatch on device to the CPU or CUDA kernels; the Triton kernels are
    separate ops named ``<op>_triton``.
    """
    _checks.dtype_for_backend(arg_name, t, backend, BACKEND_DTYPES[backend])
    return getattr(torch.ops.dfanet, f"{op}_triton" if backend == "triton" else op)


def dwsep_conv(
    x: torch.Tensor,
    dw_weight: torch.Tensor,
    dw_bias: torch.Tensor | None,
    pw_weight: torch.Tensor,
    pw_bias: torch.Tensor | None,
    stride: int = 1,
    act_in: bool = False,
    act_mid: bool = False,
    act_out: bool = False,
    residual: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Fused depthwise-separable convolution (inference; takes BN-folded weights).

    Computes ``act_out(pw(act_mid(dw3x3(act_in(x)) + dw_bias)) + pw_bias) + residual`` where ``dw3x3`` is a
    depthwise 3x3 convolution with padding 1 and the given stride, ``pw`` a 1x1 convolution and every ``act_*``
    an optional ReLU. The residual is added after ``act_out``.

    Args:
        x: N x C x H x W input, any memory layout.
        dw_weight: C x 1 x 3 x 3 depthwise weight. dw_bias: C or None.
        pw_weight: Cout x C x 1 x 1 pointwise weight. pw_bias: Cout or None.
        stride: 1 (same size) or 2 (output ``ceil(H/2) x ceil(W/2)``).
        residual: N x Cout x Ho x Wo tensor added last, or None.
        backend: None (best for the device), "reference", "cpu", "triton" or "cuda".

    Returns:
        N x Cout x Ho x Wo tensor (channels_last on the compiled backends).
    """
    _checks.activation("x", x)
    n, c, h, w = x.shape
    _checks.like("dw_weight", dw_weight, x, "x", (c, 1, 3, 3))
    _checks.optional_like("dw_bias", dw_bias, x, "x", (c,))
    pw_weight = _checks.tensor("pw_weight", pw_weight, ndim=4)
    cout = pw_weight.shape[0]
    _checks.like("pw_weight", pw_weight, x, "x", (cout, c, 1, 1))
    _checks.optional_like("pw_bias", pw_bias, x, "x", (cout,))
    if isinstance(stride, bool) or stride not in (1, 2):
        raise ValueError(f"stride: expected 1 or 2, got {stride!r}")
    out_shape = (n, cout, conv_output_size(h, stride), conv_output_size(w, stride))
    _checks.optional_like("residual", residual, x, "x", out_shape)

    chosen = backends.resolve(backend, x.device)
    if chosen == "reference":
        return reference.dwsep_conv(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, act_in, act_mid, act_out, residual)
    op = _kernel(chosen, "dwsep_conv", "x", x)
    return op(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, bool(act_in), bool(act_mid), bool(act_out), residual)


def _check_fc_attention(x, fc_weight, fc_bias, conv_weight, conv_bias) -> None:
    _checks.activation("x", x)
    c = x.shape[1]
    fc_weight = _checks.tensor("fc_weight", fc_weight, ndim=2)
    hidden = fc_weight.shape[0]
    _checks.like("fc_weight", fc_weight, x, "x", (hidden, c))
    _checks.optional_like("fc_bias", fc_bias, x, "x", (hidden,))
    _checks.like("conv_weight", conv_weight, x, "x", (c, hidden, 1, 1))
    _checks.optional_like("conv_bias", conv_bias, x, "x", (c,))


def fc_attention(
    x: torch.Tensor,
    fc_weight: torch.Tensor,
    fc_bias: torch.Tensor | None,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
    backend: str | None = None,
) -> torch.Tensor:
    """FC-attention channel scaling (the tail of each DFANet backbone).

    Computes ``x * relu(conv_weight @ (fc_weight @ mean_hw(x) + fc_bias) + conv_bias)`` per sample, the
    C-vector broadcast over H and W.

    Args:
        x: N x C x H x W input, any memory layout.
        fc_weight: K x C (an ``nn.Linear(C, K)`` weight; K = 1000 in DFANet). fc_bias: K or None.
        conv_weight: C x K x 1 x 1 (an ``nn.Conv2d(K, C, 1)`` weight, BN folded). conv_bias: C or None.
        backend: None (best for the device), "reference", "cpu", "triton" or "cuda".
    """
    _check_fc_attention(x, fc_weight, fc_bias, conv_weight, conv_bias)
    chosen = backends.resolve(backend, x.device)
    if chosen == "reference":
        return reference.fc_attention(x, fc_weight, fc_bias, conv_weight, conv_bias)
    return _kernel(chosen, "fc_attention", "x", x)(x, fc_weight, fc_bias, conv_weight, conv_bias)


def _check_upsample_inputs(inputs: Sequence[torch.Tensor], size) -> tuple[int, int]:
    if not isinstance(inputs, (list, tuple)) or len(inputs) == 0:
        raise TypeError(f"inputs: expected a non-empty list of tensors, got {inputs!r:.80}")
    first = _checks.activation("inputs[0]", inputs[0])
    for i, t in enumerate(inputs[1:], start=1):
        _checks.activation(f"inputs[{i}]", t)
        if t.device != first.device:
            raise ValueError(f"inputs[{i}]: expected device {first.device} (that of inputs[0]), got {t.device}")
        if t.dtype != first.dtype:
            raise TypeError(f"inputs[{i}]: expected dtype {first.dtype} (that of inputs[0]), got {t.dtype}")
        if t.shape[0] != first.shape[0]:
            raise ValueError(f"inputs[{i}]: expected batch size {first.shape[0]} (that of inputs[0]), got {t.shape[0]}")
    return _checks.size2("size", size)


def upsample_concat(inputs: Sequence[torch.Tensor], size: Sequence[int], backend: str | None = None) -> torch.Tensor:
    """``cat([bilinear(t, size) for t in inputs], dim=1)`` in one pass.

    Bilinear resizing uses ``align_corners=False`` (see ``dfanet_kernels.constants.ALIGN_CORNERS``); an input
    already at ``size`` is copied unchanged. Inputs share batch size, dtype and device; channels may differ.
    """
    size = _check_upsample_inputs(inputs, size)
    chosen = backends.resolve(backend, inputs[0].device)
    if chosen == "reference":
        return reference.upsample_concat(inputs, size)
    return _kernel(chosen, "upsample_concat", "inputs", inputs[0])(list(inputs), list(size))


def upsample_add(inputs: Sequence[torch.Tensor], size: Sequence[int], backend: str | None = None) -> torch.Tensor:
    """``sum(bilinear(t, size) for t in inputs)`` in one pass (the decoder's merge). Inputs share N and C."""
    size = _check_upsample_inputs(inputs, size)
    channels = inputs[0].shape[1]
    for i, t in enumerate(inputs[1:], start=1):
        if t.shape[1] != channels:
            raise ValueError(f"inputs[{i}]: expected {channels} channels (those of inputs[0]), got {t.shape[1]}")
    chosen = backends.resolve(backend, inputs[0].device)
    if chosen == "reference":
        return reference.upsample_add(inputs, size)
    return _kernel(chosen, "upsample_add", "inputs", inputs[0])(list(inputs), list(size))
