"""The CUDA backend (csrc/cuda: torch.ops.dfanet.* on CUDA tensors, through the public ops with backend="cuda")
against the reference, on odd shapes, layouts and dtypes; its registration (opcheck), streams, CUDA graphs,
torch.compile; and DFANet A fused on CUDA against the unfused model.

Runs where there is a GPU (bench/gpu_check.sh runs `pytest tests`; bench/compute_sanitizer.sh runs this file under
compute-sanitizer, without the cases whose id says "large"). Without one, tests/test_cuda_emulated.py runs the same
kernels on the CPU. The expected values are the reference ops on the same (already rounded) inputs, in float64 on
the CPU (upsample: in float32, see up_expected), so each tolerance measures only the kernel's own error.
"""

import itertools
from functools import partial

import pytest
import torch

import dfanet_kernels as dk
from dfanet import DFANet
from dfanet_kernels import backends, reference

from .. import op_cases
from ..op_cases import DTYPE_IDS, DTYPES, dw_expected, fc_expected
from ..utils import (
    FP16_MODEL_TOLERANCE,
    FP32_MODEL_TOLERANCE,
    assert_close,
    assert_logits_close,
    in_layout,
    randomize_batchnorm,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICE = torch.device("cuda")
rand = partial(op_cases.rand, device=DEVICE)
dw_args = partial(op_cases.dw_args, device=DEVICE)
fc_args = partial(op_cases.fc_args, device=DEVICE)
up_inputs = partial(op_cases.up_inputs, device=DEVICE)

# The glue makes every layout NHWC before it dispatches on dtype: each layout in fp32, each 16-bit dtype in one.
LAYOUT_DTYPES = [
    pytest.param(layout, *DTYPES[d], id=f"{layout}-{DTYPE_IDS[d]}")
    for layout, d in [("nchw", 0), ("channels_last", 0), ("strided", 0), ("channels_last", 1), ("strided", 2)]
]


def check(out, expected, atol, rtol):
    assert out.is_cuda
    assert out.is_contiguous(memory_format=torch.channels_last), f"not NHWC: strides {out.stride()}"
    assert_close(out.cpu(), expected, atol, rtol)


def test_cuda_backend_is_built():
    """On a GPU machine the CUDA kernels must be there: every other test here would fail less clearly."""
    assert backends.unavailable_reason("cuda", DEVICE) is None
    assert dk.available_backends(DEVICE)[-1] == "cuda"


# ------------------------------------------------------------------------------------------------------------------
# dwsep_conv
# ------------------------------------------------------------------------------------------------------------------
# (N, C, Cout, H, W). fp16/bf16 take tensor cores where C and Cout >= 16, else the FMA path; C = 240 is 8 channel
# chunks, Cout = 240 four output tiles; 1 x 1 maps, 1-wide rows and columns; (3, 12, 240, 250, 250) is more tiles
# than the grid cap, so the blocks loop.
DW_SHAPES = [
    pytest.param((1, 1, 1, 1, 1), id="1x1x1x1x1"),
    pytest.param((3, 3, 12, 7, 33), id="3x3x12x7x33"),
    pytest.param((1, 17, 48, 65, 7), id="1x17x48x65x7"),
    pytest.param((3, 48, 17, 33, 65), id="3x48x17x33x65"),
    pytest.param((1, 48, 3, 250, 1), id="1x48x3x250x1"),
    pytest.param((1, 240, 48, 65, 65), id="1x240x48x65x65"),
    pytest.param((3, 240, 240, 33, 33), id="large-3x240x240x33x33"),
    pytest.param((3, 12, 240, 250, 250), id="large-3x12x240x250x250"),
]


@pytest.mark.parametrize("layout, dtype, atol, rtol", LAYOUT_DTYPES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("shape", DW_SHAPES)
def test_dwsep_conv_matches_reference(shape, stride, layout, dtype, atol, rtol):
    args = dw_args(*shape, stride, dtype=dtype)
    args["x"] = in_layout(args["x"], layout)
    args["residual"] = in_layout(args["residual"], layout)
    flags = dict(act_in=True, act_mid=True, act_out=True)
    check(dk.dwsep_conv(**args, **flags, backend="cuda"), dw_expected(args, **flags), atol, rtol)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dw_bias, pw_bias, residual", list(itertools.product([False, True], repeat=3)))
@pytest.mark.parametrize("act_in, act_mid, act_out", list(itertools.product([False, True], repeat=3)))
@pytest.mark.parametrize("dtype, atol, rtol, c, cout", [(torch.float32, 1e-5, 1e-5, 17, 12),
                                                        (torch.float16, 2e-3, 2e-3, 17, 24)], ids=["fp32", "fp16-tc"])
def test_dwsep_conv_every_activation_bias_residual_combination(dtype, atol, rtol, c, cout, act_in, act_mid, act_out,
                                                                dw_bias, pw_bias, residual, stride):
    args = dw_args(1, c, cout, 7, 9, stride, dtype=dtype, dw_bias=dw_bias, pw_bias=pw_bias, residual=residual, seed=1)
    flags = dict(act_in=act_in, act_mid=act_mid, act_out=act_out)
    check(dk.dwsep_conv(**args, **flags, backend="cuda"), dw_expected(args, **flags), atol, rtol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16-tc"])
def test_dwsep_conv_activations_change_the_result(dtype):
    """Guards the test above: with inputs of both signs each ReLU point must matter, or the flags are ignored."""
    args = dw_args(1, 24, 24, 9, 9, 1, dtype=dtype, seed=2)
    plain = dk.dwsep_conv(**args, backend="cuda").float()
    for flag in ("act_in", "act_mid", "act_out"):
        assert (dk.dwsep_conv(**args, **{flag: True}, backend="cuda").float() - plain).abs().max() > 1e-2


@pytest.mark.parametrize("flag", ["act_in", "act_mid", "act_out"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16-tc"])
def test_dwsep_conv_relu_keeps_nan_like_torch(flag, dtype):
    """A NaN input must not come out as a finite number (fmaxf(NaN, 0) would make relu(NaN) = 0)."""
    args = dw_args(1, 24, 32, 7, 6, 1, dtype=dtype, residual=False, seed=5)
    args["x"][0, 12, 3, 3] = float("nan")
    out = dk.dwsep_conv(**args, **{flag: True}, backend="cuda").cpu()
    expected = dw_expected(args, **{flag: True})
    assert expected.isnan().any() and torch.equal(out.isnan(), expected.isnan())


def test_dwsep_conv_with_no_output_channels_is_empty():
    args = dw_args(2, 5, 0, 7, 6, 2, residual=False)
    out = torch.ops.dfanet.dwsep_conv(args["x"], args["dw_weight"], args["dw_bias"], args["pw_weight"],
                                      args["pw_bias"], 2, False, False, False, None)
    assert out.shape == (2, 0, 4, 3) and out.is_cuda


@pytest.mark.parametrize("dtype, atol, rtol", DTYPES[1:], ids=DTYPE_IDS[1:])
@pytest.mark.parametrize("shape", [(1, 8, 12, 512, 512, 2), (8, 48, 192, 64, 64, 1), (1, 288, 48, 64, 64, 2)],
                         ids=lambda s: "large-" + "x".join(map(str, s)))
def test_dwsep_conv_half_precision_at_model_shapes(shape, dtype, atol, rtol):
    *dims, stride = shape
    args = dw_args(*dims, stride, dtype=dtype, dw_bias=False, seed=9)
    check(dk.dwsep_conv(**args, act_in=True, backend="cuda"), dw_expected(args, act_in=True), atol, rtol)


# ------------------------------------------------------------------------------------------------------------------
# fc_attention
# ------------------------------------------------------------------------------------------------------------------
# (N, C, H, W, K): K = 1000 as in DFANet; 1 x 1 maps; 250 x 250 pools 62500 pixels per channel (in 32 parts).
FC_SHAPES = [
    pytest.param((1, 1, 1, 1, 1), id="1x1x1x1x1"),
    pytest.param((3, 3, 7, 33, 5), id="3x3x7x33x5"),
    pytest.param((1, 17, 65, 65, 1000), id="1x17x65x65x1000"),
    pytest.param((3, 48, 33, 1, 40), id="3x48x33x1x40"),
    pytest.param((3, 240, 1, 7, 1000), id="3x240x1x7x1000"),
    pytest.param((1, 240, 250, 250, 1000), id="large-1x240x250x250x1000"),
    pytest.param((2, 1030, 5, 3, 1100), id="2x1030x5x3x1100"),  # both mat-vecs stage their vector in two chunks
]


@pytest.mark.parametrize("layout, dtype, atol, rtol", LAYOUT_DTYPES)
@pytest.mark.parametrize("shape", FC_SHAPES)
def test_fc_attention_matches_reference(shape, layout, dtype, atol, rtol):
    args = fc_args(*shape, dtype=dtype)
    args["x"] = in_layout(args["x"], layout)
    check(dk.fc_attention(**args, backend="cuda"), fc_expected(args), atol, rtol)


@pytest.mark.parametrize("fc_bias, conv_bias", [(False, False), (False, True), (True, False)])
def test_fc_attention_without_biases(fc_bias, conv_bias):
    args = fc_args(2, 17, 7, 9, 50, fc_bias=fc_bias, conv_bias=conv_bias, seed=4)
    check(dk.fc_attention(**args, backend="cuda"), fc_expected(args), 1e-5, 1e-5)


def test_fc_attention_with_an_empty_hidden_layer_scales_by_relu_conv_bias():
    args = fc_args(2, 17, 5, 3, 0, seed=5)
    check(dk.fc_attention(**args, backend="cuda"), fc_expected(args), 1e-5, 1e-5)


# ------------------------------------------------------------------------------------------------------------------
# upsample_concat / upsample_add
# ------------------------------------------------------------------------------------------------------------------
# Output size and (C, H, W) of each input: upsampling by odd factors, an input at the output size (copied),
# downsampling, 1 x 1 sources and targets, nine inputs (more than the 8 one launch takes).
UP_CASES = [
    pytest.param(((1, 1), [(1, 1, 1)]), id="1x1-1in"),
    pytest.param(((7, 7), [(3, 1, 1), (12, 7, 7)]), id="7x7-2in"),
    pytest.param(((33, 65), [(17, 7, 33), (48, 33, 65), (1, 1, 1)]), id="33x65-3in"),
    pytest.param(((65, 33), [(3, 250, 250)]), id="65x33-down"),
    pytest.param(((33, 33), [(c, 1 + 8 * (c % 5), 7 + c) for c in (1, 3, 12, 17, 2, 5, 7, 4, 9)]), id="33x33-9in"),
    pytest.param(((250, 250), [(48, 65, 65), (240, 250, 250)]), id="large-250x250-2in"),
]


def up_expected(fn, inputs, size):
    """The reference in float32 on the GPU: ATen computes the bilinear source index and weights in fp32 with the same
    formula as the kernel. A float64 reference would differ from both by up to ~ulp(in) x |a neighbour difference|,
    ~1e-4 at 250 pixels, which the fp32 tolerance below does not allow."""
    return fn([t.float() for t in inputs], size).cpu()


@pytest.mark.parametrize("layout, dtype, atol, rtol", LAYOUT_DTYPES)
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("case", UP_CASES)
def test_upsample_concat_matches_reference(case, n, layout, dtype, atol, rtol):
    inputs, size = up_inputs(case, n, layout, dtype)
    expected = up_expected(reference.upsample_concat, inputs, size)
    check(dk.upsample_concat(inputs, size, backend="cuda"), expected, atol, rtol)


@pytest.mark.parametrize("layout, dtype, atol, rtol", LAYOUT_DTYPES)
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("case", UP_CASES)
def test_upsample_add_matches_reference(case, n, layout, dtype, atol, rtol):
    inputs, size = up_inputs(case, n, layout, dtype, same_channels=True)
    expected = up_expected(reference.upsample_add, inputs, size)
    check(dk.upsample_add(inputs, size, backend="cuda"), expected, atol, rtol)


@pytest.mark.parametrize("op", ["upsample_concat", "upsample_add"])
def test_input_at_target_size_is_copied_bit_exactly(op):
    op_cases.check_same_size_copy(op, "cuda", DEVICE)


def test_upsample_align_corners_convention_is_half_pixel():
    op_cases.check_half_pixel_convention("cuda", DEVICE)


# ------------------------------------------------------------------------------------------------------------------
# xception_block / xception_block_cat: composed from the ops above by dfanet_kernels.ops
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", op_cases.BLOCK_CASES, ids=op_cases.block_case_id)
def test_xception_block_matches_reference(case):
    op_cases.check_block(case, "cuda", DEVICE, check)


# ------------------------------------------------------------------------------------------------------------------
# The glue: checks, registration, streams, devices
# ------------------------------------------------------------------------------------------------------------------
OPS = ["dwsep_conv", "fc_attention", "upsample_concat", "upsample_add"]


def op_args(op, seed=6):
    if op == "dwsep_conv":
        a = dw_args(2, 20, 17, 9, 6, 2, dtype=torch.float16, seed=seed)
        return (a["x"], a["dw_weight"], a["dw_bias"], a["pw_weight"], a["pw_bias"], 2, True, False, True, a["residual"])
    if op == "fc_attention":
        return tuple(fc_args(2, 5, 7, 3, 11, seed=seed).values())
    gen = torch.Generator().manual_seed(seed)
    return ([rand(2, 3, 4, 5, gen=gen), rand(2, 3, 9, 7, gen=gen)], [9, 7])


@pytest.mark.parametrize("op", OPS)
def test_opcheck(op):
    torch.library.opcheck(getattr(torch.ops.dfanet, op).default, op_args(op))


def test_direct_op_calls_check_device_and_dtype():
    """torch.ops.dfanet.* skip the Python checks; the glue's own checks must stop a bad call before any kernel."""
    gen = torch.Generator()
    x = rand(1, 4, 5, 5, gen=gen)
    dw, pw = rand(4, 1, 3, 3, gen=gen), rand(2, 4, 1, 1, gen=gen)
    with pytest.raises(RuntimeError, match="dw_weight: expected device cuda"):
        torch.ops.dfanet.dwsep_conv(x, dw.cpu(), None, pw, None, 1, False, False, False, None)
    with pytest.raises(RuntimeError, match="the cuda backend takes float32, float16 or bfloat16"):
        torch.ops.dfanet.dwsep_conv(x.double(), dw.double(), None, pw.double(), None, 1, False, False, False, None)
    with pytest.raises(RuntimeError, match=r"dw_weight: expected shape \[4, 1, 3, 3\]"):
        torch.ops.dfanet.dwsep_conv(x, dw[:3], None, pw, None, 1, False, False, False, None)
    with pytest.raises(RuntimeError, match=r"inputs\[1\]: expected dtype"):
        torch.ops.dfanet.upsample_add([x, x.half()], [7, 7])
    with pytest.raises(TypeError, match="backend 'cuda' takes dtype"):
        dk.fc_attention(x.double(), rand(3, 4, gen=gen).double(), None, rand(4, 3, 1, 1, gen=gen).double(), None,
                        backend="cuda")


def chain_inputs(device=DEVICE, seed=7):
    a = dw_args(2, 24, 40, 17, 17, 2, seed=seed)
    a.update((k, v) for k, v in fc_args(2, 40, 9, 9, 100, seed=seed).items() if k != "x")
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in a.items()}


def chain(a):
    """One call of each op, chained as in DFANet (the model's flags, NHWC intermediates); GPU work only."""
    y = dk.dwsep_conv(a["x"], a["dw_weight"], a["dw_bias"], a["pw_weight"], a["pw_bias"], a["stride"], act_in=True,
                      residual=a["residual"], backend="cuda")
    y = dk.fc_attention(y, a["fc_weight"], a["fc_bias"], a["conv_weight"], a["conv_bias"], backend="cuda")
    y = dk.upsample_concat([y, a["x"]], (17, 17), backend="cuda")
    return dk.upsample_add([y, y[:, :, :9, :9]], (33, 33), backend="cuda")


def test_kernels_run_on_the_current_stream():
    inputs = chain_inputs()
    expected = chain(inputs)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        # A kernel launched on another stream than this one would start before the sleep ends and the copy is made.
        torch.cuda._sleep(50_000_000)
        out = chain({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()})
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(out, expected)


def test_cuda_graph_capture_and_replay():
    """What a CUDA graph of the fused model needs: the launches capture (no sync, no host-side allocation)."""
    inputs = chain_inputs()
    expected = chain(inputs)  # also the warm-up outside the capture
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.cuda.graph(graph):
        out = chain(inputs)
    torch.cuda.current_stream().wait_stream(side)
    out.zero_()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, expected)


def test_torch_compile_fullgraph_through_cuda_ops():
    inputs = chain_inputs()
    compiled = torch.compile(lambda a, b: chain(a) * 2 + b.sum(), fullgraph=True)
    b = torch.ones(3, device=DEVICE)
    torch.testing.assert_close(compiled(inputs, b), chain(inputs) * 2 + b.sum(), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_runs_on_the_tensors_device_not_the_current_one():
    expected = chain(chain_inputs())
    with torch.cuda.device(0):
        out = chain(chain_inputs(torch.device("cuda:1")))
    assert out.device == torch.device("cuda:1")
    assert torch.equal(out.cpu(), expected.cpu())


# ------------------------------------------------------------------------------------------------------------------
# The model on the CUDA backend
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def no_tf32():
    """cuDNN would otherwise round the unfused/reference fp32 convs' inputs to TF32 (~1e-3 relative)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def make_model(variant="A", num_classes=19, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = DFANet(num_classes, variant, **kwargs)
    randomize_batchnorm(model, seed)
    return model.eval().to(DEVICE)


@torch.no_grad()
@pytest.mark.parametrize("batch, size", [(1, (97, 131)), (2, (512, 1024))])
def test_dfanet_a_fused_on_cuda_matches_unfused(no_tf32, batch, size):
    model = make_model("A")
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(12)).to(DEVICE)
    unfused = model(x)
    model.fused, model.backend = True, "cuda"
    fused = model(x)
    assert fused.is_contiguous(memory_format=torch.channels_last)
    assert_logits_close(fused, unfused, **FP32_MODEL_TOLERANCE)


@torch.no_grad()
def test_dfanet_a_fused_on_cuda_in_fp16_matches_the_reference_backend():
    model = make_model("A", fused=True, backend="cuda").half()
    x = torch.randn(2, 3, 512, 1024, generator=torch.Generator().manual_seed(13)).to(DEVICE, torch.float16)
    out = model(x)
    model.backend = "reference"
    expected = model(x)
    assert_logits_close(out, expected, **FP16_MODEL_TOLERANCE)
