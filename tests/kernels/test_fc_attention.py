"""fc_attention on every backend (the CPU kernels, Triton, CUDA; the backend is each test's first parameter) against
the float64 reference, on odd shapes, layouts, dtypes, with and without biases; bad input is rejected."""

import pytest
import torch

import dfanet_kernels as dk
from dfanet_kernels import reference

from ..op_cases import DEVICES as DEV
from ..op_cases import DTYPES, check, fc_args, fc_expected, layout_dtypes, on, shape_id
from ..utils import CHECKED_BACKENDS, assert_close, in_layout, needs_cpu_kernels

# The CPU kernels' fp32 tolerance: the pooled mean and two mat-vecs reduce over up to 250 x 250 and 1000 terms in an
# order that differs from ATen's; a relative error of 1e-5 on order-1 outputs is a few ulp per reduction step.
# (Triton and CUDA take op_cases.DTYPES.)
ATOL, RTOL = 1e-5, 1e-5

# (N, C, H, W, K) per backend; K is the hidden width (1000 in DFANet).
# triton: C = 300 above every channel tile; 33 x 33 and 64 x 64 maps make the pool split over several programs.
# cuda: 250 x 250 pools 62500 pixels per channel (in 32 parts); 2 x 1030 x 5 x 3 x 1100: both mat-vecs stage their
# vector in two chunks.
SHAPES = {
    "cpu": [(1, 1, 1, 1, 1), (3, 3, 7, 7, 10), (1, 17, 33, 65, 1000), (3, 48, 1, 250, 37), (1, 240, 65, 33, 1000),
            (2, 192, 16, 32, 1000)],
    "triton": [(1, 1, 1, 1, 1), (3, 3, 7, 13, 5), (1, 17, 13, 13, 1000), (3, 48, 13, 1, 40), (2, 48, 33, 33, 20),
               (1, 300, 5, 3, 130), (1, 17, 64, 64, 7)],
    "cuda": [(1, 1, 1, 1, 1), (3, 3, 7, 33, 5), (1, 17, 65, 65, 1000), (3, 48, 33, 1, 40), (3, 240, 1, 7, 1000),
             (1, 240, 250, 250, 1000), (2, 1030, 5, 3, 1100)],
}
LARGE = {(1, 240, 250, 250, 1000)}
# The biases each backend's reference test takes (fc_bias, conv_bias); test_fc_attention_without_biases has the rest.
BIASES = {"cpu": [(True, True), (False, False)], "triton": [(True, True)], "cuda": [(True, True)]}


def case_id(shape, biases):
    bias = "" if biases == (True, True) else "-no-bias"
    return ("large-" if shape in LARGE else "") + shape_id(shape) + bias


@pytest.mark.parametrize("backend, shape, fc_bias, conv_bias, layout, dtype, atol, rtol", [
    on(backend, shape, *biases, *case, id=f"{case_id(shape, biases)}-{name}")
    for backend, shapes in SHAPES.items() for shape in shapes for biases in BIASES[backend]
    for name, case in layout_dtypes(backend, (ATOL, RTOL))
])
def test_fc_attention_matches_reference(backend, shape, fc_bias, conv_bias, layout, dtype, atol, rtol):
    args = fc_args(*shape, dtype=dtype, fc_bias=fc_bias, conv_bias=conv_bias, device=DEV[backend])
    args["x"] = in_layout(args["x"], layout)
    check(dk.fc_attention(**args, backend=backend), fc_expected(args), atol, rtol, backend)


@pytest.mark.parametrize("backend", [on(b) for b in ("cpu", "triton", "cuda")])
@pytest.mark.parametrize("fc_bias, conv_bias", [(False, False), (False, True), (True, False)])
def test_fc_attention_without_biases(backend, fc_bias, conv_bias):
    args = fc_args(2, 17, 7, 9, 50, fc_bias=fc_bias, conv_bias=conv_bias, seed=4, device=DEV[backend])
    check(dk.fc_attention(**args, backend=backend), fc_expected(args), 1e-5, 1e-5, backend)


@pytest.mark.parametrize("backend", [on(b) for b in ("triton", "cuda")])
def test_fc_attention_back_to_back_calls_reuse_the_counters(backend):
    """The GPU backends' first kernel hands its tiles out with device counters that every launch leaves at zero for
    the next (no memset per call): calls of different shapes back to back, twice over, each match the reference.
    N = 3 with pixel splits that do not divide the map (2025 pixels), a 1 x 1 map, K = 0, a single tile."""
    shapes = [(3, 17, 45, 45, 33), (2, 5, 1, 1, 7), (3, 8, 3, 5, 0), (1, 1, 1, 1, 1), (3, 40, 7, 9, 70)]
    for _ in range(2):
        for i, shape in enumerate(shapes):
            args = fc_args(*shape, seed=i, device=DEV[backend])
            check(dk.fc_attention(**args, backend=backend), fc_expected(args), 1e-5, 1e-5, backend)
    if backend == "triton":
        from dfanet_kernels.triton import fc_attention as triton_fc

        assert triton_fc._counter_buffers and all(not c.any() for c in triton_fc._counter_buffers.values())


