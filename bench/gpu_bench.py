#!/usr/bin/env python
"""GPU benchmark: DFANet on the Triton backend against the unfused model, and each Triton op against torch.

Run by bench/gpu_check.sh on a GPU machine (no network needed); ``--dry-run`` runs a tiny version on the CPU
(Triton under its interpreter) to catch errors before a GPU session.

Whole model (DFANet A by default; one set of random weights with randomised BatchNorm for every candidate):
  eager_nchw       DFANet(fused=False), NCHW input                      (cuDNN; fp32 convs use TF32 by default)
  eager_cl         the same model and input in channels_last
  compile          torch.compile(eager model, mode=--compile-mode), compile time reported as setup
  fused_triton     DFANet(fused=True, backend="triton")                 (Triton kernels, autotuned on first call)
  fused_triton_graph   the same, replayed from a CUDA graph (dfanet.cuda_graph.capture)
  fused_cuda[_graph]   backend="cuda" (the C++/CUDA kernels) where they are built
Cases: --sizes x --batches x --dtypes, batch 1 first. Each candidate's first output is checked against eager_nchw
(max |out - eager| / max |eager|, and argmax agreement); a mismatch is reported and not timed.

Per op (at the model's shapes for each case): the Triton op vs the torch sequence it replaces (the reference
implementation: F.relu, depthwise conv2d, 1x1 conv2d, add; mean, linear, linear, relu, mul; F.interpolate + cat /
add), both called through dfanet_kernels' public functions on channels_last inputs, plus the CUDA backend where
built.

Per layer (batch 1): every distinct op call one fused forward makes (recorded with a dispatch mode, with the
model's own activations as inputs), on the same implementations, timed as CUDA-graph replays: the GPU time of the
kernels, the measure for "is the CUDA kernel as fast as the Triton one at every layer", which event times at batch
1 cannot answer because the CPU's launch cost hides the kernels.

Timing: CUDA events. Model: each call synchronised (the latency of one forward, CPU launch overhead included),
candidates interleaved in rounds with a rotating order, medians and p20/p80 after warm-up. Ops: events around
--op-inner back-to-back calls, median over rounds; the op reference is computed without TF32 (the torch timing
keeps cuDNN's default). Ratios are "candidate / fused_triton" (model), "torch / triton" and "cuda / triton" (ops).
Beside each time, the GPU time of the kernels it launched (torch.profiler, 3 calls): where events >> kernels the
call is launch-bound (the GPU waits for the CPU); for the fused models, the heaviest kernels.

Time budget (--budget-s): cases run in priority order and a case that would start after the budget is recorded
as skipped, so a short GPU session always ends with a report. Output: gpu_bench.json and gpu_bench.md in --out
(default $OUT, else bench/results).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import functools
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# max |out - eager| / max |eager| accepted. fp32: eager's cuDNN convs run in TF32 (10-bit mantissa) by default while
# the fused paths use full fp32, so 1e-2 of the logit scale; fp16/bf16 round every layer's output.
TOLERANCE = {"fp32": 1e-2, "fp16": 5e-2, "bf16": 2e-1}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "bench" / "results"),
                   help="output folder for gpu_bench.json / .md (default: $OUT, else bench/results)")
    p.add_argument("--variant", default="A", help="DFANet variant (A, B, A')")
    p.add_argument("--sizes", default="1024x1024,512x1024", help="comma-separated HxW input sizes")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    p.add_argument("--dtypes", default="fp32,fp16", help=f"comma-separated, of {sorted(DTYPES)}")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls per candidate before the rounds")
    p.add_argument("--rounds", type=int, default=30, help="timed rounds (every candidate once per round)")
    p.add_argument("--op-rounds", type=int, default=15, help="timed rounds per op")
    p.add_argument("--op-inner", type=int, default=20, help="back-to-back calls timed together per op round")
    p.add_argument("--compile-mode", default="reduce-overhead",
                   choices=["reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "default", "none"],
                   help="torch.compile mode of the 'compile' baseline ('none' skips it)")
    p.add_argument("--budget-s", type=float, default=300.0,
                   help="no new case starts after this many seconds (partial results are still written)")
    p.add_argument("--autotune", action="store_true",
                   help="autotune the Triton dwsep_conv tiles (DFANET_TRITON_AUTOTUNE=1): minutes of compiling on a "
                        "cold Triton cache; by default the tiles follow from the shape")
    p.add_argument("--skip-ops", action="store_true", help="no per-op comparison")
    p.add_argument("--skip-model", action="store_true", help="no whole-model comparison")
    p.add_argument("--skip-layers", action="store_true",
                   help="no per-layer table (every distinct op call of one forward, GPU time from CUDA graphs)")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU smoke test: Triton interpreter, 32x32, batch 1, fp32, 1 round (unless overridden)")
    args = p.parse_args(argv)
    if args.dry_run:
        defaults = {"sizes": "1024x1024,512x1024", "batches": "1,8", "dtypes": "fp32,fp16"}
        overrides = {"sizes": "32x32", "batches": "1", "dtypes": "fp32"}
        for key, value in overrides.items():
            if getattr(args, key) == defaults[key]:
                setattr(args, key, value)
        args.warmup, args.rounds, args.op_rounds, args.op_inner = 0, 1, 1, 1
    args.sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]
    args.batches = [int(b) for b in args.batches.split(",")]
    args.dtypes = args.dtypes.split(",")
    for d in args.dtypes:
        if d not in DTYPES:
            p.error(f"--dtypes: unknown {d!r}, expected some of {sorted(DTYPES)}")
    return args


def log(message: str) -> None:
    print(f"[gpu_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------------
class Timer:
    """Milliseconds of ``fn`` (``inner`` calls): CUDA events on a GPU, perf_counter on the CPU (dry run)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn, inner: int = 1) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / inner
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - t0) * 1e3 / inner


