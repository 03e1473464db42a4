"""What only the Triton backend (dfanet::<op>_triton) has: its registration (schemas, fake implementations,
opcheck), plain calls that skip the dispatcher, the launchers' vector widths, 64-bit index paths and tiles (forced on
small cases), its dtype checks. The ops' results on Triton are tested with the other backends' in
tests/kernels/test_<op>.py, the model on Triton in tests/model/test_fused_backends.py; that the kernels compile for
a GPU, in test_triton_compile.py.

Without a GPU the kernels run on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1, set in conftest.py
before anything imports Triton); with one, on CUDA tensors.
"""

import re
from functools import partial

import pytest
import torch

import dfanet_kernels as dk
from dfanet_kernels import reference

from .. import op_cases
from ..op_cases import dw_expected, f64, on
from ..utils import in_layout

DEVICE = op_cases.DEVICES["triton"]
rand = partial(op_cases.rand, device=DEVICE)
dw_args = partial(op_cases.dw_args, device=DEVICE)
fc_args = partial(op_cases.fc_args, device=DEVICE)
UNAVAILABLE = op_cases.SKIP_REASONS["triton"]
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))


def check(out, expected, atol, rtol):
    op_cases.check(out, expected, atol, rtol, "triton")


# ------------------------------------------------------------------------------------------------------------------
# dwsep_conv: 64-bit indices, vector widths, the GPU tuning configs; dtype and shape checks
# ------------------------------------------------------------------------------------------------------------------
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
# upsample_concat / upsample_add / upsample_labels: 64-bit indices, tiles
# ------------------------------------------------------------------------------------------------------------------
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


@pytest.mark.parametrize("int64", [False, True], ids=["int32", "int64"])
def test_upsample_labels_over_several_row_and_channel_tiles(monkeypatch, int64):
    """16 x 16 tiles: rows of 40 pixels take three width tiles and 37 channels three channel tiles, the maximum
    carried from tile to tile; integer logits resized by exactly 2 tie across tiles, and the earlier tile wins."""
    from dfanet_kernels.triton import upsample as module

    from . import test_upsample_labels as labels_tests

    monkeypatch.setattr(module, "tiles", lambda c, wo: (16, 16))
    monkeypatch.setattr(module, "needs_int64", lambda *tensors: int64)
    gen = torch.Generator().manual_seed(10)
    x = in_layout(rand(2, 37, 5, 17, gen=gen), "strided")
    labels_tests.check_labels(dk.upsample_labels(x, (13, 40), backend="triton"), x, (13, 40), "triton")
    ties = torch.randint(0, 3, (2, 37, 7, 20), generator=gen).float()
    labels_tests.check_labels(dk.upsample_labels(ties, (14, 40), backend="triton"), ties, (14, 40), "triton",
                              exact=True)


# ------------------------------------------------------------------------------------------------------------------
# xception_block: one launch per block, the GPU's tiles and persistent loop, 64-bit indices, the fallbacks
# ------------------------------------------------------------------------------------------------------------------
def _block(case, layout="channels_last", seed=0):
    """(inputs, the block's weights, the float64 reference) of a block case as in test_xception_block.py."""
    args = op_cases.block_args(*case, device=DEVICE, seed=seed)
    inputs = [in_layout(t, layout) for t in args.pop("inputs")]
    return inputs, args, op_cases.block_expected({"inputs": inputs, **args})


def _launches(monkeypatch) -> list:
    """The Triton kernels launched from now on, in order (every launcher goes through its module's launchable)."""
    from dfanet_kernels.triton import _common, dwsep_conv, upsample, xception_block

    launched = []
    for module in (dwsep_conv, upsample, xception_block):
        monkeypatch.setattr(module, "launchable", lambda k: launched.append(k) or _common.launchable(k))
    return launched


def test_xception_block_is_one_launch_reading_the_concatenation(monkeypatch):
    from dfanet_kernels.triton import xception_block as module

    inputs, args, expected = _block((1, [(5, 9, 7), (6, 3, 4)], 8, 8, 12, 2, True))
    launched = _launches(monkeypatch)
    # fp32 tolerance: as test_xception_block.py's.
    check(dk.xception_block_cat(inputs, **args, backend="triton"), expected, 5e-5, 2e-5)
    assert launched == [module._xception_block_kernel]


