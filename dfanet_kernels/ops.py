"""Public entry points of the three fused op families.

Each function checks its arguments (a clear ``TypeError``/``ValueError`` naming the argument, never a crash
inside a kernel), picks a backend for the input's device (or the one asked for) and runs it. Every backend
computes what ``dfanet_kernels.reference`` computes; compiled backends return channels_last (NHWC) tensors.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch

from . import _checks, backends, reference
from .constants import BACKEND_DTYPES


def conv_output_size(size: int, stride: int) -> int:
    """Output length of a 3x3 convolution with padding 1: ``size`` (stride 1) or ``ceil(size / 2)`` (stride 2)."""
    return (size - 1) // stride + 1


def _op(backend: str, op: str):
    """What runs ``op`` on a compiled backend: the C++ ops (``torch.ops.dfanet.<op>``) dispatch on device to the CPU
    or CUDA kernels; the Triton kernels are separate ops named ``<op>_triton``, whose launchers plain eager calls
    reach directly (see _plain_eager)."""
    return _triton_entry(op) if backend == "triton" else getattr(torch.ops.dfanet, op)


@functools.lru_cache(maxsize=None)
def _triton_entry(op: str):
    from . import triton as triton_backend

    registered, launcher = getattr(torch.ops.dfanet, f"{op}_triton"), triton_backend.LAUNCHERS[op]

    def call(*args):
        return launcher(*args) if _plain_eager(args) else registered(*args)

    return call


def _plain_eager(args) -> bool:
    """Whether a call can skip the op dispatcher: nothing traces it (torch.compile, torch.export, make_fx, jit
    tracing, functorch transforms, torch function or dispatch modes) and no tensor argument needs a gradient (the
    op raises on backward; a launcher would return a tensor without history). There the op would only forward to
    its launcher, at ~20 us a call."""
    if (torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() or torch._C._get_tracing_state()
            or torch._C._is_torch_function_mode_enabled() or torch._C._functorch.peek_interpreter_stack() is not None):
        return False
    if torch.is_grad_enabled():
        for arg in args:
            for t in arg if isinstance(arg, list) else (arg,):
                if isinstance(t, torch.Tensor) and t.requires_grad:
                    return False
    return True


def _check_backend_dtype(backend: str, arg_name: str, t: torch.Tensor) -> None:
    """The dtype check of a compiled backend (the reference takes any floating dtype)."""
    if backend != "reference":
        _checks.dtype_for_backend(arg_name, t, backend, BACKEND_DTYPES[backend])


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
    pw_weight = _checks.weight_4d("pw_weight", pw_weight)
    cout = pw_weight.shape[0]
    _checks.like("pw_weight", pw_weight, x, "x", (cout, c, 1, 1))
    _checks.optional_like("pw_bias", pw_bias, x, "x", (cout,))
    _checks.stride(stride)
    out_shape = (n, cout, conv_output_size(h, stride), conv_output_size(w, stride))
    _checks.optional_like("residual", residual, x, "x", out_shape)

    chosen = backends.resolve(backend, x.device, x.dtype)
    _check_backend_dtype(chosen, "x", x)
    return _run_dwsep_conv(chosen, x, dw_weight, dw_bias, pw_weight, pw_bias, stride, act_in, act_mid, act_out,
                           residual)


def _run_dwsep_conv(chosen, x, dw_weight, dw_bias, pw_weight, pw_bias, stride, act_in, act_mid, act_out, residual):
    """dwsep_conv on checked arguments, on backend ``chosen``."""
    if chosen == "reference":
        return reference.dwsep_conv(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, act_in, act_mid, act_out,
                                    residual)
    return _op(chosen, "dwsep_conv")(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, bool(act_in), bool(act_mid),
                                     bool(act_out), residual)


def _check_block_lists(dw_weights, pw_weights, pw_biases) -> None:
    """An Xception block's three per-layer weight lists are lists of 3."""
    for name, seq in (("dw_weights", dw_weights), ("pw_weights", pw_weights), ("pw_biases", pw_biases)):
        if not isinstance(seq, (list, tuple)) or len(seq) != 3:
            raise TypeError(f"{name}: expected a list of 3, got {seq!r:.80}")


