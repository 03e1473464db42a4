"""GPU comparison: DFANet on the Triton backend against the unfused model, and each Triton op against torch.

Run by bench/gpu_check.sh on a GPU machine as ``python -m dfanet.tools.bench.gpu`` (no network needed);
``--dry-run`` runs a tiny version on the CPU (Triton under its interpreter) to catch errors before a GPU session.
The rules of measuring: docs/benchmarking.md; the harness's timers, checks, op calls and report: this package.

Whole model (DFANet A by default; one set of random weights with randomised BatchNorm for every candidate):
  eager_nchw       DFANet(fused=False), NCHW input                      (cuDNN; fp32 convs use TF32 by default)
  eager_cl         the same model and input in channels_last
  compile_<mode>   torch.compile(eager model, mode=<mode>) for each of --compile-mode (reduce-overhead and
                   max-autotune by default), compile time reported as setup; skipped where the budget is too short
  fused_triton     DFANet(fused=True, backend="triton")                 (Triton kernels, autotuned on first call)
  fused_triton_graph   the same, replayed from a CUDA graph (dfanet.cuda_graph.capture)
  fused_cuda[_graph]   backend="cuda" (the C++/CUDA kernels) where they are built
  fused_*_argmax   model(x).argmax(1) in predict's label dtype: what a user of forward does to get labels
  fused_*_predict[_graph]   model.predict(x): the labels (upsample_labels), checked against eager's argmax
  fused_*_pt2      opt-in (--pt2 BACKENDS): the fused model exported by torch.export and compiled by AOTInductor for
                   this GPU (dfanet.pt2, as ``dfanet export --format pt2``), fp32 cases only; compile time reported as
                   setup, built only where the budget leaves its usual compile time (``PT2_SETUP_S``)
Cases: --sizes x --batches x --dtypes, batch 1 first, fp16 and fp32 before bf16. Each candidate's first output is
checked against eager_nchw (max |out - eager| / max |eager|, and argmax agreement; labels against eager's argmax);
a mismatch is reported and not timed. Beside each time, the peak memory of one call above what was allocated before
it (``memory.peak_call_mib``: the CUDA allocator's peak; in the dry run the CPU profiler's, none for Triton's
interpreter); and per fused backend predict against forward + argmax, time and peak memory side by side.

Per op (``GPU_OPS`` of ``op_calls.model_op_calls``, at the model's shapes for each case): the Triton op vs the torch
sequence it replaces (the reference implementation: F.relu, depthwise conv2d, 1x1 conv2d, add; mean, linear, linear,
relu, mul; F.interpolate + cat / add), both called through dfanet_kernels' public functions on channels_last inputs,
plus the CUDA backend where built.

Per layer (batch 1): every distinct op call one fused forward makes (``op_calls.record_op_calls``, with the model's
own activations as inputs), on the same implementations, timed as CUDA-graph replays: the GPU time of the kernels,
the measure for "is the CUDA kernel as fast as the Triton one at every layer", which event times at batch 1 cannot
answer because the CPU's launch cost hides the kernels. Beside each, its roofline floor (``roofline``: minimum bytes
over the bandwidth of a copy timed in the same run, FLOPs over the GPU's peaks, >= 2 us per kernel) and the ratio
measured / floor.

Timing: CUDA events. Model: each call synchronised (the latency of one forward, CPU launch overhead included),
candidates interleaved in rounds with a rotating order, medians and p20/p80 after warm-up. Ops: events around
--op-inner back-to-back calls, median over rounds; the op reference is computed without TF32 (the torch timing
keeps cuDNN's default). Ratios are "candidate / fused_triton" (model), "torch / triton" and "cuda / triton" (ops).
Beside each time, the GPU time of the kernels it launched (torch.profiler, 3 calls): where events >> kernels the
call is launch-bound (the GPU waits for the CPU); for the fused models, the heaviest kernels.

Time budget (--budget-s): the model cases of every dtype (fp16 and fp32 first) before any op or layer table, each
section in priority order, and a case that would start after the budget is recorded as skipped, so a short GPU
session always ends with a report and its model rows. A torch.compile candidate is built only if the budget leaves
its usual compile time (``COMPILE_SETUP_S``), a pt2 one likewise (``PT2_SETUP_S``). Output: gpu_bench.json and
gpu_bench.md in --out (default $OUT, else bench/results under the current folder).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from ...variants import VARIANTS
from .check import GPU_MODEL_TOLERANCE, LABELS_AGREEMENT, OP_TOLERANCE, compare, exact_fp32, labels_agreement
from .log import log
from .machine import machine_info
from .memory import memory_method, peak_call_mib
from .report import gpu_markdown, write_markdown_and_json
from .timing import interleaved, kernel_profile, kernel_timer, summary_ms, timer_for

# dfanet_kernels reads TRITON_INTERPRET when it is imported, and main() sets it for a CPU dry run: so dfanet_kernels,
# and the harness modules that import it (models, op_calls), are imported inside the functions that use them.
if TYPE_CHECKING:
    from .op_calls import OpCall

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# The per-op rows: one call of each op family at the model's shapes, the separable conv at three places, the
# decoder whole (one kernel on both GPU backends).
GPU_OPS = ("dwsep_enc2_residual", "dwsep_enc2_first_strided", "dwsep_enc4_residual", "fc_attention_enc4",
           "upsample_concat_enc2", "upsample_add_decoder", "decoder_head", "upsample_add_output")
REPORT_STEM = "gpu_bench"
# Seconds a torch.compile of unfused DFANet takes (reduce-overhead: ~1 min; max-autotune benchmarks many conv and
# matmul configs: several minutes, a guess until a GPU run measures it): a mode starts only with this much budget left.
COMPILE_SETUP_S = {"default": 120, "reduce-overhead": 120, "max-autotune": 300, "max-autotune-no-cudagraphs": 300}
# Seconds to export and compile the fused model with AOTInductor: 95 s for a CPU package on 2 busy CPU threads
# (README, Export); on a GPU machine a guess until a GPU run measures it (Triton kernels are compiled into it too).
PT2_SETUP_S = 180
# The fused backends a pt2 candidate may be exported with: the GPU's two, and the CPU's for the dry run.
PT2_BACKENDS = ("cuda", "triton", "cpu")
# Why the dry run gives its Triton rows no peak: the CPU profiler misses part of what Triton's interpreter allocates
# (measured 2026-12-07 at 32x32: forward + argmax peaked below the size of forward's own output).
INTERPRETER_PEAK = "not measured under Triton's interpreter (the CPU profiler misses part of its memory)"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dfanet.tools.bench.gpu", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT") or str(Path("bench") / "results"),
                   help="output folder for gpu_bench.json / .md (default: $OUT, else bench/results)")
    p.add_argument("--variant", default="A", choices=list(VARIANTS), help="DFANet variant (default A)")
    p.add_argument("--sizes", default="1024x1024,512x1024", help="comma-separated HxW input sizes")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    p.add_argument("--dtypes", default="fp16,fp32,bf16", help=f"comma-separated, of {sorted(DTYPES)}")
    p.add_argument("--warmup", type=int, default=5, help="untimed rounds (every candidate once) before the timed ones")
    p.add_argument("--rounds", type=int, default=30, help="timed rounds (every candidate once per round)")
    p.add_argument("--op-rounds", type=int, default=15, help="timed rounds per op")
    p.add_argument("--op-inner", type=int, default=20, help="back-to-back calls timed together per op round")
    p.add_argument("--compile-mode", default="reduce-overhead,max-autotune",
                   help=f"comma-separated torch.compile modes of the compile_<mode> baselines, of "
                        f"{sorted(COMPILE_SETUP_S)}; 'none' skips them")
    p.add_argument("--pt2", default="none",
                   help=f"comma-separated fused backends, of {list(PT2_BACKENDS)}, whose AOTInductor package is a "
                        f"candidate (fused_<backend>_pt2; minutes of compiling each, fp32 cases only); 'none' "
                        f"(default) builds none")
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
        defaults = {"sizes": "1024x1024,512x1024", "batches": "1,8", "dtypes": "fp16,fp32,bf16"}
        overrides = {"sizes": "32x32", "batches": "1", "dtypes": "fp32"}
        for key, value in overrides.items():
            if getattr(args, key) == defaults[key]:
                setattr(args, key, value)
        args.warmup, args.rounds, args.op_rounds, args.op_inner = 0, 1, 1, 1
    args.sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]
    args.batches = [int(b) for b in args.batches.split(",")]
    args.dtypes = args.dtypes.split(",")
    args.compile_mode = [] if args.compile_mode == "none" else args.compile_mode.split(",")
    for mode in args.compile_mode:
        if mode not in COMPILE_SETUP_S:
            p.error(f"--compile-mode: unknown {mode!r}, expected some of {sorted(COMPILE_SETUP_S)} or none")
    args.pt2 = [] if args.pt2 == "none" else args.pt2.split(",")
    for backend in args.pt2:
        if backend not in PT2_BACKENDS:
            p.error(f"--pt2: unknown {backend!r}, expected some of {list(PT2_BACKENDS)} or none")
    for d in args.dtypes:
        if d not in DTYPES:
            p.error(f"--dtypes: unknown {d!r}, expected some of {sorted(DTYPES)}")
    return args


def _error(err: Exception) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0][:300]


def budget_reason(needed_s: float, budget_left: Callable[[], float], what: str) -> str | None:
    """Why a candidate whose setup (``what``) takes ~``needed_s`` is not built: the budget left is shorter."""
    left = budget_left()
    return f"time budget: {left:.0f} s left, {what} takes ~{needed_s} s" if left < needed_s else None


def pt2_skip_reason(backend: str, device: torch.device, dtype_name: str, available: list[str],
                    budget_left: Callable[[], float]) -> str | None:
    """Why ``fused_<backend>_pt2`` is not built in this case (``available``: the fused backends that run here), or
    None to build it."""
    if backend not in available:
        return f"backend {backend!r} does not run on {device.type} here (these do: {', '.join(available)})"
    if backend == "triton" and device.type != "cuda":
        return "AOTInductor compiles Triton kernels for a GPU only (the dry run's Triton is its interpreter)"
    if dtype_name != "fp32":
        return "the package takes a float32 input (dfanet.pt2.export_pt2): fp32 cases only"
    return budget_reason(PT2_SETUP_S, budget_left, "exporting and compiling the package")


# ---------------------------------------------------------------------------------------------------------------
# Whole model
# ---------------------------------------------------------------------------------------------------------------
def build_candidates(args, device, dtype_name, x, budget_left) -> tuple[dict, dict]:
    """name -> (callable, setup seconds), and name -> reason for those that could not be built."""
    import dfanet_kernels as dk

    from .models import aoti_package, build_model, build_twin, forward_labels

    base = build_model(args.variant).to(device, DTYPES[dtype_name])
    candidates, skipped = {}, {}

    def add(name, make):
        """Build candidate ``name`` with ``make()`` (its setup: folding, compiling, autotuning, capturing); a failure
        is reported in the results, and the other candidates still run."""
        t0 = time.perf_counter()
        try:
            fn = make()
        except Exception as err:
            skipped[name] = f"error while building: {_error(err)}"
            log(f"  {name}: {skipped[name]}\n{traceback.format_exc(limit=3)}")
            return
        candidates[name] = (fn, time.perf_counter() - t0)

    add("eager_nchw", lambda: (lambda: base(x)))
    base_cl = build_twin(base, fused=False).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    add("eager_cl", lambda: (lambda: base_cl(x_cl)))

    if args.compile_mode and device.type == "cuda":
        # A fresh start per case: no recompile limits, no automatic dynamic shapes. Once, not per mode: a reset drops
        # the graphs of the modes compiled before it, which would compile again on their first call.
        torch._dynamo.reset()

    def make_compiled(mode):
        compiled = torch.compile(build_twin(base, fused=False), mode=None if mode == "default" else mode,
                                 dynamic=False)
        compiled(x)  # compile time counts as setup
        return lambda: compiled(x)

    if not args.compile_mode:
        skipped["compile"] = "--compile-mode none"
    for mode in args.compile_mode:
        name, needed = f"compile_{mode}", COMPILE_SETUP_S[mode]
        if device.type != "cuda":
            skipped[name] = "not run in the CPU dry run (compiling DFANet takes minutes on a CPU)"
        elif reason := budget_reason(needed, budget_left, "compiling in this mode"):
            skipped[name] = reason
        else:
            add(name, functools.partial(make_compiled, mode))

    if device.type == "cuda":
        backends = ["triton"] + (["cuda"] if "cuda" in dk.available_backends(device) else [])
    else:
        backends = [b for b in ("triton", "cpu") if b in dk.available_backends(device)]
    fused_models = {}

    def make_fused(backend):
        model = build_twin(base, fused=True, backend=backend)
        model(x)  # folds BN and, for Triton, autotunes every kernel shape: setup
        fused_models[backend] = model  # only a model that ran is captured in a CUDA graph
        return lambda: model(x)

    def make_graph(backend, labels):
        from ...cuda_graph import capture

        replay = capture(fused_models[backend], x, labels=labels)
        return lambda: replay(x)

    def make_argmax(backend):
        model = fused_models[backend]
        return lambda: forward_labels(model, x)

    def make_predict(backend):
        model = fused_models[backend]
        return lambda: model.predict(x)

    def make_pt2(backend):
        with tempfile.TemporaryDirectory(prefix="dfanet-pt2-") as folder:  # the loaded package needs no file
            package = aoti_package(build_twin(base, fused=True, backend=backend), x, Path(folder) / "fused.pt2")
        return lambda: package(x)

    for backend in backends:
        add(f"fused_{backend}", functools.partial(make_fused, backend))
        if backend not in fused_models:
            continue
        # predict: the labels from the quarter-size logits (upsample_labels), against the labels a user of forward
        # computes (forward + argmax); forward's full-size logits beside them.
        add(f"fused_{backend}_argmax", functools.partial(make_argmax, backend))
        add(f"fused_{backend}_predict", functools.partial(make_predict, backend))
        if device.type == "cuda":
            add(f"fused_{backend}_graph", functools.partial(make_graph, backend, False))
            add(f"fused_{backend}_predict_graph", functools.partial(make_graph, backend, True))
    for backend in args.pt2:
        name = f"fused_{backend}_pt2"
        if reason := pt2_skip_reason(backend, device, dtype_name, backends, budget_left):
            skipped[name] = reason
        else:
            add(name, functools.partial(make_pt2, backend))
    return candidates, skipped


@torch.no_grad()
def run_model_case(args, device, size, batch, dtype_name, budget_left) -> dict:
    from .models import random_input

    h, w = size
    x = random_input(batch, h, w, seed=1).to(device, DTYPES[dtype_name])
    candidates, skipped = build_candidates(args, device, dtype_name, x, budget_left)
    case = {"size": [h, w], "batch": batch, "dtype": dtype_name,
            "candidates": {name: {"status": "skipped", "reason": reason} for name, reason in skipped.items()}}
    results = case["candidates"]
    if "eager_nchw" not in candidates:
        return case
    expected = candidates["eager_nchw"][0]().float().clone()
    timed = {}
    for name, (fn, setup_s) in candidates.items():
        entry = results[name] = {"setup_s": round(setup_s, 3)}
        out = fn()
        if out.is_floating_point():
            rel, entry["argmax_agreement"] = compare(out, expected)
            entry["rel_err"] = rel
            tolerance = GPU_MODEL_TOLERANCE[dtype_name]
            mismatch = None if rel <= tolerance else f"rel_err {rel:.3g} > {tolerance:g}"
        else:  # predict's labels, against the argmax of eager's logits
            agree = entry["argmax_agreement"] = labels_agreement(out, expected.argmax(1))
            mismatch = None if agree >= LABELS_AGREEMENT else f"labels agree {agree:.4f} < {LABELS_AGREEMENT}"
        if mismatch is not None:
            entry.update(status="mismatch", reason=f"{mismatch}: not timed")
            log(f"  {name}: MISMATCH {mismatch}")
        else:
            entry["status"] = "ok"
            timed[name] = fn
    timer = timer_for(device)
    times = interleaved({name: functools.partial(timer, fn) for name, fn in timed.items()}, args.rounds,
                        warmup=args.warmup)
    for name, fn in timed.items():
        results[name].update(summary_ms(times[name]))
        results[name].update(kernel_profile(fn, top=8 if name.startswith("fused") else 0))
        if device.type != "cuda" and name.startswith("fused_triton"):
            results[name]["peak_not_measured"] = INTERPRETER_PEAK
            continue
        try:
            results[name]["peak_mib"] = peak_call_mib(fn, device)
        except (ImportError, AttributeError, RuntimeError) as err:  # the CPU's is a private profiler API
            results[name]["peak_not_measured"] = _error(err)
    if "fused_triton" in timed:
        ref = results["fused_triton"]["median_ms"]
        for name in timed:
            results[name]["ratio_to_fused_triton"] = results[name]["median_ms"] / ref
    case["predict_vs_argmax"] = predict_rows(results)
    del candidates, timed
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return case


def predict_rows(results: dict) -> list[dict]:
    """Per fused backend whose predict and forward + argmax were both timed: their medians and peaks side by side,
    forward's beside them, and forward + argmax over predict (above 1: predict is faster, or needs less memory)."""
    rows = []
    for name, predict in results.items():
        if not (name.startswith("fused_") and name.endswith("_predict")):
            continue
        backend = name.removeprefix("fused_").removesuffix("_predict")
        argmax, forward = results.get(f"fused_{backend}_argmax", {}), results.get(f"fused_{backend}", {})
        if "median_ms" not in predict or "median_ms" not in argmax:
            continue
        row = {"backend": backend}
        for way, entry in (("forward", forward), ("argmax", argmax), ("predict", predict)):
            row.update({f"{way}_ms": entry.get("median_ms"), f"{way}_mib": entry.get("peak_mib")})
        row["time_ratio"] = row["argmax_ms"] / row["predict_ms"]
        if row["argmax_mib"] and row["predict_mib"]:
            row["memory_ratio"] = row["argmax_mib"] / row["predict_mib"]
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Per op and per layer: each implementation of one op call, checked, then timed
# ---------------------------------------------------------------------------------------------------------------
def op_impls(device) -> list[str]:
    """The implementations an op is timed with: Triton, the torch sequence it replaces, CUDA where built."""
    import dfanet_kernels as dk

    return ["triton", "reference"] + (["cuda"] if device.type == "cuda" and "cuda" in dk.available_backends(device)
                                      else [])