# (N, [(C, H, W) of each input], C1, C2, C3, stride, projection), layout, int64. With the GPU's tiles (16-wide K
# steps, 64-wide output passes, 8 x 8 output tiles): 44 input channels over two sources (two K steps each, the
# second masked), mids of 40 and 24 (C1P = 64: four K steps), 72 outputs (two passes), stride 2; an identity block
# on 19 x 10 (3 x 2 tiles); 64-bit indices forced on a strided input. Two programs loop over the tiles as the
# persistent grid does on a GPU.
GPU_TILE_CASES = [
    ((2, [(24, 13, 11), (20, 5, 4)], 40, 24, 72, 2, True), "channels_last", False),
    ((1, [(12, 19, 10)], 12, 12, 12, 1, False), "channels_last", False),
    ((2, [(12, 9, 7), (3, 9, 7)], 12, 12, 24, 2, True), "strided", True),
]


@pytest.mark.parametrize("case, layout, int64", GPU_TILE_CASES, ids=lambda v: op_cases.block_case_id(v)
                         if isinstance(v, tuple) else str(v))
def test_xception_block_with_the_gpus_tiles_and_persistent_loop(monkeypatch, case, layout, int64):
    from dfanet_kernels.triton import xception_block as module

    monkeypatch.setattr(module, "needs_int64", lambda *tensors: int64)
    monkeypatch.setattr(module, "_programs", lambda tiles, device: min(tiles, 2))
    inputs, args, expected = _block(case, layout, seed=5)
    c = [sum(t.shape[1] for t in inputs)] + [w.shape[0] for w in args["pw_weights"]]
    dw, pw, pb = args["dw_weights"], args["pw_weights"], args["pw_biases"]
    out = module.xception_block_forward(inputs, dw[0], pw[0], pb[0], dw[1], pw[1], pb[1], dw[2], pw[2], pb[2],
                                        args["stride"], args["shortcut_weight"], args["shortcut_bias"],
                                        block_tiles=module.tiles(*c, interpret=False))
    check(out, expected, 5e-5, 2e-5)


@pytest.mark.parametrize("case", [(1, [(70, 6, 5)], 50, 66, 80, 2, True),
                                  (1, [(2, 5 + i % 3, 6 + i % 4) for i in range(5)], 8, 8, 10, 1, False)],
                         ids=["mid-past-64", "5-inputs"])
def test_xception_block_fallbacks(monkeypatch, case):
    """Mid widths past MAX_MID compose dwsep_conv launches (and the shortcut on the reference conv); more inputs
    than MAX_SOURCES are concatenated, then read by the block kernel as one."""
    from dfanet_kernels.triton import dwsep_conv, upsample, xception_block

    inputs, args, expected = _block(case, seed=2)
    launched = _launches(monkeypatch)
    check(dk.xception_block_cat(inputs, **args, backend="triton"), expected, 5e-5, 2e-5)
    if max(case[2], case[3]) > xception_block.MAX_MID:
        assert launched == [upsample._upsample_kernel] * (len(inputs) > 1) + [dwsep_conv._dwsep_conv_kernel.fn] * 3
    else:
        assert launched == [upsample._upsample_kernel] * len(inputs) + [xception_block._xception_block_kernel]


def test_xception_block_direct_op_call_with_bad_shape_raises():
    """torch.ops.dfanet.xception_block_triton skips the Python checks; its own checks must stop a bad call."""
    dk.available_backends(DEVICE)
    a = op_cases.op_args("xception_block", device=DEVICE)
    with pytest.raises(RuntimeError, match=r"dw2: expected shape \(17, 1, 3, 3\)"):
        torch.ops.dfanet.xception_block_triton(*a[:4], torch.randn(3, 1, 3, 3, device=DEVICE), *a[5:])
    with pytest.raises(RuntimeError, match=r"an identity shortcut needs stride 1"):
        torch.ops.dfanet.xception_block_triton(*a[:10], 1, None, None)


