"""xception_block / xception_block_cat: on every backend (the backend a parameter) against the float64 reference;
the CPU kernel on every instruction-set path, on odd shapes and layouts, both shortcut kinds and strides; bad input
is rejected."""

import pytest
import torch

import dfanet_kernels as dk
from dfanet.layers import XceptionBlock
from dfanet_kernels import reference

from ..op_cases import BLOCK_CASES, block_args, block_case_id, block_expected, check, on
from ..op_cases import DEVICES as DEV
from ..utils import (
    CHECKED_BACKENDS,
    LAYOUTS,
    RUNNABLE_BACKENDS,
    assert_close,
    in_layout,
    needs_cpu_kernels,
    randomize_batchnorm,
)

# (N, C0, C1, C2, C3, H, W, stride, projection): the model's blocks (8/240 -> 12, 12, 48 strided; 48 -> 12, 12, 48;
# 48 -> 48, 48, 192), 1 x 1 maps, odd widths and channel counts, wide channels (run-time tile stride), and bands of
# rows that split over threads with an image boundary inside a band (N > 1, few rows).
SHAPES = [
    (1, 8, 12, 12, 48, 33, 65, 2, True),
    (2, 48, 12, 12, 48, 17, 9, 1, False),
    (1, 240, 12, 12, 48, 20, 31, 2, True),
    (1, 3, 5, 7, 9, 1, 1, 1, True),
    (1, 48, 48, 48, 192, 8, 16, 1, True),
    (3, 17, 19, 23, 17, 13, 11, 1, False),
    (1, 320, 33, 330, 40, 6, 7, 2, True),
    (4, 6, 4, 4, 6, 3, 2, 1, False),
    (1, 5, 7, 7, 5, 2, 3, 2, True),
    (3, 8, 12, 12, 48, 7, 9, 2, True),  # stride 2, N > 1: bands of strided rows that cross an image boundary
    (2, 240, 12, 12, 48, 5, 31, 2, True),
]

# fp32: three convs in a row, each summing 9 + C products in another order than the reference (and the ReLU
# between them applied once in the producer instead of in the consumer, which is exact). Outputs are O(1); the
# rounding differences stay at a few ulp times sqrt(terms) per conv, far below 5e-5 after three of them.
ATOL, RTOL = 5e-5, 2e-5


def make_args(n, c0, c1, c2, c3, h, w, stride, projection, seed=0):
    """xception_block's arguments: op_cases.block_args with its one input as ``x``."""
    args = block_args(n, [(c0, h, w)], c1, c2, c3, stride, projection, device="cpu", seed=seed)
    args["x"] = args.pop("inputs")[0]
    return args


@pytest.mark.parametrize("case", BLOCK_CASES, ids=block_case_id)
@pytest.mark.parametrize("backend", [on(b) for b in ("cpu", "triton", "cuda")])
def test_xception_block_matches_reference(backend, case):
    """xception_block_cat (and, for one input, xception_block and PreparedBlock): one kernel per block on every
    compiled backend, against the float64 reference.

    fp32: three convs in a row (plus a resize), each summing 9 + C products in another order than the float64
    reference: a few ulp times sqrt(terms) per conv on O(1) values, far below 5e-5 after three (as on the CPU)."""
    args = block_args(*case, device=DEV[backend])
    inputs = args.pop("inputs")
    expected = block_expected({"inputs": inputs, **args})
    check(dk.xception_block_cat(inputs, **args, backend=backend), expected, 5e-5, 2e-5, backend)
    if len(inputs) == 1:
        check(dk.xception_block(inputs[0], **args, backend=backend), expected, 5e-5, 2e-5, backend)
        block = dk.PreparedBlock(**args, backend=backend)
        assert torch.equal(block(inputs[0]), dk.xception_block(inputs[0], **args, backend=backend))


