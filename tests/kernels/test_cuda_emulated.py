"""The CUDA kernels and launchers (csrc/cuda/*.cu), unchanged, run on the CPU under a small emulator of the CUDA
execution model (tests/kernels/cuda_emu/emu.h) and are compared with dfanet_kernels.reference.

This is how CI without a GPU executes the kernels' indexing, tiling, barriers, WMMA tile layout and epilogues.
The emulator build has ASan/UBSan (any access outside an input, output or workspace array aborts), a second one
takes the kernels' 64-bit index paths (used on a GPU only past 2**30 elements), and a TSan build checks for
shared-memory races between barriers. It does not replace the GPU run (the cuda cases of tests/kernels): it has
no real warps, memory model, timing or tensor-core rounding, and the torch glue (csrc/cuda/*_glue.cpp) is not in it.
The grid cap (kMaxBlocks) is lowered to 3 so that every grid-stride loop goes round more than once. Code under
`__CUDA_ARCH__ >= 800` runs (WMMA); code that also asks `defined(__CUDA_ARCH__)` (dwsep_conv's cp.async halo copies,
inline PTX) takes its fallback, a plain 16-byte copy. Dynamic shared memory (xception_block) is a buffer of exactly
the launch's size per emulated block, so ASan flags a kernel that reaches past its layout.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from dfanet_kernels import cuda_toolkit, reference
from dfanet_kernels.constants import labels_dtype

from ..op_cases import decoder_args, decoder_expected
from .test_upsample_labels import MARGIN, expected_labels
from .test_xception_block import CUDA_BLOCK_TENSOR_CORE_TOLERANCES, CUDA_BLOCK_TOLERANCES

ROOT = Path(__file__).resolve().parents[2]
CUDA_DIR = ROOT / "csrc" / "cuda"
EMU_DIR = Path(__file__).resolve().parent / "cuda_emu"
GXX = shutil.which("g++")

DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
# vs a float64 reference on the same (rounded) inputs: fp32 accumulation order; one fp16/bf16 rounding of the
# output, plus (tensor-core path) of the depthwise result feeding the pointwise product.
TOLERANCES = {torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2}

LAUNCH = re.compile(r"(\w+(?:<[\w:, ]+>)?)<<<(.*?)>>>\((.*?)\);", re.S)


CUDA_INCLUDE = cuda_toolkit.include_dir()
pytestmark = [
    pytest.mark.skipif(GXX is None or CUDA_INCLUDE is None, reason="needs g++ and the CUDA toolkit headers"),
    # Where a GPU is, the op tests' cuda cases and bench/compute_sanitizer.sh run the real thing; keep the GPU window.
    pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the op tests' cuda cases run the kernels"),
]


def _emulated(text: str) -> str:
    """A .cu file as emulator C++: launches through emu::launch, the sm_80 code paths on."""
    text, launches = LAUNCH.subn(lambda m: f"emu::launch([&] {{ {m[1]}({m[3]}); }}, {m[2]});", text)
    assert launches and "<<<" not in text, "a kernel launch the emulator rewrite does not understand"
    return '#include "emu.h"\n' + text.replace("__CUDA_ARCH__ >= 800", "1")


def _build(out_dir: Path, sanitize: str, int64_indices: bool) -> Path:
    """The emulator runner; ``int64_indices`` sends the kernels that choose their index width down the 64-bit path
    (taken on a GPU only past 2**30 elements, which no test can afford)."""
    out_dir.mkdir()
    common, capped = re.subn(r"kMaxBlocks = \d+", "kMaxBlocks = 3", (CUDA_DIR / "common.cuh").read_text())
    assert capped == 1
    if int64_indices:
        common, lowered = re.subn(r"kInt32IndexLimit = [^;]+;", "kInt32IndexLimit = 0;", common)
        assert lowered == 1
    (out_dir / "common.cuh").write_text(common)
    shutil.copy(CUDA_DIR / "launchers.h", out_dir)
    sources = [EMU_DIR / "runner.cpp"]
    for cu in sorted(CUDA_DIR.glob("*.cu")):
        sources.append(out_dir / f"{cu.stem}.cpp")
        sources[-1].write_text(_emulated(cu.read_text()))
    flags = ["-std=c++20", "-O1", "-g1", "-pthread", f"-fsanitize={sanitize}", "-fno-sanitize-recover=all"]
    flags += [f"-I{out_dir}", f"-I{EMU_DIR}", f"-I{CUDA_INCLUDE}"]

    def compile_one(src: Path) -> Path:
        obj = out_dir / f"{src.stem}.o"
        r = subprocess.run([GXX, *flags, "-c", str(src), "-o", str(obj)], capture_output=True, text=True)
        assert r.returncode == 0, f"g++ failed on {src.name}:\n{r.stderr}"
        return obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        objects = list(pool.map(compile_one, sources))
    exe = out_dir / "runner"
    r = subprocess.run([GXX, *flags, *map(str, objects), "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, f"link failed:\n{r.stderr}"
    return exe


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    base = tmp_path_factory.mktemp("cuda_emu")
    with ThreadPoolExecutor(max_workers=2) as pool:
        # asan64: the 64-bit index paths under ASan/UBSan too; every upsample and fc_attention case runs on both.
        builds = {"asan": ("address,undefined", False), "asan64": ("address,undefined", True),
                  "tsan": ("thread", False)}
        futures = {name: pool.submit(_build, base / name, *flags) for name, flags in builds.items()}
        return {name: future.result() for name, future in futures.items()}


def _bytes(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous()
    return (t.view(torch.int16) if t.element_size() == 2 else t).numpy().tobytes()


def _run(exe: Path, tmp_path: Path, op: str, dtype: torch.dtype, header: list[int], arrays: list, out_shape,
         *, out_dtype: torch.dtype | None = None, sms: int = 132, cc_major: int = 9):
    """Runs one launcher on an emulated GPU of `sms` SMs and compute capability `cc_major`; arrays are
    NHWC/row-major tensors in `dtype`. Returns the output, shaped out_shape, in `dtype` (or `out_dtype`: labels)."""
    src, dst = tmp_path / f"{op}.in", tmp_path / f"{op}.out"
    values = [DTYPE_CODES[dtype], *map(int, header)]
    payload = struct.pack(f"<q{len(values)}q", len(values), *values) + b"".join(_bytes(a) for a in arrays)
    src.write_bytes(payload)
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1", ASAN_OPTIONS="detect_leaks=0", EMU_SMS=str(sms),
               EMU_CC_MAJOR=str(cc_major))
    r = subprocess.run([str(exe), op, str(src), str(dst)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, f"emulated {op} failed (exit {r.returncode}):\n{r.stderr[-6000:]}"
    raw = bytearray(dst.read_bytes())
    if out_dtype is not None:
        flat = torch.frombuffer(raw, dtype=out_dtype)
    elif dtype != torch.float32:
        flat = torch.frombuffer(raw, dtype=torch.int16).view(dtype)
    else:
        flat = torch.frombuffer(raw, dtype=torch.float32)
    return flat.reshape(out_shape).clone()


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 1)


def _close(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    assert torch.isfinite(got).all(), "output has NaN/inf (a value never written?)"
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(got.double(), expected, atol=tol, rtol=tol)


def _randn(*shape, dtype, scale=1.0, gen):
    return (torch.randn(*shape, generator=gen) * scale).to(dtype)


# (N, C, H, W, Cout, stride, act_in, act_mid, act_out, dw_bias, pw_bias, residual, dtype): the FMA path (fp32) and
# the tensor-core path (fp16/bf16), 1 and several input-channel chunks, several output-channel tiles, 8 x 8 pixel
# tiles cut by the map's edge, 1x1 images, odd sizes at stride 2.
DWSEP_CASES = [
    (1, 1, 1, 1, 1, 1, False, False, False, False, False, False, torch.float32),
    (2, 3, 7, 5, 17, 2, True, False, False, True, False, True, torch.float32),
    (1, 40, 9, 7, 70, 1, True, True, True, True, True, True, torch.float32),
    (3, 5, 10, 11, 3, 1, False, True, False, False, True, False, torch.float32),
    (1, 40, 9, 7, 70, 1, True, True, True, True, True, True, torch.float16),
    (2, 17, 8, 9, 33, 2, True, False, True, False, True, True, torch.bfloat16),
    (1, 12, 6, 5, 48, 2, False, True, False, True, False, False, torch.float16),
    (1, 48, 1, 3, 12, 1, True, False, False, False, True, True, torch.bfloat16),
]


# The tiling at the shapes it branches on, as (case, SMs the emulated GPU reports), each kernel instantiation of the
# fp32 and tensor-core paths at least once. 132 SMs: these small maps take 4 x 4 pixel tiles at the narrowest
# output-channel tile (16 FMA, 32 tensor-core) to fill the grid; 1 SM: 8 x 8 pixel tiles and the narrowest width
# that covers Cout (16 to 192; past 192 several tiles of 192), narrowed where even 1 SM's 2 blocks are not there.
# Channels 1, 3, 8, 12, 24, 240 (16-byte halo copies where C is a multiple of 16 bytes, element copies elsewhere;
# 240 = 7.5 tensor-core chunks, 15 FMA chunks), vector epilogues (Cout a multiple of 8) and element ones, maps of
# 1x1, 2x2 and not multiples of the tile, batch > 1, residual.
DWSEP_TILE_CASES = [
    ((2, 8, 17, 19, 12, 2, True, False, False, True, True, False, torch.float32), 1),
    ((2, 8, 17, 19, 12, 2, True, False, False, True, True, False, torch.float16), 132),
    ((2, 24, 9, 9, 24, 1, True, True, False, True, False, True, torch.float32), 1),
    ((2, 24, 9, 9, 24, 1, True, True, False, True, False, True, torch.bfloat16), 1),
    ((1, 12, 9, 10, 48, 1, False, True, True, True, True, True, torch.float16), 1),
    ((1, 12, 9, 10, 48, 1, False, True, True, True, True, True, torch.float32), 1),
    ((1, 24, 11, 9, 96, 1, True, False, True, True, False, True, torch.bfloat16), 1),
    ((1, 24, 11, 9, 96, 1, True, False, True, True, False, True, torch.float32), 1),
    ((1, 240, 10, 10, 12, 2, True, False, False, True, True, False, torch.float16), 132),
    ((1, 240, 9, 9, 12, 2, True, False, False, False, True, False, torch.float32), 132),
    ((1, 96, 12, 12, 48, 2, True, True, False, True, True, True, torch.bfloat16), 1),
    ((1, 48, 16, 16, 192, 1, True, False, False, True, True, True, torch.float32), 1),
    ((1, 48, 16, 16, 192, 1, True, False, False, True, True, True, torch.bfloat16), 1),
    ((1, 16, 6, 6, 200, 1, False, False, True, True, True, True, torch.float16), 1),
    ((1, 16, 6, 6, 200, 1, False, False, True, True, True, True, torch.float32), 1),
    ((2, 1, 2, 2, 3, 1, True, True, True, True, True, True, torch.bfloat16), 132),
    ((3, 3, 1, 1, 1, 2, False, False, False, True, False, True, torch.float16), 132),
    ((3, 3, 2, 2, 5, 2, False, True, False, False, True, False, torch.float32), 132),
]


def _dwsep_case(exe, tmp_path, case, seed=0, nan_input=False, sms=132, cc_major=9):
    """Runs one dwsep_conv case on an emulated GPU of ``sms`` SMs and compute capability ``cc_major``; with
    ``nan_input`` one input value is NaN and the output must have NaN exactly where the reference has (NaN passes
    through each ReLU, as in torch.relu) and match it elsewhere."""
    n, c, h, w, cout, stride, act_in, act_mid, act_out, has_dwb, has_pwb, has_res, dtype = case
    gen = torch.Generator().manual_seed(seed)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    x = _randn(n, c, h, w, dtype=dtype, gen=gen)
    if nan_input:
        x[n - 1, c // 2, h // 2, w // 2] = float("nan")
    dw = _randn(c, 1, 3, 3, dtype=dtype, scale=1 / 3, gen=gen)
    dwb = _randn(c, dtype=dtype, gen=gen) if has_dwb else None
    pw = _randn(cout, c, 1, 1, dtype=dtype, scale=c**-0.5, gen=gen)
    pwb = _randn(cout, dtype=dtype, gen=gen) if has_pwb else None
    res = _randn(n, cout, ho, wo, dtype=dtype, gen=gen) if has_res else None
    header = [n, h, w, c, cout, stride, act_in, act_mid, act_out, has_dwb, has_pwb, has_res]
    arrays = [_nhwc(x), dw] + ([dwb] if has_dwb else []) + [pw] + ([pwb] if has_pwb else [])
    arrays += [_nhwc(res)] if has_res else []
    got = _run(exe, tmp_path, "dwsep_conv", dtype, header, arrays, (n, ho, wo, cout), sms=sms, cc_major=cc_major)
    got = got.permute(0, 3, 1, 2)
    d = lambda t: None if t is None else t.double()  # noqa: E731
    expected = reference.dwsep_conv(d(x), d(dw), d(dwb), d(pw), d(pwb), stride, act_in, act_mid, act_out, d(res))
    if nan_input:
        assert expected.isnan().any() and torch.equal(got.isnan(), expected.isnan())
        got, expected = got.nan_to_num(0.0), expected.nan_to_num(0.0)
    _close(got, expected, dtype)


@pytest.mark.parametrize("case", DWSEP_CASES, ids=lambda c: f"{c[:6]}-{str(c[-1])[6:]}")
def test_dwsep_conv_emulated(runners, tmp_path, case):
    _dwsep_case(runners["asan"], tmp_path, case)


@pytest.mark.parametrize("case, sms", DWSEP_TILE_CASES,
                         ids=lambda c: f"{c[:6]}-{str(c[-1])[6:]}" if isinstance(c, tuple) else f"{c}sm")
def test_dwsep_conv_tiles_emulated(runners, tmp_path, case, sms):
    _dwsep_case(runners["asan"], tmp_path, case, sms=sms)


@pytest.mark.parametrize("sms", [132, 1], ids=["4x4", "8x8"])
@pytest.mark.parametrize("case", [
    (2, 40, 9, 7, 70, 1, True, True, True, True, True, True, torch.float16),
    (1, 12, 10, 9, 24, 2, False, True, False, True, False, True, torch.bfloat16),
], ids=lambda c: f"{c[:6]}-{str(c[-1])[6:]}")
def test_dwsep_conv_before_sm80_emulated(runners, tmp_path, case, sms):
    """fp16/bf16 on a GPU without bf16 WMMA take the FMA path (16-byte halo copies where C is a multiple of 8)."""
    _dwsep_case(runners["asan"], tmp_path, case, sms=sms, cc_major=7)


@pytest.mark.parametrize("flag", ["act_in", "act_mid", "act_out"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fma", "tensor-core"])
def test_dwsep_conv_relu_keeps_nan_emulated(runners, tmp_path, flag, dtype):
    """relu(NaN) = NaN at each ReLU point and on both paths (fmaxf(NaN, 0) would give 0 and pass every other case)."""
    acts = [f == flag for f in ("act_in", "act_mid", "act_out")]
    case = (1, 24, 7, 6, 32, 1, *acts, True, True, False, dtype)  # fp16: the tensor-core path
    _dwsep_case(runners["asan"], tmp_path, case, nan_input=True)


# (N, C, H, W, Cout, stride, relu, bias, layout, dtype): conv3x3 on the input in its own layout (NCHW, NHWC, a strided
# view of NCHW). The stem (3 -> 8, stride 2: one group of 8 channels, 16-byte stores), Cout not a multiple of 8 (a
# last, partial group stored value by value), more input channels than one staged chunk of 16 (20), 1 x 1 and
# 2 x 3 images, and a map of 13000 output pixels, which the emulator's 3 blocks of 1024 pixels go round 5 times.
CONV_CASES = [
    (1, 3, 13, 17, 8, 2, True, True, "nchw", torch.float16),
    (2, 3, 13, 17, 8, 1, False, True, "nhwc", torch.float32),
    (2, 5, 9, 7, 13, 2, True, False, "strided", torch.bfloat16),
    (1, 3, 1, 1, 8, 2, True, True, "nchw", torch.float32),
    (1, 20, 6, 5, 16, 1, False, True, "nhwc", torch.bfloat16),
    (3, 1, 2, 3, 3, 2, True, True, "strided", torch.float32),
    (1, 3, 130, 100, 8, 1, True, True, "nchw", torch.float16),
]
CONV_LAYOUTS = {"nchw": 0, "nhwc": 1, "strided": 2}


def _conv_case(exe, tmp_path, case, seed=0):
    n, c, h, w, cout, stride, relu, has_bias, layout, dtype = case
    gen = torch.Generator().manual_seed(seed)
    x = _randn(n, c, h, w, dtype=dtype, gen=gen)
    weight = _randn(cout, c, 3, 3, dtype=dtype, scale=(9 * c) ** -0.5, gen=gen)
    bias = _randn(cout, dtype=dtype, gen=gen) if has_bias else None
    if layout == "strided":  # x in the even columns of a twice-as-wide NCHW buffer
        stored = torch.zeros(n, c, h, 2 * w, dtype=dtype)
        stored[..., ::2] = x
    else:
        stored = _nhwc(x) if layout == "nhwc" else x
    header = [n, c, h, w, cout, stride, relu, has_bias, CONV_LAYOUTS[layout]]
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    got = _run(exe, tmp_path, "conv3x3", dtype, header, [stored, weight] + ([bias] if has_bias else []),
               (n, ho, wo, cout)).permute(0, 3, 1, 2)
    _close(got, reference.conv(x.double(), weight.double(), None if bias is None else bias.double(), stride, relu),
           dtype)


@pytest.mark.parametrize("runner", ["asan", "asan64"], ids=["int32-indices", "int64-indices"])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[:8]}-{c[8]}-{str(c[9])[6:]}")
def test_conv3x3_emulated(runners, tmp_path, case, runner):
    _conv_case(runners[runner], tmp_path, case)


# (N, H, W, C, K, fc_bias, conv_bias, dtype); K = 0 leaves scale = relu(conv_bias). The pooling splits the pixels
# into ceil(HW / 128) parts, at most 32: 1 part, 2 (143 pixels), 12 (1480) and 32 (4355, capped). The mat-vecs
# stage their vector in chunks of 1024: C = 1030 and K = 1100 take two. N = 3 with 2 splits of 143 pixels (one short)
# and N = 3 of 1 x 1 maps stress the tile counters; the runner launches every case twice back to back and checks
# that each launch leaves its counters at zero.
FC_CASES = [
    (2, 5, 7, 40, 70, True, True, torch.float32),
    (3, 1, 1, 3, 1000, False, False, torch.float16),
    (1, 9, 9, 33, 0, False, True, torch.bfloat16),
    (1, 13, 11, 17, 100, True, False, torch.float32),
    (1, 37, 40, 33, 50, True, True, torch.float16),
    (2, 65, 67, 5, 7, False, True, torch.float32),
    (2, 2, 3, 1030, 9, True, True, torch.float32),
    (1, 3, 5, 7, 1100, True, False, torch.bfloat16),
    (3, 13, 11, 19, 45, True, True, torch.float32),
    (3, 1, 1, 40, 33, True, True, torch.float16),
]


def _fc_case(exe, tmp_path, case, seed=0):
    n, h, w, c, k, has_fcb, has_convb, dtype = case
    gen = torch.Generator().manual_seed(seed)
    x = _randn(n, c, h, w, dtype=dtype, gen=gen) + 0.5  # a mean away from 0, so the scale is not mostly ReLU'd away
    fcw = _randn(k, c, dtype=dtype, scale=c**-0.5, gen=gen)
    fcb = _randn(k, dtype=dtype, gen=gen) if has_fcb else None
    convw = _randn(c, k, 1, 1, dtype=dtype, scale=max(k, 1) ** -0.5, gen=gen)
    convb = _randn(c, dtype=dtype, gen=gen) if has_convb else None
    header = [n, h * w, c, k, has_fcb, has_convb]
    arrays = [_nhwc(x), fcw] + ([fcb] if has_fcb else []) + [convw] + ([convb] if has_convb else [])
    got = _run(exe, tmp_path, "fc_attention", dtype, header, arrays, (n, h, w, c)).permute(0, 3, 1, 2)
    d = lambda t: None if t is None else t.double()  # noqa: E731
    _close(got, reference.fc_attention(d(x), d(fcw), d(fcb), d(convw), d(convb)), dtype)


@pytest.mark.parametrize("runner", ["asan", "asan64"], ids=["int32-indices", "int64-indices"])
@pytest.mark.parametrize("case", FC_CASES, ids=str)
def test_fc_attention_emulated(runners, tmp_path, case, runner):
    _fc_case(runners[runner], tmp_path, case)


# (add, N, (Ho, Wo), [(C, H, W), ...], dtype): up- and down-sampling, a source already at the size (copied), 1x1
# sources and targets, more than 8 sources (a second launch that continues the concat / accumulates the sum), a
# thread's 4 channels spanning sources; channel counts all multiples of 4 take the vector path.
UPSAMPLE_CASES = [
    (False, 2, (9, 11), [(3, 4, 5), (17, 9, 11), (2, 1, 1)], torch.float32),
    (True, 1, (9, 11), [(5, 3, 3), (5, 9, 11), (5, 13, 17)], torch.float16),
    (False, 1, (1, 1), [(4, 3, 2), (1, 1, 1)], torch.bfloat16),
    (False, 1, (6, 5), [(c, 2 + c % 3, 3) for c in range(1, 10)], torch.float32),
    (True, 2, (7, 3), [(33, 1 + i, 2 + i % 2) for i in range(10)], torch.bfloat16),
    (False, 2, (9, 11), [(8, 9, 11), (4, 4, 5), (12, 1, 1)], torch.float32),
    (True, 1, (9, 7), [(8, 9, 7), (8, 3, 2), (8, 5, 4)], torch.float16),
    (True, 2, (5, 3), [(4, 1 + i, 2 + i % 2) for i in range(10)], torch.bfloat16),
]


def _upsample_case(exe, tmp_path, case, seed=0):
    add, n, size, shapes, dtype = case
    gen = torch.Generator().manual_seed(seed)
    inputs = [_randn(n, c, h, w, dtype=dtype, gen=gen) for c, h, w in shapes]
    cout = shapes[0][0] if add else sum(c for c, _, _ in shapes)
    header = [add, n, *size, len(shapes)] + [v for s in shapes for v in s]
    got = _run(exe, tmp_path, "upsample", dtype, header, [_nhwc(t) for t in inputs], (n, *size, cout))
    fn = reference.upsample_add if add else reference.upsample_concat
    _close(got.permute(0, 3, 1, 2), fn([t.double() for t in inputs], size), dtype)


@pytest.mark.parametrize("runner", ["asan", "asan64"], ids=["int32-indices", "int64-indices"])
@pytest.mark.parametrize("case", UPSAMPLE_CASES, ids=lambda c: f"{'add' if c[0] else 'concat'}-{len(c[3])}-{c[2]}")
def test_upsample_emulated(runners, tmp_path, case, runner):
    _upsample_case(runners[runner], tmp_path, case)


@pytest.mark.parametrize("channels", [4, 3], ids=["vector", "scalar"])
@pytest.mark.parametrize("add", [False, True], ids=["concat", "add"])
def test_same_size_input_is_copied_bit_exactly_emulated(runners, tmp_path, add, channels):
    """No 0 * neighbour term (0 * inf is NaN) and no 0.f + x (it turns -0.0 into +0.0): a lone input at the target
    size comes through bit for bit, as the reference returns it."""
    x = torch.randn(1, channels, 5, 6)
    x[0, 1, 2, :3] = torch.tensor([float("inf"), float("nan"), -0.0])
    got = _run(runners["asan"], tmp_path, "upsample", torch.float32, [add, 1, 5, 6, 1, channels, 5, 6], [_nhwc(x)],
               (1, 5, 6, channels))
    assert torch.equal(got.permute(0, 3, 1, 2).contiguous().view(torch.int32), x.view(torch.int32))


# (N, (Ho, Wo), (C, H, W), dtype): one channel, DFANet's 19 (read value by value), 36 (one vector per 4 channels)
# and 300 (int64 labels), up- and downsampling, an input at the output size, a 1 x 1 map.
LABELS_CASES = [
    (2, (9, 11), (19, 4, 5), torch.float32),
    (1, (7, 5), (1, 7, 5), torch.float16),
    (3, (5, 3), (36, 9, 7), torch.bfloat16),
    (1, (6, 7), (300, 2, 3), torch.float32),
    (2, (3, 2), (4, 1, 1), torch.float16),
]


def _labels_case(exe, tmp_path, x, size):
    n, c, h, w = x.shape
    return _run(exe, tmp_path, "upsample_labels", x.dtype, [n, *size, c, h, w], [_nhwc(x)], (n, *size),
                out_dtype=labels_dtype(c))


@pytest.mark.parametrize("runner", ["asan", "asan64"], ids=["int32-indices", "int64-indices"])
@pytest.mark.parametrize("case", LABELS_CASES, ids=lambda c: f"{c[2][0]}@{c[2][1]}x{c[2][2]}-{str(c[3])[6:]}")
def test_upsample_labels_emulated(runners, tmp_path, case, runner):
    """Against the float64 reference's argmax wherever its margin is clear (test_upsample_labels.MARGIN)."""
    n, size, (c, h, w), dtype = case
    x = _randn(n, c, h, w, dtype=dtype, gen=torch.Generator().manual_seed(c))
    got = _labels_case(runners[runner], tmp_path, x, size)
    expected, margin = expected_labels(x, size)
    clear = margin > MARGIN
    assert int((~clear).sum()) <= 1 + 0.01 * clear.numel() and torch.equal(got[clear], expected[clear])


