"""Registers, spills, shared memory and theoretical occupancy of the CUDA and Triton kernels on sm_90, from offline
compiles: no GPU needed (the roofline table's resource columns, ``roofline.py``).

- CUDA (csrc/cuda/*.cu): nvcc compiles each file for sm_90 with the real build's flags (setup.py +
  torch.utils.cpp_extension's defines) and ``--resource-usage``; ptxas reports, per kernel, registers, spill
  stores/loads and static shared memory, and the PTX it keeps gives each kernel's ``__launch_bounds__`` thread count
  (``.maxntid``), the block size of its launches.
- Triton: the Triton backend's launchers run on meta tensors of a recorded forward's shapes with an offline driver
  (target sm_90) and Triton's JIT cache hook, which hands over each launch's exact specialisation (signature,
  constexprs, alignment, warps, stages) instead of compiling and launching it; each distinct one is then compiled
  for sm_90, and its ptxas log (Triton's bundled ptxas) gives the same figures, plus the shared memory it launches
  with.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .report import Column

if TYPE_CHECKING:
    import torch

    from .op_calls import OpCall

ROOT = Path(__file__).resolve().parents[3]
# The real build's nvcc flags: setup.py's, and the defines torch.utils.cpp_extension adds to every nvcc command.
NVCC_FLAGS = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-D__CUDA_NO_HALF_OPERATORS__",
              "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__"]


@dataclass(frozen=True)
class Sm:
    """Per-SM limits of a compute capability (CUDA C Programming Guide, "Technical Specifications per Compute
    Capability"; 9.0: H100/H200)."""

    registers: int = 65536
    smem_bytes: int = 228 * 1024
    reserved_smem_per_block: int = 1024  # the runtime's share of each resident block's shared memory
    threads: int = 2048
    blocks: int = 32
    register_unit: int = 256  # registers are allocated per warp in units of 256


SM90 = Sm()

# Kernel name -> the family of roofline rows it runs (roofline.Kernel.family).
FAMILIES = {"dwsep_conv_fma_kernel": "dwsep_conv", "dwsep_conv_wmma_kernel": "dwsep_conv",
            "upsample_kernel": "upsample", "attention_vector_kernel": "attention_vector",
            "scale_kernel": "attention_scale", "_dwsep_conv_kernel": "dwsep_conv", "_upsample_kernel": "upsample",
            "_attention_vector_kernel": "attention_vector", "_scale_kernel": "attention_scale",
            "xception_block_kernel": "xception_block", "_xception_block_kernel": "xception_block",
            "conv3x3_kernel": "conv3x3", "_conv3x3_kernel": "conv3x3",
            "decoder_head_kernel": "decoder_head", "_decoder_head_kernel": "decoder_head"}
DTYPES = {"__half": "fp16", "__nv_bfloat16": "bf16", "float": "fp32"}


@dataclass(frozen=True)
class KernelResources:
    name: str  # CUDA: demangled, namespaces dropped; Triton: the kernel and its tiles
    source: str  # the .cu file, or "triton"
    family: str
    dtype: str
    registers: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    smem_bytes: int  # CUDA: static shared memory; Triton: static + what it is launched with
    threads: int  # __launch_bounds__
    occupancy: float  # resident threads / the SM's maximum


def occupancy(registers: int, smem_bytes: int, threads: int, sm: Sm = SM90) -> float:
    """Theoretical occupancy: the blocks an SM holds at once (limited by registers, shared memory, threads and
    its block count) x threads / the SM's maximum threads."""
    warps = -(-threads // 32)
    per_warp = -(-registers * 32 // sm.register_unit) * sm.register_unit
    limits = [sm.blocks, sm.threads // (warps * 32)]
    if per_warp:
        limits.append((sm.registers // per_warp) // warps)
    limits.append(sm.smem_bytes // (smem_bytes + sm.reserved_smem_per_block))
    return min(limits) * warps * 32 / sm.threads


_ENTRY = re.compile(r"Compiling entry function '(\S+)' for 'sm_\w+'")
_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:.*?, (\d+) bytes smem)?")
_MAXNTID = re.compile(r"\.entry (\S+)\([^)]*\)\s*\.maxntid (\d+), (\d+), (\d+)", re.S)


def parse_ptxas(text: str) -> dict[str, dict]:
    """ptxas' ``-v`` report -> mangled kernel name -> registers, spill stores/loads, stack and static shared bytes."""
    kernels, current = {}, None
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            current = kernels[m.group(1)] = {"registers": 0, "spill_stores": 0, "spill_loads": 0, "stack_bytes": 0,
                                             "smem_bytes": 0}
        elif current is not None and (m := _SPILLS.search(line)):
            current.update(stack_bytes=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        elif current is not None and (m := _USED.search(line)):
            current.update(registers=int(m.group(1)), smem_bytes=int(m.group(2) or 0))
    return kernels


def parse_launch_bounds(ptx: str) -> dict[str, int]:
    """PTX -> mangled kernel name -> threads per block of its ``.maxntid`` (``__launch_bounds__``)."""
    return {m.group(1): int(m.group(2)) * int(m.group(3)) * int(m.group(4)) for m in _MAXNTID.finditer(ptx)}


def _demangle(names: list[str]) -> list[str]:
    cxxfilt = shutil.which("c++filt")
    if cxxfilt is None:
        return names
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    # "void dfanet::cuda::(anonymous namespace)::scale_kernel<__half, long>(...)" -> "scale_kernel<__half, long>"
    return [re.sub(r"^void |\w+::|\(.*$", "", n.replace("(anonymous namespace)::", "")) for n in out]


def describe(source: str, mangled: dict[str, dict], threads: dict[str, int]) -> list[KernelResources]:
    """One entry per kernel of a compiled file; a kernel without launch bounds is taken as 256 threads."""
    names = list(mangled)
    result = []
    for name, short in zip(names, _demangle(names)):
        base = short.split("<")[0]
        dtype = next((d for t, d in DTYPES.items() if re.search(rf"<{t}\b", short)), "")
        block = threads.get(name, 256)
        usage = mangled[name]
        result.append(KernelResources(short, source, FAMILIES.get(base, base), dtype, threads=block,
                                      occupancy=occupancy(usage["registers"], usage["smem_bytes"], block), **usage))
    return result


def compile_sm90(source: Path, nvcc: str) -> list[KernelResources]:
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([nvcc, "-cubin", "-arch=sm_90", *NVCC_FLAGS, "--resource-usage", "-keep",
                                 "-keep-dir", tmp, str(source), "-o", str(Path(tmp) / "out.cubin")],
                                capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"nvcc failed on {source.name}:\n{result.stderr[-2000:]}")
        ptx = "".join(p.read_text() for p in Path(tmp).glob("*.ptx"))
    return describe(source.name, parse_ptxas(result.stdout + result.stderr), parse_launch_bounds(ptx))


def cuda_resources() -> tuple[list[KernelResources], str | None]:
    """Every kernel of csrc/cuda/*.cu compiled for sm_90, and None; or [] and why not (no nvcc, no sources)."""
    from dfanet_kernels import cuda_toolkit

    nvcc = cuda_toolkit.nvcc()
    sources = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
    if nvcc is None or not sources:
        return [], "nvcc not found (PATH, CUDA_HOME)" if nvcc is None else "no csrc/cuda/*.cu (not a source tree)"
    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        return [k for kernels in pool.map(lambda s: compile_sm90(s, nvcc), sources) for k in kernels], None


def xception_block_launch(n: int, c1: int, c2: int, stride: int, ho: int, wo: int, dtype: str,
                          sms: int = 132) -> tuple[str, int] | None:
    """The CUDA xception_block kernel a block launches on a GPU of ``sms`` SMs, sm_80+ (csrc/cuda/xception_block.cu's
    plan() and layout(), mirrored): its demangled name (storage type, output tile edge, mid-width columns, tensor
    cores: fp16/bf16) and its dynamic shared memory in bytes; None where the glue composes the block instead (mid
    widths past 64)."""
    if max(c1, c2) > 64:
        return None
    edge = 8 if n * -(-ho // 8) * -(-wo // 8) >= sms else 4
    mid_cols = -(-max(c1, c2) // 16)
    out_cols = 3 if mid_cols == 1 else 6
    threads = 256 if edge >= 8 else 128
    m1, m2 = (edge + 4) ** 2, (edge + 2) ** 2
    span, chunk = (edge + 3) * stride + 3, 16 if stride == 1 else 8
    tensor_cores = dtype != "fp32"
    if tensor_cores:  # WmmaGemm: A pixels x 24 and B channels x 24 halves, a 16 x 20 float scratch per warp
        a_floats, b_floats = -(-m1 // 16) * 16 * 12, 16 * out_cols * 12
        scratch = threads // 32 * 16 * 20
    else:  # FmaGemm: A 16 x (pixels + 1) and B 16 x (channels + 1) floats
        rows = threads // 16
        a_floats, b_floats, scratch = 16 * (rows * -(-m1 // rows) + 1), 16 * (16 * out_cols + 1), 0

    def round8(v: int) -> int:
        return (v + 7) // 8 * 8

    y1 = round8(max(span * span * chunk, m2 * c2))
    a = round8(y1 + m1 * c1)
    dw1 = round8(round8(round8(a + a_floats) + b_floats) + scratch)
    floats = dw1 + 16 * 9 + (c1 + c2) * 10
    storage = next(t for t, d in DTYPES.items() if d == dtype)
    return f"xception_block_kernel<{storage}, {edge}, {mid_cols}, {'true' if tensor_cores else 'false'}>", 4 * floats


def conv3x3_launch(x_numel: int, out_numel: int, cout: int, dtype: str) -> str:
    """The CUDA conv3x3 kernel a dense input of ``x_numel`` and output of ``out_numel`` elements launch
    (csrc/cuda/conv.cu's launcher, mirrored): its demangled name (storage type, 32-bit indices below 2**30 elements,
    16-byte stores where Cout is a multiple of 8)."""
    storage = next(t for t, d in DTYPES.items() if d == dtype)
    index = "int" if max(x_numel, out_numel) < 2**30 else "long"
    return f"conv3x3_kernel<{storage}, {index}, {'true' if cout % 8 == 0 else 'false'}>"


def decoder_head_launch(maps: Sequence[tuple[int, int, int, int]], d: int, k: int,
                        dtype: str) -> tuple[str, int] | None:
    """The CUDA decoder_head kernel a call launches (csrc/cuda/decoder.cu's launcher and Layout, mirrored), for maps
    of shape (N, C, H, W), low then high, the output at the first one's size: its demangled name (storage type,
    index width, D in columns of 32) and its dynamic shared memory in bytes; None past the kernel's limit of 128
    decoder channels (the glue refuses those)."""
    import numpy as np

    if d > 128:
        return None
    edge, chunk, max_axis = 8, 32, 16
    n, _, ho, wo = maps[0]
    set_pixels = 0
    for _, _, h, w in maps:
        if (h, w) == (ho, wo):
            set_pixels = max(set_pixels, edge * edge)
            continue
        sizes = []
        for size, out in ((h, ho), (w, wo)):
            span = math.ceil(float(np.float32(size) / np.float32(out)) * (edge - 1)) + 3  # plan_axis
            sizes.append(max_axis if span > max_axis else min(span, size))
        set_pixels = max(set_pixels, sizes[0] * sizes[1])
    cols = 1 if d <= 32 else 2 if d <= 64 else 4
    width = 32 * cols
    tables = 2 * edge * edge + 2 * 2 * max_axis + 2 * edge * 4  # offsets and sources (64-bit), taps
    floats = tables + max(chunk, width) * (edge * edge + 4) + chunk * (width + 1) + set_pixels * width
    index = "int" if all(m[0] * m[1] * m[2] * m[3] < 2**30 for m in maps) and n * k * ho * wo < 2**30 else "long"
    storage = next(t for t, name in DTYPES.items() if name == dtype)
    return f"decoder_head_kernel<{storage}, {index}, {cols}>", 4 * floats


def launched(resources: Sequence[KernelResources], name: str, dtype: str,
             dynamic_smem: int) -> KernelResources | None:
    """The compiled kernel ``name`` at ``dtype`` as one launch runs it: with ``dynamic_smem`` bytes of shared memory
    added, and the occupancy they leave; None if it was not compiled."""
    found = next((r for r in resources if r.name == name and r.dtype == dtype), None)
    if found is None:
        return None
    smem = found.smem_bytes + dynamic_smem
    return replace(found, smem_bytes=smem, occupancy=occupancy(found.registers, smem, found.threads))


def worst(resources: Sequence[KernelResources], family: str, dtype: str) -> KernelResources | None:
    """The family's kernel at ``dtype`` with the most registers (then the most spilled); None if none."""
    candidates = [r for r in resources if r.family == family and r.dtype == dtype]
    return max(candidates, key=lambda r: (r.registers, r.spill_stores + r.spill_loads), default=None)


# ---------------------------------------------------------------------------------------------------------------
# Triton: the launches of the Triton backend, captured without a GPU, compiled for sm_90
# ---------------------------------------------------------------------------------------------------------------
SM90_TARGET = ("cuda", 90, 32)  # triton.backends.compiler.GPUTarget(backend, arch, warp size)


class _OfflineDriver:
    """Triton's driver interface as far as a JIT launch reads it before compiling: the device, a stream, the
    target (sm_90)."""

    def __init__(self, target):
        self.target = target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target


@contextlib.contextmanager
def _capturing_launches(record):
    """Every Triton launch inside becomes ``record(fn, compile)`` (Triton's JIT cache hook: the jit function and the
    specialisation it would compile) instead of a compile and a launch. The launchers run on meta tensors, which
    torch's wrap_triton would not launch at all: their ``launchable`` hands over the raw kernel meanwhile, and the
    shape-chosen tiles replace autotuning (no timings without a GPU)."""
    import torch
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.runtime.driver import driver

    from dfanet_kernels import reference
    from dfanet_kernels.triton import conv, dwsep_conv, fc_attention, upsample, xception_block

    def hook(*, fn, compile, **_):
        record(fn.jit_function, compile)
        return True  # handled: neither compiled nor launched

    reference_conv = reference.conv

    def conv_like_cudnn(*args, **kwargs):
        # cuDNN writes a channels_last input's conv output channels_last (what the block's residual then is); the
        # meta conv does not.
        return reference_conv(*args, **kwargs).contiguous(memory_format=torch.channels_last)

    saved = [(m, name, getattr(m, name)) for m in (conv, dwsep_conv, fc_attention, upsample, xception_block)
             for name in ("launchable", "AUTOTUNE") if hasattr(m, name)] + [(reference, "conv", reference_conv)]
    previous_driver, previous_hook = driver._active, knobs.runtime.jit_cache_hook  # no public getter for either
    try:
        replacements = {"launchable": lambda kernel: kernel, "AUTOTUNE": False, "conv": conv_like_cudnn}
        for module, name, _ in saved:
            setattr(module, name, replacements[name])
        driver.set_active(_OfflineDriver(GPUTarget(*SM90_TARGET)))
        knobs.runtime.jit_cache_hook = hook
        yield
    finally:
        driver._active, knobs.runtime.jit_cache_hook = previous_driver, previous_hook
        for module, name, value in saved:
            setattr(module, name, value)


def _meta(value, dtype: "torch.dtype"):
    """``value`` with every tensor replaced by a meta tensor of its shape and strides at ``dtype``."""
    import torch

    if isinstance(value, torch.Tensor):
        return torch.empty_strided(value.shape, value.stride(), dtype=dtype, device="meta")
    if isinstance(value, (list, tuple)):
        return type(value)(_meta(v, dtype) for v in value)
    return value


def _run_on_triton(call: "OpCall") -> None:
    """The Triton backend's work for one op call (its cuDNN convs run on meta tensors, i.e. not at all)."""
    from dfanet_kernels import dispatch

    args = call.args
    if call.op in ("xception_block", "xception_block_cat"):
        inputs = args[0] if call.op == "xception_block_cat" else [args[0]]
        dispatch.run_block("triton", list(inputs), *args[1:])
    elif call.op == "conv3x3":
        dispatch.run_conv("triton", *args)
    elif call.op == "fc_attention":
        dispatch.run_fc_attention("triton", *args)
    elif call.op in ("upsample_concat", "upsample_add"):
        dispatch.run_upsample("triton", call.op, *args)
    elif call.op == "dwsep_conv":
        dispatch.run_dwsep_conv("triton", *args)


def _variant_name(fn, compile: dict) -> str:
    """The kernel and what its specialisation fixes: tiles and vector widths, the layout flags that are on, the int
    arguments Triton saw as multiples of 16, warps and stages."""
    params, signature = fn.arg_names, compile["signature"]
    constants = {params[i[0]]: v for i, v in compile["constants"].items()}
    parts = [f"{k}={v}" for k, v in constants.items() if k.isupper() and not isinstance(v, bool)]
    parts += [k for k, v in constants.items() if k.isupper() and v is True]
    parts += [f"{params[i[0]]}%16" for i, attrs in compile["configs"][0].items()
              if attrs and not str(signature[params[i[0]]]).startswith("*")]
    return f"{fn.__name__}[{', '.join(parts)}; {compile['num_warps']} warps, {compile['num_stages']} stages]"


def compile_triton_sm90(fn, compile: dict, dtype: str) -> KernelResources:
    """One captured specialisation compiled for sm_90 (never from Triton's cache: its ptxas log is the source)."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    options = {key: compile[key] for key in ("num_warps", "num_stages", "num_ctas", "enable_fp_fusion")}
    log = io.StringIO()
    with knobs.nvidia.scope(), knobs.compilation.scope(), contextlib.redirect_stdout(log):
        knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile = True, True
        kernel = triton.compile(ASTSource(fn, compile["signature"], compile["constants"], compile["configs"][0]),
                                target=GPUTarget(*SM90_TARGET), options=options)
    (usage,) = parse_ptxas(log.getvalue()).values()
    usage["smem_bytes"] += kernel.metadata.shared
    threads = 32 * compile["num_warps"]
    return KernelResources(_variant_name(fn, compile), "triton", FAMILIES.get(fn.__name__, fn.__name__), dtype,
                           threads=threads, occupancy=occupancy(usage["registers"], usage["smem_bytes"], threads),
                           **usage)


def triton_resources(calls: Sequence["OpCall"], dtype: str) -> tuple[list[list[KernelResources]], str | None]:
    """For each op call, the Triton kernels the Triton backend launches for it, in launch order, with their
    resources on sm_90 (each distinct specialisation compiled once: seconds each); and None, or why there are
    none."""
    import torch

    from .gpu import DTYPES
    from .op_calls import OpCall

    try:
        import triton.backends.nvidia  # noqa: F401  (the NVIDIA backend: target, ptxas)
    except ImportError as err:
        return [], f"Triton's NVIDIA backend is not importable: {err}"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return [], "TRITON_INTERPRET=1: the Triton kernels are set up for the interpreter in this process"
    launches: list[list] = []
    with _capturing_launches(lambda fn, compile: launches[-1].append((fn, compile))), torch.no_grad():
        for call in calls:
            launches.append([])
            _run_on_triton(OpCall(call.op, _meta(call.args, DTYPES[dtype])))
    compiled: dict[str, KernelResources] = {}
    per_call = []
    for call_launches in launches:
        per_call.append([])
        for fn, compile in call_launches:
            key = repr((fn.__name__, compile["signature"], compile["constants"], compile["configs"],
                        compile["num_warps"], compile["num_stages"]))
            if key not in compiled:
                compiled[key] = compile_triton_sm90(fn, compile, dtype)
            per_call[-1].append(compiled[key])
    return per_call, None


RESOURCE_TABLE_COLUMNS = [
    Column("kernel", lambda r: f"`{r.name}`", numeric=False), Column("source", lambda r: r.source, numeric=False),
    Column("registers", lambda r: str(r.registers)),
    Column("spill st/ld B", lambda r: f"{r.spill_stores}/{r.spill_loads}"),
    Column("stack B", lambda r: str(r.stack_bytes)), Column("static smem B", lambda r: str(r.smem_bytes)),
    Column("threads", lambda r: str(r.threads)), Column("occupancy", lambda r: f"{r.occupancy:.0%}"),
]
