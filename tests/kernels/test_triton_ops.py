"""The Triton backend (dfanet::<op>_triton) against the reference, on odd shapes, layouts and dtypes.

Without a GPU the kernels run on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1, set below and in
conftest.py before anything imports Triton); with one, on CUDA tensors. The expected values are the reference ops
evaluated in float64 on the same (already rounded) inputs, so each tolerance measures only the kernel's own error.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before Triton is imported; conftest.py does the same
# On a GPU, tune nothing: the many small test shapes would each be autotuned (bench/gpu_bench.py tunes).
os.environ.setdefault("DFANET_TRITON_AUTOTUNE", "0")

import itertools  # noqa: E402
import re  # noqa: E402
from functools import partial  # noqa: E402

import pytest  # noqa: E402

import dfanet_kernels as dk  # noqa: E402
from dfanet_kernels import backends, reference  # noqa: E402

from .. import op_cases  # noqa: E402
from ..op_cases import DTYPE_IDS, DTYPES, dw_expected, f64, fc_expected  # noqa: E402
from ..utils import (  # noqa: E402
    FP16_MODEL_TOLERANCE,
    LAYOUTS,
    assert_close,
    assert_logits_close,
    in_layout,
    randomize_batchnorm,
)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
rand = partial(op_cases.rand, device=DEVICE)
dw_args = partial(op_cases.dw_args, device=DEVICE)
fc_args = partial(op_cases.fc_args, device=DEVICE)
up_inputs = partial(op_cases.up_inputs, device=DEVICE)
UNAVAILABLE = backends.unavailable_reason("triton", DEVICE)
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"triton backend unavailable: {UNAVAILABLE}")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# Every (layout, dtype) pair under the interpreter. On a GPU each pair compiles its own kernel variants (a few
# seconds each: Triton specialises on strides), so there fp16/bf16 run in the model's layout, channels_last, only.
LAYOUT_DTYPES = [
    pytest.param(layout, *d, id=f"{layout}-{name}")
    for layout in LAYOUTS
    for d, name in zip(DTYPES, DTYPE_IDS)
    if not torch.cuda.is_available() or d[0] == torch.float32 or layout == "channels_last"
]


def check(out, expected, atol, rtol):
    assert out.device.type == DEVICE.type
    assert out.is_contiguous(memory_format=torch.channels_last), f"not NHWC: strides {out.stride()}"
    assert_close(out.cpu(), expected, atol, rtol)


# ------------------------------------------------------------------------------------------------------------------
# dwsep_conv
# ------------------------------------------------------------------------------------------------------------------
# (N, C, Cout, H, W): 1 x 1 maps and channels, 1-wide rows/columns, odd sizes, and C/Cout above the interpreter's
# 64-channel tile (several input-channel steps and output-channel tiles).
DW_SHAPES = [
    (1, 1, 1, 1, 1),
    (3, 3, 5, 7, 13),
    (1, 17, 40, 13, 7),
    (3, 48, 1, 13, 13),
    (2, 48, 40, 1, 7),
    (1, 70, 80, 7, 13),
]


@pytest.mark.parametrize("layout, dtype, atol, rtol", LAYOUT_DTYPES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("shape", DW_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dwsep_conv_matches_reference(shape, stride, layout, dtype, atol, rtol):
    args = dw_args(*shape, stride, dtype=dtype)
    args["x"] = in_layout(args["x"], layout)
    args["residual"] = in_layout(args["residual"], layout)
    flags = dict(act_in=True, act_mid=True, act_out=True)
    check(dk.dwsep_conv(**args, **flags, backend="triton"), dw_expected(args, **flags), atol, rtol)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dw_bias, pw_bias, residual", list(itertools.product([False, True], repeat=3)))
@pytest.mark.parametrize("act_in, act_mid, act_out", list(itertools.product([False, True], repeat=3)))
def test_dwsep_conv_every_activation_bias_residual_combination(act_in, act_mid, act_out, dw_bias, pw_bias,
                                                                residual, stride):
    args = dw_args(1, 17, 12, 7, 9, stride, dw_bias=dw_bias, pw_bias=pw_bias, residual=residual, seed=1)
    flags = dict(act_in=act_in, act_mid=act_mid, act_out=act_out)
    check(dk.dwsep_conv(**args, **flags, backend="triton"), dw_expected(args, **flags), 1e-5, 1e-5)


@pytest.mark.parametrize("x_layout, residual_layout", [("channels_last", "strided"), ("nchw", "channels_last")])
def test_dwsep_conv_mixed_layouts(x_layout, residual_layout):
    """x and the residual each take the dense-NHWC or the strided path on their own."""
    args = dw_args(2, 48, 40, 7, 9, 2, seed=4)
    args["x"] = in_layout(args["x"], x_layout)
    args["residual"] = in_layout(args["residual"], residual_layout)
    check(dk.dwsep_conv(**args, act_in=True, backend="triton"), dw_expected(args, act_in=True), 1e-5, 1e-5)


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_dwsep_conv_with_int64_indices(monkeypatch, layout):
    """The 64-bit index path, taken only where an offset reaches 2**31 (too big to test), forced on a small case:
    x and the residual in one layout (dense NHWC or strided), Cout over two output-channel tiles."""
    from dfanet_kernels.triton import dwsep_conv as module

    monkeypatch.setattr(module, "needs_int64", lambda *tensors: True)
    args = dw_args(2, 24, 70, 9, 7, 2, seed=6)
    args["x"] = in_layout(args["x"], layout)
    args["residual"] = in_layout(args["residual"], layout)
    check(dk.dwsep_conv(**args, act_in=True, backend="triton"), dw_expected(args, act_in=True), 1e-5, 1e-5)


@pytest.mark.parametrize(
    "channels, dtype, width",
    [(12, torch.float32, 4), (24, torch.float32, 4), (6, torch.float32, 2), (19, torch.float32, 1),
     (12, torch.float16, 4), (24, torch.bfloat16, 8), (192, torch.float16, 8), (1, torch.float16, 1)],
)
def test_vector_width_divides_the_channels_within_16_bytes(channels, dtype, width):
    from dfanet_kernels.triton._common import vector_width

    assert vector_width(channels, torch.empty(0, dtype=dtype)) == width


def test_needs_int64_at_offsets_past_int32():
    from dfanet_kernels.triton._common import needs_int64

    assert not needs_int64(torch.empty(2**15 - 1, 2**16, device="meta"), None)
    assert needs_int64(None, torch.empty(2**15 + 1, 2**16, device="meta"))
    # A view's reach, not its element count: every fourth column, 2**30 elements spanning 2**32.
    view = torch.empty(2**14, 2**18, device="meta")[:, ::4]
    assert view.numel() == 2**30 and needs_int64(view)


@pytest.mark.parametrize("flag", ["act_in", "act_mid", "act_out"])
def test_dwsep_conv_relu_keeps_nan_like_torch(flag):
    """A NaN input must not come out as a finite number (max.f32 would make relu(NaN) = 0)."""
    args = dw_args(1, 4, 3, 6, 6, 1, residual=False, seed=5)
    args["x"][0, 1, 2, 3] = float("nan")
    out = dk.dwsep_conv(**args, **{flag: True}, backend="triton").cpu()
    expected = dw_expected(args, **{flag: True})
    assert torch.equal(out.isnan(), expected.isnan()) and expected.isnan().any()


def test_dwsep_conv_activations_change_the_result():
    """Guards the test above: with inputs of both signs each ReLU point must matter, or the flags are ignored."""
    args = dw_args(1, 8, 8, 9, 9, 1, seed=2)
    plain = dk.dwsep_conv(**args, backend="triton")
    for flag in ("act_in", "act_mid", "act_out"):
        assert (dk.dwsep_conv(**args, **{flag: True}, backend="triton") - plain).abs().max() > 1e-3


# Shapes for the per-config test. C = 48: 16-channel input steps; C = 24: 32-channel steps; Cout = 130: two
# 128-wide output tiles. (N, C, Cout, H, W, stride)
CONFIG_SHAPES = [(2, 48, 40, 7, 9, 1), (2, 24, 130, 9, 11, 2)]


@pytest.mark.parametrize("config_index", range(4))
@pytest.mark.parametrize("shape", CONFIG_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dwsep_conv_every_gpu_tuning_config(shape, config_index):
    """Each autotuning config with the GPU's channel tiles (the interpreter otherwise runs its own big tiles)."""
    import triton

    from dfanet_kernels.triton import dwsep_conv as module

    assert len(module.CONFIGS) == 4, "update config_index's range"
    config = module.CONFIGS[config_index]
    n, c, cout, h, w, stride = shape
    block_co, block_ci = module.channel_tiles(c, cout, interpret=False)
    tiles = triton.Config({**config.kwargs, "BLOCK_CO": block_co, "BLOCK_CI": block_ci},
                          num_warps=config.num_warps, num_stages=config.num_stages)
    a = dw_args(n, c, cout, h, w, stride, seed=3)
    out = module.dwsep_conv_forward(a["x"], a["dw_weight"], a["dw_bias"], a["pw_weight"], a["pw_bias"], stride,
                                    True, False, True, a["residual"], config=tiles)
    check(out, dw_expected(a, act_in=True, act_out=True), 1e-5, 1e-5)


