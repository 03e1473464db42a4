"""upsample_labels on every backend (the CPU kernels, Triton, CUDA; the backend is each test's first parameter)
against the float64 reference's argmax, on odd sizes, channel counts from 1 to past 256 (int64 labels), layouts and
dtypes; ties and NaN resolved as torch.argmax resolves them; bad input is rejected; compile and export."""

import pytest
import torch

import dfanet_kernels as dk
from dfanet_kernels import reference
from dfanet_kernels.constants import labels_dtype

from ..op_cases import DEVICES as DEV
from ..op_cases import DTYPES, f64, layout_dtypes, on, rand
from ..utils import CHECKED_BACKENDS, in_layout, needs_cpu_kernels

# Labels must equal the float64 reference's wherever the reference's two largest values of a pixel are further apart
# than this. The kernels blend in fp32: a few ulp of the O(1) values (~1e-6), plus the source coordinate rounded in
# fp32 (ulp(size) ~ 1e-5 px at these sizes) times a neighbour difference (< 10): ~1e-4 per value at most, so a
# margin of 1e-3 cannot flip. Random inputs leave about 1% of pixels closer than that at most (asserted, one pixel
# allowed on the smallest maps, so the comparison covers almost every pixel); a 16-bit input is widened exactly, so
# its reference is as exact.
MARGIN = 1e-3

# Each case: output (H, W) and the input's (C, h, w), per backend: C = 1 and 2, DFANet's 19 classes, 37 (several
# vectors and a partial one on every CPU path), 300 (int64 labels; two of the interpreter's channel tiles);
# upsampling by odd factors, an input already at the output size, downsampling, 1 x 1 inputs and outputs.
CASES = {
    "cpu": [
        ((1, 1), (1, 1, 1)),
        ((5, 131), (1, 2, 33)),
        ((7, 5), (2, 3, 2)),
        ((67, 45), (19, 17, 12)),
        ((33, 65), (37, 9, 17)),
        ((13, 9), (300, 5, 4)),
        ((20, 17), (19, 20, 17)),
        ((9, 7), (5, 31, 20)),
    ],
    "triton": [
        ((1, 1), (1, 1, 1)),
        ((6, 9), (1, 2, 3)),
        ((7, 5), (2, 3, 2)),
        ((13, 11), (19, 5, 4)),
        ((9, 13), (37, 9, 13)),
        ((7, 6), (300, 3, 2)),
        ((5, 4), (5, 13, 9)),
    ],
    "cuda": [
        ((1, 1), (1, 1, 1)),
        ((5, 131), (1, 2, 33)),
        ((7, 5), (2, 3, 2)),
        ((67, 45), (19, 17, 12)),
        ((33, 65), (36, 9, 17)),  # a multiple of 4: the vector path
        ((13, 9), (300, 5, 4)),
        ((20, 17), (19, 20, 17)),
        ((9, 7), (5, 31, 20)),
        ((1024, 1024), (19, 256, 256)),  # DFANet's last step at 1024 x 1024
    ],
}
LARGE = {(1024, 1024)}


def case_id(case):
    (h, w), (c, sh, sw) = case
    return f"{'large-' if (h, w) in LARGE else ''}{c}@{sh}x{sw}-to-{h}x{w}"


def expected_labels(x, size):
    """The float64 reference's labels and each pixel's margin between its two largest values (inf for C = 1)."""
    resized = reference.resize(f64(x), size)
    if resized.shape[1] == 1:
        margin = torch.full_like(resized[:, 0], float("inf"))
    else:
        top2 = resized.topk(2, dim=1).values
        margin = top2[:, 0] - top2[:, 1]
    return reference.upsample_labels(f64(x), size), margin


