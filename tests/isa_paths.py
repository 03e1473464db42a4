"""The `every_isa` fixture: runs a test once per instruction-set path of the CPU kernels (avx512, avx2, scalar).

The kernels read DFANET_CPU_ISA at every call, so the paths are switched in-process; a path this CPU (or build)
lacks is skipped, the portable "scalar" path runs everywhere.
"""

import pytest
import torch

from .utils import HAS_CPU_KERNELS

ISAS = ("avx512", "avx2", "scalar")


@pytest.fixture(params=ISAS)
def every_isa(request, monkeypatch):
    if not HAS_CPU_KERNELS:
        pytest.skip("compiled CPU kernels not built")
    monkeypatch.setenv("DFANET_CPU_ISA", request.param)
    try:
        active = torch.ops.dfanet.cpu_isa()
    except RuntimeError as err:
        pytest.skip(f"{request.param}: {err}")
    assert active == request.param
    return request.param
