"""The Triton kernels compile for NVIDIA GPUs (sm_90, sm_80), checked without a GPU.

The interpreter runs the kernels' Python, not Triton's compiler: a kernel can pass every interpreter test and still
fail to compile (types that differ between the branches of a runtime `if`, an unsupported op, too much shared
memory). Triton compiles for a GPU target without a driver (frontend, MLIR passes, LLVM, its bundled ptxas), so
this test does that for every kernel in the configurations the launchers use. It runs in a subprocess because this
process has the kernels decorated for the interpreter. On a GPU machine the real launches in test_triton_ops.py
cover this, so it is skipped there.
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
    import os
    os.environ.pop("TRITON_INTERPRET", None)
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from dfanet_kernels.triton import dwsep_conv as D, fc_attention as F, upsample as U

    SMEM_LIMIT = {90: 227 * 1024, 80: 163 * 1024}  # usable shared memory per block, H100 / A100
    # Runtime flags (bools) and counts of the kernels; every other non-pointer argument is an int32 size/stride.
    BOOLS = {"ACT_IN", "ACT_MID", "ACT_OUT", "HAS_DW_BIAS", "HAS_PW_BIAS", "HAS_RESIDUAL", "SAME0", "SAME1",
             "SAME2", "SAME3", "ACCUMULATE"}

    def compile_(kernel, dtype, constexprs, arch, f32_ptrs=(), num_warps=4, num_stages=3, scales="fp32"):
        fn = kernel.fn if hasattr(kernel, "configs") else kernel  # the JITFunction under an Autotuner
        sig = {}
        for name in fn.arg_names:
            if name in constexprs:
                sig[name] = "constexpr"
            elif name in BOOLS:
                sig[name] = "i1"
            elif name in f32_ptrs:
                sig[name] = "*fp32"
            elif name.endswith("_ptr") or name in ("p0", "p1", "p2", "p3"):  # the upsample's sources
                sig[name] = "*" + dtype
            elif name[:2] in ("fh", "fw"):
                sig[name] = scales
            else:
                sig[name] = "i32"
        k = triton.compile(ASTSource(fn, sig, dict(constexprs)), target=GPUTarget("cuda", arch, 32),
                           options=dict(num_warps=num_warps, num_stages=num_stages))
        assert k.metadata.shared <= SMEM_LIMIT[arch], (fn.__name__, dtype, constexprs, k.metadata.shared)
        return k

    # dwsep_conv (5-7 s per compile here): every dtype on sm_90 with the biggest tiles of any config; on sm_80
    # (less shared memory) fp32, whose dot stages the most in shared memory, and fp16 with the 2-stage config.
    # The dense NHWC path everywhere (the model's), the general-layout path once.
    cases = [(90, dtype, D.CONFIGS[2], 128, 32, True) for dtype in ("fp32", "fp16", "bf16")]
    cases += [(80, "fp32", D.CONFIGS[2], 128, 32, True), (80, "fp16", D.CONFIGS[3], 128, 16, False)]
    for arch, dtype, config, block_co, block_ci, nhwc in cases:
        ce = dict(X_NHWC=nhwc, RES_NHWC=nhwc, IS_FP32=dtype == "fp32", DOT_FP32=False,
                  BLOCK_CO=block_co, BLOCK_CI=block_ci, **config.kwargs)
        k = compile_(D._dwsep_conv_kernel, dtype, ce, arch, num_warps=config.num_warps, num_stages=config.num_stages)
        if dtype != "fp32":
            assert "mma" in k.asm["ptx"], "fp16/bf16 dot must run on tensor cores"
    # The other kernels have nothing architecture- or dtype-specific beyond their loads: sm_90, fp16 (bf16 for
    # the pool), fp32 for the upsample (7 s: four inlined sources; its general-layout path only differs in the
    # offsets, as in the kernels above); its float scales also as fp64, the type Inductor gives Python floats.
    for nhwc in (True, False):
        compile_(F._pool_partial_kernel, "bf16", dict(X_NHWC=nhwc, BLOCK_HW=64, BLOCK_C=64), 90,
                 f32_ptrs=("part_ptr",))
        compile_(F._scale_kernel, "fp16", dict(X_NHWC=nhwc, BLOCK_P=64, BLOCK_C=64), 90, f32_ptrs=("scale_ptr",))
    compile_(F._fc_hidden_kernel, "fp16", dict(HAS_BIAS=True, BLOCK_S=32, BLOCK_K=64, BLOCK_C=128), 90,
             f32_ptrs=("part_ptr", "hidden_ptr"))
    compile_(F._fc_scale_kernel, "fp16", dict(HAS_BIAS=True, BLOCK_C=32, BLOCK_K=128), 90,
             f32_ptrs=("hidden_ptr", "scale_ptr"))
    compile_(U._upsample_kernel, "fp32", dict(SRC_NHWC=True, BLOCK_P=128, BLOCK_C=32), 90)
    compile_(U._upsample_kernel, "fp16", dict(SRC_NHWC=True, BLOCK_P=128, BLOCK_C=32), 90, scales="fp64")
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