# The GPU block kernels (csrc/cuda/xception_block.cu, dfanet_kernels/triton/xception_block.py), (N, [(C, H, W) of
# each input], C1, C2, C3, stride, projection).
# CUDA, on a GPU: the model's blocks at sizes that take 8 x 8 output tiles (a map of 150 x 130 gives 323 tiles on 132
# SMs) and 4 x 4 tiles with the output channels split over blocks (small maps), each mid-width class of the kernel
# (up to 16, 32, 48, 64), odd sizes and channel counts, 1 x 1 maps, batches > 1, DFANet's enc2 concatenation
# (48 + 192 channels, the second resized x4) and a same-size one; mid widths past 64 and more than 8 inputs, which
# the glue composes from the upsample and dwsep_conv kernels and a cuDNN shortcut. The same kernel runs in CI under
# the CUDA emulator (test_cuda_emulated.py).
CUDA_BLOCK_CASES = [
    (1, [(8, 300, 259)], 12, 12, 48, 2, True),
    (2, [(48, 37, 29)], 12, 12, 48, 1, False),
    (1, [(48, 64, 64)], 24, 24, 96, 2, True),
    (1, [(192, 32, 32)], 48, 48, 192, 1, False),
    (3, [(17, 13, 11)], 19, 23, 17, 1, False),
    (1, [(70, 6, 5)], 50, 64, 200, 2, True),
    (1, [(5, 1, 1)], 7, 7, 9, 2, True),
    (1, [(48, 128, 128), (192, 32, 32)], 12, 12, 48, 2, True),
    (2, [(48, 17, 9), (96, 17, 9)], 24, 24, 96, 2, True),
    (1, [(320, 6, 7)], 33, 330, 40, 2, True),
    (1, [(2, 5 + i % 3, 6 + i % 4) for i in range(10)], 8, 8, 20, 1, False),
]
# Triton, small enough for the interpreter, each case in the dtypes and layouts named (the interpreter takes ~4 s a
# run; tests/kernels/test_triton_backend.py runs the GPU's tiles, the fallbacks and 64-bit indices): 3 input
# channels at batch 2, odd 7 x 9, stride 2; three inputs, the middle one resized, into an identity shortcut on
# 13 x 5 (two tile rows: halos across tiles); two inputs, one resized, with DFANet's widest mids (48) and 96
# outputs, stride 2.
TRITON_BLOCK_CASES = [
    ((2, [(3, 7, 9)], 12, 12, 24, 2, True), [(torch.float32, "strided"), (torch.bfloat16, "channels_last")]),
    ((1, [(12, 13, 5), (24, 7, 3), (12, 13, 5)], 12, 24, 48, 1, False),
     [(torch.float32, "channels_last"), (torch.float16, "strided")]),
    ((2, [(12, 9, 7), (36, 5, 4)], 48, 48, 96, 2, True), [(torch.float32, "channels_last")]),
]
# vs the float64 reference on the same rounded inputs, as (atol, rtol). fp32: as on the CPU (5e-5, 2e-5).
# fp16/bf16: the CUDA kernel on its FMA path (before sm_80) keeps y1, y2 and every sum in fp32 and rounds the output
# once, half an ulp (u = 2^-11, 2^-8 relative): twice that. The composed cases also round y1, y2 and each depthwise
# result that feeds the tensor cores: 4x the kernel's (about 2x op_cases.DTYPES' one-op tolerance, for three ops in
# a row). The Triton kernel keeps y1 and y2 in fp32 but rounds each depthwise result (and the shortcut's input) for
# its tensor-core products, a subset of the composed roundings: the composed tolerance (its worst seen, 2026-12:
# 6.7e-4 fp16, 1.4e-2 bf16).
CUDA_BLOCK_TOLERANCES = {torch.float32: (5e-5, 2e-5), torch.float16: (1e-3, 1e-3), torch.bfloat16: (8e-3, 8e-3)}
# fp16/bf16 on tensor cores (sm_80+): besides the output's rounding (u), every depthwise result feeding a product
# (and the shortcut's input where it is resized) is rounded once to the 16-bit type, an error of up to u times each
# product. Summed over a conv's K products, roundings of either sign add up like a random walk, to about u times the
# output's own scale (the weights' scale is K^-1/2); three convs in a row, ReLU and a 3x3 between them, then bring a
# few u (the worst of 48 emulated runs, 6 seeds of each 16-bit case of test_cuda_emulated.BLOCK_EMU_CASES:
# 3.0 u x (1 + |expected|)). 5 u as both atol and rtol; a GEMM that reads a wrong tile or channel is off by O(1).
CUDA_BLOCK_TENSOR_CORE_TOLERANCES = {torch.float16: (2.5e-3, 2.5e-3), torch.bfloat16: (2e-2, 2e-2)}


