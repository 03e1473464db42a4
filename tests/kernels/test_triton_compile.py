"""The Triton kernels compile for NVIDIA GPUs (sm_90, sm_80), checked without a GPU.

The interpreter runs the kernels' Python, not Triton's compiler: a kernel can pass every interpreter test and still
fail to compile (types that differ between the branches of a runtime `if`, an unsupported op, too much shared
memory). Triton compiles for a GPU target without a driver (frontend, MLIR passes, LLVM, its bundled ptxas), so
this test does that for every kernel in the configurations the launchers use. It runs in a subprocess because this
process has the kernels decorated for the interpreter. On a GPU machine the real launches (the triton cases of
tests/kernels) cover this, so it is skipped there.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the kernels are compiled and run for real")

SCRIPT = textwrap.dedent(
    """
    import os, re, subprocess, tempfile
    os.environ.pop("TRITON_INTERPRET", None)
    import triton
    import triton.backends.nvidia
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from dfanet_kernels.triton import conv as K, dwsep_conv as D, fc_attention as F, upsample as U, xception_block as X
    from dfanet_kernels.triton._common import TILE_WARPS

    CUOBJDUMP = os.path.join(os.path.dirname(triton.backends.nvidia.__file__), "bin", "cuobjdump")

    def local_memory(k):
        # Bytes of per-thread stack/local memory (register spills) in the compiled kernel, from Triton's cuobjdump.
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(k.asm["cubin"])
            f.flush()
            usage = subprocess.run([CUOBJDUMP, "--dump-resource-usage", f.name], capture_output=True, text=True,
                                   check=True).stdout
        return sum(int(v) for v in re.findall(r"(?:STACK|LOCAL):([0-9]+)", usage))

    SMEM_LIMIT = {90: 227 * 1024, 80: 163 * 1024}  # usable shared memory per block, H100 / A100
    # Runtime flags (bools) and counts of the kernels; every other non-pointer argument is an int32 size/stride.
    BOOLS = {"ACT_IN", "ACT_MID", "ACT_OUT", "HAS_DW_BIAS", "HAS_PW_BIAS", "HAS_RESIDUAL", "SAME", "SAME0", "SAME1",
             "SAME2", "SAME3", "ACCUMULATE", "HAS_PB1", "HAS_PB2", "HAS_PB3", "HAS_SC_BIAS"}

    def compile_(kernel, dtype, constexprs, arch, f32_ptrs=(), num_warps=4, num_stages=3, scales="fp32",
                 aligned=(), spills_allowed=False, out_type=None):
        # Compiles for sm_<arch>. `aligned` names the int arguments Triton sees as multiples of 16 (as it
        # specialises them at launch), and every pointer is then 16-byte aligned; by default nothing is.
        fn = kernel.fn if hasattr(kernel, "configs") else kernel  # the JITFunction under an Autotuner
        sig, attrs = {}, {}
        for i, name in enumerate(fn.arg_names):
            if aligned and (name in aligned or name.endswith("_ptr") or name in ("p0", "p1", "p2", "p3")):
                attrs[(i,)] = [["tt.divisibility", 16]]
            if name in constexprs:
                sig[name] = "constexpr"
            elif name in BOOLS:
                sig[name] = "i1"
            elif name in f32_ptrs:
                sig[name] = "*fp32"
            elif name == "count_ptr":  # fc_attention's counters
                sig[name] = "*i32"
            elif name == "out_ptr" and out_type:  # the labels: *u8 or *i64
                sig[name] = out_type
            elif name.endswith("_ptr") or name in ("p0", "p1", "p2", "p3"):  # the upsample's sources
                sig[name] = "*" + dtype
            elif name[:2] in ("fh", "fw"):
                sig[name] = scales
            else:
                sig[name] = "i32"
        k = triton.compile(ASTSource(fn, sig, dict(constexprs), attrs), target=GPUTarget("cuda", arch, 32),
                           options=dict(num_warps=num_warps, num_stages=num_stages))
        assert k.metadata.shared <= SMEM_LIMIT[arch], (fn.__name__, dtype, constexprs, k.metadata.shared)
        # Spills go to local memory, hundreds of times slower than registers: a 4 KB spill made the upsample of a
        # 19-channel map 30x slower than torch's on an H200.
        spilled = local_memory(k)
        assert spilled == 0 or spills_allowed, (fn.__name__, dtype, constexprs, num_warps, f"{spilled} B local memory")
        return k

    # dwsep_conv (3-7 s per compile here), with DFANet's channel counts as the launcher passes them: not multiples
    # of 16 (C = 24, Cout = 96), so alignment comes only from the C_VEC/CO_VEC hints (4 values for fp32, 8 for
    # fp16/bf16).
    # - Batch 1 at 1024 x 1024, the tiles default_config picks for 24 -> 96 at 128 x 128 (the largest accumulator
    #   of any batch-1 layer), every dtype on sm_90: no spills (4 warps spilled 40 B before it took 8).
    # - The biggest tiles of any config (128 x 128, size class 2: batch >= 4), every dtype on sm_90; on sm_80 (less
    #   shared memory) fp32, whose dot stages the most in shared memory, and fp16 with the 2-stage config. These
    #   run at the 255-register cap and may spill 8-48 B: whether smaller tiles pay off is for a GPU to measure.
    # - The dense NHWC path everywhere (the model's); the general-layout path and 64-bit indices once.
    vec = dict(fp32=4, fp16=8, bf16=8)
    batch1 = D.default_config(128 * 128, 24, 96)
    cases = [(90, dtype, batch1, True, False, False) for dtype in ("fp32", "fp16", "bf16")]
    cases += [(90, dtype, D.default_config(8 * 128 * 128, 24, 96), True, False, True)
              for dtype in ("fp32", "fp16", "bf16")]
    cases += [(80, "fp32", D.default_config(8 * 128 * 128, 24, 96), True, False, True),
              (80, "fp16", triton.Config({**D.CONFIGS[3].kwargs, "BLOCK_CO": 128, "BLOCK_CI": 16},
                                         num_warps=D.CONFIGS[3].num_warps, num_stages=D.CONFIGS[3].num_stages),
               False, True, True)]
    for arch, dtype, config, nhwc, idx64, spills_allowed in cases:
        # As a launch specialises them: the unit strides of contiguous weights and biases are constants, and
        # torch's allocations are 16-byte aligned (no int argument is a multiple of 16 here).
        ce = dict(X_NHWC=nhwc, RES_NHWC=nhwc, IS_FP32=dtype == "fp32", DOT_FP32=False, C_VEC=vec[dtype],
                  CO_VEC=vec[dtype], IDX64=idx64, sdw_w=1, sdw_b=1, spw_i=1, spw_b=1, **config.kwargs)
        k = compile_(D._dwsep_conv_kernel, dtype, ce, arch, num_warps=config.num_warps, num_stages=config.num_stages,
                     aligned=("out_ptr",), spills_allowed=spills_allowed)
        if dtype != "fp32":
            assert "mma" in k.asm["ptx"], "fp16/bf16 dot must run on tensor cores"
    # The other kernels have nothing architecture- or dtype-specific beyond their loads: sm_90, fp16 (bf16 for
    # the pool), fp32 for the upsample (four inlined sources); its general-layout path with 64-bit offsets and
    # float scales as fp64 (the type Inductor gives Python floats) once.
    # Tiles as the launchers choose them, for a channel count the vector accesses cannot use (19: DFANet's
    # classes, the case that spilled) and for 192 with the alignment Triton sees at launch.
    for c, aligned in ((19, ()), (192, ("C", "C_TOTAL", "C_OFF"))):
        block_hw, block_p, block_c = F.tiles(c, 64 * 64)
        for nhwc in (True, False):
            vector = dict(X_NHWC=nhwc, HAS_FC_BIAS=True, HAS_CONV_BIAS=nhwc, BLOCK_HW=block_hw, BLOCK_C=block_c,
                          BLOCK_S=32, BLOCK_K=F._BLOCK_K, SCALE_BLOCK_C=F.channel_block(c, F._SCALE_BLOCK_C),
                          HIDDEN_BLOCK_C=F.channel_block(c, F._MATVEC_BLOCK), SCALE_BLOCK_K=F._MATVEC_BLOCK)
            for vector_dtype in ("bf16", "fp32") if nhwc else ("fp16",):
                compile_(F._attention_vector_kernel, vector_dtype, vector, 90, num_warps=TILE_WARPS, aligned=aligned,
                         f32_ptrs=("part_ptr", "hidden_ptr", "scale_ptr"))
            compile_(F._scale_kernel, "fp16", dict(X_NHWC=nhwc, BLOCK_P=block_p, BLOCK_C=block_c), 90,
                     f32_ptrs=("scale_ptr",), num_warps=TILE_WARPS, aligned=aligned)
        block_w, block_c = U.tiles(c, 1024)
        compile_(U._upsample_kernel, "fp32", dict(SRC_NHWC=True, IDX64=False, BLOCK_W=block_w, BLOCK_C=block_c), 90,
                 num_warps=TILE_WARPS, aligned=aligned)
    compile_(U._upsample_kernel, "fp16", dict(SRC_NHWC=False, IDX64=True, BLOCK_W=block_w, BLOCK_C=block_c), 90,
             num_warps=TILE_WARPS, scales="fp64")
    # The labels at DFANet's 19 classes (one channel tile) and past 256 (a loop of tiles, int64 labels).
    for c, out_type in ((19, "*u8"), (300, "*i64")):
        block_w, block_c = U.tiles(c, 1024)
        compile_(U._upsample_labels_kernel, "fp32", dict(SRC_NHWC=True, IDX64=False, BLOCK_W=block_w,
                                                         BLOCK_C=block_c), 90, num_warps=TILE_WARPS,
                 out_type=out_type)
    compile_(U._upsample_labels_kernel, "bf16", dict(SRC_NHWC=False, IDX64=True, BLOCK_W=block_w, BLOCK_C=block_c),
             80, num_warps=TILE_WARPS, out_type="*u8", scales="fp64")
    # The block kernel (10-20 s per compile here) at DFANet's blocks: the first (8 -> 12, 12, 48, stride 2,
    # projection) in fp32; enc2's concatenation (48 + 192 channels, the second resized) in fp16 on tensor cores; an
    # identity block with the widest mids (192 -> 48, 48, 192) in bf16. Dense NHWC sources, 32-bit indices. All at
    # 254-255 registers; one source of 12 mids spills nothing in fp32, the others 8-40 B, a resized second source
    # (its four taps per depthwise tap) 244 B in fp16 and 704 B in fp32 (Triton 3.9, 2026-12): what that costs, and
    # whether smaller tiles pay off, is for a GPU to measure.
    for dtype, inputs, channels, projection, spills in (("fp32", (8,), (8, 12, 12, 48), True, False),
                                                        ("fp16", (48, 192), (240, 12, 12, 48), True, True),
                                                        ("bf16", (192,), (192, 48, 48, 192), False, True)):
        ce = dict(NUM_SOURCES=len(inputs), PROJECTION=projection, SRC_NHWC=True, IS_FP32=dtype == "fp32",
                  DOT_FP32=False, IDX64=False, **X.tiles(*channels, interpret=False))
        # The channel counts a launch sees as multiples of 16 (the pointers 16-byte aligned): without that the
        # first case spills 416 B.
        counts = dict(zip(("C0", "C1", "C2", "C3"), channels), **{f"CS{i}": c for i, c in enumerate(inputs)})
        k = compile_(X._xception_block_kernel, dtype, ce, 90, f32_ptrs=("scratch_ptr",), num_warps=X._WARPS,
                     num_stages=X._STAGES, aligned=tuple(name for name, c in counts.items() if c % 16 == 0),
                     spills_allowed=spills)
        if dtype != "fp32":
            assert "mma" in k.asm["ptx"], "fp16/bf16 dot must run on tensor cores"
    # The stem (3 -> 8, stride 2, bias + ReLU) on the NCHW image (s_w == 1, specialised as a launch does) in each
    # dtype, at the tiles the launcher picks for a 512-wide output, torch's allocations 16-byte aligned: the 8
    # channels of a pixel must go out in one 16-byte store (fp16/bf16; two in fp32). And a strided input, 13
    # channels (masked lanes) and 64-bit indices once.
    block_w, block_co = K.tiles(8, 512)
    for dtype in ("fp16", "bf16", "fp32"):
        k = compile_(K._conv3x3_kernel, dtype, dict(STRIDE=2, COUT=8, HAS_BIAS=True, RELU=True, IDX64=False,
                                                    BLOCK_W=block_w, BLOCK_CO=block_co, s_w=1), 90,
                     num_warps=TILE_WARPS, aligned=("out_ptr",))
        assert "st.global.v4.b32" in k.asm["ptx"], (dtype, "no 16-byte stores of a pixel's channels")
    # The 64-bit path (inputs past 2**31 elements' reach) spills 104 B at 16-wide channel tiles (the taps' 64-bit
    # offsets; Triton 3.9, 2026-12), none at the stem's 8 channels.
    block_w, block_co = K.tiles(13, 100)
    compile_(K._conv3x3_kernel, "bf16", dict(STRIDE=1, COUT=13, HAS_BIAS=False, RELU=False, IDX64=True,
                                             BLOCK_W=block_w, BLOCK_CO=block_co), 90, num_warps=TILE_WARPS,
             spills_allowed=True)
    compile_(K._conv3x3_kernel, "fp16", dict(STRIDE=2, COUT=8, HAS_BIAS=True, RELU=True, IDX64=True,
                                             BLOCK_W=block_w, BLOCK_CO=8), 90, num_warps=TILE_WARPS)
    print("compiled")
    """
)


def test_every_kernel_compiles_for_sm90_and_sm80():
    triton = pytest.importorskip("triton")
    from triton import backends

    if "nvidia" not in backends.backends:
        pytest.skip(f"Triton {triton.__version__} has no NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0 and "compiled" in result.stdout, result.stderr[-4000:]
