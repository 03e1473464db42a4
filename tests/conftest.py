import os

import pytest
import torch

# Without a GPU the Triton kernels can only run under Triton's interpreter; it must be chosen before triton is
# imported. On a GPU machine the kernels run natively and this stays unset.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# On a GPU, tune nothing: the many small test shapes would each be autotuned (bench/gpu_bench.py tunes).
os.environ.setdefault("DFANET_TRITON_AUTOTUNE", "0")

from .utils import HAS_CPU_KERNELS  # noqa: E402  (after TRITON_INTERPRET: utils imports dfanet_kernels)

CPU_ISAS = ("avx512", "avx2", "scalar")


@pytest.fixture(params=CPU_ISAS)
def every_isa(request, monkeypatch):
    """Runs a test once per instruction-set path of the CPU kernels (avx512, avx2, scalar).

    The kernels read DFANET_CPU_ISA at every call, so the paths are switched in-process; a path this CPU (or build)
    lacks is skipped, the portable "scalar" path runs everywhere."""
    if not HAS_CPU_KERNELS:
        pytest.skip("compiled CPU kernels not built")
    monkeypatch.setenv("DFANET_CPU_ISA", request.param)
    try:
        active = torch.ops.dfanet.cpu_isa()
    except RuntimeError as err:
        pytest.skip(f"{request.param}: {err}")
    assert active == request.param
    return request.param
