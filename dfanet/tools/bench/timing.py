"""Timers per device, interleaved rounds and quantiles (the method: docs/benchmarking.md).

Every timer returns milliseconds per call. On the CPU: ``time.perf_counter``. On a GPU: CUDA events with a
synchronisation before and after (the latency of a call, CPU launch cost included), or replays of a CUDA graph (the
GPU time of the kernels without the launch cost); beside them, the profiler's sum of kernel times (``kernel_profile``).
"""

from __future__ import annotations

import gc
import sys
import time
from typing import Callable, Mapping

import numpy as np
import torch

PAUSE_S = 0.05  # before each timed CPU run: lets the previous runtime's spinning worker threads go idle

Timer = Callable[..., float]  # timer(fn, inner=1) -> ms per call of fn, averaged over `inner` back-to-back calls


def cpu_timer(fn: Callable[[], object], inner: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) * 1e3 / inner


def cuda_event_timer(fn: Callable[[], object], inner: int = 1) -> float:
    torch.cuda.synchronize()  # nothing queued earlier may land inside the events
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(inner):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / inner


def timer_for(device: torch.device | str) -> Timer:
    """The wall-clock timer of ``device``: CUDA events on a GPU, perf_counter elsewhere."""
    return cuda_event_timer if torch.device(device).type == "cuda" else cpu_timer


def graph_replay_timer(fn: Callable[[], object], inner: int) -> Callable[[], float]:
    """A callable returning ms per call of ``fn``, replayed from a CUDA graph of ``inner`` back-to-back calls: the GPU
    time of its kernels (and the gaps between them) without the CPU's launch cost, which at batch 1 would otherwise
    hide the kernels (Triton's launch path costs more than many of its kernels). The graph holds its outputs: drop
    the timer when done."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside the graph: compiling, the allocator
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(inner):
            fn()
    return lambda: cuda_event_timer(graph.replay) / inner


def kernel_timer(fn: Callable[[], object], device: torch.device, inner: int) -> Callable[[], float]:
    """ms per call of ``fn`` without launch cost: CUDA-graph replays on a GPU, perf_counter around ``inner`` calls on
    the CPU (where there is no launch cost to remove)."""
    if device.type == "cuda":
        return graph_replay_timer(fn, inner)
    return lambda: cpu_timer(fn, inner)


def kernel_profile(fn: Callable[[], object], calls: int = 3, top: int = 0) -> dict:
    """GPU time of the kernels ``fn`` launches, from torch.profiler (CUPTI): ms and launches per call, and the ``top``
    kernels by time. Beside the CUDA-event time it tells a kernel-bound call (the two agree) from a launch-bound one
    (events well above kernels: the GPU waits for the CPU). Empty without a GPU."""
    if not torch.cuda.is_available():
        return {}
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                fn()
            torch.cuda.synchronize()
        events = prof.events()
    except Exception as err:  # the timings stand without it
        return {"profile_error": f"{type(err).__name__}: {err}"[:200]}
    per_name: dict[str, float] = {}
    launches = 0
    for e in events:
        if e.device_type == DeviceType.CUDA:
            per_name[e.name] = per_name.get(e.name, 0.0) + e.time_range.elapsed_us() / 1e3 / calls
            launches += 1
    result = {"kernel_ms": sum(per_name.values()), "launches": launches / calls}
    if top:
        ranked = sorted(per_name.items(), key=lambda kv: -kv[1])[:top]
        result["top_kernels"] = [{"name": name[:120], "ms": ms} for name, ms in ranked]
    return result


def interleaved(
    measures: Mapping[str, Callable[[], float]],
    rounds: int,
    warmup: int = 0,
    pause_s: float = 0.0,
    progress: bool = False,
    desc: str = "rounds",
) -> dict[str, list[float]]:
    """name -> what each of ``rounds`` rounds measured: every measure (a callable returning a time) once a round.

    The order is rotated every round, so no candidate always runs first or always after the same one, and drift
    (clocks, temperature, other load) spreads over all alike. ``warmup`` untimed rounds come first. ``pause_s`` is
    slept before every call, outside the timing, so the previous runtime's threads go idle.
    """
    if rounds < 1:
        raise ValueError(f"rounds: expected >= 1, got {rounds}")
    names = list(measures)
    for _ in range(warmup):
        for name in names:
            time.sleep(pause_s)
            measures[name]()
    gc.collect()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in _progress(range(rounds if names else 0), progress, desc):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            time.sleep(pause_s)
            times[name].append(measures[name]())
    return times


def _progress(rounds: range, show: bool, desc: str):
    if not show:
        return rounds
    from tqdm.auto import tqdm  # only for a bar: the GPU machines need not have tqdm

    return tqdm(rounds, desc=desc, file=sys.stderr, leave=False, disable=None)  # None: on a terminal only


def quantiles(values, qs=(20, 50, 80)) -> tuple[float, ...]:
    """Percentiles (linear interpolation) of ``values``."""
    return tuple(float(v) for v in np.percentile(np.asarray(values, dtype=float), qs))


def summary_ms(times_ms) -> dict:
    """The report's entry for a list of ms: p20, median, p80 and how many there were."""
    p20, median, p80 = quantiles(times_ms)
    return {"p20_ms": p20, "median_ms": median, "p80_ms": p80, "n": len(times_ms)}
