"""Dispatch: what runs an op on a backend, and each op run on arguments already checked.

The public ops (``ops.py``) check their arguments, resolve the backend (``backends.resolve``), check the input's
dtype against it here and call ``run_<op>``; the ``Prepared*`` ops (``prepared.py``) do the same checks once, on their
weights, and call ``run_<op>`` directly on every input. ``run_<op>`` itself checks nothing: the compiled ops check
every argument again in C++ (RuntimeError), and the reference backend is PyTorch's own operators.
"""

from __future__ import annotations

import functools

import torch

from . import _checks, reference
from .constants import BACKEND_DTYPES


def compiled_op(backend: str, op: str):
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


def check_backend_dtype(backend: str, arg_name: str, t: torch.Tensor) -> None:
    """The dtype check of a compiled backend (the reference takes any floating dtype)."""
    if backend != "reference":
        _checks.dtype_for_backend(arg_name, t, backend, BACKEND_DTYPES[backend])


def _has_conv_kernel(backend: str, k: int) -> bool:
    """Whether ``backend`` runs a k x k conv with a kernel of its own: conv3x3 on every compiled backend, conv1x1 on
    the CPU only (elsewhere F.conv2d, any float dtype)."""
    return backend == "cpu" or (backend != "reference" and k == 3)


def check_conv_dtype(backend: str, arg_name: str, t: torch.Tensor, k: int) -> None:
    """The dtype check of conv1x1 (``k`` 1) / conv3x3 (``k`` 3) on ``backend``: that of the backend's kernel where it
    has one."""
    if _has_conv_kernel(backend, k):
        check_backend_dtype(backend, arg_name, t)


def run_dwsep_conv(backend, x, dw_weight, dw_bias, pw_weight, pw_bias, stride, act_in, act_mid, act_out, residual):
    """dwsep_conv on checked arguments, on ``backend``."""
    if backend == "reference":
        return reference.dwsep_conv(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, act_in, act_mid, act_out,
                                    residual)
    return compiled_op(backend, "dwsep_conv")(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, act_in, act_mid,
                                              act_out, residual)


def run_block(backend, inputs, dw_weights, pw_weights, pw_biases, stride, shortcut_weight, shortcut_bias):
    """xception_block_cat on checked arguments (``inputs`` a list), on ``backend``."""
    if backend == "reference":  # one input as it is (torch.cat would copy it)
        x = inputs[0] if len(inputs) == 1 else reference.upsample_concat(inputs, inputs[0].shape[-2:])
        return reference.xception_block(x, dw_weights, pw_weights, pw_biases, stride, shortcut_weight, shortcut_bias)
    # One kernel per block on every compiled backend, reading a concatenated input in place.
    return compiled_op(backend, "xception_block")(
        inputs, dw_weights[0], pw_weights[0], pw_biases[0], dw_weights[1], pw_weights[1], pw_biases[1],
        dw_weights[2], pw_weights[2], pw_biases[2], stride, shortcut_weight, shortcut_bias)


def run_conv(backend, x, weight, bias, stride, relu):
    """conv1x1 or conv3x3 (by the weight's size) on checked arguments, on ``backend``: a kernel of the backend's own
    for conv3x3 on every compiled backend (the stem: bias and ReLU fused, the image read in its own layout) and for
    conv1x1 on the CPU; conv1x1 on the GPU backends is F.conv2d (cuDNN) and a ReLU."""
    k = weight.shape[-1]
    if not _has_conv_kernel(backend, k):
        return reference.conv(x, weight, bias, stride, relu)
    return compiled_op(backend, f"conv{k}x{k}")(x, weight, bias, stride, relu)


def run_fc_attention(backend, x, fc_weight, fc_bias, conv_weight, conv_bias):
    """fc_attention on checked arguments, on ``backend``."""
    if backend == "reference":
        return reference.fc_attention(x, fc_weight, fc_bias, conv_weight, conv_bias)
    return compiled_op(backend, "fc_attention")(x, fc_weight, fc_bias, conv_weight, conv_bias)


def run_upsample(backend, op, inputs, size):
    """upsample_concat or upsample_add (``op``) on checked arguments, on ``backend``."""
    if backend == "reference":
        return getattr(reference, op)(inputs, size)
    return compiled_op(backend, op)(list(inputs), list(size))


def run_upsample_labels(backend, x, size):
    """upsample_labels on checked arguments, on ``backend``."""
    if backend == "reference":
        return reference.upsample_labels(x, size)
    return compiled_op(backend, "upsample_labels")(x, list(size))


def run_decoder_head(backend, low, high, low_weights, low_biases, fuse_weight, fuse_bias, high_weights, high_biases,
                     classifier_weight, classifier_bias):
    """decoder_head on checked arguments, on ``backend``: one kernel on every compiled backend."""
    if backend == "reference":
        return reference.decoder_head(low, high, low_weights, low_biases, fuse_weight, fuse_bias, high_weights,
                                      high_biases, classifier_weight, classifier_bias)
    return compiled_op(backend, "decoder_head")(list(low), list(high), list(low_weights), list(low_biases),
                                                fuse_weight, fuse_bias, list(high_weights), list(high_biases),
                                                classifier_weight, classifier_bias)
