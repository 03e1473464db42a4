"""The Triton backend: importing this package registers ``dfanet::<op>_triton`` for the three op families, the
whole Xception block, ``dfanet::decoder_head_triton`` (DFANet's decoder head in one kernel, decoder.py) and
``dfanet::conv3x3_triton`` (the stem, conv.py).

One file per op (conv.py, decoder.py, dwsep_conv.py, fc_attention.py, upsample.py, xception_block.py), each ordered
tuning constants -> @triton.jit kernels -> host launcher registered with ``torch.library.triton_op``.
``dfanet_kernels.backends`` imports this package only when the triton backend is first asked for, so
``import dfanet_kernels`` never imports Triton.

Dtypes: float32, float16, bfloat16, accumulating in fp32. Inputs in any memory layout (read through strides);
outputs NHWC (channels_last). Runs on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` (tests).
"""

from __future__ import annotations

_REASON: str | None = None

try:
    import triton  # noqa: F401
    from torch.library import triton_op, wrap_triton  # noqa: F401  (torch >= 2.6)
except ImportError as err:  # Triton missing or broken, or a torch without triton_op
    _REASON = f"Triton or torch.library.triton_op could not be imported ({err})"
else:
    from . import conv, decoder, dwsep_conv, fc_attention, upsample, xception_block  # registers the ops

    # The launchers behind the ops, which dfanet_kernels.dispatch calls directly where nothing traces the call and no
    # gradient is wanted: the op dispatcher adds ~20 us a call (CPU-side, measured with the launch stubbed out),
    # as much as the launcher itself. Keyed by op name, of constants.OPS.
    LAUNCHERS = {
        "dwsep_conv": dwsep_conv.dwsep_conv_forward,
        "xception_block": xception_block.xception_block_forward,
        "fc_attention": fc_attention.fc_attention_forward,
        "upsample_concat": upsample.upsample_concat_forward,
        "upsample_add": upsample.upsample_add_forward,
        "upsample_labels": upsample.upsample_labels_forward,
        "decoder_head": decoder.decoder_head_forward,
        "conv3x3": conv.conv3x3_forward,
    }


def unavailable_reason() -> str | None:
    """None if the Triton ops are registered; otherwise why not."""
    return _REASON
