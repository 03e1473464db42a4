"""dwsep_conv on every backend (the CPU kernels, Triton, CUDA; the backend is each test's first parameter) against
the float64 reference, on odd shapes, layouts and dtypes, every flag combination; bad input is rejected.

Each backend has its own shapes (the Triton interpreter is slow: small ones; CUDA adds large ones) and tolerances.
Launcher internals of one backend are in test_triton_backend.py / test_cuda_backend.py, the CPU kernels' instruction
sets in test_cpu_isa.py."""

import itertools

import pytest
import torch

import dfanet_kernels as dk

from ..op_cases import DEVICES as DEV
from ..op_cases import DTYPES, check, dw_args, dw_expected, layout_dtypes, on, shape_id
from ..utils import CHECKED_BACKENDS, in_layout, needs_cpu_kernels

# The CPU kernels' fp32 tolerance: the kernel sums the same 9 + C products as the reference in another order; with
# outputs of order 1 the rounding difference is a few ulp times sqrt(terms), far below 2e-5. (Triton and CUDA take
# op_cases.DTYPES.)
ATOL, RTOL = 2e-5, 1e-5

# (N, C, Cout, H, W) per backend.
# cpu: tiny, odd, wide/narrow, and the model's channel counts (12, 17, 48, 240).
# triton: 1 x 1 maps and channels, 1-wide rows/columns, odd sizes, and C/Cout above the interpreter's 64-channel
# tile (several input-channel steps and output-channel tiles).
# cuda: fp16/bf16 take tensor cores where C and Cout >= 16, else the FMA path; C = 240 is 8 channel chunks, Cout =
# 240 four output tiles; 1 x 1 maps, 1-wide rows and columns; (3, 12, 240, 250, 250) is more tiles than the grid
# cap, so the blocks loop. "large" cases (in LARGE) are left out under compute-sanitizer.
SHAPES = {
    "cpu": [(1, 1, 1, 1, 1), (3, 3, 5, 7, 7), (1, 12, 48, 33, 65), (3, 17, 40, 65, 33), (1, 48, 192, 7, 250),
            (1, 240, 48, 33, 33), (2, 240, 17, 1, 7)],
    "triton": [(1, 1, 1, 1, 1), (3, 3, 5, 7, 13), (1, 17, 40, 13, 7), (3, 48, 1, 13, 13), (2, 48, 40, 1, 7),
               (1, 70, 80, 7, 13)],
    "cuda": [(1, 1, 1, 1, 1), (3, 3, 12, 7, 33), (1, 17, 48, 65, 7), (3, 48, 17, 33, 65), (1, 48, 3, 250, 1),
             (1, 240, 48, 65, 65), (3, 240, 240, 33, 33), (3, 12, 240, 250, 250)],
}
LARGE = {(3, 240, 240, 33, 33), (3, 12, 240, 250, 250)}


def case_id(shape):
    return ("large-" if shape in LARGE else "") + shape_id(shape)


@pytest.mark.parametrize("backend, shape, stride, layout, dtype, atol, rtol", [
    on(backend, shape, stride, *case, id=f"{case_id(shape)}-s{stride}-{name}")
    for backend, shapes in SHAPES.items() for shape in shapes for stride in (1, 2)
    for name, case in layout_dtypes(backend, (ATOL, RTOL))
])
def test_dwsep_conv_matches_reference(backend, shape, stride, layout, dtype, atol, rtol):
    args = dw_args(*shape, stride, dtype=dtype, device=DEV[backend])
    args["x"] = in_layout(args["x"], layout)
    args["residual"] = in_layout(args["residual"], layout)
    flags = dict(act_in=True, act_mid=True, act_out=True)
    check(dk.dwsep_conv(**args, **flags, backend=backend), dw_expected(args, **flags), atol, rtol, backend)


# (dtype, atol, rtol, (N, C, Cout, H, W)) per backend: CUDA's fp16 case has C, Cout >= 16, its tensor-core path.
FLAG_CASES = [
    on("cpu", torch.float32, ATOL, RTOL, (3, 17, 12, 13, 9), id="fp32"),
    on("triton", *DTYPES[0], (1, 17, 12, 7, 9), id="fp32"),
    on("cuda", *DTYPES[0], (1, 17, 12, 7, 9), id="fp32"),
    on("cuda", *DTYPES[1], (1, 17, 24, 7, 9), id="fp16-tc"),
]


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dw_bias, pw_bias, residual", list(itertools.product([False, True], repeat=3)))
@pytest.mark.parametrize("act_in, act_mid, act_out", list(itertools.product([False, True], repeat=3)))
@pytest.mark.parametrize("backend, dtype, atol, rtol, shape", FLAG_CASES)
def test_dwsep_conv_every_activation_bias_residual_combination(backend, dtype, atol, rtol, shape, act_in, act_mid,
                                                                act_out, dw_bias, pw_bias, residual, stride):
    args = dw_args(*shape, stride, dtype=dtype, dw_bias=dw_bias, pw_bias=pw_bias, residual=residual, seed=1,
                   device=DEV[backend])
    flags = dict(act_in=act_in, act_mid=act_mid, act_out=act_out)
    check(dk.dwsep_conv(**args, **flags, backend=backend), dw_expected(args, **flags), atol, rtol, backend)


