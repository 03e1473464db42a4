"""Public entry points of the three fused op families.

Each function checks its arguments (a clear ``TypeError``/``ValueError`` naming the argument, never a crash
inside a kernel), picks a backend for the input's device (or the one asked for) and runs it through
``dfanet_kernels.dispatch``. Every backend computes what ``dfanet_kernels.reference`` computes; compiled backends
return channels_last (NHWC) tensors.
"""

from __future__ import annotations

from typing import Sequence

import torch

from . import _checks, backends, dispatch
from .constants import labels_dtype
from .weight_checks import check_attention_weights, check_block_weights, check_conv_weights, check_decoder_weights


def conv_output_size(size: int, stride: int) -> int:
    """Output length of a 3x3 convolution with padding 1: ``size`` (stride 1) or ``ceil(size / 2)`` (stride 2)."""
    return (size - 1) // stride + 1


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

    _checks.flag("act_in", act_in)
    _checks.flag("act_mid", act_mid)
    _checks.flag("act_out", act_out)

    chosen = backends.resolve(backend, x.device, x.dtype)
    dispatch.check_backend_dtype(chosen, "x", x)
    return dispatch.run_dwsep_conv(chosen, x, dw_weight, dw_bias, pw_weight, pw_bias, stride, act_in, act_mid,
                                   act_out, residual)


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
    (stride 1, as many output as input channels). On the CPU and CUDA backends the two intermediate maps never
    exist in memory: on the CPU the block runs row by row with the rows it needs in cache; on CUDA one kernel
    computes them per output tile in shared memory, on Triton in a small per-program scratch (mid widths up to 64
    on both; wider ones compose ``dwsep_conv`` launches). See :func:`xception_block_cat` for an input given as a
    concatenation.

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
    check_block_weights(x.shape[1], x, "x", dw_weights, pw_weights, pw_biases, stride, shortcut_weight,
                         shortcut_bias)
    chosen = backends.resolve(backend, x.device, x.dtype)
    dispatch.check_backend_dtype(chosen, "x", x)
    return dispatch.run_block(chosen, [x], dw_weights, pw_weights, pw_biases, stride, shortcut_weight, shortcut_bias)


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
    is. On the CPU backend the kernel builds the concatenated input rows it needs in a small per-thread cache, and on
    CUDA the kernel resizes each input tile it stages, so the concatenation never goes to memory (DFANet's
    aggregation inputs: at 1024 x 1024 the second and third backbones' enc2 input is 240 channels at 256 x 256,
    63 MB). So does the Triton kernel, for up to 4 inputs (more are concatenated first).

    Args:
        inputs: non-empty list of N x C_k x H_k x W_k tensors (any memory layout) sharing N, dtype and device;
            C = sum of C_k.
        dw_weights, pw_weights, pw_biases, stride, shortcut_weight, shortcut_bias, backend: as for
            :func:`xception_block`, for an input of C channels.

    Returns:
        N x C_3 x Ho x Wo tensor, Ho x Wo from ``inputs[0]``'s H x W and the stride (channels_last on the compiled
        backends).
    """
    _check_upsample_inputs(inputs)
    first = inputs[0]
    check_block_weights(sum(t.shape[1] for t in inputs), first, "inputs[0]", dw_weights, pw_weights, pw_biases,
                         stride, shortcut_weight, shortcut_bias)
    chosen = backends.resolve(backend, first.device, first.dtype)
    dispatch.check_backend_dtype(chosen, "inputs[0]", first)
    return dispatch.run_block(chosen, list(inputs), dw_weights, pw_weights, pw_biases, stride, shortcut_weight,
                              shortcut_bias)


def _conv(k: int, x, weight, bias, stride, relu, backend):
    _checks.activation("x", x)
    _checks.flag("relu", relu)
    check_conv_weights(k, x.shape[1], x, "x", weight, bias, stride)
    chosen = backends.resolve(backend, x.device, x.dtype)
    dispatch.check_conv_dtype(chosen, "x", x, k)
    return dispatch.run_conv(chosen, x, weight, bias, stride, relu)


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
    compiled backends (CPU, Triton, CUDA) one kernel reads the input in its own layout (an NCHW image needs no
    conversion) and writes NHWC, bias and ReLU included; the reference runs ``F.conv2d``.

    Args: x: N x C x H x W (any layout); weight: Cout x C x 3 x 3; bias: Cout or None; backend as for dwsep_conv.
    """
    return _conv(3, x, weight, bias, stride, relu, backend)


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
    check_attention_weights(x.shape[1], x, "x", fc_weight, fc_bias, conv_weight, conv_bias)
    chosen = backends.resolve(backend, x.device, x.dtype)
    dispatch.check_backend_dtype(chosen, "x", x)
    return dispatch.run_fc_attention(chosen, x, fc_weight, fc_bias, conv_weight, conv_bias)


