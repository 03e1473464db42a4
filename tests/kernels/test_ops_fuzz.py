"""Property-based: every public op, given arguments drawn at random (shapes with sizes 1 to 9, each layout, strides,
flags, output sizes, dtypes, devices including meta), either computes what the reference computes or raises a
TypeError or ValueError whose message names the argument that was wrong; never another exception, a crash or a
wrong result.

Each example starts from valid arguments and applies at most one fault, so its outcome is known: no fault -> equal
to the reference; a fault -> a TypeError/ValueError whose message starts with the name of an argument (the wrong
one, or the one it no longer matches), as every check of the library writes "name: expected ..., got ...". A fixed
seed and budget keep it reproducible and within about a minute on 2 CPUs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dfanet_kernels as dk
from dfanet_kernels import reference

from ..utils import CHECKED_BACKENDS, in_layout

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
# Values of the wrong type or range for each kind of plain argument.
NOT_A_BOOL = ["False", 1, 0, None, 1.0]
NOT_A_STRIDE = [0, 3, -1, 1.0, True, "1"]
NOT_A_SIZE = [(0, 5), (5, -1), (2**31, 2**31), (1, 2**62), (100000, 100000), (4.0, 4), (4,), 4, None]
TENSOR_FAULTS = ["dtype", "device", "rank", "shape", "not_a_tensor", "empty"]
# An fp32 result against the float64 reference, relative to the output's scale (its largest magnitude, at least
# 1): each conv rounds sums of up to 9 + 12 products a few ulp (1.2e-7) times sqrt(terms) of the largest magnitudes
# it sums, and an Xception block chains three; near-zero outputs of cancelling sums are judged by that scale too.
# An fp16 result (the reference backend takes a lone fp16 input) rounds each output once more: 2^-11 = 4.9e-4,
# with 8x headroom.
SCALED_TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-5, torch.float16: 4e-3}


@dataclass
class Case:
    """An op's valid arguments, and which of them may be made wrong and how."""

    op: str
    args: dict
    primary: str                     # the input whose shape the others follow: never given a shape fault
    tensors: list[str]
    plain: dict = field(default_factory=dict)  # argument name -> wrong values


def rand(seed: int, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@st.composite
def dwsep_case(draw) -> Case:
    n, c, cout, h, w = (draw(st.integers(1, 9)) for _ in range(5))
    stride = draw(st.sampled_from([1, 2]))
    seed = draw(st.integers(0, 2**16))
    ho, wo = dk.conv_output_size(h, stride), dk.conv_output_size(w, stride)
    args = dict(x=in_layout(rand(seed, n, c, h, w), draw(st.sampled_from(["nchw", "channels_last", "strided"]))),
                dw_weight=rand(seed + 1, c, 1, 3, 3), dw_bias=rand(seed + 2, c) if draw(st.booleans()) else None,
                pw_weight=rand(seed + 3, cout, c, 1, 1), pw_bias=rand(seed + 4, cout) if draw(st.booleans()) else None,
                stride=stride, act_in=draw(st.booleans()), act_mid=draw(st.booleans()), act_out=draw(st.booleans()),
                residual=rand(seed + 5, n, cout, ho, wo) if draw(st.booleans()) else None)
    flags = {name: NOT_A_BOOL for name in ("act_in", "act_mid", "act_out")}
    return Case("dwsep_conv", args, "x", [k for k, v in args.items() if isinstance(v, torch.Tensor)],
                {**flags, "stride": NOT_A_STRIDE})


@st.composite
def conv_case(draw) -> Case:
    k = draw(st.sampled_from([1, 3]))
    n, c, cout, h, w = (draw(st.integers(1, 9)) for _ in range(5))
    seed = draw(st.integers(0, 2**16))
    args = dict(x=in_layout(rand(seed, n, c, h, w), draw(st.sampled_from(["nchw", "channels_last", "strided"]))),
                weight=rand(seed + 1, cout, c, k, k), bias=rand(seed + 2, cout) if draw(st.booleans()) else None,
                stride=draw(st.sampled_from([1, 2])), relu=draw(st.booleans()))
    return Case(f"conv{k}x{k}", args, "x", [k_ for k_, v in args.items() if isinstance(v, torch.Tensor)],
                {"stride": NOT_A_STRIDE, "relu": NOT_A_BOOL})


@st.composite
def attention_case(draw) -> Case:
    n, c, hidden, h, w = (draw(st.integers(1, 9)) for _ in range(5))
    seed = draw(st.integers(0, 2**16))
    args = dict(x=in_layout(rand(seed, n, c, h, w), draw(st.sampled_from(["nchw", "channels_last", "strided"]))),
                fc_weight=rand(seed + 1, hidden, c), fc_bias=rand(seed + 2, hidden) if draw(st.booleans()) else None,
                conv_weight=rand(seed + 3, c, hidden, 1, 1),
                conv_bias=rand(seed + 4, c) if draw(st.booleans()) else None)
    return Case("fc_attention", args, "x", [k for k, v in args.items() if isinstance(v, torch.Tensor)])


@st.composite
def block_case(draw) -> Case:
    """xception_block, or xception_block_cat over 1-3 inputs (the block's input is their concatenation)."""
    n, h, w = (draw(st.integers(1, 9)) for _ in range(3))
    seed = draw(st.integers(0, 2**16))
    parts = [draw(st.integers(1, 4)) for _ in range(draw(st.integers(1, 3)))]
    c = sum(parts)
    channels = [c, draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 6))]
    stride = draw(st.sampled_from([1, 2]))
    shortcut = draw(st.booleans()) or stride == 2 or channels[3] != c  # identity only where shapes allow
    args = dict(dw_weights=[rand(seed + i, channels[i], 1, 3, 3) for i in range(3)],
                pw_weights=[rand(seed + 3 + i, channels[i + 1], channels[i], 1, 1) for i in range(3)],
                pw_biases=[rand(seed + 6 + i, channels[i + 1]) if draw(st.booleans()) else None for i in range(3)],
                stride=stride, shortcut_weight=rand(seed + 9, channels[3], c, 1, 1) if shortcut else None,
                shortcut_bias=rand(seed + 10, channels[3]) if shortcut and draw(st.booleans()) else None)
    layout = draw(st.sampled_from(["nchw", "channels_last", "strided"]))
    if len(parts) == 1 and draw(st.booleans()):
        args = dict(x=in_layout(rand(seed + 11, n, c, h, w), layout), **args)
        op, primary = "xception_block", "x"
    else:  # further inputs at other sizes are resized to the first's
        sizes = [(h, w)] + [(draw(st.integers(1, 9)), draw(st.integers(1, 9))) for _ in parts[1:]]
        args = dict(inputs=[in_layout(rand(seed + 12 + i, n, ci, *size), layout)
                            for i, (ci, size) in enumerate(zip(parts, sizes))], **args)
        op, primary = "xception_block_cat", "inputs[0]"
    tensors = [primary] if op == "xception_block" else [f"inputs[{i}]" for i in range(len(parts))]
    tensors += [f"{name}[{i}]" for name in ("dw_weights", "pw_weights") for i in range(3)]
    tensors += [f"pw_biases[{i}]" for i in range(3) if args["pw_biases"][i] is not None]
    tensors += [name for name in ("shortcut_weight", "shortcut_bias") if args[name] is not None]
    return Case(op, args, primary, tensors, {"stride": NOT_A_STRIDE})


