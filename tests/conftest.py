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


def isa_unavailable(isa: str) -> str | None:
    """Why the CPU kernels cannot run instruction-set path ``isa`` here (this CPU or build lacks it), or None.

    Worked out from the best path (no forced ISA) rather than by forcing ``isa`` and catching the error: under the
    AddressSanitizer build (csrc/cpu/sanitize.sh) a C++ exception aborts the process."""
    if not HAS_CPU_KERNELS:
        return "compiled CPU kernels not built"
    before = os.environ.pop("DFANET_CPU_ISA", None)
    try:
        best = torch.ops.dfanet.cpu_isa()
    finally:
        if before is not None:
            os.environ["DFANET_CPU_ISA"] = before
    if CPU_ISAS.index(isa) < CPU_ISAS.index(best):  # CPU_ISAS runs from the widest path to the portable one
        return f"this CPU (or this build) has no {isa} path; the best here is {best}"
    return None


@pytest.fixture(params=CPU_ISAS)
def every_isa(request, monkeypatch):
    """Runs a test once per instruction-set path of the CPU kernels (avx512, avx2, scalar).

    The kernels read DFANET_CPU_ISA at every call, so the paths are switched in-process; a path this CPU (or build)
    lacks is skipped, the portable "scalar" path runs everywhere."""
    reason = isa_unavailable(request.param)
    if reason is not None:
        pytest.skip(f"{request.param}: {reason}")
    monkeypatch.setenv("DFANET_CPU_ISA", request.param)
    assert torch.ops.dfanet.cpu_isa() == request.param
    return request.param


def pytest_terminal_summary(terminalreporter):
    """Which CPU kernel paths this machine could test: an AVX2-only CPU (AMD EPYC) cannot run the AVX-512 path."""
    missing = {isa: isa_unavailable(isa) for isa in CPU_ISAS}
    ran = [isa for isa, reason in missing.items() if reason is None]
    skipped = "; ".join(f"{isa} ({reason})" for isa, reason in missing.items() if reason is not None)
    terminalreporter.write_line(f"CPU kernel paths tested here: {', '.join(ran) or 'none'}"
                                + (f"; not on this machine: {skipped}" if skipped else ""))
