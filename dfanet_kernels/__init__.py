"""Fused inference kernels for DFANet: depthwise-separable conv, FC attention, bilinear upsample-concat/add/argmax.

Public API: :func:`dwsep_conv`, :func:`xception_block`, :func:`xception_block_cat` (a block that reads a
concatenation without writing it), :func:`fc_attention`, :func:`upsample_concat`, :func:`upsample_add`,
:func:`upsample_labels` (the argmax of a resize, without writing the resize),
:func:`conv1x1`, :func:`conv3x3` (each with a ``backend=`` argument), :func:`available_backends`, the
BN-folding helpers in :mod:`dfanet_kernels.fold` (with their finiteness check, :func:`check_finite`), and
:class:`PreparedConv`, :class:`PreparedBlock`, :class:`PreparedAttention` (the weighted ops with their weights
checked once, for repeated calls).
"""

from . import _fake  # noqa: F401  (load the compiled library, register the fakes)
from .backends import available_backends
from .constants import ALIGN_CORNERS, BACKENDS
from .fold import check_finite, fold_bn, fold_conv_bn
from .ops import (
    conv1x1,
    conv3x3,
    conv_output_size,
    decoder_head,
    dwsep_conv,
    fc_attention,
    upsample_add,
    upsample_concat,
    upsample_labels,
    xception_block,
    xception_block_cat,
)
from .prepared import PreparedAttention, PreparedBlock, PreparedConv, PreparedDecoder

__all__ = [
    "ALIGN_CORNERS",
    "BACKENDS",
    "PreparedAttention",
    "PreparedBlock",
    "PreparedConv",
    "PreparedDecoder",
    "available_backends",
    "check_finite",
    "conv1x1",
    "conv3x3",
    "conv_output_size",
    "decoder_head",
    "dwsep_conv",
    "fc_attention",
    "fold_bn",
    "fold_conv_bn",
    "upsample_add",
    "upsample_concat",
    "upsample_labels",
    "xception_block",
    "xception_block_cat",
]
__version__ = "0.1.0"