def _check_block_weights(c: int, ref: torch.Tensor, ref_name: str, dw_weights, pw_weights, pw_biases, stride,
                         shortcut_weight, shortcut_bias) -> None:
    """The weights of an Xception block whose input has ``c`` channels, against ``ref``'s dtype and device."""
    _check_block_lists(dw_weights, pw_weights, pw_biases)
    channels = [c]
    for i in range(3):
        _checks.like(f"dw_weights[{i}]", dw_weights[i], ref, ref_name, (channels[i], 1, 3, 3))
        pw = _checks.weight_4d(f"pw_weights[{i}]", pw_weights[i])
        _checks.like(f"pw_weights[{i}]", pw, ref, ref_name, (pw.shape[0], channels[i], 1, 1))
        channels.append(pw.shape[0])
        _checks.optional_like(f"pw_biases[{i}]", pw_biases[i], ref, ref_name, (channels[-1],))
    _checks.stride(stride)
    if shortcut_weight is None:
        if stride != 1 or channels[3] != c:
            raise ValueError(f"shortcut_weight: None (identity) needs stride 1 and {c} output channels, got stride "
                             f"{stride} and {channels[3]} channels")
        if shortcut_bias is not None:
            raise ValueError("shortcut_bias: given without shortcut_weight")
    else:
        _checks.like("shortcut_weight", shortcut_weight, ref, ref_name, (channels[3], c, 1, 1))
        _checks.optional_like("shortcut_bias", shortcut_bias, ref, ref_name, (channels[3],))


