"""Registers, spills, shared memory and theoretical occupancy of the CUDA kernels (csrc/cuda/*.cu) on sm_90, from an
offline nvcc compile: no GPU needed (the roofline table's resource columns, ``roofline.py``).

nvcc compiles each file for sm_90 with the real build's flags (setup.py + torch.utils.cpp_extension's defines) and
``--resource-usage``; ptxas reports, per kernel, registers, spill stores/loads and static shared memory, and the PTX
it keeps gives each kernel's ``__launch_bounds__`` thread count (``.maxntid``), the block size of its launches.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .report import Column

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
            "upsample_kernel": "upsample", "pool_partial_kernel": "attention_pool", "matvec_kernel": "attention_fc",
            "scale_kernel": "attention_scale"}
DTYPES = {"__half": "fp16", "__nv_bfloat16": "bf16", "float": "fp32"}


@dataclass(frozen=True)
class KernelResources:
    name: str  # demangled, namespaces dropped
    source: str
    family: str
    dtype: str
    registers: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    smem_bytes: int  # static shared memory
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


_ENTRY = re.compile(r"Compiling entry function '(\S+)' for 'sm_\d+'")
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


def worst(resources: list[KernelResources], family: str, dtype: str) -> dict | None:
    """The family's kernel at ``dtype`` with the most registers (then the most spilled), as a dict; None if none."""
    candidates = [r for r in resources if r.family == family and r.dtype == dtype]
    if not candidates:
        return None
    top = max(candidates, key=lambda r: (r.registers, r.spill_stores + r.spill_loads))
    return {key: getattr(top, key) for key in ("name", "registers", "spill_stores", "spill_loads", "smem_bytes",
                                                "threads", "occupancy")}


RESOURCE_TABLE_COLUMNS = [
    Column("kernel", lambda r: f"`{r.name}`", numeric=False), Column("file", lambda r: r.source, numeric=False),
    Column("registers", lambda r: str(r.registers)),
    Column("spill st/ld B", lambda r: f"{r.spill_stores}/{r.spill_loads}"),
    Column("stack B", lambda r: str(r.stack_bytes)), Column("static smem B", lambda r: str(r.smem_bytes)),
    Column("threads", lambda r: str(r.threads)), Column("occupancy", lambda r: f"{r.occupancy:.0%}"),
]