def check_labels(out, x, size, backend, exact=False):
    """``out``: on the backend's device, contiguous N x H x W labels of the dtype for x's channels, equal to the
    reference's where the reference's margin exceeds MARGIN (everywhere if ``exact``)."""
    expected, margin = expected_labels(x, size)
    assert out.device.type == DEV[backend].type
    assert out.dtype == labels_dtype(x.shape[1]) and out.is_contiguous()
    assert out.shape == expected.shape
    out = out.cpu()
    if exact:
        assert torch.equal(out, expected), f"{int((out != expected).sum())} labels differ"
        return
    # An exact tie of the reference (frequent among 300 bf16 channels, 8-bit mantissas) is one in the kernels too:
    # the tied channels hold equal values at the pixel's taps and are blended alike. The first one wins in both.
    clear = (margin > MARGIN) | (margin == 0)
    unclear = int((~clear).sum())
    assert unclear <= 1 + 0.01 * clear.numel(), f"{unclear} of {clear.numel()} pixels have no clear maximum"
    wrong = (out != expected) & clear
    assert not wrong.any(), f"{int(wrong.sum())} labels differ, first at {wrong.nonzero()[:3].tolist()}"


LABEL_CASES = [
    on(backend, case, n, layout, dtype, id=f"{case_id(case)}-n{n}-{name}")
    for backend, cases in CASES.items() for case in cases for n in (1, 3)
    for name, (layout, dtype, _, _) in layout_dtypes(backend, (0.0, 0.0))
]


@pytest.mark.parametrize("backend, case, n, layout, dtype", LABEL_CASES)
def test_labels_match_the_reference_argmax(backend, case, n, layout, dtype):
    size, (c, h, w) = case
    x = in_layout(rand(n, c, h, w, gen=torch.Generator().manual_seed(c + h), device=DEV[backend], dtype=dtype),
                  layout)
    check_labels(dk.upsample_labels(x, size, backend=backend), x, size, backend)


BACKENDS = [on(b) for b in ("reference", "cpu", "triton", "cuda")]


# Ties on purpose: integer logits 0..3 (most pixels have several channels at their maximum), resized by exactly 2
# or 4, or from 1 x 1 to 4 x 8. Every weight is then a multiple of 1/16 and every value exact in fp32 (and in the
# float64 reference): the labels must match everywhere, the first of the tied channels winning. (Other factors
# round: ATen's own fp32 resize then breaks such ties between its vector and scalar channel loops.)
@pytest.mark.parametrize("backend, dtype", [
    on(b, *DTYPES[d][:1], id=name) for b in ("reference", "cpu", "triton", "cuda")
    for d, name in enumerate(("fp32", "fp16", "bf16")) if d == 0 or b in ("triton", "cuda")
])
@pytest.mark.parametrize("c", [2, 19, 37, 300])
@pytest.mark.parametrize("src, size", [((5, 3), (10, 6)), ((5, 3), (20, 12)), ((1, 1), (4, 8))],
                         ids=["x2", "x4", "1x1-to-4x8"])