@pytest.mark.parametrize("c", [19, 36])
def test_upsample_labels_ties_and_nan_emulated(runners, tmp_path, c):
    """Integer logits resized by exactly 2 (every value exact): ties go to the first channel; a NaN wins."""
    x = torch.randint(0, 4, (2, c, 5, 3), generator=torch.Generator().manual_seed(c)).float()
    x[1, c - 2, 2, 1] = float("nan")  # its 2 x 2 output pixels read it with a weight of 9/16
    got = _labels_case(runners["asan"], tmp_path, x, (10, 6))
    expected = reference.upsample_labels(x.double(), (10, 6))
    assert (expected[1, 4:6, 2:4] == c - 2).all() and torch.equal(got, expected)


# (N, [(C, H, W) of each source], C1, C2, C3, stride, projection, biases, dtype, SMs): xception_block, its input
# the concatenation of the sources resized to the first one's size. `biases`: which of pb1, pb2, pb3 and the
# shortcut bias are given. On 132 SMs these maps take 4 x 4 tiles and split output channels past 48 over blocks
# (192 in 4 splits of 48, 200 in 5 of 48 and 8); on 1 SM 8 x 8 tiles and one split. Mid widths in each of the
# kernel's four column counts (up to 16, 32, 48, 64), output channels past one sep3 pass (48 or 96 a pass) and not
# multiples of 16, input channels past one chunk (16 at stride 1, 8 at stride 2) and read 16 bytes at a time (C0
# a multiple of 4 fp32 or 8 fp16/bf16 values) or value by value, maps of 1 x 1 and not multiples of the tile, both
# shortcuts, batches > 1; concatenations up- and downsampled, at the same size, and a 1 x 1 source. fp32 takes the
# FMA kernels, fp16/bf16 the tensor-core ones (the emulated GPU is sm_90), each of its 8 tile and column
# instantiations here, K padded to 16 (channel counts not multiples of 16, stride 2's 8-channel input chunks).
BLOCK_EMU_CASES = [
    (2, [(12, 9, 7)], 12, 12, 12, 1, False, "111-", torch.float32, 132),
    (1, [(12, 9, 7)], 12, 12, 12, 1, False, "101-", torch.float32, 1),
    (1, [(8, 13, 11)], 12, 12, 48, 2, True, "1111", torch.float32, 132),
    (2, [(8, 13, 11)], 12, 12, 48, 2, True, "0110", torch.float32, 1),
    (1, [(5, 1, 1)], 7, 7, 9, 2, True, "1111", torch.float32, 132),
    (1, [(48, 17, 9)], 12, 12, 48, 1, False, "111-", torch.float32, 1),
    (1, [(70, 6, 5)], 50, 64, 200, 2, True, "1101", torch.float32, 1),
    (1, [(70, 6, 5)], 50, 64, 200, 2, True, "1111", torch.bfloat16, 132),
    (3, [(17, 13, 11)], 19, 23, 17, 1, False, "011-", torch.float16, 132),
    (1, [(48, 11, 10)], 48, 48, 192, 1, True, "1111", torch.bfloat16, 1),
    (1, [(48, 11, 10)], 48, 48, 192, 1, True, "1111", torch.float32, 132),
    (1, [(24, 10, 9)], 24, 24, 96, 1, True, "1011", torch.float16, 1),
    (2, [(40, 9, 12)], 33, 17, 40, 2, True, "1111", torch.bfloat16, 132),
    (2, [(48, 11, 13), (192, 3, 4)], 12, 12, 48, 2, True, "1111", torch.float32, 132),
    (3, [(5, 13, 11), (7, 4, 3), (4, 13, 11)], 9, 6, 16, 1, False, "111-", torch.bfloat16, 1),
    (1, [(4, 7, 5), (3, 1, 1)], 5, 5, 7, 2, True, "1111", torch.float16, 132),
    (1, [(6, 5, 9), (4, 11, 20)], 8, 8, 10, 1, False, "111-", torch.float32, 1),
    (2, [(20, 9, 10), (5, 4, 3)], 64, 50, 70, 2, True, "1011", torch.float16, 1),
]


