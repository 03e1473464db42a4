"""upsample_concat / upsample_add on every backend (the CPU kernels, Triton, CUDA; the backend is each test's first
parameter) against the reference, on odd sizes and factors, layouts and dtypes; bad input is rejected."""

import pytest
import torch

import dfanet_kernels as dk
from dfanet_kernels import reference

from ..op_cases import DEVICES as DEV
from ..op_cases import DTYPES, check, f64, layout_dtypes, on, rand
from ..utils import CHECKED_BACKENDS, in_layout, needs_cpu_kernels

# The CPU kernels' fp32 tolerance: bilinear weights are computed in fp32 from the same formula as ATen; the 4-tap
# blend may round differently. (Triton and CUDA take op_cases.DTYPES.)
ATOL, RTOL = 1e-5, 1e-5

# Each case: output size and the (C, H, W) of each input, per backend: upsampling by 4 and by odd factors, an input
# already at the output size (copied), downsampling, 1 x 1 sources and targets;
# cpu: the model's enc2 + FC-attention concat at 512 x 1024;
# triton: five inputs (more than one launch sums);
# cuda: nine inputs (more than the 8 one launch takes); "large" cases are left out under compute-sanitizer.
CASES = {
    "cpu": [
        ((1, 1), [(1, 1, 1)]),
        ((7, 7), [(3, 2, 2), (5, 7, 7)]),
        ((33, 65), [(48, 33, 65), (192, 9, 17), (1, 1, 1)]),
        ((250, 33), [(12, 63, 9), (17, 250, 33)]),
        ((65, 33), [(17, 250, 65)]),  # downsampling
        ((128, 256), [(48, 128, 256), (192, 32, 64)]),
    ],
    "triton": [
        ((1, 1), [(1, 1, 1)]),
        ((7, 7), [(3, 2, 2), (5, 7, 7)]),
        ((13, 7), [(17, 1, 7), (48, 13, 7), (1, 1, 1)]),
        ((7, 1), [(5, 13, 13)]),  # downsampling
        ((13, 13), [(3, 4, 5), (3, 13, 13), (3, 7, 1), (3, 1, 1), (3, 5, 5)]),
    ],
    "cuda": [
        ((1, 1), [(1, 1, 1)]),
        ((7, 7), [(3, 1, 1), (12, 7, 7)]),
        ((33, 65), [(17, 7, 33), (48, 33, 65), (1, 1, 1)]),
        ((65, 33), [(3, 250, 250)]),  # downsampling
        ((33, 33), [(c, 1 + 8 * (c % 5), 7 + c) for c in (1, 3, 12, 17, 2, 5, 7, 4, 9)]),
        ((250, 250), [(48, 65, 65), (240, 250, 250)]),
    ],
}
LARGE = {(250, 250)}


def case_id(case):
    (h, w), specs = case
    return f"{'large-' if (h, w) in LARGE else ''}{h}x{w}-{len(specs)}in"


