"""Compile-only check of the CUDA kernels (csrc/cuda/*.cu), for machines without a GPU or a CUDA build of torch.

The .cu files include CUDA headers only, so nvcc builds them here in seconds. The flags follow the real build
(setup.py + torch.utils.cpp_extension): C++17, torch's no-implicit-half-conversion defines, sm_80 and sm_90.
Running the kernels is tests/test_cuda_ops.py's job, on a GPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CUDA_SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))

# torch.utils.cpp_extension adds these to every nvcc command: the kernels must not rely on implicit half conversions.
TORCH_NVCC_DEFINES = [
    "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__",
]


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidate = Path(cuda_home, "bin", "nvcc") if cuda_home else None
    return str(candidate) if candidate and candidate.exists() else None


NVCC = _nvcc()


def _compile(source: Path, out_dir: Path) -> subprocess.CompletedProcess:
    cmd = [
        NVCC, "-c", "-std=c++17", *TORCH_NVCC_DEFINES, "--expt-relaxed-constexpr",
        "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90",
        str(source), "-o", str(out_dir / f"{source.stem}.o"),
    ]
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.mark.skipif(NVCC is None, reason="nvcc not found (PATH, CUDA_HOME)")
def test_cuda_sources_compile(tmp_path):
    assert CUDA_SOURCES, "no csrc/cuda/*.cu files found"
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        results = list(pool.map(lambda s: _compile(s, tmp_path), CUDA_SOURCES))
    failures = [
        f"{src.relative_to(ROOT)} (exit {r.returncode}):\n{r.stderr}"
        for src, r in zip(CUDA_SOURCES, results)
        if r.returncode
    ]
    assert not failures, "nvcc failed:\n" + "\n".join(failures)