def interleaved(timers: dict, rounds: int) -> dict[str, list[float]]:
    """name -> the ms each of ``rounds`` rounds measured, every timer (a callable returning ms) once a round, in
    a rotating order: drift (clocks, temperature, other load) spreads over all candidates alike."""
    names, times = list(timers), {name: [] for name in timers}
    for r in range(rounds if names else 0):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(timers[name]())
    return times


def quantiles(values: list[float]) -> dict:
    t = torch.tensor(values, dtype=torch.float64)
    q = torch.quantile(t, torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)).tolist()
    return {"p20_ms": q[0], "median_ms": q[1], "p80_ms": q[2], "n": len(values)}


def kernel_profile(fn, calls: int = 3, top: int = 0) -> dict:
    """GPU time of the kernels ``fn`` launches, from torch.profiler (CUPTI): ms and launches per call, and the
    ``top`` kernels by time. Beside the CUDA-event time it tells a kernel-bound call (the two agree) from a
    launch-bound one (events well above kernels: the GPU waits for the CPU). Empty without a GPU."""
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


@contextlib.contextmanager
def exact_fp32():
    """cuDNN convolutions in full fp32 (TF32 is their default): the reference an fp32 kernel is checked against."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def compare(out: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """(max |out - expected| / max |expected|, fraction of pixels with the same argmax over channels)."""
    out, expected = out.float(), expected.float()
    if not torch.isfinite(out).all():
        return float("inf"), 0.0
    rel = ((out - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()
    agree = (out.argmax(1) == expected.argmax(1)).float().mean().item() if out.dim() == 4 else 1.0
    return rel, agree


# ---------------------------------------------------------------------------------------------------------------
# Whole model
# ---------------------------------------------------------------------------------------------------------------
def build_candidates(args, device, dtype_name, x, budget_left) -> tuple[dict, dict]:
    """name -> (callable, setup seconds), and name -> reason for those that could not be built."""
    import dfanet_kernels as dk
    from dfanet import DFANet
    from dfanet.testing import randomize_batchnorm

    dtype = DTYPES[dtype_name]
    torch.manual_seed(0)
    base = DFANet(num_classes=19, variant=args.variant, fused=False)
    randomize_batchnorm(base)
    base.eval().to(device, dtype)
    candidates, skipped = {}, {}

    def add(name, make):
        t0 = time.perf_counter()
        try:
            fn = make()
        except Exception as err:  # reported in the results; the other candidates still run
            skipped[name] = f"error while building: {type(err).__name__}: {err}".splitlines()[0][:300]
            log(f"  {name}: {skipped[name]}\n{traceback.format_exc(limit=3)}")
            return
        candidates[name] = (fn, time.perf_counter() - t0)

    add("eager_nchw", lambda: (lambda: base(x)))
    base_cl = copy.deepcopy(base).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    add("eager_cl", lambda: (lambda: base_cl(x_cl)))

    if args.compile_mode == "none":
        skipped["compile"] = "--compile-mode none"
    elif device.type != "cuda":
        skipped["compile"] = "not run in the CPU dry run (compiling DFANet takes minutes on a CPU)"
    elif budget_left() < 120:
        skipped["compile"] = f"time budget: {budget_left():.0f} s left, compiling DFANet takes ~1 min"
    else:
        def make_compiled():
            torch._dynamo.reset()  # a fresh compile per case: no recompile limits, no automatic dynamic shapes
            mode = None if args.compile_mode == "default" else args.compile_mode
            compiled = torch.compile(copy.deepcopy(base), mode=mode, dynamic=False)
            with torch.no_grad():
                compiled(x)  # compile time counts as setup
            return lambda: compiled(x)

        add("compile", make_compiled)

    backends = ["triton"] + (["cuda"] if "cuda" in dk.available_backends(device) else [])
    if device.type != "cuda":
        backends = [b for b in ("triton", "cpu") if b in dk.available_backends(device)]
    for backend in backends:
        def make_fused(backend=backend):
            fused = DFANet(num_classes=19, variant=args.variant, fused=True, backend=backend)
            fused.load_state_dict(base.state_dict())
            fused.eval().to(device, dtype)
            with torch.no_grad():
                fused(x)  # folds BN and, for Triton, autotunes every kernel shape: setup
            return fused

        t0 = time.perf_counter()
        try:
            fused = make_fused()
        except Exception as err:
            skipped[f"fused_{backend}"] = f"error while building: {type(err).__name__}: {err}".splitlines()[0][:300]
            log(f"  fused_{backend}: {skipped[f'fused_{backend}']}\n{traceback.format_exc(limit=3)}")
            continue
        candidates[f"fused_{backend}"] = ((lambda fused=fused: fused(x)), time.perf_counter() - t0)
        if device.type == "cuda":
            from dfanet.cuda_graph import capture

            def make_graph(fused=fused):
                replay = capture(fused, x)
                return lambda: replay(x)

            add(f"fused_{backend}_graph", make_graph)
    return candidates, skipped


@torch.no_grad()
def run_model_case(args, device, size, batch, dtype_name, budget_left) -> dict:
    h, w = size
    x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(1)).to(device, DTYPES[dtype_name])
    candidates, skipped = build_candidates(args, device, dtype_name, x, budget_left)
    timer = Timer(device)
    results = {name: {"status": "skipped", "reason": reason} for name, reason in skipped.items()}
    if "eager_nchw" not in candidates:
        return {"size": [h, w], "batch": batch, "dtype": dtype_name, "candidates": results}
    expected = candidates["eager_nchw"][0]().float().clone()
    timed = {}
    for name, (fn, setup_s) in candidates.items():
        out = fn()
        out = out.float().clone() if isinstance(out, torch.Tensor) else out
        rel, agree = compare(out, expected)
        entry = {"setup_s": round(setup_s, 3), "rel_err": rel, "argmax_agreement": agree}
        if not rel <= TOLERANCE[dtype_name]:
            entry.update(status="mismatch", reason=f"rel_err {rel:.3g} > {TOLERANCE[dtype_name]:g}: not timed")
            log(f"  {name}: MISMATCH rel_err={rel:.3g}")
        else:
            entry["status"] = "ok"
            timed[name] = fn
            for _ in range(args.warmup):
                fn()
        results[name] = entry
    names = list(timed)
    times = interleaved({name: functools.partial(timer, fn) for name, fn in timed.items()}, args.rounds)
    for name in names:
        results[name].update(quantiles(times[name]))
        results[name].update(kernel_profile(timed[name], top=8 if name.startswith("fused") else 0))
    if "fused_triton" in timed:
        ref = results["fused_triton"]["median_ms"]
        for name in names:
            results[name]["ratio_to_fused_triton"] = results[name]["median_ms"] / ref
    del candidates, timed
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"size": [h, w], "batch": batch, "dtype": dtype_name, "candidates": results}


# ---------------------------------------------------------------------------------------------------------------
# Per op
# ---------------------------------------------------------------------------------------------------------------
def op_cases(variant: str, batch: int, height: int, width: int, dtype, device):
    """name -> (shape description, fn(backend)) for the op calls of DFANet at this input (shapes as in the model)."""
    import dfanet_kernels as dk
    from dfanet.variants import feature_map_sizes, get_variant

    spec = get_variant(variant)
    c2, c3, c4 = spec.stage_channels
    (w2, _), _, (w4, _) = spec.stages
    d, k, n = spec.decoder_channels, spec.attention_hidden, batch
    sizes = feature_map_sizes(height, width)
    s2, s4, s5, s6 = sizes[2], sizes[4], sizes[5], sizes[6]  # 1/4 ... 1/64 of the input
    g = torch.Generator().manual_seed(0)

    def t(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g)).to(device, dtype).contiguous(
            memory_format=torch.channels_last if len(shape) == 4 else torch.contiguous_format)

    def dwsep(cin, cout, size, stride, residual):
        x = t(n, cin, *size)
        dw = t(cin, 1, 3, 3, scale=1 / 3)
        pw = t(cout, cin, 1, 1, scale=cin ** -0.5)
        pb = t(cout, scale=0.1)
        out = tuple(dk.conv_output_size(s, stride) for s in size)
        res = t(n, cout, *out) if residual else None
        desc = f"{cin}->{cout} ch, {size[0]}x{size[1]}, stride {stride}" + (", +residual" if residual else "")
        return desc, lambda b: dk.dwsep_conv(x, dw, None, pw, pb, stride, act_in=True, residual=res, backend=b)

    cases = {
        "dwsep_enc2_residual": dwsep(w2[1], w2[2], s2, 1, True),
        "dwsep_enc2_first_strided": dwsep(c2 + c4, w2[0], s2, 2, False),
        "dwsep_enc4_residual": dwsep(w4[1], w4[2], s4, 1, True),
    }
    xa = t(n, c4, *s4)
    fw, fb, cw, cb = t(k, c4, scale=c4 ** -0.5), t(k, scale=0.1), t(c4, k, 1, 1, scale=k ** -0.5), t(c4)
    cases["fc_attention_enc4"] = (f"{c4} ch, {s4[0]}x{s4[1]}, K={k}",
                                  lambda b: dk.fc_attention(xa, fw, fb, cw, cb, backend=b))
    cat = [t(n, c2, *s2), t(n, c4, *s4)]
    cases["upsample_concat_enc2"] = (f"{c2}@{s2[0]}x{s2[1]} + {c4}@{s4[0]}x{s4[1]} -> {s2[0]}x{s2[1]}",
                                     lambda b: dk.upsample_concat(cat, s2, backend=b))
    add = [t(n, d, *s2)] + [t(n, d, *s) for s in (s4, s5, s6)]
    cases["upsample_add_decoder"] = (f"4 x {d} ch -> {s2[0]}x{s2[1]}", lambda b: dk.upsample_add(add, s2, backend=b))
    logits = [t(n, 19, *s2)]
    cases["upsample_add_output"] = (f"19 ch {s2[0]}x{s2[1]} -> {height}x{width}",
                                    lambda b: dk.upsample_add(logits, (height, width), backend=b))
    return cases


def op_impls(device) -> list[str]:
    """The implementations an op is timed with: Triton, the torch sequence it replaces, CUDA where built."""
    import dfanet_kernels as dk

    return ["triton", "reference"] + (["cuda"] if device.type == "cuda" and "cuda" in dk.available_backends(device)
                                      else [])


def check_impls(fn, impls: list[str], dtype_name: str) -> tuple[dict, list[str]]:
    """Each implementation's first output (compiling / autotuning) against the torch sequence without TF32:
    impl -> {status, rel_err or reason}, and the implementations that matched (the ones to time)."""
    with exact_fp32():
        expected = fn("reference").float()
    results, usable = {}, []
    for impl in impls:
        try:
            rel, _ = compare(fn(impl), expected)
        except Exception as err:
            results[impl] = {"status": "error", "reason": f"{type(err).__name__}: {err}"[:300]}
            continue
        tolerance = 1e-4 if dtype_name == "fp32" else 2e-2
        if impl == "reference" and dtype_name == "fp32":  # the torch sequence keeps cuDNN's TF32 default
            tolerance = TOLERANCE["fp32"]
        ok = rel <= tolerance
        results[impl] = {"status": "ok" if ok else "mismatch", "rel_err": rel}
        if ok:
            usable.append(impl)
    return results, usable


@torch.no_grad()
def run_op_case(args, device, size, batch, dtype_name) -> list[dict]:
    dtype = DTYPES[dtype_name]
    impls = op_impls(device)
    timer = Timer(device)
    rows = []
    for name, (desc, fn) in op_cases(args.variant, batch, *size, dtype, device).items():
        row = {"op": name, "shapes": desc, "size": list(size), "batch": batch, "dtype": dtype_name}
        row["impls"], usable = check_impls(fn, impls, dtype_name)
        times = interleaved({impl: functools.partial(timer, functools.partial(fn, impl), args.op_inner)
                             for impl in usable}, args.op_rounds)
        for impl in usable:
            row["impls"][impl].update(quantiles(times[impl]))
            row["impls"][impl].update(kernel_profile(lambda: fn(impl)))
        if "triton" in usable and "cuda" in usable:
            row["cuda_over_triton"] = row["impls"]["cuda"]["median_ms"] / row["impls"]["triton"]["median_ms"]
        if "triton" in usable and "reference" in usable:
            row["torch_over_triton"] = row["impls"]["reference"]["median_ms"] / row["impls"]["triton"]["median_ms"]
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Per layer: every distinct op call of one fused forward
# ---------------------------------------------------------------------------------------------------------------
def record_op_calls(model, x) -> list[tuple[str, tuple]]:
    """(op, arguments) of every dfanet op one forward of ``model`` calls, in order; op without its backend suffix.
    A dispatch mode sees the Triton ops too: their plain eager shortcut steps aside while one is active."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.namespace == "dfanet":
                self.calls.append((func._opname.removesuffix("_triton"), args))
            return func(*args, **(kwargs or {}))

    with Recorder() as recorder:
        model(x)
    return recorder.calls