def test_ties_go_to_the_first_channel(backend, dtype, c, src, size):
    gen = torch.Generator().manual_seed(c)
    x = torch.randint(0, 4, (2, c, *src), generator=gen)
    x[0, -1] = x[0].amax(0)  # the last channel ties with every pixel's maximum and must never win
    x = x.to(DEV[backend], dtype)
    check_labels(dk.upsample_labels(x, size, backend=backend), x, size, backend, exact=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_and_inf_logits_win_as_in_torch_argmax(backend):
    """A NaN is the maximum (the first NaN of a pixel wins), +inf beats every number, an all -inf pixel is
    channel 0: an input at the output size is read as it is, so these values reach the comparison unchanged."""
    x = rand(1, 7, 3, 4, gen=torch.Generator().manual_seed(2), device="cpu")
    x[0, 1, 0, 0] = 100.0
    x[0, 3, 0, 0] = x[0, 5, 0, 0] = float("nan")
    x[0, 4, 1, 2] = float("inf")
    x[0, :, 2, 3] = float("-inf")
    out = dk.upsample_labels(x.to(DEV[backend]), (3, 4), backend=backend).cpu()
    assert out[0, 0, 0] == 3 and out[0, 1, 2] == 4 and out[0, 2, 3] == 0
    assert torch.equal(out, x.argmax(1).to(torch.uint8))


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_input_that_wants_a_gradient_gives_labels_without_one(backend):
    """Labels are integers: nothing to differentiate, so no error either (the backward refusal of the other
    compiled ops never comes into play)."""
    x = rand(2, 5, 3, 4, gen=torch.Generator().manual_seed(3), device=DEV[backend]).requires_grad_()
    out = dk.upsample_labels(x, (7, 9), backend=backend)
    assert not out.requires_grad and out.dtype == torch.uint8


@needs_cpu_kernels
def test_opcheck_cpu_op():
    x = rand(2, 19, 4, 5, gen=torch.Generator().manual_seed(6), device="cpu")
    torch.library.opcheck(torch.ops.dfanet.upsample_labels.default, (x, [9, 7]))


@needs_cpu_kernels
def test_compiles_and_exports():
    """torch.compile (fullgraph, Inductor) and torch.export see through the op: its fake gives the labels' shape and
    dtype, uint8 and int64."""

    class Labels(torch.nn.Module):
        def forward(self, x):
            return dk.upsample_labels(x * 2, (9, 7), backend="cpu")

    module = Labels()
    for c in (19, 300):
        x = rand(2, c, 4, 3, gen=torch.Generator().manual_seed(c), device="cpu")
        expected = module(x)
        assert expected.dtype == labels_dtype(c)
        assert torch.equal(torch.compile(module, fullgraph=True)(x), expected)
        exported = torch.export.export(module, (x,))
        assert "dfanet.upsample_labels.default" in {str(n.target) for n in exported.graph.nodes}
        assert torch.equal(exported.module()(x), expected)


@pytest.mark.parametrize("backend", CHECKED_BACKENDS)
@pytest.mark.parametrize(
    "x, size, error, message",
    [
        (None, (4, 4), TypeError, r"^x: expected a torch.Tensor, got NoneType"),
        (torch.randn(2, 3, 3), (4, 4), ValueError, r"^x: expected a 4-D tensor, got 3-D"),
        (torch.randn(1, 0, 3, 3), (4, 4), ValueError, r"^x: expected a non-empty"),
        (torch.ones(1, 2, 3, 3, dtype=torch.int64), (4, 4), TypeError, r"^x: expected a floating dtype"),
        (torch.randn(1, 2, 3, 3), (4,), TypeError, r"^size: expected a pair of ints"),
        (torch.randn(1, 2, 3, 3), (4.0, 4), TypeError, r"^size: expected a pair of ints"),
        (torch.randn(1, 2, 3, 3), (0, 4), ValueError, r"^size: expected H and W >= 1, got \(0, 4\)"),
        (torch.randn(1, 2, 3, 3), (4, -1), ValueError, r"^size: expected H and W >= 1"),
    ],
)
def test_bad_input_raises_naming_the_argument(x, size, error, message, backend):
    with pytest.raises(error, match=message):
        dk.upsample_labels(x, size, backend=backend)


@needs_cpu_kernels
def test_cpu_backend_names_the_dtype_and_device_it_takes():
    with pytest.raises(TypeError, match=r"^x: backend 'cpu' takes dtype float32, got torch.float64"):
        dk.upsample_labels(torch.randn(1, 2, 3, 3, dtype=torch.float64), (4, 4), backend="cpu")
    with pytest.raises(ValueError, match=r"backend='cpu' is unavailable: backend 'cpu' runs on CPU tensors, got a "
                                         r"tensor on meta"):
        dk.upsample_labels(torch.randn(1, 2, 3, 3, device="meta"), (4, 4), backend="cpu")


@needs_cpu_kernels
def test_direct_op_call_checks_its_arguments():
    """torch.ops.dfanet.upsample_labels skips the Python checks; the C++ glue's own stop a bad call."""
    with pytest.raises(RuntimeError, match=r"x: expected a 4-D N x C x H x W tensor, got 3-D"):
        torch.ops.dfanet.upsample_labels(torch.randn(2, 3, 3), [4, 4])
    with pytest.raises(RuntimeError, match=r"size: expected two positive ints"):
        torch.ops.dfanet.upsample_labels(torch.randn(1, 2, 3, 3), [4, 0])
    with pytest.raises(RuntimeError, match=r"x: the cpu backend takes float32"):
        torch.ops.dfanet.upsample_labels(torch.randn(1, 2, 3, 3, dtype=torch.float64), [4, 4])