@pytest.mark.parametrize("backend, dtype, shape, change", [
    on("cpu", torch.float32, (1, 8, 8, 9, 9), 1e-3, id="fp32"),
    on("triton", torch.float32, (1, 8, 8, 9, 9), 1e-3, id="fp32"),
    on("cuda", torch.float32, (1, 24, 24, 9, 9), 1e-2, id="fp32"),
    on("cuda", torch.float16, (1, 24, 24, 9, 9), 1e-2, id="fp16-tc"),
])
def test_dwsep_conv_activations_change_the_result(backend, dtype, shape, change):
    """Guards the test above: with inputs of both signs each ReLU point must matter, or the flags are ignored."""
    args = dw_args(*shape, 1, dtype=dtype, seed=2, device=DEV[backend])
    plain = dk.dwsep_conv(**args, backend=backend).float()
    for flag in ("act_in", "act_mid", "act_out"):
        assert (dk.dwsep_conv(**args, **{flag: True}, backend=backend).float() - plain).abs().max() > change


# (dtype, (N, C, Cout, H, W), where the NaN goes). The CPU kernels' NaN test runs on every instruction set
# (test_cpu_isa.py).
@pytest.mark.parametrize("flag", ["act_in", "act_mid", "act_out"])
@pytest.mark.parametrize("backend, dtype, shape, nan_at", [
    on("triton", torch.float32, (1, 4, 3, 6, 6), (0, 1, 2, 3), id="fp32"),
    on("cuda", torch.float32, (1, 24, 32, 7, 6), (0, 12, 3, 3), id="fp32"),
    on("cuda", torch.float16, (1, 24, 32, 7, 6), (0, 12, 3, 3), id="fp16-tc"),
])
def test_dwsep_conv_relu_keeps_nan_like_torch(backend, dtype, shape, nan_at, flag):
    """A NaN input must not come out as a finite number (max.f32 / fmaxf(NaN, 0) would make relu(NaN) = 0)."""
    args = dw_args(*shape, 1, dtype=dtype, residual=False, seed=5, device=DEV[backend])
    args["x"][nan_at] = float("nan")
    out = dk.dwsep_conv(**args, **{flag: True}, backend=backend).cpu()
    expected = dw_expected(args, **{flag: True})
    assert expected.isnan().any() and torch.equal(out.isnan(), expected.isnan())


@pytest.mark.parametrize("backend", [on(b) for b in ("cpu", "triton", "cuda")])
@pytest.mark.parametrize("x_layout, residual_layout", [("channels_last", "strided"), ("nchw", "channels_last")])
def test_dwsep_conv_mixed_layouts(backend, x_layout, residual_layout):
    """x and the residual each take the dense-NHWC or the strided path on their own."""
    args = dw_args(2, 48, 40, 7, 9, 2, seed=4, device=DEV[backend])
    args["x"] = in_layout(args["x"], x_layout)
    args["residual"] = in_layout(args["residual"], residual_layout)
    check(dk.dwsep_conv(**args, act_in=True, backend=backend), dw_expected(args, act_in=True), 1e-5, 1e-5, backend)


# GPU only: half precision at DFANet A's shapes, (N, C, Cout, H, W, stride).
HALF_SHAPES = {
    "triton": [(1, 8, 12, 512, 512, 2), (8, 48, 192, 64, 64, 1), (1, 288, 48, 64, 64, 2), (8, 12, 48, 256, 256, 1)],
    "cuda": [(1, 8, 12, 512, 512, 2), (8, 48, 192, 64, 64, 1), (1, 288, 48, 64, 64, 2)],
}


@pytest.mark.parametrize("backend, shape, dtype, atol, rtol", [
    on(backend, shape, *DTYPES[d], id=f"large-{shape_id(shape)}-{name}", gpu=True)
    for backend, shapes in HALF_SHAPES.items() for shape in shapes for d, name in [(1, "fp16"), (2, "bf16")]
])
def test_dwsep_conv_half_precision_at_model_shapes(backend, shape, dtype, atol, rtol):
    *dims, stride = shape
    args = dw_args(*dims, stride, dtype=dtype, dw_bias=False, seed=9, device=DEV[backend])
    check(dk.dwsep_conv(**args, act_in=True, backend=backend), dw_expected(args, act_in=True), atol, rtol, backend)