def _signature(value):
    """What makes two calls the same layer: shapes, strides and dtypes of the tensors, and every other argument."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape), value.stride(), value.dtype
    if isinstance(value, (list, tuple)):
        return tuple(_signature(v) for v in value)
    return value


def describe_call(op: str, args: tuple) -> str:
    """The layer in the words of the op rows: channels, map size, stride."""
    if op == "dwsep_conv":
        x, pw_weight, stride, residual = args[0], args[3], args[5], args[9]
        return (f"{x.shape[1]}->{pw_weight.shape[0]} ch, {x.shape[2]}x{x.shape[3]}, stride {stride}"
                + (", +residual" if residual is not None else ""))
    if op == "fc_attention":
        x, fc_weight = args[0], args[1]
        return f"{x.shape[1]} ch, {x.shape[2]}x{x.shape[3]}, K={fc_weight.shape[0]}"
    inputs, size = args
    return " + ".join(f"{t.shape[1]}@{t.shape[2]}x{t.shape[3]}" for t in inputs) + f" -> {size[0]}x{size[1]}"


def distinct_layers(calls: list[tuple[str, tuple]]) -> list[dict]:
    """The distinct calls in order of first use, each with how many times one forward makes it."""
    layers: dict = {}
    for op, args in calls:
        key = (op, _signature(args))
        if key in layers:
            layers[key]["calls"] += 1
        else:
            layers[key] = {"op": op, "args": args, "calls": 1}
    return list(layers.values())


def graph_timer(fn, inner: int):
    """A callable returning ms per call of ``fn``, replayed from a CUDA graph of ``inner`` back-to-back calls: the
    GPU time of its kernels (and the gaps between them) without the CPU's launch cost, which at batch 1 would
    otherwise hide the kernels (Triton's launch path costs more than many of its kernels)."""
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
    timer = Timer(torch.device("cuda"))
    return lambda: timer(graph.replay) / inner


def layer_timer(fn, device: torch.device, inner: int):
    """ms per call of ``fn``: from CUDA-graph replays on a GPU, perf_counter around ``inner`` calls on the CPU."""
    if device.type == "cuda":
        return graph_timer(fn, inner)
    timer = Timer(device)
    return lambda: timer(fn, inner)


@torch.no_grad()
def run_layer_case(args, device, size, batch, dtype_name) -> dict:
    """Every distinct op call of one forward of the fused model at this input, timed on each implementation. The
    calls are recorded from the Triton model; the CUDA model makes the same ones."""
    import dfanet_kernels as dk
    from dfanet import DFANet
    from dfanet.testing import randomize_batchnorm

    public = {"dwsep_conv": dk.dwsep_conv, "fc_attention": dk.fc_attention, "upsample_concat": dk.upsample_concat,
              "upsample_add": dk.upsample_add}
    dtype = DTYPES[dtype_name]
    torch.manual_seed(0)
    model = DFANet(num_classes=19, variant=args.variant, fused=True, backend="triton")
    randomize_batchnorm(model)
    model.eval().to(device, dtype)
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    layers = distinct_layers(record_op_calls(model, x))
    impls = op_impls(device)
    rows, totals = [], {impl: 0.0 for impl in impls}
    for layer in layers:
        op, call_args = layer["op"], layer["args"]

        def fn(impl, op=op, call_args=call_args):
            return public[op](*call_args, backend=impl)

        row = {"op": op, "shapes": describe_call(op, call_args), "calls": layer["calls"]}
        row["impls"], usable = check_impls(fn, impls, dtype_name)
        timers = {impl: layer_timer(functools.partial(fn, impl), device, args.op_inner) for impl in usable}
        times = interleaved(timers, args.op_rounds)
        for impl in usable:
            row["impls"][impl].update(quantiles(times[impl]))
            totals[impl] += layer["calls"] * row["impls"][impl]["median_ms"]
        if "triton" in usable and "cuda" in usable:
            row["cuda_over_triton"] = row["impls"]["cuda"]["median_ms"] / row["impls"]["triton"]["median_ms"]
        rows.append(row)
        del timers  # the graphs hold their outputs
    complete = {impl for impl in impls if all(r["impls"][impl]["status"] == "ok" for r in rows)}
    return {"size": list(size), "batch": batch, "dtype": dtype_name, "rows": rows,
            "totals_ms": {impl: ms for impl, ms in totals.items() if impl in complete},
            "timing": "CUDA-graph replays" if device.type == "cuda" else "perf_counter (CPU dry run)"}


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------
def _version(module: str):
    try:
        return __import__(module).__version__
    except Exception:
        return None


def machine_info(device: torch.device) -> dict:
    info = {
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"CPU ({platform.machine()}, dry run)"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": _version("triton"),
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "triton_interpret": os.environ.get("TRITON_INTERPRET"),
        "triton_autotune": os.environ.get("DFANET_TRITON_AUTOTUNE"),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1))
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                            text=True, timeout=10).stdout.strip() or None
    except Exception:
        info["git_commit"] = None
    return info