def xception_block(
    x: torch.Tensor,
    dw_weights: Sequence[torch.Tensor],
    pw_weights: Sequence[torch.Tensor],
    pw_biases: Sequence[torch.Tensor | None],
    stride: int = 1,
    shortcut_weight: torch.Tensor | None = None,
    shortcut_bias: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """A whole Xception block in one call (inference; BN-folded weights).

    Computes ``sep3(sep2(sep1(x))) + shortcut(x)`` where ``sep_i(y) = pw_i(dw3x3_i(relu(y))) + pw_biases[i]``
    (``dwsep_conv`` with ``act_in=True`` and no depthwise bias), ``sep1`` has the block's stride, and the shortcut
    is ``conv2d(x, shortcut_weight, shortcut_bias, stride)`` (1x1) or, when ``shortcut_weight`` is None, ``x`` itself
    (stride 1, as many output as input channels). On the CPU backend the two intermediate maps never exist in
    memory: the block runs row by row with the rows it needs in cache. The Triton and CUDA backends compose
    ``dwsep_conv`` calls. See :func:`xception_block_cat` for an input given as a concatenation.

    Args:
        x: N x C x H x W input, any memory layout.
        dw_weights: three depthwise weights, C_i x 1 x 3 x 3 (C_0 = C).
        pw_weights: three pointwise weights, C_{i+1} x C_i x 1 x 1. pw_biases: three C_{i+1} vectors or Nones.
        stride: 1 or 2 (output ``ceil(H/2) x ceil(W/2)``).
        shortcut_weight: C_3 x C x 1 x 1 or None. shortcut_bias: C_3 or None (only with a weight).
        backend: None (best for the device), "reference", "cpu", "triton" or "cuda".

    Returns:
        N x C_3 x Ho x Wo tensor (channels_last on the compiled backends).
    """
    _checks.activation("x", x)
    _check_block_weights(x.shape[1], x, "x", dw_weights, pw_weights, pw_biases, stride, shortcut_weight,
                         shortcut_bias)
    chosen = backends.resolve(backend, x.device, x.dtype)
    _check_backend_dtype(chosen, "x", x)
    return _run_block(chosen, [x], dw_weights, pw_weights, pw_biases, stride, shortcut_weight, shortcut_bias)


def xception_block_cat(
    inputs: Sequence[torch.Tensor],
    dw_weights: Sequence[torch.Tensor],
    pw_weights: Sequence[torch.Tensor],
    pw_biases: Sequence[torch.Tensor | None],
    stride: int = 1,
    shortcut_weight: torch.Tensor | None = None,
    shortcut_bias: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """``xception_block(upsample_concat(inputs, inputs[0]'s H x W), ...)`` without writing the concatenation.

    The block's input is the concatenation along channels of ``inputs``, each bilinearly resized (align_corners=False,
    exactly as :func:`upsample_concat`) to the size of ``inputs[0]``; an input already at that size is read as it
    is. On the CPU backend the kernel builds the concatenated input rows it needs in a small per-thread cache, so the
    concatenation never goes to memory (DFANet's aggregation inputs: at 1024 x 1024 the second and third backbones'
    enc2 input is 240 channels at 256 x 256, 63 MB). The other backends run ``upsample_concat`` then
    :func:`xception_block`.

    Args:
        inputs: non-empty list of N x C_k x H_k x W_k tensors (any memory layout) sharing N, dtype and device;
            C = sum of C_k.
        dw_weights, pw_weights, pw_biases, stride, shortcut_weight, shortcut_bias, backend: as for
            :func:`xception_block`, for an input of C channels.

    Returns:
        N x C_3 x Ho x Wo tensor, Ho x Wo from ``inputs[0]``'s H x W and the stride (channels_last on the compiled
        backends).
    """
    _check_upsample_inputs(inputs, None)
    first = inputs[0]
    _check_block_weights(sum(t.shape[1] for t in inputs), first, "inputs[0]", dw_weights, pw_weights, pw_biases,
                         stride, shortcut_weight, shortcut_bias)
    chosen = backends.resolve(backend, first.device, first.dtype)
    _check_backend_dtype(chosen, "inputs[0]", first)
    return _run_block(chosen, list(inputs), dw_weights, pw_weights, pw_biases, stride, shortcut_weight, shortcut_bias)


def _run_block(chosen, inputs, dw_weights, pw_weights, pw_biases, stride, shortcut_weight, shortcut_bias):
    """xception_block_cat on checked arguments (``inputs`` a list), on backend ``chosen``."""
    if chosen == "cpu":
        return _op(chosen, "xception_block")(
            inputs, dw_weights[0], pw_weights[0], pw_biases[0], dw_weights[1], pw_weights[1], pw_biases[1],
            dw_weights[2], pw_weights[2], pw_biases[2], stride, shortcut_weight, shortcut_bias)
    # No block kernel on the other backends: the concatenation is written, then read by three dwsep_conv.
    x = inputs[0] if len(inputs) == 1 else _run_upsample(chosen, "upsample_concat", inputs, inputs[0].shape[-2:])
    if chosen == "reference":
        return reference.xception_block(x, dw_weights, pw_weights, pw_biases, stride, shortcut_weight, shortcut_bias)
    skip = x if shortcut_weight is None else reference.conv(x, shortcut_weight, shortcut_bias, stride)
    for i in range(3):
        x = _run_dwsep_conv(chosen, x, dw_weights[i], None, pw_weights[i], pw_biases[i], stride if i == 0 else 1,
                            True, False, False, skip if i == 2 else None)
    return x


def _check_conv_weights(k: int, c: int, ref: torch.Tensor, ref_name: str, weight, bias, stride) -> None:
    """A k x k conv's weight, bias and stride for an input of ``c`` channels, against ``ref``'s dtype and device."""
    weight = _checks.weight_4d("weight", weight)
    _checks.like("weight", weight, ref, ref_name, (weight.shape[0], c, k, k))
    _checks.optional_like("bias", bias, ref, ref_name, (weight.shape[0],))
    _checks.stride(stride)


def _conv(k: int, x, weight, bias, stride, relu, backend):
    _checks.activation("x", x)
    _check_conv_weights(k, x.shape[1], x, "x", weight, bias, stride)
    chosen = backends.resolve(backend, x.device, x.dtype)
    _check_conv_dtype(chosen, "x", x)
    return _run_conv(chosen, x, weight, bias, stride, relu)


def _check_conv_dtype(chosen: str, arg_name: str, t: torch.Tensor) -> None:
    if chosen == "cpu":  # the only backend with conv kernels of its own; the others run F.conv2d (any float dtype)
        _check_backend_dtype(chosen, arg_name, t)


def _run_conv(chosen, x, weight, bias, stride, relu):
    """conv1x1 or conv3x3 (by the weight's size) on checked arguments, on backend ``chosen``."""
    if chosen != "cpu":  # reference, and the GPU backends (cuDNN through F.conv2d is what they would call anyway)
        return reference.conv(x, weight, bias, stride, relu)
    return _op(chosen, "conv1x1" if weight.shape[-1] == 1 else "conv3x3")(x, weight, bias, stride, bool(relu))


def conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1, relu: bool = False,
            backend: str | None = None) -> torch.Tensor:
    """1x1 convolution + bias (+ ReLU), stride 1 or 2: DFANet's decoder convs. On the CPU backend: NHWC output from
    the separable convs' register-blocked micro-kernel; other backends run ``F.conv2d``.

    Args: x: N x C x H x W (any layout); weight: Cout x C x 1 x 1; bias: Cout or None; backend as for dwsep_conv.
    """
    return _conv(1, x, weight, bias, stride, relu, backend)


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1, relu: bool = False,
            backend: str | None = None) -> torch.Tensor:
    """3x3 convolution (padding 1) + bias (+ ReLU), stride 1 or 2, for few input channels: DFANet's conv1. On the
    CPU backend the input is read in its own layout (an NCHW image needs no conversion) and the output is NHWC;
    other backends run ``F.conv2d``.

    Args: x: N x C x H x W (any layout); weight: Cout x C x 3 x 3; bias: Cout or None; backend as for dwsep_conv.
    """
    return _conv(3, x, weight, bias, stride, relu, backend)