@pytest.mark.parametrize("backend", [on("cpu"), on("cuda")])
def test_dwsep_conv_with_no_output_channels_is_empty(backend):
    """The compiled op itself (the public one refuses Cout = 0) returns an empty output."""
    args = dw_args(2, 5, 0, 7, 6, 2, residual=False, device=DEV[backend])
    out = torch.ops.dfanet.dwsep_conv(args["x"], args["dw_weight"], args["dw_bias"], args["pw_weight"],
                                      args["pw_bias"], 2, False, False, False, None)
    assert out.shape == (2, 0, 4, 3) and out.device.type == backend


@needs_cpu_kernels
def test_opcheck_cpu_op():
    args = dw_args(2, 5, 7, 9, 6, 2, seed=3, device="cpu")
    op_args = (args["x"], args["dw_weight"], args["dw_bias"], args["pw_weight"], args["pw_bias"], 2, True, False, True,
               args["residual"])
    torch.library.opcheck(torch.ops.dfanet.dwsep_conv.default, op_args)


@pytest.mark.parametrize("backend", CHECKED_BACKENDS)
@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(x=torch.randn(3, 9, 9)), ValueError, "x: expected a 4-D tensor"),
        (dict(x=torch.randint(0, 5, (1, 4, 9, 9))), TypeError, "x: expected a floating dtype"),
        (dict(x=torch.randn(1, 4, 0, 9)), ValueError, "x: expected a non-empty"),
        (dict(dw_weight=torch.randn(4, 1, 5, 5)), ValueError, "dw_weight: expected shape (4, 1, 3, 3)"),
        (dict(dw_weight=torch.randn(4, 1, 3, 3, dtype=torch.float64)), TypeError, "dw_weight: expected dtype"),
        (dict(dw_bias=torch.randn(5)), ValueError, "dw_bias: expected shape (4,)"),
        (dict(pw_weight=torch.randn(6, 5, 1, 1)), ValueError, "pw_weight: expected shape (6, 4, 1, 1)"),
        (dict(pw_weight=torch.randn(6, 4)), ValueError, "pw_weight: expected a 4-D tensor"),
        (dict(pw_weight=torch.randn(0, 4, 1, 1), pw_bias=None), ValueError,
         "pw_weight: expected at least one output channel, got shape (0, 4, 1, 1)"),
        (dict(dw_weight=torch.randn(4, 1, 3, 3, device="meta")), ValueError,
         "dw_weight: expected device cpu (that of x), got meta"),
        (dict(residual=torch.randn(1, 6, 5, 5, device="meta")), ValueError, "residual: expected device cpu"),
        (dict(pw_bias=torch.randn(6, dtype=torch.float16)), TypeError, "pw_bias: expected dtype torch.float32"),
        (dict(pw_bias=torch.randn(7)), ValueError, "pw_bias: expected shape (6,)"),
        (dict(stride=3), ValueError, "stride: expected 1 or 2, got 3"),
        (dict(stride=True), TypeError, "stride: expected the int 1 or 2, got bool True"),
        (dict(stride=2.0), TypeError, "stride: expected the int 1 or 2, got float 2.0"),
        (dict(residual=torch.randn(1, 6, 9, 9)), ValueError, "residual: expected shape (1, 6, 5, 5)"),
        (dict(x=[[1.0]]), TypeError, "x: expected a torch.Tensor, got list"),
        (dict(backend="tpu"), ValueError, "backend: expected one of"),
    ],
)
def test_bad_input_raises_naming_the_argument(change, error, message, backend):
    args = dict(
        x=torch.randn(1, 4, 9, 9), dw_weight=torch.randn(4, 1, 3, 3), dw_bias=torch.randn(4),
        pw_weight=torch.randn(6, 4, 1, 1), pw_bias=torch.randn(6), stride=2, residual=None, backend=backend,
    )
    args.update(change)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        dk.dwsep_conv(**args)


@needs_cpu_kernels
def test_cpu_backend_rejects_other_dtypes_before_the_kernel():
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    w = dict(dw_weight=torch.randn(4, 1, 3, 3, dtype=torch.float64), dw_bias=None,
             pw_weight=torch.randn(2, 4, 1, 1, dtype=torch.float64), pw_bias=None)
    with pytest.raises(TypeError, match="x: backend 'cpu' takes dtype float32, got torch.float64"):
        dk.dwsep_conv(x, **w, backend="cpu")


@needs_cpu_kernels
def test_direct_op_call_with_bad_shape_raises_not_crashes():
    """torch.ops.dfanet.* skips the Python checks; the C++ checks must still stop a bad call."""
    x = torch.randn(1, 4, 5, 5)
    with pytest.raises(RuntimeError, match="dw_weight: expected shape"):
        torch.ops.dfanet.dwsep_conv(x, torch.randn(3, 1, 3, 3), None, torch.randn(2, 4, 1, 1), None, 1, False, False,
                                    False, None)
