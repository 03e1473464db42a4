"""What the op tests (tests/kernels/test_<op>.py) share: the backends and where each runs, one backend's cases as
pytest parameters that skip where it cannot run, argument builders, the float64 reference and the output check.
Builders take the device the backend runs on; the reference always runs in float64 on the CPU."""

from __future__ import annotations

import pytest
import torch

import dfanet_kernels as dk
from dfanet_kernels import backends, reference

from .utils import HAS_CPU_KERNELS, LAYOUTS, assert_close, in_layout

HAS_GPU = torch.cuda.is_available()
# The device each backend's tests run on: the Triton kernels run on CUDA tensors where there is a GPU, else on CPU
# tensors under Triton's interpreter (TRITON_INTERPRET=1, set by tests/conftest.py before Triton is imported).
DEVICES = {"reference": torch.device("cpu"), "cpu": torch.device("cpu"),
           "triton": torch.device("cuda" if HAS_GPU else "cpu"), "cuda": torch.device("cuda")}
_TRITON_UNAVAILABLE = backends.unavailable_reason("triton", DEVICES["triton"])
# Why a backend's tests cannot run here (None: they can); test_backends.py fails where the CPU or Triton backend
# should be there and is not, so these skips cannot hide a broken build.
SKIP_REASONS = {
    "reference": None,
    "cpu": None if HAS_CPU_KERNELS else "compiled CPU kernels not built",
    "triton": None if _TRITON_UNAVAILABLE is None else f"triton backend unavailable: {_TRITON_UNAVAILABLE}",
    "cuda": None if HAS_GPU else "needs a CUDA GPU",
}
NEEDS_GPU = "needs a CUDA GPU"


def on(backend: str, *values, id: str = "", gpu: bool = False):
    """One case of a test that takes the backend as its first parameter: ``pytest.param(backend, *values)`` named
    "<backend>-<id>", skipped where the backend cannot run here; ``gpu``: a case only a GPU runs (half precision at
    the model's shapes, the full opcheck), also for the Triton backend that otherwise runs under the interpreter."""
    reason = SKIP_REASONS[backend] or (NEEDS_GPU if gpu and not HAS_GPU else None)
    return pytest.param(backend, *values, id=f"{backend}-{id}" if id else backend,
                        marks=[pytest.mark.skip(reason=reason)] if reason else [])


def shape_id(shape) -> str:
    return "x".join(map(str, shape))


def check(out, expected, atol, rtol, backend):
    """A backend's op output: on the backend's device, NHWC (every backend returns channels_last), and within
    atol/rtol of the expected values (a CPU tensor)."""
    assert out.device.type == DEVICES[backend].type
    assert out.is_contiguous(memory_format=torch.channels_last), f"not NHWC: strides {out.stride()}"
    assert_close(out.cpu(), expected, atol, rtol)


# (dtype, atol, rtol). fp32: the kernels sum at most 9 + C products of O(1) values in another order than the
# float64 reference, a few ulp (1.2e-7) times sqrt(terms): ~1e-6. fp16/bf16: the inputs are already rounded; the
# kernels accumulate in fp32 and round the depthwise result that feeds the pointwise product (as an fp16 conv does)
# and the output once each: an error of about the format's unit roundoff (fp16 2^-11 = 4.9e-4, bf16 2^-8 = 3.9e-3)
# relative to the values, ~5 standard deviations of it at the tail of 10^7 outputs.
DTYPES = [(torch.float32, 1e-5, 1e-5), (torch.float16, 2e-3, 2e-3), (torch.bfloat16, 1.6e-2, 1.6e-2)]
DTYPE_IDS = ["fp32", "fp16", "bf16"]


def layout_dtypes(backend: str, fp32: tuple[float, float]):
    """(id, (layout, dtype, atol, rtol)) of the input layouts and dtypes a backend's op-vs-reference tests run.

    cpu: fp32 only (the CPU kernels take nothing else), every layout, with the op's fp32 tolerance ``fp32`` (atol,
    rtol). triton: every (layout, dtype) pair under the interpreter. On a GPU each pair compiles its own kernel
    variants (a few seconds each: Triton specialises on strides), so there fp16/bf16 run in the model's layout,
    channels_last, only. cuda: the glue makes every layout NHWC before it dispatches on dtype: each layout in fp32,
    each 16-bit dtype in one."""
    if backend == "cpu":
        return [(f"{layout}-fp32", (layout, torch.float32, *fp32)) for layout in LAYOUTS]
    if backend == "triton":
        pairs = [(layout, d) for layout in LAYOUTS for d in range(3)
                 if not HAS_GPU or d == 0 or layout == "channels_last"]
    else:
        pairs = [("nchw", 0), ("channels_last", 0), ("strided", 0), ("channels_last", 1), ("strided", 2)]
    return [(f"{layout}-{DTYPE_IDS[d]}", (layout, *DTYPES[d])) for layout, d in pairs]


