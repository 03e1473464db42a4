"""dfanet::decoder_head_triton (dfanet_kernels/triton/decoder.py), DFANet's decoder head in one Triton launch, against
the float64 reference (reference.decoder_head), and reference.decoder_head against the model's Decoder modules.

Without a GPU the kernel runs on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1, conftest.py): small
maps, a few seconds for the file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from functools import partial

import pytest
import torch

import dfanet_kernels as dk
from dfanet_kernels import reference

from .. import op_cases
from ..utils import LAYOUTS

DEVICE = op_cases.DEVICES["triton"]
UNAVAILABLE = op_cases.SKIP_REASONS["triton"]
rand = partial(op_cases.rand, device=DEVICE)


decoder_args = partial(op_cases.decoder_args, device=DEVICE)
expected = op_cases.decoder_expected


def run(args):
    return torch.ops.dfanet.decoder_head_triton(*args)


def register():
    dk.available_backends(DEVICE)  # imports the Triton backend, which registers the op


# (N, low maps, high maps, D, K), each map (C, H, W); the output is the first low map's H x W.
CASES = {
    # DFANet's decoder shrunk: enc2 48 ch at the output size, 1/2 and 1/4 (odd sizes, rounded as the model's
    # stride-2 convs round); attention 192 ch at 1/8, 1/16, 1/32 of the output (clamped at 1).
    "dfanet": (2, [(48, 13, 11), (48, 7, 6), (48, 4, 3)], [(192, 2, 2), (192, 1, 1), (192, 1, 1)], 32, 19),
    # Maps larger than the output (downsampling taps), a high map at the output size, channel counts and D that
    # are no powers of two.
    "larger-and-same": (1, [(5, 9, 7), (7, 17, 23)], [(9, 9, 7), (3, 20, 3)], 20, 3),
    # The smallest decoder: one low map, no high maps, batch 1.
    "one-low-no-high": (1, [(6, 5, 3)], [], 16, 2),
    # Every slot (4 low, 4 high) and classes over two classifier passes (BLOCK_K 64 under the interpreter).
    "four-and-four": (2, [(4, 6, 5), (3, 3, 2), (5, 7, 11), (2, 1, 1)], [(6, 2, 3), (3, 1, 2), (4, 6, 5), (2, 4, 4)],
                      24, 70),
}


pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))


def modes(args, module):
    """The mode ``plan`` picks for each map of a launch (0 taps, 1 same size, 2 region)."""
    ho, wo = args[0][0].shape[-2:]
    block_w, block_h = module.tile(ho, wo)
    return [module.plan(t, ho, wo, block_h, block_w) & 3 for t in args[0] + args[1]]


@pytest.mark.parametrize("case, region", [(case, region) for case in CASES for region in ("auto", "never", "always")
                                          if region == "auto" or case != "one-low-no-high"])  # no map resized there
def test_fp32_matches_the_float64_reference(monkeypatch, case, region):
    """fp32: each logit is a few hundred products of O(1) values summed in another order than the float64
    reference (a few ulp times sqrt(terms), ~1e-6): op_cases' fp32 tolerance. Every resized map by its four taps
    ("never"), by its region where that fits ("always"), or as the launcher picks."""
    register()
    from dfanet_kernels.triton import decoder as module

    monkeypatch.setattr(module, "_REGION", region)
    args = decoder_args(*CASES[case], layouts=LAYOUTS, seed=1)
    if region != "auto":
        resized = [m for m in modes(args, module) if m != 1]
        assert resized and set(resized) == {0 if region == "never" else 2}
    op_cases.check(run(args), expected(args), 1e-5, 1e-5, "triton")


@pytest.mark.parametrize("case", ["dfanet", "four-and-four"])
def test_fp32_with_the_gpu_tiles(monkeypatch, case):
    """The tiles a GPU launch takes (8 x 8 pixels, regions up to 64 pixels, 64-channel chunks, 32 classes a pass):
    many programs, regions that start inside the map, channel and class loops of several passes."""
    register()
    from dfanet_kernels.triton import decoder as module

    for name, value in dict(_TILE_W=8, _TILE_PIXELS=64, _MAX_REGION=64, _MAX_BLOCK_CI=64, _MAX_BLOCK_K=32).items():
        monkeypatch.setattr(module, name, value)
    n, lows, highs, d, k = CASES[case]
    if case == "dfanet":  # a larger output: several tiles each way, DFANet's map sizes relative to it
        lows, highs = [(48, 19, 21), (48, 10, 11), (48, 5, 6)], [(192, 3, 3), (192, 2, 2), (192, 1, 1)]
    args = decoder_args(n, lows, highs, d, k, layouts=("channels_last", "strided"), seed=8)
    if case == "dfanet":
        assert modes(args, module) == [1, 2, 2, 2, 2, 2]
    op_cases.check(run(args), expected(args), 1e-5, 1e-5, "triton")


def test_strided_weights_and_no_biases():
    """Weights read through their strides (views of wider buffers), every bias None."""
    register()
    args = decoder_args(*CASES["larger-and-same"], layouts=("strided",), biases=False, seed=2)

    def strided(w):  # the same values, every other element of the output-channel axis of a wider buffer
        wide = torch.zeros(2 * w.shape[0], *w.shape[1:], dtype=w.dtype, device=w.device)
        wide[::2] = w
        return wide[::2]

    for i in (2, 6):
        args[i] = [strided(w) for w in args[i]]
    args[4], args[8] = strided(args[4]), strided(args[8]).transpose(2, 3)
    assert not args[4].is_contiguous()
    op_cases.check(run(args), expected(args), 1e-5, 1e-5, "triton")


# fp16/bf16: the inputs and weights are rounded alike for both sides; the kernel accumulates in fp32 and rounds three
# values to the storage type, as the unfused ops do when they store them: the low sum (into the fuse conv), the merged
# map (into the classifier) and the logits, each by at most u (fp16 2^-11, bf16 2^-8) of its size. The weights' rows
# have norm ~1 (decoder_args), so a rounding of a D-channel vector moves a logit by up to u times that vector's norm,
# which here is about the logit scale to twice it: a few u of the scale in all. Measured over these cases and 4 seeds
# each (2026-12): at most 1.2u (fp16) and 3.2u (bf16) of the largest |logit|; 8u still catches a wrong tap, weight or
# bias (an error of O(1) of the scale: 8u is 0.4% of it in fp16, 3% in bf16).
HALF_DTYPES = [(torch.float16, 2.0**-11), (torch.bfloat16, 2.0**-8)]


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
@pytest.mark.parametrize("dtype, unit", HALF_DTYPES, ids=["fp16", "bf16"])
def test_half_precision_matches_the_reference_within_the_roundings(dtype, unit, layout):
    register()
    args = decoder_args(*CASES["dfanet"], dtype=dtype, layouts=(layout,), seed=3)
    out, exp = run(args), expected(args)
    assert out.dtype == dtype
    scale = exp.abs().max().item()
    op_cases.check(out, exp, 8 * unit * scale, 0.0, "triton")


def test_a_different_output_size_per_call():
    """The output follows low_maps[0], wherever the other maps are (also a larger high map)."""
    register()
    args = decoder_args(1, [(5, 3, 17), (5, 6, 6)], [(4, 5, 19)], 16, 5, seed=4)
    out = run(args)
    assert out.shape == (1, 5, 3, 17)
    op_cases.check(out, expected(args), 1e-5, 1e-5, "triton")


def test_reference_is_what_the_model_s_decoder_computes():
    """reference.decoder_head on the folded weights = DFANet._quarter_logits' decoder on the nn.Modules (eval BN)."""
    from dfanet.layers import Decoder
    from dfanet.testing import randomize_batchnorm

    torch.manual_seed(0)
    dec = Decoder(12, 24, 16, 5).eval()
    randomize_batchnorm(dec, seed=5)
    gen = torch.Generator().manual_seed(5)
    enc2 = [torch.randn(2, 12, h, w, generator=gen) for h, w in ((9, 11), (5, 6), (3, 3))]
    top = [torch.randn(2, 24, h, w, generator=gen) for h, w in ((2, 2), (1, 1), (1, 1))]
    with torch.no_grad():
        size = enc2[0].shape[-2:]
        low = dec.low_fuse(reference.upsample_add([m(x) for m, x in zip(dec.low_reduce, enc2)], size))
        module = dec.classifier(reference.upsample_add([low] + [m(x) for m, x in zip(dec.high_reduce, top)], size))
        low_folded = [dk.fold_conv_bn(m.conv, m[1]) for m in dec.low_reduce]
        high_folded = [dk.fold_conv_bn(m.conv, m[1]) for m in dec.high_reduce]
        folded = reference.decoder_head(enc2, top, [w for w, _ in low_folded], [b for _, b in low_folded],
                                        *dk.fold_conv_bn(dec.low_fuse.conv, dec.low_fuse[1]),
                                        [w for w, _ in high_folded], [b for _, b in high_folded],
                                        dec.classifier.weight, dec.classifier.bias)
    torch.testing.assert_close(folded, module, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------------------------
# Bad arguments: a clear exception naming the argument, before any launch
# ------------------------------------------------------------------------------------------------------------------
def _bad(args, edit):
    args = [list(a) if isinstance(a, list) else a for a in args]
    edit(args)
    return args


def _set(args, i, j, value):
    if j is None:
        args[i] = value
    else:
        args[i][j] = value


BAD = {
    "low map 3-D": (lambda a: _set(a, 0, 1, a[0][1][0]), ValueError, "low_maps[1]: expected a 4-D"),
    "high map 5-D": (lambda a: _set(a, 1, 0, a[1][0][None]), ValueError, "high_maps[0]: expected a 4-D"),
    "float64 map": (lambda a: _set(a, 0, 0, a[0][0].double()), TypeError,
                    "low_maps[0]: the triton backend takes float32/float16/bfloat16"),
    "mixed dtypes": (lambda a: _set(a, 1, 2, a[1][2].half()), TypeError, "high_maps[2]: expected dtype torch.float32"),
    "weight dtype": (lambda a: _set(a, 4, None, a[4].half()), TypeError, "fuse_weight: expected dtype torch.float32"),
    "map device": (lambda a: _set(a, 0, 2, a[0][2].to("meta")), ValueError, "low_maps[2]: expected device"),
    "weight device": (lambda a: _set(a, 8, None, a[8].to("meta")), ValueError, "classifier_weight: expected device"),
    "low channels": (lambda a: _set(a, 2, 1, a[2][1][:, :40]), ValueError,
                     "low_weights[1]: expected shape (32, 48, 1, 1)"),
    "high channels": (lambda a: _set(a, 6, 0, a[6][0][:, :100]), ValueError,
                      "high_weights[0]: expected shape (32, 192, 1, 1)"),
    "fuse width": (lambda a: _set(a, 4, None, a[4][:16]), ValueError, "fuse_weight: expected shape (32, 32, 1, 1)"),
    "classifier width": (lambda a: _set(a, 8, None, a[8][:, :8]), ValueError,
                         "classifier_weight: expected shape (19, 32, 1, 1)"),
    "bias size": (lambda a: _set(a, 7, 1, a[7][1][:5]), ValueError, "high_biases[1]: expected shape (32,)"),
    "batch": (lambda a: _set(a, 1, 1, a[1][1][:1]), ValueError, "high_maps[1]: expected batch 2"),
    "too many low maps": (lambda a: _set(a, 0, None, a[0] * 2), ValueError, "low_maps: expected 1 to 4 tensors"),
    "no low map": (lambda a: _set(a, 0, None, []), ValueError, "low_maps: expected 1 to 4 tensors, got 0"),
    "weights per map": (lambda a: _set(a, 3, None, a[3][:2]), ValueError, "low_biases: expected 3 to 3 tensors"),
    "too wide": (lambda a: _set(a, 2, 0, a[2][0].repeat(5, 1, 1, 1)), ValueError,
                 "low_weights[0]: at most 128 decoder channels"),
}


@pytest.mark.parametrize("bad", BAD, ids=list(BAD))
def test_bad_arguments_raise_naming_the_argument(bad):
    register()
    edit, error, message = BAD[bad]
    args = _bad(decoder_args(*CASES["dfanet"]), edit)
    with pytest.raises(error, match=re.escape(message)):
        run(args)


# ------------------------------------------------------------------------------------------------------------------
# Registration: schema, fake implementation (torch.compile / torch.export trace it), opcheck
# ------------------------------------------------------------------------------------------------------------------
def test_meta_output_has_the_real_outputs_shape_dtype_and_nhwc_strides():
    register()
    args = decoder_args(*CASES["larger-and-same"], layouts=LAYOUTS)
    real = run(args)
    meta = run([[t.to("meta") for t in a] if isinstance(a, list) else None if a is None else a.to("meta")
                for a in args])
    assert (meta.shape, meta.dtype, meta.stride()) == (real.shape, real.dtype, real.stride())
    assert meta.is_contiguous(memory_format=torch.channels_last)


def test_fake_tracing_keeps_the_op_in_the_graph():
    """What torch.compile and torch.export see: with fake tensors the op is one node of the graph, its output shaped
    and laid out as the real one (the launcher, which doubles as the op's fake implementation, launches nothing)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    register()
    args = decoder_args(*CASES["larger-and-same"])
    graph = make_fx(lambda *a: torch.ops.dfanet.decoder_head_triton(*a) + 1, tracing_mode="fake")(*args)
    calls = [node for node in graph.graph.nodes if node.target is torch.ops.dfanet.decoder_head_triton.default]
    assert len(calls) == 1
    fake = calls[0].meta["val"]
    real = run(args)
    assert (fake.shape, fake.dtype, fake.stride()) == (real.shape, real.dtype, real.stride())


OPCHECKS = [op_cases.on("triton", ("test_schema", "test_autograd_registration", "test_faketensor"),
                        id="interpreter-parts"),
            op_cases.on("triton", None, id="full", gpu=True)]


@pytest.mark.parametrize("backend, test_utils", OPCHECKS)
def test_opcheck(backend, test_utils):
    register()
    checks = {} if test_utils is None else dict(test_utils=test_utils)
    args = decoder_args(1, [(5, 5, 3), (4, 2, 2)], [(6, 1, 2)], 16, 3, seed=6)
    args[3][1] = None  # an optional bias in a list
    torch.library.opcheck(torch.ops.dfanet.decoder_head_triton.default, tuple(args), **checks)


@pytest.mark.skipif(not op_cases.HAS_GPU, reason=op_cases.NEEDS_GPU)
def test_torch_compile_fullgraph():
    register()
    args = decoder_args(*CASES["dfanet"], seed=7)
    compiled = torch.compile(lambda *a: torch.ops.dfanet.decoder_head_triton(*a) * 2, fullgraph=True)
    torch.testing.assert_close(compiled(*args), run(args) * 2, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------------------------
# The kernel compiles for a GPU (sm_90) without spills, checked without one (see test_triton_compile.py)
# ------------------------------------------------------------------------------------------------------------------
COMPILE_SCRIPT = textwrap.dedent(
    """
    import os, re, subprocess, tempfile
    os.environ.pop("TRITON_INTERPRET", None)
    import torch
    import triton
    import triton.backends.nvidia
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from dfanet_kernels.triton import decoder as DEC

    CUOBJDUMP = os.path.join(os.path.dirname(triton.backends.nvidia.__file__), "bin", "cuobjdump")
    POINTERS = {"out_ptr", "fuse_w", "fuse_b", "cls_w", "cls_b"} | {
        f"{k}{p}{i}" for k in "lh" for p in "xwb" for i in range(4)}
    SCALES = {f"{k}{p}{i}" for k in "lh" for p in ("fh", "fw") for i in range(4)}

    def compile_(dtype, constexprs, aligned):
        fn = DEC._decoder_head_kernel
        sig, attrs = {}, {}
        for i, name in enumerate(fn.arg_names):
            if name in POINTERS or name in aligned:
                attrs[(i,)] = [["tt.divisibility", 16]]
            sig[name] = ("constexpr" if name in constexprs else "*" + dtype if name in POINTERS
                         else "fp32" if name in SCALES else "i32")
        k = triton.compile(ASTSource(fn, sig, dict(constexprs), attrs), target=GPUTarget("cuda", 90, 32),
                           options=dict(num_warps=DEC._WARPS, num_stages=DEC._STAGES))
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(k.asm["cubin"])
            f.flush()
            usage = subprocess.run([CUOBJDUMP, "--dump-resource-usage", f.name], capture_output=True, text=True,
                                   check=True).stdout
        spilled = sum(int(v) for v in re.findall(r"(?:STACK|LOCAL):([0-9]+)", usage))
        assert spilled == 0, (dtype, constexprs, f"{spilled} B local memory")
        assert k.metadata.shared <= 227 * 1024
        if dtype != "fp32":
            assert "mma" in k.asm["ptx"], "fp16/bf16 convs must run on tensor cores"

    def plans(lows, highs, size):
        # The launcher's plans and tiles for maps of (C, H, W) at a size x size output.
        bw, bh = DEC.tile(size, size)
        maps = [torch.empty(1, c, h, w, device="meta") for c, h, w in lows + highs]
        codes = [DEC.plan(t, size, size, bh, bw) for t in maps]
        return dict(NUM_LOW=len(lows), NUM_HIGH=len(highs), LOW_PLAN=DEC._codes(codes[:len(lows)]),
                    HIGH_PLAN=DEC._codes(codes[len(lows):]), BLOCK_H=bh, BLOCK_W=bw, BLOCK_P=bh * bw), codes

    # DFANet A at 1024 x 1024 (256 x 256 logits): the first low map at the output size, the others and every high
    # map through their regions; every dtype, dense NHWC, 32-bit offsets, the channel counts seen as multiples of 16
    # (as a launch specialises them).
    lows, highs = [(48, 256 // f, 256 // f) for f in (1, 2, 4)], [(192, 256 // f, 256 // f) for f in (8, 16, 32)]
    dfanet, codes = plans(lows, highs, 256)
    assert [c & 3 for c in codes] == [1, 2, 2, 2, 2, 2], codes
    tiles = dict(BLOCK_CI=64, BLOCK_D=32, BLOCK_K=32)
    flags = dict(LOW_BIAS=7, HIGH_BIAS=7, FUSE_BIAS=True, CLS_BIAS=True, DOT_FP32=False)
    for dtype in ("fp32", "fp16", "bf16"):
        compile_(dtype, dict(**dfanet, **tiles, **flags, SRC_NHWC=True, IDX64=False, IS_FP32=dtype == "fp32"),
                 aligned=("lC0", "lC1", "lC2", "hC0", "hC1", "hC2", "D"))
    # The four-tap path (maps larger than the output), strided maps, 64-bit offsets, every slot, no biases.
    many, codes = plans([(24, 64, 64), (24, 200, 150), (24, 8, 8), (24, 1, 1)],
                        [(96, 4, 4), (96, 100, 100), (96, 64, 64), (96, 2, 2)], 64)
    assert {c & 3 for c in codes} == {0, 1, 2}, codes
    compile_("fp16", dict(**many, **tiles, LOW_BIAS=0, HIGH_BIAS=0, FUSE_BIAS=False, CLS_BIAS=False, DOT_FP32=False,
                          SRC_NHWC=False, IDX64=True, IS_FP32=False), aligned=())
    print("compiled")
    """
)


@pytest.mark.skipif(op_cases.HAS_GPU, reason="on a GPU the kernel is compiled and run for real")
def test_the_kernel_compiles_for_sm90_without_spills():
    triton = pytest.importorskip("triton")
    from triton import backends

    if "nvidia" not in backends.backends:
        pytest.skip(f"Triton {triton.__version__} has no NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], capture_output=True, text=True, env=env,
                            timeout=900)
    assert result.returncode == 0 and "compiled" in result.stdout, result.stderr[-4000:]