@st.composite
def upsample_case(draw) -> Case:
    n, count = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    channels = draw(st.integers(1, 5))  # upsample_add: all the same; upsample_concat may differ
    op = draw(st.sampled_from(["upsample_concat", "upsample_add"]))
    inputs = []
    for i in range(count):
        c = channels if op == "upsample_add" else draw(st.integers(1, 5))
        t = rand(seed + i, n, c, draw(st.integers(1, 9)), draw(st.integers(1, 9)))
        inputs.append(in_layout(t, draw(st.sampled_from(["nchw", "channels_last", "strided"]))))
    size = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    args = dict(inputs=inputs, size=size)
    return Case(op, args, "inputs[0]", [f"inputs[{i}]" for i in range(count)], {"size": NOT_A_SIZE})


@st.composite
def labels_case(draw) -> Case:
    n, c = draw(st.integers(1, 3)), draw(st.sampled_from([1, 2, 5, 19, 300]))  # 300: int64 labels
    seed = draw(st.integers(0, 2**16))
    x = in_layout(rand(seed, n, c, draw(st.integers(1, 9)), draw(st.integers(1, 9))),
                  draw(st.sampled_from(["nchw", "channels_last", "strided"])))
    size = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    # 100000 x 100000 labels (10 GB of uint8) may fit a large host: not a wrong size for this op.
    return Case("upsample_labels", dict(x=x, size=size), "x", ["x"],
                {"size": [s for s in NOT_A_SIZE if s != (100000, 100000)]})


def get(args: dict, name: str):
    match = re.fullmatch(r"(\w+)\[(\d+)\]", name)
    return args[match[1]][int(match[2])] if match else args[name]


def put(args: dict, name: str, value) -> None:
    match = re.fullmatch(r"(\w+)\[(\d+)\]", name)
    if match:
        args[match[1]] = list(args[match[1]])
        args[match[1]][int(match[2])] = value
    else:
        args[name] = value