def block_kernel_tolerance(backend, case, dtype):
    """(atol, rtol) of a GPU block-kernel case (see CUDA_BLOCK_TOLERANCES and CUDA_BLOCK_TENSOR_CORE_TOLERANCES)."""
    atol, rtol = CUDA_BLOCK_TOLERANCES[dtype]
    composed = max(case[2], case[3]) > 64 or len(case[1]) > 8 or backend == "triton"
    if composed and dtype != torch.float32:
        atol, rtol = 4 * atol, 4 * rtol
    elif dtype != torch.float32 and torch.cuda.get_device_capability()[0] >= 8:  # the CUDA kernel on tensor cores
        atol, rtol = CUDA_BLOCK_TENSOR_CORE_TOLERANCES[dtype]
    return atol, rtol


DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
# CUDA: every case in every dtype and layout; Triton: its cases' own.
BLOCK_KERNEL_RUNS = ([("cuda", c, d, layout) for c in CUDA_BLOCK_CASES for d in DTYPE_NAMES
                      for layout in ("channels_last", "strided")]
                     + [("triton", c, d, layout) for c, runs in TRITON_BLOCK_CASES for d, layout in runs])

@pytest.mark.parametrize("backend, case, dtype, layout", [
    on(b, case, dtype, layout, id=f"{block_case_id(case)}-{DTYPE_NAMES[dtype]}-{layout}")
    for b, case, dtype, layout in BLOCK_KERNEL_RUNS])
def test_block_kernel_matches_reference(backend, case, dtype, layout):
    args = block_args(*case, device=DEV[backend], dtype=dtype)
    inputs = [in_layout(t, layout) for t in args.pop("inputs")]
    expected = block_expected({"inputs": inputs, **args})
    atol, rtol = block_kernel_tolerance(backend, case, dtype)
    check(dk.xception_block_cat(inputs, **args, backend=backend), expected, atol, rtol, backend)


@needs_cpu_kernels
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference_on_every_path(every_isa, shape):
    args = make_args(*shape)
    out = dk.xception_block(**args, backend="cpu")
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_close(out, reference.xception_block(**args), ATOL, RTOL)


@needs_cpu_kernels
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("stride, projection", [(1, False), (2, True)], ids=["s1-identity", "s2-projection"])
def test_layouts_and_threads(layout, threads, stride, projection):
    args = make_args(2, 12, 12, 12, 12, 37, 21, stride, projection, seed=1)
    args["x"] = in_layout(args["x"], layout)
    args["pw_biases"][1] = None
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = dk.xception_block(**args, backend="cpu")
    finally:
        torch.set_num_threads(previous)
    assert_close(out, reference.xception_block(**args), ATOL, RTOL)


@pytest.mark.parametrize("n, c, widths, h, w, stride", [(1, 4, (5, 6, 7), 9, 8, 2), (2, 6, (5, 7, 6), 11, 13, 1)],
                         ids=["s2-projection", "s1-identity"])