def up_inputs(case, n, layout, dtype, device, same_channels=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    size, specs = case
    channels = specs[0][0]
    inputs = [in_layout(rand(n, channels if same_channels else c, h, w, gen=gen, device=device, dtype=dtype), layout)
              for c, h, w in specs]
    return inputs, size


def up_expected(fn, inputs, size):
    """The reference in float32 on the inputs' device: ATen computes the bilinear source index and weights in fp32
    with the same formula as the kernels. A float64 reference would differ from both by up to ~ulp(in) x |a
    neighbour difference|, ~1e-4 at 250 pixels, which the fp32 tolerance does not allow. (fp16/bf16 inputs are
    widened exactly: the expected values carry no rounding of their own.)"""
    return fn([t.float() for t in inputs], size).cpu()


UP_CASES = [
    on(backend, case, n, *ld, id=f"{case_id(case)}-n{n}-{name}")
    for backend, cases in CASES.items() for case in cases for n in (1, 3)
    for name, ld in layout_dtypes(backend, (ATOL, RTOL))
]


@pytest.mark.parametrize("backend, case, n, layout, dtype, atol, rtol", UP_CASES)
def test_upsample_concat_matches_reference(backend, case, n, layout, dtype, atol, rtol):
    inputs, size = up_inputs(case, n, layout, dtype, DEV[backend])
    expected = up_expected(reference.upsample_concat, inputs, size)
    check(dk.upsample_concat(inputs, size, backend=backend), expected, atol, rtol, backend)


@pytest.mark.parametrize("backend, case, n, layout, dtype, atol, rtol", UP_CASES)
def test_upsample_add_matches_reference(backend, case, n, layout, dtype, atol, rtol):
    inputs, size = up_inputs(case, n, layout, dtype, DEV[backend], same_channels=True)
    expected = up_expected(reference.upsample_add, inputs, size)
    check(dk.upsample_add(inputs, size, backend=backend), expected, atol, rtol, backend)


@pytest.mark.parametrize("backend", [on(b) for b in ("cpu", "triton", "cuda")])
@pytest.mark.parametrize("op", ["upsample_concat", "upsample_add"])
def test_upsample_mixed_layouts(backend, op):
    """Sources in different layouts take the strided path together."""
    gen = torch.Generator().manual_seed(7)
    dev = DEV[backend]
    inputs = [in_layout(rand(2, 5, 4, 3, gen=gen, device=dev), "channels_last"),
              in_layout(rand(2, 5, 13, 7, gen=gen, device=dev), "nchw"),
              in_layout(rand(2, 5, 7, 7, gen=gen, device=dev), "strided")]
    expected = getattr(reference, op)([f64(t) for t in inputs], (13, 7))
    check(getattr(dk, op)(inputs, (13, 7), backend=backend), expected, 1e-5, 1e-5, backend)


@pytest.mark.parametrize("backend, dtype, atol, rtol", [
    on("triton", *DTYPES[d], id=name, gpu=True) for d, name in [(1, "fp16"), (2, "bf16")]
])
def test_upsample_half_precision_at_model_shapes(backend, dtype, atol, rtol):
    """GPU only: DFANet A's enc2 + FC-attention concatenation and its decoder's sum, at 256 x 256 (float64
    reference: the half-precision tolerances dwarf the index rounding up_expected avoids)."""
    gen = torch.Generator().manual_seed(11)
    dev = DEV[backend]
    cat = [rand(8, 48, 256, 256, gen=gen, dtype=dtype, device=dev),
           rand(8, 192, 64, 64, gen=gen, dtype=dtype, device=dev)]
    check(dk.upsample_concat(cat, (256, 256), backend=backend),
          reference.upsample_concat([f64(t) for t in cat], (256, 256)), atol, rtol, backend)
    add = [rand(8, 32, s, s, gen=gen, dtype=dtype, device=dev) for s in (256, 64, 32, 16)]
    check(dk.upsample_add(add, (256, 256), backend=backend),
          reference.upsample_add([f64(t) for t in add], (256, 256)), atol, rtol, backend)


BACKENDS = [on(b) for b in ("reference", "cpu", "triton", "cuda")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["upsample_concat", "upsample_add"])
def test_input_at_target_size_is_copied_bit_exactly(op, backend):
    """upsample_concat / upsample_add of one input already at the target size copy it bit for bit: no 0 * neighbour
    term and no 0 + x, so inf, NaN and -0.0 come through unchanged, as the reference returns x."""
    x = rand(2, 5, 9, 11, gen=torch.Generator().manual_seed(5), device=DEV[backend])
    x[0, 0, 0, :3] = torch.tensor([float("inf"), float("nan"), -0.0])
    out = getattr(dk, op)([x], (9, 11), backend=backend)
    assert torch.equal(out.contiguous().cpu().view(torch.int32), x.cpu().view(torch.int32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_align_corners_convention_is_half_pixel(backend):
    """Documented choice: align_corners=False. Output pixel centres map to (i + 0.5) * scale - 0.5, clamped at the
    border."""
    x = torch.tensor([0.0, 1.0], device=DEV[backend]).reshape(1, 1, 1, 2)
    out = dk.upsample_concat([x], (1, 4), backend=backend)
    assert torch.equal(out.flatten().cpu(), torch.tensor([0.0, 0.25, 0.75, 1.0]))


@needs_cpu_kernels
@pytest.mark.parametrize("op", ["upsample_concat", "upsample_add"])
def test_opcheck_cpu_op(op):
    gen = torch.Generator().manual_seed(6)
    inputs = [rand(2, 3, 4, 5, gen=gen, device="cpu"), rand(2, 3, 9, 7, gen=gen, device="cpu")]
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
