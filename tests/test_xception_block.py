"""xception_block: the CPU kernel (every instruction-set path) against the reference composition of dwsep_conv
references, on odd shapes and layouts, both shortcut kinds and strides; bad input is rejected."""

import pytest
import torch

import dfanet_kernels as dk
from dfanet_kernels import reference

from .isa_paths import HAS_CPU_KERNELS, every_isa  # noqa: F401  (fixture)
from .utils import LAYOUTS, assert_close, in_layout, randn

needs_cpu_kernels = pytest.mark.skipif(not HAS_CPU_KERNELS, reason="compiled CPU kernels not built")

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
]

# fp32: three convs in a row, each summing 9 + C products in another order than the reference (and the ReLU
# between them applied once in the producer instead of in the consumer, which is exact). Outputs are O(1); the
# rounding differences stay at a few ulp times sqrt(terms) per conv, far below 5e-5 after three of them.
ATOL, RTOL = 5e-5, 2e-5


def make_args(n, c0, c1, c2, c3, h, w, stride, projection, seed=0):
    gen = torch.Generator().manual_seed(seed)
    c = [c0, c1, c2, c3]
    return dict(
        x=randn(n, c0, h, w, gen=gen),
        dw_weights=[randn(c[i], 1, 3, 3, gen=gen, scale=1 / 3) for i in range(3)],
        pw_weights=[randn(c[i + 1], c[i], 1, 1, gen=gen, scale=c[i] ** -0.5) for i in range(3)],
        pw_biases=[randn(c[i + 1], gen=gen) for i in range(3)],
        stride=stride,
        shortcut_weight=randn(c3, c0, 1, 1, gen=gen, scale=c0**-0.5) if projection else None,
        shortcut_bias=randn(c3, gen=gen) if projection else None,
    )


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
def test_layouts_and_threads(layout, threads):
    args = make_args(2, 12, 12, 12, 12, 37, 21, 1, False, seed=1)
    args["x"] = in_layout(args["x"], layout)
    args["pw_biases"][1] = None
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = dk.xception_block(**args, backend="cpu")
    finally:
        torch.set_num_threads(previous)
    assert_close(out, reference.xception_block(**args), ATOL, RTOL)


def test_reference_is_the_dwsep_composition():
    args = make_args(1, 4, 5, 6, 7, 9, 8, 2, True, seed=2)
    skip = reference.conv(args["x"], args["shortcut_weight"], args["shortcut_bias"], 2)
    y = args["x"]
    for i in range(3):
        y = dk.dwsep_conv(y, args["dw_weights"][i], None, args["pw_weights"][i], args["pw_biases"][i],
                          2 if i == 0 else 1, act_in=True, residual=skip if i == 2 else None, backend="reference")
    assert_close(dk.xception_block(**args, backend="reference"), y, 0, 0)


@needs_cpu_kernels
def test_opcheck_cpu_op():
    a = make_args(2, 5, 4, 6, 3, 7, 6, 2, True, seed=3)
    op_args = (a["x"], a["dw_weights"][0], a["pw_weights"][0], a["pw_biases"][0], a["dw_weights"][1],
               a["pw_weights"][1], None, a["dw_weights"][2], a["pw_weights"][2], a["pw_biases"][2], 2,
               a["shortcut_weight"], a["shortcut_bias"])
    torch.library.opcheck(torch.ops.dfanet.xception_block.default, op_args)


@pytest.mark.parametrize("backend", ["reference"] + (["cpu"] if HAS_CPU_KERNELS else []))
@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(x=torch.randn(4, 9, 9)), ValueError, r"x: expected a 4-D tensor"),
        (dict(dw_weights=[torch.randn(4, 1, 3, 3)] * 2), TypeError, r"dw_weights: expected a list of 3"),
        (dict(stride=3), ValueError, r"stride: expected 1 or 2, got 3"),
        (dict(shortcut_weight=None, shortcut_bias=None), ValueError, r"shortcut_weight: None \(identity\) needs"),
        (dict(shortcut_weight=torch.randn(6, 5, 1, 1)), ValueError, r"shortcut_weight: expected shape \(6, 4, 1, 1\)"),
        (dict(shortcut_bias=torch.randn(6).double()), TypeError, r"shortcut_bias: expected dtype torch.float32"),
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
        torch.ops.dfanet.xception_block(a["x"], a["dw_weights"][0], a["pw_weights"][0], None, torch.randn(3, 1, 3, 3),
                                        a["pw_weights"][1], None, a["dw_weights"][2], a["pw_weights"][2], None, 1,
                                        None, None)
    with pytest.raises(RuntimeError, match="an identity shortcut needs stride 1"):
        torch.ops.dfanet.xception_block(a["x"], a["dw_weights"][0], a["pw_weights"][0], None, a["dw_weights"][1],
                                        a["pw_weights"][1], None, a["dw_weights"][2], a["pw_weights"][2], None, 2,
                                        None, None)
