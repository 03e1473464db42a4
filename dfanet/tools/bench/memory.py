"""Peak memory of one call, the figure beside a whole-model time in the CPU and the GPU comparisons (method:
docs/benchmarking.md): :func:`peak_call_mib` on either device, and :func:`memory_method`, the sentence a report
prints beside the figures."""

from __future__ import annotations

from typing import Any, Callable

import torch

CPU_MEMORY_METHOD = (
    "peak of live bytes allocated through torch's CPU allocator during one warm forward (torch.profiler "
    "profile_memory; allocation and free events summed in time order), output included, weights and input "
    "excluded. Not counted: memory allocated outside torch's allocator (oneDNN/OpenMP internals, per-thread C++ "
    "scratch rows of the fused kernels). Not available for ONNX Runtime and OpenVINO (their own allocators)."
)
CUDA_MEMORY_METHOD = (
    "peak of bytes allocated through torch's CUDA caching allocator during one synchronised warm call "
    "(torch.cuda.reset_peak_memory_stats, then max_memory_allocated), above what was allocated before it (weights, "
    "input, a CUDA graph's pool, compiled code's constants): output included. Not counted: memory torch's "
    "allocator does not hand out (the CUDA context, kernel code, libraries' own workspaces). A CUDA-graph replay "
    "allocates nothing, as the graph holds the pool its capture sized to one call's peak: its row reads about 0, "
    "and the same call's row without the graph gives the memory the graph holds."
)


def memory_method(device: torch.device | str) -> str:
    """How :func:`peak_call_mib` measures on ``device``, for a report."""
    return CUDA_MEMORY_METHOD if torch.device(device).type == "cuda" else CPU_MEMORY_METHOD


def peak_call_mib(run: Callable[[], Any], device: torch.device | str = "cpu") -> float:
    """Peak MiB that one call of ``run`` allocates through torch on ``device`` (see :func:`memory_method`)."""
    device = torch.device(device)
    return _peak_cuda_mib(run, device) if device.type == "cuda" else _peak_cpu_mib(run)


def _peak_cuda_mib(run: Callable[[], Any], device: torch.device) -> float:
    torch.cuda.synchronize(device)  # nothing queued earlier may free or allocate inside the window
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    out = run()  # held until the peak is read: the output counts, as on the CPU
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del out
    return peak / 2**20


def _peak_cpu_mib(run: Callable[[], Any]) -> float:
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    allocations = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        if event.tag == _EventType.Allocation:
            allocations.append((event.start_time_ns, event.extra_fields.alloc_size))  # negative for a free
        stack.extend(event.children)
    live = peak = 0
    for _, size in sorted(allocations):
        live += size
        peak = max(peak, live)
    return peak / 2**20