@pytest.mark.parametrize("op", ["dwsep_conv", "fc_attention", "upsample_add"])
def test_other_dtypes_are_rejected_naming_the_argument(op):
    """float64 (or an integer type) never reaches a kernel: the public op names the argument and the dtypes."""
    gen = torch.Generator().manual_seed(1)
    if op == "dwsep_conv":
        args = {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in dw_args(1, 4, 3, 5, 5, 1).items()}
        call = lambda: dk.dwsep_conv(**args, backend="triton")  # noqa: E731
    elif op == "fc_attention":
        args = {k: v.double() for k, v in fc_args(1, 4, 5, 5, 7).items()}
        call = lambda: dk.fc_attention(**args, backend="triton")  # noqa: E731
    else:
        call = lambda: dk.upsample_add([rand(1, 2, 3, 3, gen=gen).double()], (5, 5), backend="triton")  # noqa: E731
    name = "inputs" if op == "upsample_add" else "x"
    with pytest.raises(TypeError, match=rf"{re.escape(name)}: backend 'triton' takes dtype float32/float16/bfloat16"):
        call()


def test_dwsep_conv_direct_op_call_with_bad_shape_raises():
    """torch.ops.dfanet.dwsep_conv_triton skips the Python checks; its own checks must stop a bad call."""
    dk.available_backends(DEVICE)  # registers the Triton ops
    x = rand(1, 4, 5, 5, gen=torch.Generator())
    bad_dw = rand(3, 1, 3, 3, gen=torch.Generator())
    pw = rand(2, 4, 1, 1, gen=torch.Generator())
    with pytest.raises(RuntimeError, match=r"dw_weight: expected shape \(4, 1, 3, 3\)"):
        torch.ops.dfanet.dwsep_conv_triton(x, bad_dw, None, pw, None, 1, False, False, False, None)
    with pytest.raises(RuntimeError, match=r"residual: expected shape \(1, 2, 3, 3\)"):
        torch.ops.dfanet.dwsep_conv_triton(x, bad_dw[:1].expand(4, 1, 3, 3), None, pw, None, 2, False, False, False,
                                           rand(1, 2, 5, 5, gen=torch.Generator()))