def test_reference_is_the_models_block(n, c, widths, h, w, stride):
    """The spec every backend is judged against equals the model's own layer (dfanet.layers.XceptionBlock, BN in
    eval) once BN is folded into its weights: an independent definition, not a copy of the reference's loop."""
    torch.manual_seed(2)
    block = XceptionBlock(c, widths, stride)
    for m in block.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            randomize_batchnorm(m)
    block.eval()
    seps = (block.sep1, block.sep2, block.sep3)
    folded = [dk.fold_bn(sep.pointwise.weight, None, sep.bn) for sep in seps]
    shortcut = (None, None) if block.shortcut is None else dk.fold_conv_bn(block.shortcut.conv, block.shortcut.bn)
    x = torch.randn(n, c, h, w)
    with torch.no_grad():
        expected = block(x)
        out = reference.xception_block(x, [sep.depthwise.weight for sep in seps], [f[0] for f in folded],
                                       [f[1] for f in folded], stride, *shortcut)
    assert (block.shortcut is None) == (shortcut[0] is None)
    # fp32, the same convolutions with BN's scale folded into the weights: one reassociated multiply per weight.
    assert_close(out, expected, 1e-5, 1e-5)


@needs_cpu_kernels
def test_opcheck_cpu_op():
    a = make_args(2, 5, 4, 6, 3, 7, 6, 2, True, seed=3)
    op_args = ([a["x"]], a["dw_weights"][0], a["pw_weights"][0], a["pw_biases"][0], a["dw_weights"][1],
               a["pw_weights"][1], None, a["dw_weights"][2], a["pw_weights"][2], a["pw_biases"][2], 2,
               a["shortcut_weight"], a["shortcut_bias"])
    torch.library.opcheck(torch.ops.dfanet.xception_block.default, op_args)


@pytest.mark.parametrize("backend", CHECKED_BACKENDS)
@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(x=torch.randn(4, 9, 9)), ValueError, r"x: expected a 4-D tensor"),
        (dict(dw_weights=[torch.randn(4, 1, 3, 3)] * 2), TypeError, r"dw_weights: expected a list of 3"),
        (dict(stride=3), ValueError, r"stride: expected 1 or 2, got 3"),
        (dict(shortcut_weight=None, shortcut_bias=None), ValueError, r"shortcut_weight: None \(identity\) needs"),
        (dict(shortcut_weight=torch.randn(6, 5, 1, 1)), ValueError, r"shortcut_weight: expected shape \(6, 4, 1, 1\)"),
        (dict(shortcut_bias=torch.randn(6).double()), TypeError, r"shortcut_bias: expected dtype torch.float32"),
        (dict(dw_weights=[torch.randn(4, 1, 3, 3, device="meta")] + [torch.randn(5, 1, 3, 3)] * 2), ValueError,
         r"dw_weights\[0\]: expected device cpu \(that of x\), got meta"),
        (dict(pw_weights=[torch.randn(5, 4, 1, 1), torch.randn(0, 5, 1, 1), torch.randn(6, 5, 1, 1)]), ValueError,
         r"pw_weights\[1\]: expected at least one output channel"),
    ],
)
def test_bad_input_raises_naming_the_argument(change, error, message, backend):
    args = dict(x=torch.randn(1, 4, 9, 9), dw_weights=[torch.randn(c, 1, 3, 3) for c in (4, 5, 5)],
                pw_weights=[torch.randn(5, 4, 1, 1), torch.randn(5, 5, 1, 1), torch.randn(6, 5, 1, 1)],
                pw_biases=[None, torch.randn(5), torch.randn(6)], stride=2,
                shortcut_weight=torch.randn(6, 4, 1, 1), shortcut_bias=torch.randn(6), backend=backend)
    args.update(change)
    with pytest.raises(error, match=message):
        dk.xception_block(**args)


@needs_cpu_kernels
def test_bad_pw_weight_in_a_list_names_its_index():
    args = make_args(1, 4, 5, 6, 7, 5, 5, 1, True)
    args["pw_weights"][1] = torch.randn(6, 4, 1, 1)
    with pytest.raises(ValueError, match=r"pw_weights\[1\]: expected shape \(6, 5, 1, 1\)"):
        dk.xception_block(**args, backend="cpu")


