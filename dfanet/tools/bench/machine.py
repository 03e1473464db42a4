"""What the numbers were measured on (docs/benchmarking.md, "Name the machine"): one record for CPU and GPU runs."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

# The instruction sets the CPU kernels and the runtimes choose their code paths by (an AVX-512/AMX Xeon and an
# AVX2-only EPYC give different ratios).
ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
             "amx_bf16", "asimd", "sve", "bf16")
PACKAGES = ("onnx", "onnxruntime", "openvino", "triton")


def machine_info(threads: int | None = None, device: torch.device | str = "cpu") -> dict:
    """CPU model and ISA flags, threads, versions, git commit, date and load average (a noise indicator); on a CUDA
    ``device`` also the GPU's name and capability and the TF32 settings."""
    device = torch.device(device)
    cpu, flags = _cpu()
    info = {
        "cpu": cpu,
        "cpu_isa": [f for f in ISA_FLAGS if f in flags],
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "load_average_1m_5m_15m": load_average(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        **{name: _version(name) for name in PACKAGES},
        "dfanet_kernels": _version("dfanet-kernels"),
        "git_commit": _git_commit(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": f"CPU: {cpu}",
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device=torch.cuda.get_device_name(device), capability=f"{props.major}.{props.minor}",
            sms=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1),
            cudnn=torch.backends.cudnn.version(),
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32, matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        )
    return info


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _cpu() -> tuple[str, set[str]]:
    """The CPU's model name and its feature flags, from /proc/cpuinfo where there is one."""
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:  # x86, arm
                    flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