@pytest.mark.parametrize("backend, dtype, atol, rtol", [
    on("triton", *DTYPES[d], id=name, gpu=True) for d, name in [(1, "fp16"), (2, "bf16")]
])
def test_fc_attention_half_precision_at_model_shapes(backend, dtype, atol, rtol):
    """GPU only: DFANet A's largest attention input."""
    args = fc_args(8, 192, 64, 64, 1000, dtype=dtype, seed=10, device=DEV[backend])
    check(dk.fc_attention(**args, backend=backend), fc_expected(args), atol, rtol, backend)


@pytest.mark.parametrize("backend", [on(b) for b in ("reference", "cpu", "triton", "cuda")])
def test_empty_hidden_layer_scales_by_relu_conv_bias(backend):
    """K = 0: the mat-vecs are empty sums, so the scale is relu(conv_bias) (and 0 without a bias)."""
    args = fc_args(2, 17, 5, 3, 0, seed=5, device=DEV[backend])
    out = dk.fc_attention(**args, backend=backend)
    if backend == "reference":  # keeps x's layout
        assert_close(out, fc_expected(args), ATOL, RTOL)
    else:
        check(out, fc_expected(args), ATOL, RTOL, backend)
    args["conv_bias"] = None
    assert torch.equal(dk.fc_attention(**args, backend=backend), torch.zeros_like(args["x"]))


@pytest.mark.parametrize("backend", [on(b) for b in ("reference", "cpu", "triton")])
def test_nan_input_gives_nan_scales_like_torch_relu(backend):
    """relu(NaN) = NaN: a NaN in the pooled mean must not become a scale of 0 (max(NaN, 0) = 0 would hide it)."""
    args = fc_args(1, 4, 2, 2, 3, seed=6, device=DEV[backend])
    args["x"][0, 0, 0, 0] = float("nan")
    out, expected = dk.fc_attention(**args, backend=backend), reference.fc_attention(**args)
    assert expected.isnan().all() and torch.equal(out.isnan(), expected.isnan())


def test_scale_is_per_sample():
    """Each sample is scaled by its own pooled vector: swapping samples swaps outputs."""
    args = fc_args(2, 6, 5, 5, 8, seed=4, device="cpu")
    out = dk.fc_attention(**args, backend="cpu")
    args["x"] = args["x"].flip(0)
    assert_close(dk.fc_attention(**args, backend="cpu"), out.flip(0), 0, 0)


@needs_cpu_kernels
@pytest.mark.parametrize("shape", [(2, 192, 16, 32, 1000), (1, 17, 33, 65, 300)], ids=shape_id)
def test_cpu_result_does_not_depend_on_the_thread_count(shape):
    """The CPU kernel splits the pooling's 64-pixel chunks and the mat-vecs' rows over the threads but sums each as
    one thread does, in the same order: bit-identical on 1, 2 and 3 threads."""
    args = fc_args(*shape, seed=7, device="cpu")
    previous = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outs.append(dk.fc_attention(**args, backend="cpu"))
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


@needs_cpu_kernels
def test_opcheck_cpu_op():
    a = fc_args(2, 5, 4, 3, 7, seed=5, device="cpu")
    torch.library.opcheck(
        torch.ops.dfanet.fc_attention.default, (a["x"], a["fc_weight"], a["fc_bias"], a["conv_weight"], a["conv_bias"])
    )


@pytest.mark.parametrize("backend", CHECKED_BACKENDS)
@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(x=torch.randn(4, 9, 9)), ValueError, r"x: expected a 4-D tensor"),
        (dict(x=torch.randn(1, 4, 9, 0)), ValueError, r"x: expected a non-empty"),
        (dict(fc_weight=torch.randn(8, 5)), ValueError, r"fc_weight: expected shape \(8, 4\)"),
        (dict(fc_weight=torch.randn(8, 4, 1)), ValueError, r"fc_weight: expected a 2-D tensor"),
        (dict(fc_bias=torch.randn(9)), ValueError, r"fc_bias: expected shape \(8,\)"),
        (dict(conv_weight=torch.randn(4, 9, 1, 1)), ValueError, r"conv_weight: expected shape \(4, 8, 1, 1\)"),
        (dict(conv_bias=torch.randn(4).double()), TypeError, r"conv_bias: expected dtype torch.float32"),
        (dict(conv_bias=torch.randn(4, device="meta")), ValueError, r"conv_bias: expected device cpu"),
    ],
)
def test_bad_input_raises_naming_the_argument(change, error, message, backend):
    args = dict(x=torch.randn(1, 4, 9, 9), fc_weight=torch.randn(8, 4), fc_bias=torch.randn(8),
                conv_weight=torch.randn(4, 8, 1, 1), conv_bias=torch.randn(4), backend=backend)
    args.update(change)
    with pytest.raises(error, match=message):
        dk.fc_attention(**args)