@needs_cpu_kernels
def test_direct_op_call_with_bad_shape_raises_not_crashes():
    """torch.ops.dfanet.* skips the Python checks; the C++ checks must still stop a bad call."""
    a = make_args(1, 4, 5, 6, 4, 5, 5, 1, False)
    with pytest.raises(RuntimeError, match="dw2: expected shape"):
        torch.ops.dfanet.xception_block([a["x"]], a["dw_weights"][0], a["pw_weights"][0], None, torch.randn(3, 1, 3, 3),
                                        a["pw_weights"][1], None, a["dw_weights"][2], a["pw_weights"][2], None, 1,
                                        None, None)
    with pytest.raises(RuntimeError, match="an identity shortcut needs stride 1"):
        torch.ops.dfanet.xception_block([a["x"]], a["dw_weights"][0], a["pw_weights"][0], None, a["dw_weights"][1],
                                        a["pw_weights"][1], None, a["dw_weights"][2], a["pw_weights"][2], None, 2,
                                        None, None)


# ------------------------------------------------------------------------------------------------------------------
# xception_block_cat: the block's input is a concatenation (each input resized to inputs[0]'s size), never written
# ------------------------------------------------------------------------------------------------------------------
# (N, [(C, H, W) of each input], C1, C2, C3, stride, projection). The model's two aggregation kinds (enc2 input:
# enc2 output + the 4x smaller FC-attention output, 48 + 192 = 240 channels, stride 2; a sub-stage input: two maps
# of the same size), odd sizes and factors (33 x 65 with a 9 x 17 source), 1 x 1 sources and targets, single
# channels, a larger source (downsampled), an identity shortcut, many sources, wide channels (run-time tile stride),
# batches whose bands split across images.
CAT_CASES = [
    (1, [(48, 33, 65), (192, 9, 17)], 12, 12, 48, 2, True),
    (2, [(48, 17, 9), (96, 17, 9)], 24, 24, 96, 2, True),
    (3, [(5, 13, 11), (7, 4, 3), (4, 13, 11)], 9, 6, 16, 1, False),
    (1, [(3, 1, 1), (5, 1, 1)], 4, 4, 6, 1, True),
    (1, [(4, 7, 5), (3, 1, 1)], 5, 5, 7, 2, True),
    (2, [(1, 6, 7), (1, 3, 2)], 1, 1, 2, 1, True),
    (1, [(6, 5, 9), (4, 11, 20)], 8, 8, 10, 1, False),
    (1, [(2, 5 + i % 3, 6 + i % 4) for i in range(17)], 8, 8, 34, 1, False),
    (1, [(200, 6, 7), (130, 3, 4)], 33, 40, 40, 2, True),
    (3, [(48, 20, 31), (192, 5, 8)], 12, 12, 48, 2, True),
]


def make_cat_args(n, specs, c1, c2, c3, stride, projection, layout="channels_last", seed=0):
    args = block_args(n, specs, c1, c2, c3, stride, projection, device="cpu", seed=seed)
    args["inputs"] = [in_layout(t, layout) for t in args["inputs"]]
    return args


def cat_case_id(case):
    n, specs, c1, c2, c3, stride, projection = case
    return f"n{n}-" + "+".join(f"{c}@{h}x{w}" for c, h, w in specs[:3]) + f"-s{stride}-{'proj' if projection else 'id'}"


# The shortcut part of an input smaller than the output, computed at the input's size and then resized, against
# the 1x1 conv of the resized input: the same products summed in another order, a few ulp of the O(1) outputs.
SHORTCUT_ORDER_ATOL, SHORTCUT_ORDER_RTOL = 1e-5, 1e-6