def check_impls(call: OpCall, impls: list[str], dtype_name: str) -> tuple[dict, list[str]]:
    """Each implementation's first output (compiling / autotuning) against the torch sequence without TF32:
    impl -> {status, rel_err or reason}, and the implementations that matched (the ones to time)."""
    with exact_fp32():
        expected = call.run("reference").float()
    results, usable = {}, []
    for impl in impls:
        try:
            rel, _ = compare(call.run(impl), expected)
        except Exception as err:
            results[impl] = {"status": "error", "reason": f"{type(err).__name__}: {err}"[:300]}
            continue
        tolerance = OP_TOLERANCE[dtype_name]
        if impl == "reference" and dtype_name == "fp32":  # the torch sequence keeps cuDNN's TF32 default
            tolerance = GPU_MODEL_TOLERANCE["fp32"]
        ok = rel <= tolerance
        results[impl] = {"status": "ok" if ok else "mismatch", "rel_err": rel}
        if ok:
            usable.append(impl)
    return results, usable


def time_impls(call: OpCall, impls: list[str], dtype_name: str, rounds: int,
               make_measure: Callable[[Callable[[], object]], Callable[[], float]]) -> dict:
    """A row's ``impls`` and ratios: every implementation checked, the matching ones timed in interleaved rounds
    (``make_measure(fn)``: a callable returning ms per call of fn)."""
    entries, usable = check_impls(call, impls, dtype_name)
    runs = {impl: functools.partial(call.run, impl) for impl in usable}
    times = interleaved({impl: make_measure(run) for impl, run in runs.items()}, rounds)
    for impl in usable:
        entries[impl].update(summary_ms(times[impl]))
    row = {"impls": entries}
    for other, key in (("cuda", "cuda_over_triton"), ("reference", "torch_over_triton")):
        if "triton" in usable and other in usable:
            row[key] = entries[other]["median_ms"] / entries["triton"]["median_ms"]
    return row