@st.composite
def with_fault(draw, cases) -> tuple[Case, str | None, str | None]:
    """A case with at most one fault applied: (case, the faulty argument's name, the fault), or (case, None, None)."""
    case = draw(cases)
    choices = ["none", "tensor"] + (["plain"] if case.plain else [])
    kind = draw(st.sampled_from(choices))
    if kind == "none":
        return case, None, None
    if kind == "plain":
        name = draw(st.sampled_from(sorted(case.plain)))
        case.args[name] = draw(st.sampled_from(case.plain[name]))
        return case, name, "value"
    name = draw(st.sampled_from(case.tensors))
    fault = draw(st.sampled_from([f for f in TENSOR_FAULTS if not (f == "shape" and name == case.primary)]))
    value = get(case.args, name)
    put(case.args, name, {
        "dtype": lambda: value.to(draw(st.sampled_from([torch.int32, torch.bool, torch.float64, torch.float16]))),
        "device": lambda: value.to("meta"),
        "rank": lambda: value.unsqueeze(0),
        # one more along a dimension that must match: the batch of a further input, the last of anything else
        "shape": lambda: torch.cat([value, value[..., :1] if name != case.primary and not name.startswith("inputs")
                                    else value[:1]], dim=0 if name.startswith("inputs") else -1),
        "not_a_tensor": lambda: value.tolist(),
        "empty": lambda: value[:0],
    }[fault]())
    return case, name, fault


def run(case: Case, backend: str | None):
    return getattr(dk, case.op)(**case.args, backend=backend)


def in_float64(value):
    if isinstance(value, torch.Tensor):
        return value.double() if value.is_floating_point() and not value.is_meta else value
    if isinstance(value, list):
        return [in_float64(v) for v in value]
    return value


def expected(case: Case) -> torch.Tensor:
    """The reference's result, in float64 (meta tensors stay as they are: shapes only)."""
    a = {name: in_float64(value) for name, value in case.args.items()}
    if case.op == "dwsep_conv":
        return reference.dwsep_conv(**a)
    if case.op.startswith("conv"):
        return reference.conv(a["x"], a["weight"], a["bias"], a["stride"], relu=a["relu"])
    if case.op == "fc_attention":
        return reference.fc_attention(**a)
    if case.op == "xception_block":
        return reference.xception_block(**a)
    if case.op == "xception_block_cat":
        return reference.xception_block_cat(**a)
    if case.op == "upsample_labels":
        return reference.upsample_labels(a["x"], a["size"])
    return getattr(reference, case.op)(a["inputs"], a["size"])


def check(case: Case, faulty: str | None, fault: str | None, backend: str) -> None:
    if backend == "reference" and len(case.tensors) == 1 and (
            fault == "device" or (fault == "dtype" and get(case.args, faulty).is_floating_point())):
        faulty = None  # the only tensor on meta, or in another float dtype: the reference takes both
    if faulty is None:
        out, ref = run(case, backend), expected(case)
        if ref.is_meta:
            assert out.is_meta and out.shape == ref.shape and out.dtype == ref.dtype
            return
        assert out.shape == ref.shape
        if not ref.is_floating_point():  # labels: equal wherever the reference's top two values are further apart
            x = case.args["x"]              # than the values' tolerance (an fp16 resize rounds them to fp16)
            values = reference.resize(in_float64(x), case.args["size"])
            top2 = values.topk(min(2, values.shape[1]), dim=1).values
            tolerance = SCALED_TOLERANCE[x.dtype] * max(1.0, values.abs().max().item())
            clear = top2[:, 0] - top2[:, -1] > tolerance if values.shape[1] > 1 else torch.ones_like(ref, dtype=bool)
            assert out.dtype == ref.dtype and torch.equal(out[clear], ref[clear])
            return
        assert torch.isfinite(out).all()
        scale = max(1.0, ref.abs().max().item())
        error = (out.double() - ref).abs().max().item()
        assert error <= SCALED_TOLERANCE[out.dtype] * scale, (
            f"{case.op}: max |out - ref| {error:.3g}, output scale {scale:.3g}")
        return
    try:
        run(case, backend)
    except (TypeError, ValueError) as err:
        message = str(err)
    else:
        raise AssertionError(f"{case.op}: a wrong {faulty} was accepted: {case.args[faulty.split('[')[0]]!r}")
    names = "|".join(re.escape(name) for name in case.args) + r"|\w+\[\d+\]"
    assert re.match(rf"({names}):|backend=", message), (
        f"{case.op}: the error does not start with an argument's name: {message}")


@pytest.mark.parametrize("backend", CHECKED_BACKENDS)
@pytest.mark.parametrize("cases", [dwsep_case(), block_case(), conv_case(), attention_case(), upsample_case(),
                                   labels_case()],
                         ids=["dwsep_conv", "xception_block", "conv", "fc_attention", "upsample", "upsample_labels"])
@SETTINGS
@given(data=st.data())
def test_every_call_equals_the_reference_or_names_the_wrong_argument(cases, backend, data):
    check(*data.draw(with_fault(cases)), backend)
