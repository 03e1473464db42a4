"""Where the CUDA toolkit is: for setup.py (which points CUDA_HOME at it) and the GPU-less CUDA checks
(tests/kernels/test_cuda_compile.py, tests/kernels/test_cuda_emulated.py). Standard library only, so setup.py can load
it before torch's build helpers.

torch.utils.cpp_extension takes CUDA_HOME from `which nvcc`'s grandparent when the variable is unset, which is
wrong where nvcc on the PATH is a wrapper script outside the toolkit (e.g. /usr/local/bin/nvcc): the build then
fails on a missing cuda_runtime.h. `home()` checks for the headers instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def _candidates() -> list[Path]:
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc_on_path = shutil.which("nvcc")
    if nvcc_on_path:
        homes.append(str(Path(nvcc_on_path).resolve().parents[1]))
    homes.append("/usr/local/cuda")
    return [Path(h) for h in homes if h]


def home() -> Path | None:
    """The first toolkit root that has the headers: CUDA_HOME, CUDA_PATH, nvcc's, /usr/local/cuda; else None."""
    return next((h for h in _candidates() if (h / "include" / "cuda_runtime.h").exists()), None)


def include_dir() -> Path | None:
    """The toolkit's include directory (cuda_runtime.h, mma.h, ...), or None."""
    found = home()
    return found / "include" if found else None


def nvcc() -> str | None:
    """nvcc on the PATH, else the toolkit's; None if there is none."""
    found = shutil.which("nvcc")
    if found:
        return found
    return next((str(h / "bin" / "nvcc") for h in _candidates() if (h / "bin" / "nvcc").exists()), None)