def rand(*shape, gen, device, scale=1.0, dtype=torch.float32):
    return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)


def f64(t):
    """The float64 CPU copy of t (None stays None) that the reference runs on."""
    return None if t is None else t.detach().to("cpu", torch.float64)


def dw_args(n, c, cout, h, w, stride, *, device, dtype=torch.float32, dw_bias=True, pw_bias=True, residual=True,
            seed=0):
    gen = torch.Generator().manual_seed(seed)
    ho, wo = dk.conv_output_size(h, stride), dk.conv_output_size(w, stride)
    return dict(
        x=rand(n, c, h, w, gen=gen, device=device, dtype=dtype),
        dw_weight=rand(c, 1, 3, 3, gen=gen, device=device, scale=1 / 3, dtype=dtype),
        dw_bias=rand(c, gen=gen, device=device, dtype=dtype) if dw_bias else None,
        pw_weight=rand(cout, c, 1, 1, gen=gen, device=device, scale=c**-0.5, dtype=dtype),
        pw_bias=rand(cout, gen=gen, device=device, dtype=dtype) if pw_bias else None,
        stride=stride,
        residual=rand(n, cout, ho, wo, gen=gen, device=device, dtype=dtype) if residual else None,
    )


def dw_expected(args, **flags):
    return reference.dwsep_conv(**{k: f64(v) if isinstance(v, torch.Tensor) else v for k, v in args.items()}, **flags)


