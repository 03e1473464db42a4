"""Builds dfanet_kernels._C: the C++ CPU kernels always, the CUDA kernels where CUDA is available.

_C.abi3.so is a plain shared library of torch ops, not a Python module: it needs libtorch and libc10 only (no
libpython, no libtorch_python), so a C++ program can load it too (examples/cpp). py_limited_api=True is what makes
torch's build helpers leave libtorch_python out; Python loads the library with torch.ops.load_library
(dfanet_kernels/backends.py).

Switches (environment variables):
  DFANET_FORCE_CUDA=1   build the CUDA sources even if torch.cuda reports no device (needs a CUDA torch + nvcc)
  DFANET_SKIP_CUDA=1    never build the CUDA sources
  TORCH_CUDA_ARCH_LIST  CUDA architectures (default "8.0;8.6;8.9;9.0+PTX")
  CUDA_HOME             the CUDA toolkit (default: the first of nvcc's and /usr/local/cuda that has the headers)
  DFANET_DEBUG=1        -O0 -g, for debuggers and sanitizers
  DFANET_SANITIZE=1     build the CPU kernels with AddressSanitizer + UBSan (see csrc/cpu/sanitize.sh)
  MAX_JOBS              parallel compile jobs (ninja)
Build with `pip install --no-build-isolation -e .` so the extension compiles against the torch already installed.
"""

import glob
import importlib.util
import os

from setuptools import setup


def _point_cuda_home_at_toolkit() -> None:
    """Set CUDA_HOME, when unset, to a toolkit that has the headers (dfanet_kernels/cuda_toolkit.py says why);
    before torch's build helpers are imported, as they read it once."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dfanet_kernels", "cuda_toolkit.py")
    spec = importlib.util.spec_from_file_location("cuda_toolkit", path)
    toolkit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toolkit)
    found = toolkit.home()
    if found is not None:
        os.environ["CUDA_HOME"] = str(found)


_point_cuda_home_at_toolkit()

from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _flag(name: str) -> bool:
    return os.environ.get(name, "0") not in ("", "0", "false", "False")


def _want_cuda() -> bool:
    import torch

    if _flag("DFANET_SKIP_CUDA"):
        print("dfanet_kernels: DFANET_SKIP_CUDA=1, not building the CUDA kernels")
        return False
    has_cuda_torch = torch.version.cuda is not None
    if _flag("DFANET_FORCE_CUDA") or _flag("FORCE_CUDA"):
        if not has_cuda_torch or CUDA_HOME is None:
            raise RuntimeError("DFANET_FORCE_CUDA=1 needs a CUDA build of torch and nvcc (CUDA_HOME)")
        return True
    if not has_cuda_torch:
        print("dfanet_kernels: torch is a CPU build, not building the CUDA kernels")
    elif CUDA_HOME is None:
        print("dfanet_kernels: torch has CUDA but nvcc was not found (set CUDA_HOME); building the CPU kernels only")
    return has_cuda_torch and CUDA_HOME is not None


def extensions():
    debug = _flag("DFANET_DEBUG")
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # -fopenmp: at::parallel_for is header code that runs serially unless compiled with OpenMP.
    cxx_flags = opt + ["-std=c++17", "-Wall", "-fopenmp"]
    link_flags = ["-fopenmp"]
    if _flag("DFANET_SANITIZE"):  # run with libasan preloaded: csrc/cpu/sanitize.sh
        sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-g"]
        cxx_flags = [f for f in cxx_flags if not f.startswith("-O")] + ["-O1"] + sanitize
        link_flags += sanitize
    # The CPU kernels' SIMD paths (csrc/cpu/isa_*.cpp) switch their own target with pragmas and are chosen at run
    # time, so no -march flag here: the library runs on any x86-64 (and builds on other architectures).
    sources = ["csrc/ops.cpp", "csrc/autograd.cpp", "csrc/weights_watch.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    if not _want_cuda():
        print(f"dfanet_kernels: building CPU kernels ({len(sources)} sources)")
        return [CppExtension("dfanet_kernels._C", sources, extra_compile_args={"cxx": cxx_flags},
                             extra_link_args=link_flags, py_limited_api=True)]
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;8.6;8.9;9.0+PTX")
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
    print(
        f"dfanet_kernels: building CPU + CUDA kernels ({len(sources)} C++ sources, {len(cuda_sources)} CUDA sources "
        f"and glue) for TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}"
    )
    nvcc_flags = opt + ["-std=c++17", "--expt-relaxed-constexpr", "-lineinfo"]
    return [
        CUDAExtension(
            "dfanet_kernels._C",
            sources + cuda_sources,
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            extra_link_args=link_flags,
            py_limited_api=True,
        )
    ]


setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension},
)
