"""Weights given as non-contiguous views (every other row of a buffer, channels_last, transposed) give the
reference's results on every backend that runs here: the CPU packers and the Triton launchers read weights
through their strides. It happens in real use: after ``model.to(memory_format=torch.channels_last)`` conv1's
weight has strides (27, 1, 9, 3) and folding keeps them."""

import pytest
import torch

import dfanet_kernels as dk
from dfanet import DFANet
from dfanet_kernels import cpu_layout, reference

from ..op_cases import dw_args, fc_args
from ..utils import RUNNABLE_BACKENDS, assert_close, in_layout, needs_cpu_kernels, randomize_batchnorm
from . import test_conv as conv_cases
from . import test_dwsep_conv as dwsep_cases
from . import test_fc_attention as fc_cases
from . import test_xception_block as block_cases


def every_other_row(t: torch.Tensor) -> torch.Tensor:
    """The same values as ``t`` in a view that skips every other entry of dim 0 (non-contiguous if dim 0 > 1)."""
    wide = torch.zeros(2 * t.shape[0], *t.shape[1:], dtype=t.dtype)
    wide[::2] = t
    view = wide[::2]
    assert t.shape[0] == 1 or not view.is_contiguous()
    return view


def transposed(t: torch.Tensor) -> torch.Tensor:
    """A 2-D ``t`` stored column-major."""
    return t.t().contiguous().t()


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
@pytest.mark.parametrize("stride", [1, 2])
def test_dwsep_conv(backend, stride):
    args = dw_args(2, 17, 12, 9, 11, stride, seed=1, device="cpu")
    views = {k: every_other_row(v) if k in ("dw_weight", "dw_bias", "pw_weight", "pw_bias") else v
             for k, v in args.items()}
    out = dk.dwsep_conv(**views, act_in=True, act_out=True, backend=backend)
    assert_close(out, reference.dwsep_conv(**args, act_in=True, act_out=True), dwsep_cases.ATOL,
                 dwsep_cases.RTOL)


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
@pytest.mark.parametrize("k", [1, 3])
def test_conv(backend, k):
    x, weight, bias = conv_cases.make_args(2, 3, 8, 13, 10, k, seed=2)
    # 3 x 3: the channels_last weight of a channels_last model; 1 x 1: every other output channel of a buffer.
    view = weight.contiguous(memory_format=torch.channels_last) if k == 3 else every_other_row(weight)
    assert not view.is_contiguous()
    out = getattr(dk, f"conv{k}x{k}")(x, view, every_other_row(bias), 2, True, backend=backend)
    assert_close(out, reference.conv(x, weight, bias, 2, True), conv_cases.ATOL, conv_cases.RTOL)


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_fc_attention(backend):
    args = fc_args(2, 17, 5, 7, 40, seed=3, device="cpu")
    views = dict(args, fc_weight=transposed(args["fc_weight"]), fc_bias=every_other_row(args["fc_bias"]),
                 conv_weight=every_other_row(args["conv_weight"]), conv_bias=every_other_row(args["conv_bias"]))
    assert_close(dk.fc_attention(**views, backend=backend), reference.fc_attention(**args), fc_cases.ATOL,
                 fc_cases.RTOL)


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_xception_block(backend):
    args = block_cases.make_args(2, 8, 12, 12, 48, 7, 9, 2, True, seed=4)
    views = dict(args, **{name: [every_other_row(t) for t in args[name]]
                          for name in ("dw_weights", "pw_weights", "pw_biases")},
                 shortcut_weight=every_other_row(args["shortcut_weight"]),
                 shortcut_bias=every_other_row(args["shortcut_bias"]))
    assert_close(dk.xception_block(**views, backend=backend), reference.xception_block(**args),
                 block_cases.ATOL, block_cases.RTOL)


@pytest.mark.parametrize("backend", [b for b in RUNNABLE_BACKENDS if b != "triton"])  # a whole model: too slow
@pytest.mark.parametrize("image_layout", ["channels_last", "strided"])
def test_channels_last_model(backend, image_layout):
    """A model converted to channels_last (its conv weights then are too) folds and runs like the NCHW one."""
    torch.manual_seed(0)
    model = DFANet(num_classes=19, variant="B")
    randomize_batchnorm(model, 0)
    model.eval()
    x = torch.randn(2, 3, 67, 45)
    with torch.no_grad():
        expected = model(x)
        model.to(memory_format=torch.channels_last)
        assert not model.conv1.conv.weight.is_contiguous()
        model.fused, model.backend = True, backend
        out = model(in_layout(x, image_layout))
    # fp32, BN folded and every conv's sums reassociated: a few 1e-6 of the logit scale (as test_model.py).
    assert (out - expected).abs().max() <= 1e-4 * expected.abs().max()


@pytest.mark.parametrize("cout, c, k", [(1, 1, 1), (12, 5, 1), (17, 33, 1), (8, 3, 3), (40, 7, 3)])
def test_cpu_layouts_are_views_of_the_packed_rows(cout, c, k):
    """cpu_layout's views hold the weights' values in the strides the CPU ops read in place (csrc/cpu/common.h,
    PackedWeights), their storage padded with zeros to whole rows."""
    gen = torch.Generator().manual_seed(cout)
    weight, dw, b = (torch.randn(cout, c, k, k, generator=gen), torch.randn(c, 1, 3, 3, generator=gen),
                     torch.randn(cout, generator=gen))
    ldo, ldc = -(-cout // cpu_layout.PAD) * cpu_layout.PAD, -(-c // cpu_layout.PAD) * cpu_layout.PAD
    dense, depthwise, bias = cpu_layout.dense(weight), cpu_layout.depthwise(dw), cpu_layout.bias(b)
    assert torch.equal(dense, weight) and torch.equal(depthwise, dw) and torch.equal(bias, b)
    assert dense.stride() == (1, k * k * ldo, k * ldo, ldo) and dense.untyped_storage().nbytes() == 4 * c * k * k * ldo
    assert depthwise.stride()[0] == 1 and depthwise.stride()[2:] == (3 * ldc, ldc)
    assert depthwise.untyped_storage().nbytes() == 4 * 9 * ldc and bias.untyped_storage().nbytes() == 4 * ldo
    assert cpu_layout.bias(None) is None
    rows = torch.empty(0).set_(dense.untyped_storage()).view(c * k * k, ldo)
    assert not rows[:, cout:].any()


@needs_cpu_kernels
def test_packed_strides_without_the_padding_are_packed_again():
    """A weight with the packed layout's strides whose storage ends at its last element (no padding after the last
    row, which the kernels read whole) is packed like any other layout: same result as the contiguous weight, and
    no read past the storage (the sanitizer build of the CPU tests would catch one)."""
    x, weight, bias = conv_cases.make_args(1, 3, 12, 9, 10, 1, seed=5)
    c = weight.shape[1]
    ldo = cpu_layout.PAD
    storage = torch.zeros((c - 1) * ldo + 12)
    storage.as_strided((12, c), (1, ldo)).copy_(weight[:, :, 0, 0])
    tight = storage.as_strided(weight.shape, (1, ldo, ldo, ldo))
    short_bias = bias.clone()  # 12 floats: the kernels read 16, so it is copied into a padded vector
    assert torch.equal(tight, weight)
    assert torch.equal(dk.conv1x1(x, tight, short_bias, 1, True, backend="cpu"),
                       dk.conv1x1(x, weight, bias, 1, True, backend="cpu"))