def fc_args(n, c, h, w, k, *, device, dtype=torch.float32, fc_bias=True, conv_bias=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return dict(
        x=rand(n, c, h, w, gen=gen, device=device, dtype=dtype),
        fc_weight=rand(k, c, gen=gen, device=device, scale=c**-0.5, dtype=dtype),
        fc_bias=rand(k, gen=gen, device=device, dtype=dtype) if fc_bias else None,
        conv_weight=rand(c, k, 1, 1, gen=gen, device=device, scale=max(k, 1) ** -0.5, dtype=dtype),
        # A positive mean keeps most scales above 0, so the product (not only the ReLU) is tested.
        conv_bias=(rand(c, gen=gen, device=device) + 1).to(dtype) if conv_bias else None,
    )


def op_args(op, *, device, dwsep=(2, 5, 7, 9, 6), dtype=torch.float32, seed=6):
    """Positional arguments of the registered op (torch.ops.dfanet.<op> or <op>_<backend>) for opcheck and direct
    calls: dwsep_conv with ``dwsep`` = (N, C, Cout, H, W) in ``dtype``, stride 2, the model's flags and a residual;
    fc_attention, the upsampling ops (upsample_labels with 19 channels), xception_block (a concatenation of two
    inputs, stride 2, a projection shortcut, one bias missing) and conv3x3 (the stem's 3 -> 8, stride 2 + ReLU, on an
    NCHW input) at small odd sizes."""
    if op == "xception_block":
        a = block_args(2, [(20, 9, 7), (6, 4, 3)], 17, 12, 24, 2, True, device=device, dtype=dtype, seed=seed)
        dw, pw, pb = a["dw_weights"], a["pw_weights"], a["pw_biases"]
        return (a["inputs"], dw[0], pw[0], pb[0], dw[1], pw[1], None, dw[2], pw[2], pb[2], 2, a["shortcut_weight"],
                a["shortcut_bias"])
    if op == "dwsep_conv":
        a = dw_args(*dwsep, 2, device=device, dtype=dtype, seed=seed)
        return (a["x"], a["dw_weight"], a["dw_bias"], a["pw_weight"], a["pw_bias"], 2, True, False, True, a["residual"])
    if op == "fc_attention":
        return tuple(fc_args(2, 5, 7, 3, 11, device=device, seed=seed).values())
    gen = torch.Generator().manual_seed(seed)
    if op == "conv3x3":
        return (rand(2, 3, 9, 7, gen=gen, device=device, dtype=dtype),
                rand(8, 3, 3, 3, gen=gen, device=device, scale=27**-0.5, dtype=dtype),
                rand(8, gen=gen, device=device, dtype=dtype), 2, True)
    if op == "upsample_labels":
        return (rand(2, 19, 4, 5, gen=gen, device=device), [9, 7])
    return ([rand(2, 3, 4, 5, gen=gen, device=device), rand(2, 3, 9, 7, gen=gen, device=device)], [9, 7])


def fc_expected(args):
    return reference.fc_attention(**{k: f64(v) for k, v in args.items()})


# (N, [(C_k, H_k, W_k) of each input], C1, C2, C3, stride, projection): an Xception block (or, with several inputs,
# a block reading a concatenation) at odd sizes: stride 2 on odd H and W with N > 1, the identity shortcut, a
# 1 x 1 map, and the model's 48@H x W + 192@H/4 x W/4 aggregation input.
BLOCK_CASES = [
    (2, [(8, 13, 11)], 12, 12, 48, 2, True),
    (3, [(12, 9, 7)], 12, 12, 12, 1, False),
    (1, [(5, 1, 1)], 7, 7, 9, 2, True),
    (2, [(48, 11, 13), (192, 3, 4)], 12, 12, 48, 2, True),
]


def block_case_id(case):
    n, specs, c1, c2, c3, stride, projection = case
    return f"n{n}-" + "+".join(f"{c}@{h}x{w}" for c, h, w in specs) + f"-s{stride}-{'proj' if projection else 'id'}"


def block_args(n, specs, c1, c2, c3, stride, projection, *, device, dtype=torch.float32, seed=0):
    """Arguments of xception_block_cat (``inputs`` plus the block's weights)."""
    gen = torch.Generator().manual_seed(seed)
    c = [sum(ck for ck, _, _ in specs), c1, c2, c3]
    return dict(
        inputs=[rand(n, ck, h, w, gen=gen, device=device, dtype=dtype) for ck, h, w in specs],
        dw_weights=[rand(c[i], 1, 3, 3, gen=gen, device=device, scale=1 / 3, dtype=dtype) for i in range(3)],
        pw_weights=[rand(c[i + 1], c[i], 1, 1, gen=gen, device=device, scale=c[i] ** -0.5, dtype=dtype)
                    for i in range(3)],
        pw_biases=[rand(c[i + 1], gen=gen, device=device, dtype=dtype) for i in range(3)],
        stride=stride,
        shortcut_weight=rand(c3, c[0], 1, 1, gen=gen, device=device, scale=c[0] ** -0.5, dtype=dtype)
        if projection else None,
        shortcut_bias=rand(c3, gen=gen, device=device, dtype=dtype) if projection else None,
    )


def block_expected(args):
    converted = {k: [f64(t) for t in v] if isinstance(v, list) else f64(v) if isinstance(v, torch.Tensor) else v
                 for k, v in args.items()}
    return reference.xception_block_cat(**converted)


def decoder_args(n, low_specs, high_specs, d=32, k=19, *, device, dtype=torch.float32, layouts=("channels_last",),
                 biases=True, seed=0) -> list:
    """Positional arguments of decoder_head: maps of (C, H, W) each (layouts taken in turn), 1x1 weights scaled to
    keep every stage's values O(1), biases (or None where ``biases`` is False)."""
    gen = torch.Generator().manual_seed(seed)
    layouts = iter(layouts * 16)

    def conv(cout, cin):
        return (rand(cout, cin, 1, 1, gen=gen, device=device, scale=cin**-0.5, dtype=dtype),
                rand(cout, gen=gen, device=device, scale=0.5, dtype=dtype) if biases else None)

    lows = [in_layout(rand(n, c, h, w, gen=gen, device=device, dtype=dtype), next(layouts)) for c, h, w in low_specs]
    highs = [in_layout(rand(n, c, h, w, gen=gen, device=device, dtype=dtype), next(layouts))
             for c, h, w in high_specs]
    low_convs = [conv(d, c) for c, _, _ in low_specs]
    fuse = conv(d, d)
    high_convs = [conv(d, c) for c, _, _ in high_specs]
    classifier = conv(k, d)
    return [lows, highs, [w for w, _ in low_convs], [b for _, b in low_convs], *fuse,
            [w for w, _ in high_convs], [b for _, b in high_convs], *classifier]


def decoder_expected(args):
    """reference.decoder_head in float64 on decoder_args' arguments."""
    return reference.decoder_head(*[[f64(t) for t in a] if isinstance(a, list) else f64(a) for a in args])
