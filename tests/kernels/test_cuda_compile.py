"""Compile checks of the CUDA backend for machines without a GPU or a CUDA build of torch.

- The kernels (csrc/cuda/*.cu) include CUDA headers only, so nvcc builds them here in seconds, with the flags of the
  real build (setup.py + torch.utils.cpp_extension): C++17, torch's no-implicit-half-conversion defines, sm_80+sm_90;
  ptxas must not spill registers in any kernel.
- The torch glue (csrc/cuda/*_glue.cpp) gets a syntax-only g++ pass against torch's own headers. A CPU wheel ships
  c10/cuda/*.h but not the one header CMake generates for them (c10/cuda/impl/cuda_cmake_macros.h, which only
  defines C10_CUDA_BUILD_SHARED_LIBS), so the test stands that one in; the glue avoids ATen/cuda/CUDAContext.h, which
  would need cuBLAS/cuSPARSE headers. Linking and running are for the GPU (the cuda cases of tests/kernels).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from torch.utils.cpp_extension import include_paths

from dfanet_kernels import cuda_toolkit

ROOT = Path(__file__).resolve().parents[2]
CUDA_SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
GLUE_SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*_glue.cpp"))
NVCC = cuda_toolkit.nvcc()
CUDA_INCLUDE = cuda_toolkit.include_dir()
GXX = shutil.which("g++")

# torch.utils.cpp_extension adds these to every nvcc command: the kernels must not rely on implicit half conversions.
TORCH_NVCC_DEFINES = [
    "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__",
]


def _run_all(commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return list(pool.map(lambda cmd: subprocess.run(cmd, capture_output=True, text=True), commands))


def _failures(sources: list[Path], results: list[subprocess.CompletedProcess]) -> list[str]:
    return [
        f"{src.relative_to(ROOT)} (exit {r.returncode}):\n{r.stderr}"
        for src, r in zip(sources, results)
        if r.returncode
    ]


@pytest.mark.skipif(NVCC is None, reason="nvcc not found (PATH, CUDA_HOME)")
def test_cuda_sources_compile(tmp_path):
    assert CUDA_SOURCES, "no csrc/cuda/*.cu files found"
    commands = [
        [NVCC, "-c", "-std=c++17", *TORCH_NVCC_DEFINES, "--expt-relaxed-constexpr",
         "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90",
         # No kernel may spill registers or use local memory: the tile sizes and launch bounds are chosen so that
         # none does, and a change that makes ptxas spill (a slow kernel that still passes every test) fails here.
         "-Xptxas=-warn-spills,-warn-lmem-usage,-Werror",
         str(src), "-o", str(tmp_path / f"{src.stem}.o")]
        for src in CUDA_SOURCES
    ]
    failures = _failures(CUDA_SOURCES, _run_all(commands))
    assert not failures, "nvcc failed:\n" + "\n".join(failures)


@pytest.mark.skipif(GXX is None or CUDA_INCLUDE is None, reason="needs g++ and the CUDA toolkit headers")
@pytest.mark.skipif(torch.version.cuda is not None, reason="a CUDA torch: setup.py builds the glue for real")
def test_cuda_glue_parses_against_torch_headers(tmp_path):
    assert GLUE_SOURCES, "no csrc/cuda/*_glue.cpp files found"
    torch_include = Path(include_paths()[0])
    if not (torch_include / "c10" / "cuda" / "CUDAGuard.h").exists():
        pytest.skip("this torch ships no c10/cuda headers")
    macros = torch_include / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    if not macros.exists():
        stand_in = tmp_path / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
        stand_in.parent.mkdir(parents=True)
        stand_in.write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    flags = ["-fsyntax-only", "-std=c++17", "-Wall", f"-I{tmp_path}", *(f"-I{p}" for p in include_paths()),
             f"-I{CUDA_INCLUDE}"]
    results = _run_all([[GXX, *flags, str(src)] for src in GLUE_SOURCES])
    failures = _failures(GLUE_SOURCES, results)
    assert not failures, "g++ failed:\n" + "\n".join(failures)
    # torch's headers warn under C++17; ours must not.
    ours = [line for r in results for line in r.stderr.splitlines() if "warning" in line and "csrc/" in line]
    assert not ours, "\n".join(ours)