def _check_attention_weights(c: int, ref: torch.Tensor, ref_name: str, fc_weight, fc_bias, conv_weight,
                             conv_bias) -> None:
    """FC-attention weights for an input of ``c`` channels, against ``ref``'s dtype and device."""
    fc_weight = _checks.tensor("fc_weight", fc_weight, ndim=2)
    hidden = fc_weight.shape[0]
    _checks.like("fc_weight", fc_weight, ref, ref_name, (hidden, c))
    _checks.optional_like("fc_bias", fc_bias, ref, ref_name, (hidden,))
    _checks.like("conv_weight", conv_weight, ref, ref_name, (c, hidden, 1, 1))
    _checks.optional_like("conv_bias", conv_bias, ref, ref_name, (c,))


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
    _checks.activation("x", x)
    _check_attention_weights(x.shape[1], x, "x", fc_weight, fc_bias, conv_weight, conv_bias)
    chosen = backends.resolve(backend, x.device, x.dtype)
    _check_backend_dtype(chosen, "x", x)
    return _run_fc_attention(chosen, x, fc_weight, fc_bias, conv_weight, conv_bias)


def _run_fc_attention(chosen, x, fc_weight, fc_bias, conv_weight, conv_bias):
    """fc_attention on checked arguments, on backend ``chosen``."""
    if chosen == "reference":
        return reference.fc_attention(x, fc_weight, fc_bias, conv_weight, conv_bias)
    return _op(chosen, "fc_attention")(x, fc_weight, fc_bias, conv_weight, conv_bias)


def _check_upsample_inputs(inputs: Sequence[torch.Tensor], size) -> tuple[int, int]:
    """Checks a list of inputs that share N, dtype and device, and ``size`` (None: inputs[0]'s H x W)."""
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
    return tuple(first.shape[-2:]) if size is None else _checks.size2("size", size)


def upsample_concat(inputs: Sequence[torch.Tensor], size: Sequence[int], backend: str | None = None) -> torch.Tensor:
    """``cat([bilinear(t, size) for t in inputs], dim=1)`` in one pass.

    Bilinear resizing uses ``align_corners=False`` (see ``dfanet_kernels.constants.ALIGN_CORNERS``); an input
    already at ``size`` is copied unchanged. Inputs share batch size, dtype and device; channels may differ.
    """
    size = _check_upsample_inputs(inputs, size)
    chosen = backends.resolve(backend, inputs[0].device, inputs[0].dtype)
    _check_backend_dtype(chosen, "inputs", inputs[0])
    return _run_upsample(chosen, "upsample_concat", inputs, size)


def upsample_add(inputs: Sequence[torch.Tensor], size: Sequence[int], backend: str | None = None) -> torch.Tensor:
    """``sum(bilinear(t, size) for t in inputs)`` in one pass (the decoder's merge). Inputs share N and C."""
    size = _check_upsample_inputs(inputs, size)
    channels = inputs[0].shape[1]
    for i, t in enumerate(inputs[1:], start=1):
        if t.shape[1] != channels:
            raise ValueError(f"inputs[{i}]: expected {channels} channels (those of inputs[0]), got {t.shape[1]}")
    chosen = backends.resolve(backend, inputs[0].device, inputs[0].dtype)
    _check_backend_dtype(chosen, "inputs", inputs[0])
    return _run_upsample(chosen, "upsample_add", inputs, size)


def _run_upsample(chosen, op, inputs, size):
    """upsample_concat or upsample_add (``op``) on checked arguments, on backend ``chosen``."""
    if chosen == "reference":
        return getattr(reference, op)(inputs, size)
    return _op(chosen, op)(list(inputs), list(size))