def _ms(entry: dict, key: str) -> str:
    return f"{entry[key]:.3f}" if key in entry else "–"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# DFANet GPU benchmark ({report['config']['variant']})", "",
        f"{m['device']}; torch {m['torch']} (CUDA {m['torch_cuda']}), Triton {m['triton']}, cuDNN {m['cudnn']}; "
        f"commit {m.get('git_commit')}; {m['date_utc']}. cuDNN TF32: {m['cudnn_allow_tf32']}. Triton dwsep_conv "
        f"tiles: {'autotuned' if m.get('triton_autotune') == '1' else 'chosen from the shape (no autotuning)'}.", "",
        "Medians of CUDA-event times; ratios are candidate / fused_triton (model) and torch / triton (ops): "
        "above 1 means the Triton path is faster. See bench/gpu_bench.py for the method.", "",
    ]
    for case in report["model"]:
        h, w = case["size"]
        lines += [f"## Model {h}x{w}, batch {case['batch']}, {case['dtype']}", "",
                  "| candidate | median ms | p20–p80 ms | kernel ms | launches | / fused_triton | setup s | rel err | "
                  "status |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for name, e in case["candidates"].items():
            ratio = f"{e['ratio_to_fused_triton']:.2f}" if "ratio_to_fused_triton" in e else "–"
            spread = f"{e['p20_ms']:.3f}–{e['p80_ms']:.3f}" if "p20_ms" in e else "–"
            rel = f"{e['rel_err']:.1e}" if "rel_err" in e else "–"
            launches = f"{e['launches']:.0f}" if "launches" in e else "–"
            status = e["status"] + (f": {e['reason']}" if e.get("reason") else "")
            lines.append(f"| {name} | {_ms(e, 'median_ms')} | {spread} | {_ms(e, 'kernel_ms')} | {launches} | "
                         f"{ratio} | {e.get('setup_s', '–')} | {rel} | {status} |")
        lines.append("")
        for name, e in case["candidates"].items():
            if e.get("top_kernels"):
                lines += [f"Heaviest kernels of {name} (ms per forward): "
                          + "; ".join(f"`{k['name'][:60]}` {k['ms']:.3f}" for k in e["top_kernels"]), ""]
    if report["ops"]:
        lines += ["## Ops (ms per call: events, and in brackets the GPU time of its kernels)", "",
                  "| op | shapes | input | batch | dtype | triton | torch | cuda | torch / triton | cuda / triton |",
                  "|---|---|---|---:|---|---:|---:|---:|---:|---:|"]
        for r in report["ops"]:
            cells = []
            for impl in ("triton", "reference", "cuda"):
                e = r["impls"].get(impl)
                if e is None:
                    cells.append("–")
                elif e["status"] != "ok":
                    cells.append(e["status"])
                else:
                    cells.append(_ms(e, "median_ms") + (f" ({e['kernel_ms']:.3f})" if "kernel_ms" in e else ""))
            ratios = [f"{r[key]:.2f}" if key in r else "–" for key in ("torch_over_triton", "cuda_over_triton")]
            lines.append(f"| {r['op']} | {r['shapes']} | {r['size'][0]}x{r['size'][1]} | {r['batch']} | {r['dtype']} | "
                         f"{' | '.join(cells)} | {' | '.join(ratios)} |")
        lines.append("")
    for case in report.get("layers", []):
        lines += _layer_table(case)
    if report.get("errors"):
        lines += ["## Failed", ""] + [f"- {e}" for e in report["errors"]] + [""]
    if report["skipped_cases"]:
        lines += ["## Not run", ""] + [f"- {s}" for s in report["skipped_cases"]] + [""]
    lines.append(f"Total {report['elapsed_s']:.0f} s.")
    return "\n".join(lines) + "\n"


def _layer_table(case: dict) -> list[str]:
    h, w = case["size"]
    impls = ("triton", "reference", "cuda")
    lines = [f"## Layers of one fused forward: {h}x{w}, batch {case['batch']}, {case['dtype']}", "",
             f"Every distinct op call of the model (calls: how many times one forward makes it), us per call: medians "
             f"of {case['timing']}, i.e. the GPU time of the kernels without the CPU's launch cost. torch = the "
             f"unfused sequence the op replaces (cuDNN, TF32 on).", "",
             "| op | shapes | calls | triton us | torch us | cuda us | cuda / triton |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in case["rows"]:
        cells = []
        for impl in impls:
            e = r["impls"].get(impl)
            cells.append("–" if e is None else e["status"] if e["status"] != "ok" else f"{e['median_ms'] * 1e3:.1f}")
        ratio = f"{r['cuda_over_triton']:.2f}" if "cuda_over_triton" in r else "–"
        lines.append(f"| {r['op']} | {r['shapes']} | {r['calls']} | {' | '.join(cells)} | {ratio} |")
    totals = case["totals_ms"]
    cells = [f"{totals[impl]:.3f} ms" if impl in totals else "–" for impl in impls]
    ratio = f"{totals['cuda'] / totals['triton']:.2f}" if "cuda" in totals and "triton" in totals else "–"
    calls = sum(r["calls"] for r in case["rows"])
    lines += [f"| all, per forward | | {calls} | {' | '.join(cells)} | {ratio} |", ""]
    compared = [r["cuda_over_triton"] for r in case["rows"] if "cuda_over_triton" in r]
    if compared:
        lines += [f"CUDA as fast as Triton or faster on {sum(v <= 1 for v in compared)} of {len(compared)} layers.",
                  ""]
    return lines


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_bench.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu_bench.md").write_text(markdown(report))


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda":
        if not args.dry_run:
            log("no CUDA device: use --dry-run for the CPU smoke test")
            return 2
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before dfanet_kernels imports Triton
    # Read when dfanet_kernels.triton is imported, i.e. on the first triton-backend call below.
    os.environ["DFANET_TRITON_AUTOTUNE"] = "1" if args.autotune else "0"
    start = time.perf_counter()

    def budget_left() -> float:
        return args.budget_s - (time.perf_counter() - start)

    out = Path(args.out)
    report = {"config": {k: v for k, v in vars(args).items()}, "machine": machine_info(device), "model": [],
              "ops": [], "layers": [], "skipped_cases": [], "errors": [], "elapsed_s": 0.0}
    log(f"{report['machine']['device']}; writing to {out}")
    # Case by case, batch 1 first (the latency case the fused path is for): its model, op and layer tables come
    # before any larger batch's, so a short session ends with the complete batch-1 picture.
    sections = [(name, run) for name, run, skip in (
        ("model", lambda *case: run_model_case(*case, budget_left), args.skip_model),
        ("ops", run_op_case, args.skip_ops),
        ("layers", run_layer_case, args.skip_layers)) if not skip]
    errors = report["errors"]
    for batch in args.batches:
        for size in args.sizes:
            for dtype_name in args.dtypes:
                for section, run in sections:
                    label = f"{section} {size[0]}x{size[1]} batch {batch} {dtype_name}"
                    if section == "layers" and batch != 1:  # the latency question; and 3 graphs per layer
                        continue
                    # No new model case after the budget; op and layer tables take seconds: a minute more for them.
                    if budget_left() <= (0 if section == "model" else -60):
                        report["skipped_cases"].append(f"{label}: time budget (--budget-s {args.budget_s:g}) used up")
                        continue
                    log(label)
                    t0 = time.perf_counter()
                    try:
                        result = run(args, device, size, batch, dtype_name)
                    except Exception as err:  # one broken section must not cost a GPU session the others
                        errors.append(f"{label}: {type(err).__name__}: {err}".splitlines()[0][:300])
                        log(f"  {errors[-1]}\n{traceback.format_exc(limit=5)}")
                        continue
                    if section == "ops":
                        report["ops"] += result
                    else:
                        result["wall_s"] = round(time.perf_counter() - t0, 1)
                        report[section].append(result)
                    report["elapsed_s"] = time.perf_counter() - start
                    write(report, out)  # after every case: a killed run still leaves its results
    report["elapsed_s"] = time.perf_counter() - start
    write(report, out)
    log(f"done in {report['elapsed_s']:.0f} s: {out / 'gpu_bench.md'}")
    print(markdown(report))
    bad = [name for case in report["model"] for name, e in case["candidates"].items() if e["status"] == "mismatch"]
    rows = report["ops"] + [r for case in report["layers"] for r in case["rows"]]
    bad += [f"{r['op']} {r['shapes']}:{i}" for r in rows for i, e in r["impls"].items() if e["status"] != "ok"]
    bad += errors
    if bad:
        log(f"mismatching or failing: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
