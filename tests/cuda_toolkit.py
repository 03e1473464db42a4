"""Where the CUDA toolkit is, for the GPU-less CUDA checks (test_cuda_compile.py, test_cuda_emulated.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def _homes() -> list[Path]:
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:  # may be a wrapper script outside the toolkit, hence the other candidates
        homes.append(str(Path(nvcc).resolve().parents[1]))
    return [Path(h) for h in homes if h]


def nvcc() -> str | None:
    """nvcc on PATH, else in CUDA_HOME / CUDA_PATH / /usr/local/cuda; None if there is none."""
    found = shutil.which("nvcc")
    if found:
        return found
    return next((str(h / "bin" / "nvcc") for h in _homes() if (h / "bin" / "nvcc").exists()), None)


def include_dir() -> Path | None:
    """The toolkit's include directory (cuda_runtime.h, mma.h, ...), or None."""
    return next((h / "include" for h in _homes() if (h / "include" / "cuda_runtime.h").exists()), None)