def _check_map_list(name: str, maps, allow_empty: bool = False, first: torch.Tensor | None = None,
                    first_name: str = "") -> torch.Tensor | None:
    """A list of N x C x H x W maps sharing the batch size, dtype and device of ``first`` (named ``first_name``;
    default: the list's own first map). Returns that first map."""
    if not isinstance(maps, (list, tuple)) or (len(maps) == 0 and not allow_empty):
        raise TypeError(f"{name}: expected a {'' if allow_empty else 'non-empty '}list of tensors, got {maps!r:.80}")
    if first is None:
        if not maps:
            return None
        first, first_name = _checks.activation(f"{name}[0]", maps[0]), f"{name}[0]"
    for i, t in enumerate(maps):
        _checks.activation(f"{name}[{i}]", t)
        if t.device != first.device:
            raise ValueError(f"{name}[{i}]: expected device {first.device} (that of {first_name}), got {t.device}")
        if t.dtype != first.dtype:
            raise TypeError(f"{name}[{i}]: expected dtype {first.dtype} (that of {first_name}), got {t.dtype}")
        if t.shape[0] != first.shape[0]:
            raise ValueError(f"{name}[{i}]: expected batch size {first.shape[0]} (that of {first_name}), got "
                             f"{t.shape[0]}")
    return first


def _check_upsample_inputs(inputs: Sequence[torch.Tensor]) -> None:
    """Checks a list of inputs that share N, dtype and device."""
    _check_map_list("inputs", inputs)


def _check_size(size, inputs: Sequence[torch.Tensor], channels: int) -> tuple[int, int]:
    """The output size (H, W) of an upsample op: ints >= 1, with an output of ``channels`` channels that the
    device could hold."""
    size = _checks.size2("size", size)
    first = inputs[0]
    _checks.output_fits("size", (first.shape[0], channels, *size), first.dtype, first.device)
    return size


def upsample_concat(inputs: Sequence[torch.Tensor], size: Sequence[int], backend: str | None = None) -> torch.Tensor:
    """``cat([bilinear(t, size) for t in inputs], dim=1)`` in one pass.

    Bilinear resizing uses ``align_corners=False`` (see ``dfanet_kernels.constants.ALIGN_CORNERS``); an input
    already at ``size`` is copied unchanged. Inputs share batch size, dtype and device; channels may differ.
    """
    _check_upsample_inputs(inputs)
    size = _check_size(size, inputs, sum(t.shape[1] for t in inputs))
    chosen = backends.resolve(backend, inputs[0].device, inputs[0].dtype)
    dispatch.check_backend_dtype(chosen, "inputs", inputs[0])
    return dispatch.run_upsample(chosen, "upsample_concat", inputs, size)


def upsample_add(inputs: Sequence[torch.Tensor], size: Sequence[int], backend: str | None = None) -> torch.Tensor:
    """``sum(bilinear(t, size) for t in inputs)`` in one pass (the decoder's merge). Inputs share N and C."""
    _check_upsample_inputs(inputs)
    channels = inputs[0].shape[1]
    for i, t in enumerate(inputs[1:], start=1):
        if t.shape[1] != channels:
            raise ValueError(f"inputs[{i}]: expected {channels} channels (those of inputs[0]), got {t.shape[1]}")
    size = _check_size(size, inputs, channels)
    chosen = backends.resolve(backend, inputs[0].device, inputs[0].dtype)
    dispatch.check_backend_dtype(chosen, "inputs", inputs[0])
    return dispatch.run_upsample(chosen, "upsample_add", inputs, size)