# ------------------------------------------------------------------------------------------------------------------
# fc_attention
# ------------------------------------------------------------------------------------------------------------------
# (N, C, H, W, K): K = 1000 as in DFANet; C = 300 above every channel tile; 33 x 33 and 64 x 64 maps make the pool
# split over several programs; 1 x 1 maps.
FC_SHAPES = [
    (1, 1, 1, 1, 1),
    (3, 3, 7, 13, 5),
    (1, 17, 13, 13, 1000),
    (3, 48, 13, 1, 40),
    (2, 48, 33, 33, 20),
    (1, 300, 5, 3, 130),
    (1, 17, 64, 64, 7),
]


@pytest.mark.parametrize("layout, dtype, atol, rtol", LAYOUT_DTYPES)
@pytest.mark.parametrize("shape", FC_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fc_attention_matches_reference(shape, layout, dtype, atol, rtol):
    args = fc_args(*shape, dtype=dtype)
    args["x"] = in_layout(args["x"], layout)
    check(dk.fc_attention(**args, backend="triton"), fc_expected(args), atol, rtol)


@pytest.mark.parametrize("fc_bias, conv_bias", [(False, False), (False, True), (True, False)])
def test_fc_attention_without_biases(fc_bias, conv_bias):
    args = fc_args(2, 17, 7, 9, 50, fc_bias=fc_bias, conv_bias=conv_bias, seed=4)
    check(dk.fc_attention(**args, backend="triton"), fc_expected(args), 1e-5, 1e-5)


# ------------------------------------------------------------------------------------------------------------------
# upsample_concat / upsample_add
# ------------------------------------------------------------------------------------------------------------------
# Output size and (C, H, W) of each input: upsampling by odd factors, an input at the output size (copied),
# downsampling, 1 x 1 sources and targets, and five inputs (more than one launch sums).
UP_CASES = [
    ((1, 1), [(1, 1, 1)]),
    ((7, 7), [(3, 2, 2), (5, 7, 7)]),
    ((13, 7), [(17, 1, 7), (48, 13, 7), (1, 1, 1)]),
    ((7, 1), [(5, 13, 13)]),  # downsampling
    ((13, 13), [(3, 4, 5), (3, 13, 13), (3, 7, 1), (3, 1, 1), (3, 5, 5)]),
]
UP_IDS = [f"{size[0]}x{size[1]}-{len(specs)}in" for size, specs in UP_CASES]


@pytest.mark.parametrize("layout, dtype, atol, rtol", LAYOUT_DTYPES)
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("case", UP_CASES, ids=UP_IDS)
def test_upsample_concat_matches_reference(case, n, layout, dtype, atol, rtol):
    inputs, size = up_inputs(case, n, layout, dtype)
    expected = reference.upsample_concat([f64(t) for t in inputs], size)
    check(dk.upsample_concat(inputs, size, backend="triton"), expected, atol, rtol)


@pytest.mark.parametrize("layout, dtype, atol, rtol", LAYOUT_DTYPES)
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("case", UP_CASES, ids=UP_IDS)
def test_upsample_add_matches_reference(case, n, layout, dtype, atol, rtol):
    inputs, size = up_inputs(case, n, layout, dtype, same_channels=True)
    expected = reference.upsample_add([f64(t) for t in inputs], size)
    check(dk.upsample_add(inputs, size, backend="triton"), expected, atol, rtol)


@pytest.mark.parametrize("op", ["upsample_concat", "upsample_add"])
def test_upsample_mixed_layouts(op):
    """Sources in different layouts take the strided path together."""
    gen = torch.Generator().manual_seed(7)
    inputs = [in_layout(rand(2, 5, 4, 3, gen=gen), "channels_last"), in_layout(rand(2, 5, 13, 7, gen=gen), "nchw"),
              in_layout(rand(2, 5, 7, 7, gen=gen), "strided")]
    expected = getattr(reference, op)([f64(t) for t in inputs], (13, 7))
    check(getattr(dk, op)(inputs, (13, 7), backend="triton"), expected, 1e-5, 1e-5)


@pytest.mark.parametrize("nhwc", [True, False], ids=["nhwc", "mixed-layouts"])
@pytest.mark.parametrize("op", ["upsample_concat", "upsample_add"])
def test_upsample_with_int64_indices(monkeypatch, op, nhwc):
    """The 64-bit index path, taken only where an offset reaches 2**31 (too big to test), forced on small cases."""
    from dfanet_kernels.triton import upsample as module

    monkeypatch.setattr(module, "needs_int64", lambda *tensors: True)
    gen = torch.Generator().manual_seed(8)
    inputs = [in_layout(rand(2, 5, *hw, gen=gen), "channels_last" if nhwc or i == 0 else "strided")
              for i, hw in enumerate([(4, 3), (13, 7), (7, 7)])]
    expected = getattr(reference, op)([f64(t) for t in inputs], (13, 7))
    check(getattr(dk, op)(inputs, (13, 7), backend="triton"), expected, 1e-5, 1e-5)


@pytest.mark.parametrize("int64", [False, True], ids=["int32", "int64"])
def test_upsample_over_several_row_and_channel_tiles(monkeypatch, int64):
    """16 x 16 tiles (a GPU's are larger, the interpreter's cover whole rows): rows of 40 pixels take three width
    tiles, 20 and 37 channels two and three channel tiles, at a concatenation offset and with batch 2; the add
    of five inputs takes a second, accumulating launch."""
    from dfanet_kernels.triton import upsample as module

    monkeypatch.setattr(module, "tiles", lambda c, wo: (16, 16))
    monkeypatch.setattr(module, "needs_int64", lambda *tensors: int64)
    gen = torch.Generator().manual_seed(9)
    cat = [rand(2, 20, 13, 40, gen=gen), in_layout(rand(2, 37, 5, 17, gen=gen), "strided")]
    check(dk.upsample_concat(cat, (13, 40), backend="triton"),
          reference.upsample_concat([f64(t) for t in cat], (13, 40)), 1e-5, 1e-5)
    add = [rand(2, 20, 3 + i, 30 + i, gen=gen) for i in range(5)]
    check(dk.upsample_add(add, (13, 40), backend="triton"), reference.upsample_add([f64(t) for t in add], (13, 40)),
          1e-5, 1e-5)


@pytest.mark.parametrize("op", ["upsample_concat", "upsample_add"])
def test_input_at_target_size_is_copied_bit_exactly(op):
    op_cases.check_same_size_copy(op, "triton", DEVICE)


def test_upsample_align_corners_convention_is_half_pixel():
    op_cases.check_half_pixel_convention("triton", DEVICE)


# ------------------------------------------------------------------------------------------------------------------
# xception_block / xception_block_cat: composed from the ops above by dfanet_kernels.ops
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", op_cases.BLOCK_CASES, ids=op_cases.block_case_id)
def test_xception_block_matches_reference(case):
    op_cases.check_block(case, "triton", DEVICE, check)


# ------------------------------------------------------------------------------------------------------------------
# Registration: schemas, fake (meta) implementations, opcheck
# ------------------------------------------------------------------------------------------------------------------
OPS = ["dwsep_conv", "fc_attention", "upsample_concat", "upsample_add"]


def op_args(op):
    if op == "dwsep_conv":
        a = dw_args(2, 5, 7, 9, 6, 2, seed=6)
        return (a["x"], a["dw_weight"], a["dw_bias"], a["pw_weight"], a["pw_bias"], 2, True, False, True, a["residual"])
    if op == "fc_attention":
        return tuple(fc_args(2, 5, 7, 3, 11, seed=6).values())
    gen = torch.Generator().manual_seed(6)
    return ([rand(2, 3, 4, 5, gen=gen), rand(2, 3, 9, 7, gen=gen)], [9, 7])


def _normalise(arg_type: str) -> str:
    # triton_op infers its schema from the Python annotations (it ignores schema=): `int` becomes SymInt and a
    # fixed-length list SymInt[2] an unsized SymInt[]. The arguments, their order and tensor types are the same.
    return arg_type.replace("SymInt[2]", "SymInt[]").replace("int", "SymInt").replace("SymSymInt", "SymInt")


def test_importing_the_package_does_not_load_the_triton_backend():
    """The Triton kernels (and their registration) load only when the triton backend is first asked for. (Whether
    the `triton` module itself gets imported is torch's business: importing torch._dynamo imports it.)"""
    import subprocess
    import sys

    script = "import sys, dfanet_kernels, dfanet; print('dfanet_kernels.triton' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("op", OPS)
def test_schema_matches_the_cpp_op(op):
    dk.available_backends(DEVICE)  # registers the Triton ops
    cpp = getattr(torch.ops.dfanet, op).default._schema
    tri = getattr(torch.ops.dfanet, f"{op}_triton").default._schema
    assert [a.name for a in tri.arguments] == [a.name for a in cpp.arguments]
    assert [_normalise(str(a.type)) for a in tri.arguments] == [_normalise(str(a.type)) for a in cpp.arguments]
    assert [str(r.type) for r in tri.returns] == [str(r.type) for r in cpp.returns] == ["Tensor"]


@pytest.mark.parametrize("op", OPS)
def test_opcheck_schema_registration_and_fake(op):
    """The opcheck parts that run under the interpreter (the AOT-dispatch part needs a GPU, see below)."""
    dk.available_backends(DEVICE)
    torch.library.opcheck(getattr(torch.ops.dfanet, f"{op}_triton").default, op_args(op),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


@pytest.mark.parametrize("op", OPS)
def test_meta_output_has_the_real_outputs_shape_dtype_and_nhwc_strides(op):
    dk.available_backends(DEVICE)
    fn = getattr(torch.ops.dfanet, f"{op}_triton")
    args = op_args(op)
    real = fn(*args)
    meta = fn(*[[t.to("meta") for t in a] if isinstance(a, list) and isinstance(a[0], torch.Tensor)
                else a.to("meta") if isinstance(a, torch.Tensor) else a for a in args])
    assert (meta.shape, meta.dtype, meta.stride()) == (real.shape, real.dtype, real.stride())


def _profiled_names(fn) -> set[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events()}


def test_plain_eager_calls_run_the_launcher_and_others_the_registered_op():
    """dfanet_kernels.ops skips the op dispatcher (as costly as the launcher) on plain calls; a call that needs a
    gradient or is traced goes through the registered op, which torch.compile/torch.export see."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from dfanet_kernels import ops

    args = dw_args(2, 5, 6, 7, 9, 2)
    with torch.no_grad():
        via_op = torch.ops.dfanet.dwsep_conv_triton(args["x"], args["dw_weight"], args["dw_bias"], args["pw_weight"],
                                                    args["pw_bias"], 2, True, False, False, args["residual"])
        plain = _profiled_names(lambda: dk.dwsep_conv(**args, act_in=True, backend="triton"))
        direct = dk.dwsep_conv(**args, act_in=True, backend="triton")
    assert "dfanet::dwsep_conv_triton" not in plain
    torch.testing.assert_close(direct, via_op, atol=0, rtol=0)

    args["x"] = args["x"].clone().requires_grad_()
    wants_grad = _profiled_names(lambda: dk.dwsep_conv(**args, act_in=True, backend="triton"))
    assert "dfanet::dwsep_conv_triton" in wants_grad
    with FakeTensorMode():
        assert not ops._plain_eager(())
    assert ops._plain_eager(())


@needs_cuda
@pytest.mark.parametrize("op", OPS)
def test_full_opcheck_on_cuda(op):
    torch.library.opcheck(getattr(torch.ops.dfanet, f"{op}_triton").default, op_args(op))


@needs_cuda
def test_torch_compile_fullgraph_through_triton_ops():
    args = dw_args(2, 16, 24, 17, 17, 2, seed=7)
    ups = [rand(2, 24, 5, 5, gen=torch.Generator()), rand(2, 24, 9, 9, gen=torch.Generator())]

    def f(a, b, c):
        y = dk.dwsep_conv(**args, act_in=True, backend="triton")
        return dk.upsample_add([y, a], (9, 9), backend="triton") * 2 + b.sum() + c

    compiled = torch.compile(f, fullgraph=True)
    c = torch.zeros(1, device=DEVICE)
    torch.testing.assert_close(compiled(*ups, c), f(*ups, c), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------------------------
# The model on the Triton backend
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def no_tf32():
    """Full fp32 in cuDNN convs and matmuls (the model's stem and decoder run F.conv2d on both backends): TF32
    rounds inputs to a 10-bit mantissa, which turns 1e-7 differences upstream into 1e-3 jumps."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@torch.no_grad()
@pytest.mark.usefixtures("no_tf32")
@pytest.mark.parametrize("batch, size", [(1, (64, 64)), (2, (67, 45))], ids=["1x64x64", "2x67x45"])
def test_dfanet_b_on_triton_matches_reference_backend(batch, size):
    """The whole fused forward (every op family, the model's shapes and flags) vs the same folded weights on the
    reference backend; 67 x 45 makes every stride-2 layer see odd sizes. 64 x 64 is about 10 s under the
    interpreter (~200 launches)."""
    from dfanet import DFANet

    torch.manual_seed(0)
    model = DFANet(num_classes=5, variant="B", fused=True, backend="triton")
    randomize_batchnorm(model)
    model.eval().to(DEVICE)
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(8)).to(DEVICE)
    out = model(x)
    model.backend = "reference"
    expected = model(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    scale = expected.abs().max().item()
    # fp32 through ~45 fused layers: errors stay ~1e-6 of the logit scale (measured 5e-7); 1e-5 leaves room.
    assert_close(out, expected, atol=1e-5 * scale, rtol=1e-5)


# ------------------------------------------------------------------------------------------------------------------
# GPU only: half precision at DFANet A's shapes
# ------------------------------------------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES[1:], ids=DTYPE_IDS[1:])
@pytest.mark.parametrize("shape", [(1, 8, 12, 512, 512, 2), (8, 48, 192, 64, 64, 1), (1, 288, 48, 64, 64, 2),
                                   (8, 12, 48, 256, 256, 1)], ids=lambda s: "x".join(map(str, s)))
def test_dwsep_conv_half_precision_at_model_shapes(shape, dtype, atol, rtol):
    *dims, stride = shape
    args = dw_args(*dims, stride, dtype=dtype, dw_bias=False, seed=9)
    check(dk.dwsep_conv(**args, act_in=True, backend="triton"), dw_expected(args, act_in=True), atol, rtol)


@needs_cuda
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES[1:], ids=DTYPE_IDS[1:])
def test_fc_attention_and_upsample_half_precision_at_model_shapes(dtype, atol, rtol):
    args = fc_args(8, 192, 64, 64, 1000, dtype=dtype, seed=10)
    check(dk.fc_attention(**args, backend="triton"), fc_expected(args), atol, rtol)
    gen = torch.Generator().manual_seed(11)
    cat = [rand(8, 48, 256, 256, gen=gen, dtype=dtype), rand(8, 192, 64, 64, gen=gen, dtype=dtype)]
    check(dk.upsample_concat(cat, (256, 256), backend="triton"),
          reference.upsample_concat([f64(t) for t in cat], (256, 256)), atol, rtol)
    add = [rand(8, 32, s, s, gen=gen, dtype=dtype) for s in (256, 64, 32, 16)]
    check(dk.upsample_add(add, (256, 256), backend="triton"),
          reference.upsample_add([f64(t) for t in add], (256, 256)), atol, rtol)


@needs_cuda
@torch.no_grad()
@pytest.mark.usefixtures("no_tf32")
# fp32: cuDNN may pick Winograd/FFT algorithms (errors ~1e-5 relative), hence 1e-4 rather than the interpreter's
# 1e-5; a wrong tap, bias or ReLU moves logits by O(scale).
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, dict(max_rel=1e-4, mean_rel=1e-5, argmax=0.999)),
                                              (torch.float16, FP16_MODEL_TOLERANCE)], ids=["fp32", "fp16"])
def test_dfanet_a_on_triton_matches_reference_backend_on_cuda(dtype, tolerance):
    from dfanet import DFANet

    torch.manual_seed(0)
    model = DFANet(num_classes=19, variant="A", fused=True, backend="triton")
    randomize_batchnorm(model)
    model.eval().to(DEVICE, dtype)
    x = torch.randn(2, 3, 512, 1024, generator=torch.Generator().manual_seed(12)).to(DEVICE, dtype)
    out = model(x)
    model.backend = "reference"
    expected = model(x)
    assert_logits_close(out, expected, **tolerance)