@torch.no_grad()
def run_op_case(args, device, size, batch, dtype_name) -> list[dict]:
    from .op_calls import model_op_calls

    impls = op_impls(device)
    timer = timer_for(device)
    calls = model_op_calls(args.variant, batch, *size, DTYPES[dtype_name], device)
    rows = []
    for name in GPU_OPS:
        call = calls[name]
        row = {"op": name, "shapes": call.shapes, "size": list(size), "batch": batch, "dtype": dtype_name}
        row.update(time_impls(call, impls, dtype_name, args.op_rounds,
                              lambda fn: functools.partial(timer, fn, args.op_inner)))
        for impl, entry in row["impls"].items():
            if "median_ms" in entry:
                entry.update(kernel_profile(functools.partial(call.run, impl)))
        rows.append(row)
    return rows


@torch.no_grad()
def run_layer_case(args, device, size, batch, dtype_name) -> dict:
    """Every distinct op call of one forward of the fused model at this input, timed on each implementation. The
    calls are recorded from the Triton model; the CUDA model makes the same ones."""
    from .models import build_model, build_twin, random_input
    from .op_calls import distinct_layers, record_op_calls

    dtype = DTYPES[dtype_name]
    model = build_twin(build_model(args.variant), fused=True, backend="triton").to(device, dtype)
    x = random_input(batch, *size, seed=1).to(device, dtype)
    impls = op_impls(device)
    roofline = layer_roofline(device, dtype_name)
    rows, totals = [], {impl: 0.0 for impl in impls}
    for call, count in distinct_layers(record_op_calls(model, x)):
        row = {"op": call.op, "shapes": call.shapes, "calls": count, "floor": roofline.op_floor(call)}
        row.update(time_impls(call, impls, dtype_name, args.op_rounds,
                              lambda fn: kernel_timer(fn, device, args.op_inner)))
        for impl, entry in row["impls"].items():
            if "median_ms" in entry:
                totals[impl] += count * entry["median_ms"]
                entry["over_floor"] = entry["median_ms"] * 1e3 / row["floor"]["launch_floor_us"]
        rows.append(row)
    complete = {impl for impl in impls if all(r["impls"][impl]["status"] == "ok" for r in rows)}
    return {"size": list(size), "batch": batch, "dtype": dtype_name, "rows": rows,
            "totals_ms": {impl: ms for impl, ms in totals.items() if impl in complete},
            "floor_ms": sum(r["calls"] * r["floor"]["launch_floor_us"] for r in rows) / 1e3,
            "roofline": {"device": roofline.device.name, "bandwidth_gb_s": roofline.bandwidth_gb_s,
                         "bandwidth_source": roofline.bandwidth_source},
            "timing": "CUDA-graph replays" if device.type == "cuda" else "perf_counter (CPU dry run)"}