def shortcut_of_a_smaller_input(args):
    """Whether the CPU kernel computes part of the projection shortcut before the resize: some input has fewer
    pixels than the block's output."""
    h, w = args["inputs"][0].shape[-2:]
    out_pixels = dk.conv_output_size(h, args["stride"]) * dk.conv_output_size(w, args["stride"])
    smaller = any(t.shape[-2] * t.shape[-1] < out_pixels for t in args["inputs"][1:])
    return args["shortcut_weight"] is not None and smaller


def cpu_composition(args):
    """upsample_concat then xception_block, both on the CPU kernels."""
    rest = {k: v for k, v in args.items() if k != "inputs"}
    x = dk.upsample_concat(args["inputs"], args["inputs"][0].shape[-2:], backend="cpu")
    return dk.xception_block(x, **rest, backend="cpu")


@needs_cpu_kernels
@pytest.mark.parametrize("case", CAT_CASES, ids=cat_case_id)
def test_cat_matches_reference_on_every_path(every_isa, case):
    args = make_cat_args(*case)
    out = dk.xception_block_cat(**args, backend="cpu")
    assert out.is_contiguous(memory_format=torch.channels_last)
    # The concatenation's values are those upsample_concat computes (the same row code, kernels/upsample.h), and
    # the block then runs as on a materialised input: the two CPU ops in a row, up to the shortcut's summation
    # order (an input smaller than the output has its part of the 1x1 shortcut computed at its own size and
    # resized afterwards: a few ulp of the O(1) outputs) ...
    if shortcut_of_a_smaller_input(args):
        assert_close(out, cpu_composition(args), SHORTCUT_ORDER_ATOL, SHORTCUT_ORDER_RTOL)
    else:
        assert torch.equal(out, cpu_composition(args))
    # ... and within the block's own tolerance of the reference (the resize's rounding, < 1e-6 on these O(1)
    # inputs, is far inside it).
    assert_close(out, reference.xception_block_cat(**args), ATOL, RTOL)


@needs_cpu_kernels
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("threads", [1, 2])
def test_cat_layouts_and_threads(layout, threads):
    args = make_cat_args(3, [(12, 37, 21), (20, 10, 6), (4, 37, 21)], 12, 12, 48, 2, True, layout=layout, seed=1)
    args["pw_biases"][1] = None
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = dk.xception_block_cat(**args, backend="cpu")
        expected = cpu_composition(args)
    finally:
        torch.set_num_threads(previous)
    assert shortcut_of_a_smaller_input(args)
    assert_close(out, expected, SHORTCUT_ORDER_ATOL, SHORTCUT_ORDER_RTOL)
    assert_close(out, reference.xception_block_cat(**args), ATOL, RTOL)


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
@pytest.mark.parametrize("stride, projection", [(1, False), (2, True)], ids=["s1-identity", "s2-projection"])
def test_cat_of_one_input_is_the_block(backend, stride, projection):
    args = make_cat_args(2, [(6, 9, 7)], 5, 5, 6, stride, projection, seed=4)
    x = args.pop("inputs")[0]
    assert_close(dk.xception_block_cat([x], **args, backend=backend), reference.xception_block(x, **args), ATOL, RTOL)


@needs_cpu_kernels
def test_opcheck_cpu_op_with_a_concatenation():
    a = make_cat_args(2, [(3, 7, 6), (2, 3, 2)], 4, 6, 3, 2, True, seed=3)
    op_args = (a["inputs"], a["dw_weights"][0], a["pw_weights"][0], a["pw_biases"][0], a["dw_weights"][1],
               a["pw_weights"][1], None, a["dw_weights"][2], a["pw_weights"][2], a["pw_biases"][2], 2,
               a["shortcut_weight"], a["shortcut_bias"])
    torch.library.opcheck(torch.ops.dfanet.xception_block.default, op_args)