def block_emu_id(case):
    n, specs, c1, c2, c3, stride, projection, biases, dtype, sms = case
    return (f"n{n}-" + "+".join(f"{c}@{h}x{w}" for c, h, w in specs) + f"-{c1}-{c2}-{c3}-s{stride}-"
            f"{'proj' if projection else 'id'}-{biases}-{str(dtype)[6:]}-{sms}sm")


def _block_case(exe, tmp_path, case, seed=0, nan_input=False, cc_major=9):
    """Runs one xception_block case on an emulated GPU of compute capability ``cc_major`` (fp16/bf16 take tensor
    cores from 8 on); with ``nan_input`` one value of the last input is NaN and the output must have NaN exactly where
    the reference has (it spreads through each 3x3 window and every channel, and the zero padding outside the map
    stays zero) and match it elsewhere."""
    n, specs, c1, c2, c3, stride, projection, biases, dtype, sms = case
    gen = torch.Generator().manual_seed(seed)
    c = [sum(ck for ck, _, _ in specs), c1, c2, c3]
    inputs = [_randn(n, ck, h, w, dtype=dtype, gen=gen) for ck, h, w in specs]
    if nan_input:
        inputs[-1][n - 1, specs[-1][0] // 2, specs[-1][1] // 2, specs[-1][2] // 2] = float("nan")
    dws = [_randn(c[i], 1, 3, 3, dtype=dtype, scale=1 / 3, gen=gen) for i in range(3)]
    pws = [_randn(c[i + 1], c[i], 1, 1, dtype=dtype, scale=c[i] ** -0.5, gen=gen) for i in range(3)]
    pbs = [_randn(c[i + 1], dtype=dtype, gen=gen) if biases[i] == "1" else None for i in range(3)]
    sc_w = _randn(c3, c[0], 1, 1, dtype=dtype, scale=c[0] ** -0.5, gen=gen) if projection else None
    sc_b = _randn(c3, dtype=dtype, gen=gen) if biases[3] == "1" else None
    header = [n, len(specs), *(v for spec in specs for v in spec), c1, c2, c3, stride,
              *(b is not None for b in pbs), projection, sc_b is not None]
    arrays = [_nhwc(t) for t in inputs]
    for i in range(3):
        arrays += [dws[i], pws[i]] + ([pbs[i]] if pbs[i] is not None else [])
    arrays += [t for t in (sc_w, sc_b) if t is not None]
    h, w = specs[0][1:]
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    got = _run(exe, tmp_path, "xception_block", dtype, header, arrays, (n, ho, wo, c3), sms=sms, cc_major=cc_major)
    d = lambda t: None if t is None else t.double()  # noqa: E731
    expected = reference.xception_block_cat([t.double() for t in inputs], [d(t) for t in dws], [d(t) for t in pws],
                                            [d(t) for t in pbs], stride, d(sc_w), d(sc_b))
    got = got.permute(0, 3, 1, 2)
    if nan_input:
        assert expected.isnan().any() and not expected.isnan().all() and torch.equal(got.isnan(), expected.isnan())
        got, expected = got.nan_to_num(0.0), expected.nan_to_num(0.0)
    assert torch.isfinite(got).all(), "output has NaN/inf (a value never written?)"
    # The GPU test's tolerances (test_xception_block), for the path the emulated GPU takes.
    tensor_cores = dtype != torch.float32 and cc_major >= 8
    atol, rtol = (CUDA_BLOCK_TENSOR_CORE_TOLERANCES if tensor_cores else CUDA_BLOCK_TOLERANCES)[dtype]
    torch.testing.assert_close(got.double(), expected, atol=atol, rtol=rtol)


@pytest.mark.parametrize("case", BLOCK_EMU_CASES, ids=block_emu_id)
def test_xception_block_emulated(runners, tmp_path, case):
    _block_case(runners["asan"], tmp_path, case)


@pytest.mark.parametrize("case", [
    (2, [(10, 13, 11), (7, 4, 3)], 19, 23, 17, 1, False, "011-", torch.float16, 132),
    (1, [(48, 11, 10)], 48, 48, 192, 2, True, "1111", torch.bfloat16, 1),
], ids=block_emu_id)
def test_xception_block_before_sm80_emulated(runners, tmp_path, case):
    """fp16/bf16 on a GPU without bf16 WMMA take the FMA kernels (fp32 products of the values as loaded)."""
    _block_case(runners["asan"], tmp_path, case, cc_major=7)


@pytest.mark.parametrize("case", [
    (1, [(12, 21, 19)], 12, 12, 12, 1, False, "111-", torch.float32, 1),
    (1, [(8, 29, 27), (4, 7, 5)], 12, 12, 48, 2, True, "1111", torch.float16, 132),
], ids=block_emu_id)
def test_xception_block_keeps_nan_emulated(runners, tmp_path, case):
    """relu(NaN) = NaN at each sep conv's input (fmaxf(NaN, 0) would give 0), the padding outside the map stays 0,
    and a resized source's NaN reaches every output pixel that reads it."""
    _block_case(runners["asan"], tmp_path, case, nan_input=True)


# (N, low maps [(C, H, W)], high maps [(C, H, W)], D, classes, biases, dtype): decoder_head, its output at the first
# low map's size. Maps at the output's size (copied), smaller (a range of source rows a tile: 1 to 14 of them, up to
# 196 set pixels in 4 passes at 1.5x) and more than twice as large (each tile row's two taps); outputs of 13 x 17
# and other sizes not multiples of the 8 x 8 tile, 1 x 1 maps; channels past one 32-channel chunk and not multiples
# of it; D in each of the kernel's three column counts (up to 32, 64, 128 channels), classes past one pass (32 or
# 64 a pass); no high maps; no biases; batches of 1 and 2.
DECODER_EMU_CASES = [
    (2, [(7, 13, 17), (7, 7, 9), (7, 4, 5)], [(11, 3, 4), (11, 2, 2), (11, 1, 1)], 6, 19, True, torch.float32),
    (1, [(5, 9, 13)], [], 3, 2, True, torch.float16),
    (1, [(48, 13, 17), (48, 7, 9), (48, 4, 5)], [(192, 2, 3), (192, 1, 2), (192, 1, 1)], 32, 19, True,
     torch.bfloat16),
    (2, [(4, 8, 8), (4, 16, 16)], [(3, 8, 8), (1, 11, 5)], 13, 21, False, torch.float32),
    (1, [(5, 10, 12), (3, 15, 18), (2, 41, 50)], [(2, 10, 12)], 40, 70, True, torch.float16),
    (1, [(3, 9, 10), (33, 1, 1)], [(5, 4, 4)], 100, 5, False, torch.bfloat16),
    (1, [(70, 10, 12)], [(9, 15, 18), (4, 5, 6)], 70, 33, True, torch.float32),
]


def decoder_emu_id(case):
    n, low, high, d, k, biases, dtype = case
    maps = "+".join(f"{c}@{h}x{w}" for c, h, w in low) + "|" + "+".join(f"{c}@{h}x{w}" for c, h, w in high)
    return f"n{n}-{maps}-d{d}-k{k}-{'bias' if biases else 'nobias'}-{str(dtype)[6:]}"


def _decoder_case(exe, tmp_path, case, seed=0):
    n, low, high, d, k, biases, dtype = case
    args = decoder_args(n, low, high, d, k, device="cpu", dtype=dtype, biases=biases, seed=seed)
    lows, highs, low_w, low_b, fuse_w, fuse_b, high_w, high_b, cls_w, cls_b = args
    maps, weights, map_biases = lows + highs, low_w + high_w, low_b + high_b
    header = [n, d, k, len(lows), len(highs),
              *(v for t, b in zip(maps, map_biases) for v in (*t.shape[1:], b is not None)),
              fuse_b is not None, cls_b is not None]
    arrays = [_nhwc(t) for t in maps] + [t for w, b in zip(weights, map_biases) for t in (w, b) if t is not None]
    arrays += [t for t in (fuse_w, fuse_b, cls_w, cls_b) if t is not None]
    h, w = low[0][1:]
    got = _run(exe, tmp_path, "decoder_head", dtype, header, arrays, (n, h, w, k)).permute(0, 3, 1, 2)
    _close(got, decoder_expected(args), dtype)


@pytest.mark.parametrize("case", DECODER_EMU_CASES, ids=decoder_emu_id)
def test_decoder_head_emulated(runners, tmp_path, case):
    _decoder_case(runners["asan"], tmp_path, case)


@pytest.mark.parametrize("case", [DECODER_EMU_CASES[0], DECODER_EMU_CASES[4]], ids=decoder_emu_id)
def test_decoder_head_int64_indices_emulated(runners, tmp_path, case):
    _decoder_case(runners["asan64"], tmp_path, case)


@pytest.mark.parametrize(
    "op, case",
    [("conv3x3", CONV_CASES[4]), ("dwsep_conv", DWSEP_CASES[2]), ("dwsep_conv", DWSEP_CASES[4]),
     ("dwsep_conv_1sm", DWSEP_TILE_CASES[11][0]), ("dwsep_conv_1sm", DWSEP_TILE_CASES[12][0]),
     ("fc_attention", FC_CASES[0]), ("upsample", UPSAMPLE_CASES[1]), ("xception_block", BLOCK_EMU_CASES[3]),
     ("xception_block", BLOCK_EMU_CASES[15]), ("decoder_head", DECODER_EMU_CASES[4])],
    ids=["conv3x3-2chunks", "dwsep-fma", "dwsep-wmma", "dwsep-fma-192", "dwsep-wmma-192", "fc_attention",
         "upsample_add", "xception_block-8x8", "xception_block-wmma-4x4-cat", "decoder_head"],
)
def test_no_shared_memory_races_emulated(runners, tmp_path, op, case):
    """Under TSan: every shared-memory write and read is ordered by a barrier (the emulator's racecheck). conv3x3
    stages its weights in two chunks (the second overwriting the first). The dwsep_conv cases: the first two take
    4 x 4 pixel tiles, the 192-channel ones 8 x 8, two in a block (the tensor-core epilogue's scratch then reused by
    the next tile's halo). The xception blocks run several tiles per block (y2 in the input halo's place, y1 and the
    GEMM chunks reused), one on the FMA path, one with two sources on tensor cores (each warp's accumulator scratch
    reused tile after tile). The decoder head runs several tiles per block too, each map's tables, A, B and reduced
    map reused map after map, with a set of several passes and a range, a copy and taps."""
    run_case = {"conv3x3": _conv_case, "dwsep_conv": _dwsep_case,
                "dwsep_conv_1sm": lambda *args: _dwsep_case(*args, sms=1), "fc_attention": _fc_case,
                "upsample": _upsample_case, "xception_block": _block_case, "decoder_head": _decoder_case}[op]
    run_case(runners["tsan"], tmp_path, case)