def measure_bandwidth(device: torch.device) -> float:
    """GB/s of a copy timed here (each byte read once and written once; median of 5 x 10 copies): the achievable
    bandwidth of the layer floors, on this GPU, in this run."""
    nbytes = (512 if device.type == "cuda" else 16) * 2**20  # far beyond the H100's 50 MB L2
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    timer = timer_for(device)
    timer(lambda: dst.copy_(src))  # warm-up
    times = [timer(lambda: dst.copy_(src), 10) for _ in range(5)]
    return 2 * nbytes / (sorted(times)[2] * 1e-3) / 1e9


def layer_roofline(device: torch.device, dtype_name: str):
    """The floors of the layer rows: this GPU's peaks from roofline.DEVICES (H100 SXM figures where it is not
    listed, and in the CPU dry run), the bandwidth of a copy timed now."""
    from .roofline import DEVICES, Roofline, device_for

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    spec = device_for(name)
    source = f"a {name} copy timed in this run"
    if spec is None:
        spec, source = DEVICES["h100-sxm"], source + f"; peaks of the H100 SXM ({name} is not in the device table)"
    return Roofline(spec, dtype_name, measure_bandwidth(device), source)


# ---------------------------------------------------------------------------------------------------------------
# The run: cases in priority order within the time budget, the report written after each
# ---------------------------------------------------------------------------------------------------------------
def write(report: dict, out: Path) -> None:
    write_markdown_and_json(out, REPORT_STEM, gpu_markdown(report), report)


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
    machine = dict(machine_info(device=device), triton_interpret=os.environ.get("TRITON_INTERPRET"),
                   triton_autotune=os.environ.get("DFANET_TRITON_AUTOTUNE"))
    report = {"config": dict(vars(args)), "machine": machine, "memory_method": memory_method(device), "model": [],
              "ops": [], "layers": [], "skipped_cases": [], "errors": [], "elapsed_s": 0.0}
    log(f"{machine['device']}; writing to {out}")
    # Batch 1 first (the latency case the fused path is for): its model, op and layer tables come before any larger
    # batch's, so a short session ends with the complete batch-1 picture; within it the model rows of every dtype
    # (fp16 and fp32 first) come before the op and layer tables.
    sections = [(name, run) for name, run, skip in (
        ("model", lambda *case: run_model_case(*case, budget_left), args.skip_model),
        ("ops", run_op_case, args.skip_ops),
        ("layers", run_layer_case, args.skip_layers)) if not skip]
    errors = report["errors"]
    for batch in args.batches:
        for size in args.sizes:
            for section, run in sections:
                for dtype_name in args.dtypes:
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
                        errors.append(f"{label}: {_error(err)}")
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
    log(f"done in {report['elapsed_s']:.0f} s: {out / REPORT_STEM}.md")
    print(gpu_markdown(report))
    bad = [name for case in report["model"] for name, e in case["candidates"].items() if e["status"] == "mismatch"]
    rows = report["ops"] + [r for case in report["layers"] for r in case["rows"]]
    bad += [f"{r['op']} {r['shapes']}:{i}" for r in rows for i, e in r["impls"].items() if e["status"] != "ok"]
    bad += errors
    if bad:
        log(f"mismatching or failing: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
