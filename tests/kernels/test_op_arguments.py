"""Arguments the op checks once let through (found by fuzzing the public ops): flags that are not bools, output sizes
no device can hold, and inputs of the wrong type, dtype or device given to the prepared ops. Each is refused with a
TypeError/ValueError naming the argument, before any kernel or allocation runs."""

import pytest
import torch

import dfanet_kernels as dk

from ..utils import CHECKED_BACKENDS


def dwsep_args():
    return dict(x=torch.randn(1, 4, 5, 5), dw_weight=torch.randn(4, 1, 3, 3), dw_bias=None,
                pw_weight=torch.randn(6, 4, 1, 1), pw_bias=None)


@pytest.mark.parametrize("backend", CHECKED_BACKENDS)
@pytest.mark.parametrize("flag", ["act_in", "act_mid", "act_out"])
@pytest.mark.parametrize("value", ["False", 1, None, 0.0])
def test_activation_flags_must_be_bools(backend, flag, value):
    with pytest.raises(TypeError, match=rf"^{flag}: expected True or False, got {type(value).__name__}"):
        dk.dwsep_conv(**dwsep_args(), **{flag: value}, backend=backend)


@pytest.mark.parametrize("backend", CHECKED_BACKENDS)
@pytest.mark.parametrize("op", [dk.conv1x1, dk.conv3x3])
def test_relu_flag_must_be_a_bool(backend, op):
    weight = torch.randn(3, 4, *(1, 1) if op is dk.conv1x1 else (3, 3))
    with pytest.raises(TypeError, match="^relu: expected True or False, got str 'False'"):
        op(torch.randn(1, 4, 5, 5), weight, None, relu="False", backend=backend)
    with pytest.raises(TypeError, match="^relu: expected True or False"):
        dk.PreparedConv(weight, None, relu="yes", backend=backend)


@pytest.mark.parametrize("backend", CHECKED_BACKENDS)
@pytest.mark.parametrize("op", [dk.upsample_concat, dk.upsample_add])
@pytest.mark.parametrize("size", [(1, 2**62), (100000, 100000), (2**31, 2**31)])
def test_an_output_no_device_can_hold_is_refused_naming_size_and_bytes(backend, op, size):
    x = torch.randn(1, 3, 4, 4)
    needed = 3 * size[0] * size[1] * 4
    with pytest.raises(ValueError, match=rf"^size: an output of 1 x 3 x {size[0]} x {size[1]} float32 needs "
                                         rf"{needed} bytes, more than the cpu device has"):
        op([x], size, backend=backend)


@pytest.mark.parametrize("backend", CHECKED_BACKENDS)
@pytest.mark.parametrize("c, dtype", [(19, "uint8"), (300, "int64")])
def test_labels_no_device_can_hold_are_refused_naming_size_and_bytes(backend, c, dtype):
    """upsample_labels' output has no channels: its bytes are N x H x W labels (1 or 8 bytes each)."""
    x = torch.randn(2, c, 4, 4)
    needed = 2 * 2**31 * 2**31 * (1 if dtype == "uint8" else 8)
    with pytest.raises(ValueError, match=rf"^size: an output of 2 x {2**31} x {2**31} {dtype} needs {needed} bytes, "
                                         r"more than the cpu device has"):
        dk.upsample_labels(x, (2**31, 2**31), backend=backend)


def prepared_ops(backend):
    conv = dk.PreparedConv(torch.randn(5, 4, 1, 1), None, backend=backend)
    block = dk.PreparedBlock([torch.randn(4, 1, 3, 3), torch.randn(4, 1, 3, 3), torch.randn(6, 1, 3, 3)],
                             [torch.randn(4, 4, 1, 1), torch.randn(6, 4, 1, 1), torch.randn(6, 6, 1, 1)],
                             [None, None, None], 1, torch.randn(6, 4, 1, 1), None, backend=backend)
    attention = dk.PreparedAttention(torch.randn(7, 4), None, torch.randn(4, 7, 1, 1), None, backend=backend)
    return {"conv": conv, "block": block, "block.cat": block.cat, "attention": attention}


@pytest.mark.parametrize("backend", CHECKED_BACKENDS)
@pytest.mark.parametrize("name", ["conv", "block", "block.cat", "attention"])
def test_prepared_ops_name_the_input_for_its_dtype_device_and_type(backend, name):
    op = prepared_ops(backend)[name]
    arg = r"inputs\[0\]" if name == "block.cat" else "x"

    def call(x):
        return op([x]) if name == "block.cat" else op(x)

    x = torch.randn(1, 4, 6, 6)
    assert call(x).shape[0] == 1  # a good input runs
    with pytest.raises(TypeError, match=rf"^{arg}: expected dtype torch.float32 \(that of the prepared weights\), "
                                        r"got torch.float64"):
        call(x.double())
    with pytest.raises(ValueError, match=rf"^{arg}: expected device cpu \(that of the prepared weights\), got meta"):
        call(x.to("meta"))
    with pytest.raises(TypeError, match=rf"^{arg}: expected a torch.Tensor, got NoneType"):
        call(None)