# ------------------------------------------------------------------------------------------------------------------
# conv3x3: several pixel and channel tiles, 64-bit indices, a direct op call's checks
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("int64", [False, True], ids=["int32", "int64"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_conv3x3_over_several_tiles(monkeypatch, layout, int64):
    """The interpreter's tiles cover these maps whole; the GPU's smaller ones, forced here: rows in 16-pixel segments
    (the last one cut), 40 output channels in 16-wide tiles (the last one masked); and the 64-bit index path, taken
    only where an offset reaches 2**31."""
    from dfanet_kernels.triton import conv as module

    monkeypatch.setattr(module, "TILE_ELEMENTS", 256)
    monkeypatch.setattr(module, "_MAX_BLOCK_CO", 16)
    if int64:
        monkeypatch.setattr(module, "needs_int64", lambda *tensors: True)
    gen = torch.Generator().manual_seed(8)
    x = in_layout(rand(2, 3, 7, 41, gen=gen), layout)
    weight, bias = rand(40, 3, 3, 3, gen=gen, scale=27**-0.5), rand(40, gen=gen)
    assert module.tiles(40, 21) == (16, 16)
    out = dk.conv3x3(x, weight, bias, 2, True, backend="triton")
    check(out, reference.conv(f64(x), f64(weight), f64(bias), 2, True), 1e-5, 1e-5)


def test_conv3x3_direct_op_call_with_bad_shape_raises():
    """torch.ops.dfanet.conv3x3_triton skips the Python checks; its own checks must stop a bad call."""
    dk.available_backends(DEVICE)  # registers the Triton ops
    gen = torch.Generator()
    x, bias = rand(1, 4, 5, 5, gen=gen), rand(2, gen=gen)
    with pytest.raises(RuntimeError, match=r"weight: expected shape \(2, 4, 3, 3\)"):
        torch.ops.dfanet.conv3x3_triton(x, rand(2, 3, 3, 3, gen=gen), bias, 1, False)
    with pytest.raises(RuntimeError, match=r"bias: expected shape \(2,\)"):
        torch.ops.dfanet.conv3x3_triton(x, rand(2, 4, 3, 3, gen=gen), rand(3, gen=gen), 1, False)
    with pytest.raises(RuntimeError, match="stride: expected 1 or 2, got 3"):
        torch.ops.dfanet.conv3x3_triton(x, rand(2, 4, 3, 3, gen=gen), bias, 3, False)


# ------------------------------------------------------------------------------------------------------------------
# Registration: schemas, fake (meta) implementations, opcheck
# ------------------------------------------------------------------------------------------------------------------
OPS = ["dwsep_conv", "xception_block", "fc_attention", "upsample_concat", "upsample_add", "upsample_labels", "conv3x3"]


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


# The opcheck parts that run under the interpreter; on a GPU also all of them (the AOT-dispatch part needs one).
OPCHECKS = [on("triton", ("test_schema", "test_autograd_registration", "test_faketensor"), id="interpreter-parts"),
            on("triton", None, id="full", gpu=True)]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend, test_utils", OPCHECKS)
def test_opcheck(backend, test_utils, op):
    dk.available_backends(DEVICE)  # registers the Triton ops
    checks = {} if test_utils is None else dict(test_utils=test_utils)
    torch.library.opcheck(getattr(torch.ops.dfanet, f"{op}_{backend}").default, op_cases.op_args(op, device=DEVICE),
                          **checks)


@pytest.mark.parametrize("op", OPS)
def test_meta_output_has_the_real_outputs_shape_dtype_and_nhwc_strides(op):
    dk.available_backends(DEVICE)
    fn = getattr(torch.ops.dfanet, f"{op}_triton")
    args = op_cases.op_args(op, device=DEVICE)
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
    """dfanet_kernels.dispatch skips the op dispatcher (as costly as the launcher) on plain calls; a call that needs a
    gradient or is traced goes through the registered op, which torch.compile/torch.export see."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from dfanet_kernels import dispatch

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
        assert not dispatch._plain_eager(())
    assert dispatch._plain_eager(())


@pytest.mark.skipif(not op_cases.HAS_GPU, reason=op_cases.NEEDS_GPU)
def test_torch_compile_fullgraph_through_triton_ops():
    args = dw_args(2, 16, 24, 17, 17, 2, seed=7)
    ups = [rand(2, 24, 5, 5, gen=torch.Generator()), rand(2, 24, 9, 9, gen=torch.Generator())]

    def f(a, b, c):
        y = dk.dwsep_conv(**args, act_in=True, backend="triton")
        return dk.upsample_add([y, a], (9, 9), backend="triton") * 2 + b.sum() + c

    compiled = torch.compile(f, fullgraph=True)
    c = torch.zeros(1, device=DEVICE)
    torch.testing.assert_close(compiled(*ups, c), f(*ups, c), atol=1e-5, rtol=1e-5)