@pytest.mark.parametrize("backend", CHECKED_BACKENDS)
@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(inputs=torch.randn(1, 9, 9, 9)), TypeError, r"inputs: expected a non-empty list of tensors"),
        (dict(inputs=[]), TypeError, r"inputs: expected a non-empty list of tensors"),
        (dict(inputs=[torch.randn(1, 4, 9, 9), torch.randn(5, 3, 3)]), ValueError, r"inputs\[1\]: expected a 4-D"),
        (dict(inputs=[torch.randn(1, 4, 9, 9), torch.randn(2, 5, 3, 3)]), ValueError,
         r"inputs\[1\]: expected batch size 1 \(that of inputs\[0\]\), got 2"),
        (dict(inputs=[torch.randn(1, 4, 9, 9), torch.randn(1, 5, 3, 3).double()]), TypeError,
         r"inputs\[1\]: expected dtype torch.float32 \(that of inputs\[0\]\), got torch.float64"),
        (dict(inputs=[torch.randn(1, 4, 9, 9), torch.randn(1, 4, 3, 3)]), ValueError,
         r"dw_weights\[0\]: expected shape \(8, 1, 3, 3\)"),
        (dict(shortcut_weight=torch.randn(6, 4, 1, 1)), ValueError, r"shortcut_weight: expected shape \(6, 9, 1, 1\)"),
        (dict(shortcut_weight=None, shortcut_bias=None), ValueError, r"shortcut_weight: None \(identity\) needs"),
        (dict(inputs=[torch.randn(1, 4, 9, 9), torch.randn(1, 5, 3, 3, device="meta")]), ValueError,
         r"inputs\[1\]: expected device cpu \(that of inputs\[0\]\), got meta"),
    ],
)
def test_cat_bad_input_raises_naming_the_argument(change, error, message, backend):
    args = dict(inputs=[torch.randn(1, 4, 9, 9), torch.randn(1, 5, 3, 3)],
                dw_weights=[torch.randn(c, 1, 3, 3) for c in (9, 5, 5)],
                pw_weights=[torch.randn(5, 9, 1, 1), torch.randn(5, 5, 1, 1), torch.randn(6, 5, 1, 1)],
                pw_biases=[None, torch.randn(5), torch.randn(6)], stride=2,
                shortcut_weight=torch.randn(6, 9, 1, 1), shortcut_bias=torch.randn(6), backend=backend)
    args.update(change)
    with pytest.raises(error, match=message):
        dk.xception_block_cat(**args)


@needs_cpu_kernels
def test_direct_op_call_with_a_bad_concatenation_raises_not_crashes():
    a = make_cat_args(1, [(3, 5, 5), (2, 2, 2)], 4, 4, 5, 1, True)
    rest = (a["dw_weights"][0], a["pw_weights"][0], None, a["dw_weights"][1], a["pw_weights"][1], None,
            a["dw_weights"][2], a["pw_weights"][2], None, 1, a["shortcut_weight"], None)
    with pytest.raises(RuntimeError, match=r"inputs: expected at least one tensor"):
        torch.ops.dfanet.xception_block([], *rest)
    with pytest.raises(RuntimeError, match=r"inputs\[1\]: expected batch 1, got 2"):
        torch.ops.dfanet.xception_block([a["inputs"][0], torch.randn(2, 2, 2, 2)], *rest)
    with pytest.raises(RuntimeError, match=r"dw1: expected shape \[6, 1, 3, 3\], got \[5, 1, 3, 3\]"):
        torch.ops.dfanet.xception_block([a["inputs"][0], torch.randn(1, 2, 2, 2), torch.randn(1, 1, 1, 1)], *rest)
    with pytest.raises(RuntimeError, match=r"inputs\[1\]: expected dtype Float, got Double"):
        torch.ops.dfanet.xception_block([a["inputs"][0], a["inputs"][1].double()], *rest)
    doubles = [t.double() if isinstance(t, torch.Tensor) else t for t in rest]
    with pytest.raises(RuntimeError, match=r"inputs\[0\]: the cpu backend takes float32, got Double"):
        torch.ops.dfanet.xception_block([t.double() for t in a["inputs"]], *doubles)
