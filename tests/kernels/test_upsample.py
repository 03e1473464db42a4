"""upsample_concat / upsample_add: the compiled CPU path against the reference; bad input is rejected."""

import pytest
import torch

import dfanet_kernels as dk
from dfanet_kernels import reference

from .. import op_cases
from ..utils import (
    CHECKED_BACKENDS,
    LAYOUTS,
    RUNNABLE_BACKENDS,
    assert_close,
    in_layout,
    needs_cpu_kernels,
    randn,
)

# Each case: output size and the (C, H, W) of each input: upsampling by 4 and by odd factors, an input already at
# the output size (copied), downsampling, 1 x 1 sources and targets.
CASES = [
    ((1, 1), [(1, 1, 1)]),
    ((7, 7), [(3, 2, 2), (5, 7, 7)]),
    ((33, 65), [(48, 33, 65), (192, 9, 17), (1, 1, 1)]),
    ((250, 33), [(12, 63, 9), (17, 250, 33)]),
    ((65, 33), [(17, 250, 65)]),  # downsampling
    ((128, 256), [(48, 128, 256), (192, 32, 64)]),  # the model's enc2 + FC-attention concat at 512 x 1024
]

# Bilinear weights are computed in fp32 from the same formula as ATen; the 4-tap blend may round differently.
ATOL, RTOL = 1e-5, 1e-5


def make_inputs(case, n, layout, same_channels=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    size, specs = case
    channels = specs[0][0]
    return [in_layout(randn(n, channels if same_channels else c, h, w, gen=gen), layout) for c, h, w in specs], size


@needs_cpu_kernels
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0][0]}x{c[0][1]}-{len(c[1])}in")
def test_concat_matches_reference(case, layout, n):
    inputs, size = make_inputs(case, n, layout)
    out = dk.upsample_concat(inputs, size, backend="cpu")
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_close(out, reference.upsample_concat(inputs, size), ATOL, RTOL)


@needs_cpu_kernels
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0][0]}x{c[0][1]}-{len(c[1])}in")
def test_add_matches_reference(case, layout, n):
    inputs, size = make_inputs(case, n, layout, same_channels=True)
    out = dk.upsample_add(inputs, size, backend="cpu")
    assert_close(out, reference.upsample_add(inputs, size), ATOL, RTOL)


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
@pytest.mark.parametrize("op", ["upsample_concat", "upsample_add"])
def test_input_at_target_size_is_copied_bit_exactly(op, backend):
    op_cases.check_same_size_copy(op, backend, "cpu")


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_align_corners_convention_is_half_pixel(backend):
    """Documented choice: align_corners=False."""
    op_cases.check_half_pixel_convention(backend, "cpu")


@needs_cpu_kernels
@pytest.mark.parametrize("op", ["upsample_concat", "upsample_add"])
def test_opcheck_cpu_op(op):
    gen = torch.Generator().manual_seed(6)
    inputs = [randn(2, 3, 4, 5, gen=gen), randn(2, 3, 9, 7, gen=gen)]
    torch.library.opcheck(getattr(torch.ops.dfanet, op).default, (inputs, [9, 7]))


@pytest.mark.parametrize("backend", CHECKED_BACKENDS)
@pytest.mark.parametrize(
    "inputs, size, error, message",
    [
        ([], (4, 4), TypeError, r"inputs: expected a non-empty list"),
        (torch.randn(1, 2, 3, 3), (4, 4), TypeError, r"inputs: expected a non-empty list"),
        ([torch.randn(1, 2, 3)], (4, 4), ValueError, r"inputs\[0\]: expected a 4-D tensor"),
        ([torch.randn(1, 2, 3, 3), torch.randn(2, 2, 3, 3)], (4, 4), ValueError, r"inputs\[1\]: expected batch size 1"),
        ([torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3).double()], (4, 4), TypeError,
         r"inputs\[1\]: expected dtype"),
        ([torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3, device="meta")], (4, 4), ValueError,
         r"inputs\[1\]: expected device cpu \(that of inputs\[0\]\), got meta"),
        ([torch.randn(1, 2, 3, 3)], (4,), TypeError, r"size: expected a pair of ints"),
        ([torch.randn(1, 2, 3, 3)], (0, 4), ValueError, r"size: expected H and W >= 1"),
        ([torch.randn(1, 2, 3, 3)], (4.0, 4), TypeError, r"size: expected a pair of ints"),
    ],
)
@pytest.mark.parametrize("op", [dk.upsample_concat, dk.upsample_add])
def test_bad_input_raises_naming_the_argument(op, inputs, size, error, message, backend):
    with pytest.raises(error, match=message):
        op(inputs, size, backend=backend)


def test_add_rejects_channel_mismatch():
    with pytest.raises(ValueError, match=r"inputs\[1\]: expected 2 channels \(those of inputs\[0\]\), got 3"):
        dk.upsample_add([torch.randn(1, 2, 3, 3), torch.randn(1, 3, 3, 3)], (4, 4))