def upsample_labels(x: torch.Tensor, size: Sequence[int], backend: str | None = None) -> torch.Tensor:
    """``bilinear(x, size).argmax(1)`` without writing the resized map: one label per output pixel.

    The resize is :func:`upsample_add`'s of one input (``align_corners=False``); the label of a pixel is the first
    channel holding its maximum, or its first NaN, as ``torch.argmax`` picks. DFANet's last step in ``predict``: at
    1024 x 1024 it writes 1 MiB of labels instead of 76 MiB of 19-channel fp32 logits.

    Args:
        x: N x C x h x w input, any memory layout.
        size: the output (H, W), ints >= 1.
        backend: None (best for the device), "reference", "cpu", "triton" or "cuda".

    Returns:
        N x H x W labels (contiguous), ``uint8`` for C <= 256, else ``int64`` (``constants.labels_dtype``).
    """
    _checks.activation("x", x)
    size = _checks.size2("size", size)
    _checks.output_fits("size", (x.shape[0], *size), labels_dtype(x.shape[1]), x.device)
    chosen = backends.resolve(backend, x.device, x.dtype)
    dispatch.check_backend_dtype(chosen, "x", x)
    return dispatch.run_upsample_labels(chosen, x, size)


def check_decoder_maps(low, high) -> None:
    """decoder_head's feature maps: a non-empty list ``low`` and a list ``high`` sharing low[0]'s N, dtype, device."""
    first = _check_map_list("low", low)
    _check_map_list("high", high, allow_empty=True, first=first, first_name="low[0]")


def decoder_head(
    low: Sequence[torch.Tensor],
    high: Sequence[torch.Tensor],
    low_weights: Sequence[torch.Tensor],
    low_biases: Sequence[torch.Tensor | None],
    fuse_weight: torch.Tensor,
    fuse_bias: torch.Tensor | None,
    high_weights: Sequence[torch.Tensor],
    high_biases: Sequence[torch.Tensor | None],
    classifier_weight: torch.Tensor,
    classifier_bias: torch.Tensor | None,
    backend: str | None = None,
) -> torch.Tensor:
    """DFANet's decoder up to the logits at ``low[0]``'s size, in one kernel on every compiled backend.

    Computes ``classifier(relu(fuse(sum_i up(relu(low_i @ low_weights[i])))) + sum_j up(relu(high_j @
    high_weights[j])))``: every ``@`` a 1x1 conv with its bias, ``up`` a bilinear resize to low[0]'s H x W
    (``align_corners=False``), sums in list order (``reference.decoder_head``). The CPU kernel reduces the smaller
    maps at their own size and computes the rest row by row, the D-channel maps at the output's size never written.

    Args:
        low: the low-level maps (DFANet: each backbone's enc2 output), N x C_i x H_i x W_i, low[0] the largest.
        high: the high-level maps (each backbone's FC-attention output), possibly none.
        low_weights, low_biases: one D x C_i x 1 x 1 weight and D bias (or None) per low map; high_*: likewise.
        fuse_weight: D x D x 1 x 1; fuse_bias: D or None. classifier_weight: classes x D x 1 x 1; classifier_bias.
        backend: None (best for the device), "reference", "cpu", "triton" or "cuda" (the CUDA kernel takes at most 8
            low and 8 high maps and 128 decoder channels).
    """
    check_decoder_maps(low, high)
    first = low[0]
    check_decoder_weights([t.shape[1] for t in low], [t.shape[1] for t in high], first, "low[0]", low_weights,
                          low_biases, fuse_weight, fuse_bias, high_weights, high_biases, classifier_weight,
                          classifier_bias)
    chosen = backends.resolve(backend, first.device, first.dtype)
    dispatch.check_backend_dtype(chosen, "low[0]", first)
    return dispatch.run_decoder_head(chosen, low, high, low_weights, low_biases, fuse_weight, fuse_bias,
                                     high_weights, high_biases, classifier_weight, classifier_bias)
