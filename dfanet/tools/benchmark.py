"""Whole-model CPU speed comparison: the fused DFANet against the unfused model on every common runtime.

Method (docs/benchmarking.md):

- One randomly initialised DFANet in eval, with randomised BatchNorm statistics, gives the same weights to every
  candidate: eager NCHW, eager channels_last, torch.compile, ONNX Runtime and OpenVINO (both from one ONNX export
  of the unfused model), and the fused path (``DFANet(fused=True)``), all in fp32. One lower-precision row is
  shown beside them, not as a baseline: OpenVINO in bf16 (its default on CPUs that compute bf16 natively).
- Each candidate's output is checked against eager before it is timed (fp32 and bf16 each against their own
  tolerance); a mismatching one is reported, not timed.
  A candidate whose runtime is missing (or fails to build) is reported as skipped, with the reason.
- After warm-up, R rounds run every candidate once, in an order rotated each round, with a short pause before
  each run (idle worker threads of ONNX Runtime, OpenVINO and OpenMP keep spinning and slow whatever runs next).
- Reported: median and p20/p80 per candidate, each candidate's median over fused's, the per-round ratio's p20–p80,
  and fused against the best baseline. Set-up costs (ONNX export, torch.compile) are reported apart.

Entry point: :func:`run_comparison`; :class:`Comparison` keeps the built candidates for other timers (bench/).
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..model import MIN_INPUT_SIZE, DFANet
from ..testing import randomize_batchnorm
from .bench_report import CandidateResult, Report, attach_ratios, machine_info

CANDIDATES = ("eager", "channels_last", "compile", "onnxruntime", "openvino", "openvino_bf16", "fused")
PAUSE_S = 0.05  # before each timed run: lets the previous runtime's spinning worker threads go idle
TOLERANCE = 1e-3  # max |out - eager| / max |eager|: fp32 runtimes land near 1e-6, a silent bf16 path near 1e-2
# The same for a candidate that computes in bf16 on purpose: OpenVINO bf16 lands at 1.0e-2 on DFANet A at 512x1024
# (argmax 99.6% of pixels equal), bf16's 2^-8 rounding carried through ~40 layers; 5x that still catches a broken one.
BF16_TOLERANCE = 5e-2
MEMORY_METHOD = (
    "peak of live bytes allocated through torch's CPU allocator during one warm forward (torch.profiler "
    "profile_memory; allocation and free events summed in time order), output included, weights and input "
    "excluded. Not counted: memory allocated outside torch's allocator (oneDNN/OpenMP internals, per-thread C++ "
    "scratch rows of the fused kernels). Not available for ONNX Runtime and OpenVINO (their own allocators)."
)


class Unavailable(Exception):
    """A candidate cannot run here; the message says why (and how to fix it where that is a package install)."""


@dataclass
class Candidate:
    name: str
    description: str
    run: Callable[[], Any]  # one forward on the prepared input
    to_tensor: Callable[[Any], torch.Tensor]  # run()'s output as an NCHW float tensor (for the check)
    setup_s: float | None = None
    torch_based: bool = True  # allocates through torch (peak memory measurable)
    precision: str = "fp32"  # what it computes in; only fp32 candidates are baselines for the fused fp32 path


def _log(message: str, verbose: bool) -> None:
    if verbose:
        tqdm.write(f"[dfanet bench] {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------------------
# The model and its input
# ---------------------------------------------------------------------------------------------------------------


def build_model(variant: str = "A", num_classes: int = 19, seed: int = 0) -> DFANet:
    """An eval-mode unfused DFANet with seeded random weights and randomised BatchNorm statistics."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG state alone
        torch.manual_seed(seed)
        model = DFANet(num_classes=num_classes, variant=variant, fused=False)
    randomize_batchnorm(model, seed + 1)
    return model.eval()


def _inference(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run():
        with torch.inference_mode():
            return fn()
    return run


def _as_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.float().contiguous()
    return torch.from_numpy(np.array(out, dtype=np.float32, copy=True))  # copy: runtimes reuse output buffers


# ---------------------------------------------------------------------------------------------------------------
# Candidates: each builder returns a ready Candidate or raises Unavailable
# ---------------------------------------------------------------------------------------------------------------


class _Context:
    """What the builders share: the model, the input, the thread count, and one lazily made ONNX export."""

    def __init__(self, model: DFANet, x: torch.Tensor, threads: int, work_dir: Path, verbose: bool):
        self.model, self.x, self.threads, self.work_dir, self.verbose = model, x, threads, work_dir, verbose
        self._onnx = None
        self._onnx_error: str | None = None

    def onnx(self):
        """The ONNX export of the unfused model (made once, shared by ONNX Runtime and OpenVINO)."""
        if self._onnx is None and self._onnx_error is None:
            try:
                import onnx  # noqa: F401  (the exporter and the plain-ONNX check need it)
            except ImportError:
                raise Unavailable("onnx is not installed (pip install onnx onnxscript)") from None
            else:
                from ..export import export_onnx

                n, _, h, w = self.x.shape
                _log(f"exporting the unfused model to ONNX ({n}x3x{h}x{w}) ...", self.verbose)
                try:
                    self._onnx = export_onnx(self.model, self.work_dir / "dfanet-unfused.onnx", n, h, w)
                except (RuntimeError, ValueError) as err:
                    self._onnx_error = str(err)
                else:
                    onnx = self._onnx
                    _log(f"exported with the {onnx.exporter} exporter in {onnx.seconds:.1f} s", self.verbose)
        if self._onnx_error is not None:
            raise RuntimeError(f"ONNX export failed: {self._onnx_error}")  # an error, not a missing runtime
        return self._onnx


def _eager(ctx: _Context) -> Candidate:
    model, x = ctx.model, ctx.x
    return Candidate("eager", "unfused nn.Module, NCHW, eager (BatchNorm separate)",
                     _inference(lambda: model(x)), _as_tensor)


def _channels_last(ctx: _Context) -> Candidate:
    model = build_twin(ctx.model, fused=False).to(memory_format=torch.channels_last)
    x = ctx.x.contiguous(memory_format=torch.channels_last)  # converted once, outside the timing
    return Candidate("channels_last", "unfused nn.Module, model and input channels_last, eager",
                     _inference(lambda: model(x)), _as_tensor)


def _compile(ctx: _Context) -> Candidate:
    torch.compiler.reset()  # a fresh, honest compile: no graphs cached by an earlier comparison in this process
    # dynamic=False: a second input size in the same process must not switch to a dynamic-shape graph.
    compiled = torch.compile(ctx.model, dynamic=False)
    x = ctx.x
    run = _inference(lambda: compiled(x))
    _log("torch.compile: compiling (first call) ...", ctx.verbose)
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    _log(f"torch.compile: compiled in {seconds:.1f} s", ctx.verbose)
    return Candidate("compile", "torch.compile(unfused model), mode default, inductor, static shapes, NCHW input",
                     run, _as_tensor, setup_s=seconds)


def _require(runtime: str) -> None:
    if importlib.util.find_spec(runtime) is None:
        raise Unavailable(f"{runtime} is not installed (pip install {runtime})")


def _from_onnx(ctx: _Context, name: str, make_runner: Callable, source: str, precision: str = "fp32") -> Candidate:
    """The exported ONNX file run by another runtime (``make_runner`` from dfanet.export); ``source`` ends the
    description and may name the ``{exporter}``."""
    exported = ctx.onnx()
    start = time.perf_counter()
    run, description = make_runner(exported.path, ctx.threads)
    x = ctx.x.numpy()
    setup = exported.seconds + time.perf_counter() - start
    return Candidate(name, f"{description}; {source.format(exporter=exported.exporter)}", lambda: run(x),
                     _as_tensor, setup_s=setup, torch_based=False, precision=precision)


def _onnxruntime(ctx: _Context) -> Candidate:
    _require("onnxruntime")
    from ..export import onnxruntime_runner

    return _from_onnx(ctx, "onnxruntime", onnxruntime_runner, "unfused model, {exporter} ONNX exporter")


def _openvino(ctx: _Context) -> Candidate:
    _require("openvino")
    from ..export import openvino_runner

    return _from_onnx(ctx, "openvino", openvino_runner, "from the same ONNX file")


def _openvino_bf16(ctx: _Context) -> Candidate:
    _require("openvino")
    from ..export import openvino_native_bf16, openvino_runner

    if not openvino_native_bf16():
        raise Unavailable("this CPU has no native bf16 (OpenVINO's CPU OPTIMIZATION_CAPABILITIES lacks BF16), "
                          "so OpenVINO's default here is fp32: the openvino row")
    return _from_onnx(ctx, "openvino_bf16", functools.partial(openvino_runner, precision="bf16"),
                      "from the same ONNX file; lower precision, shown beside the fp32 rows, not a baseline",
                      precision="bf16")


def _fused(ctx: _Context) -> Candidate:
    model, x = build_twin(ctx.model, fused=True), ctx.x
    return Candidate("fused", "DFANet(fused=True) in eval: BN folded, fused kernels (backend None = best for CPU), "
                     "NCHW input, read by the first conv kernel, NHWC inside", _inference(lambda: model(x)), _as_tensor)


_BUILDERS: dict[str, Callable[[_Context], Candidate]] = {
    "eager": _eager, "channels_last": _channels_last, "compile": _compile,
    "onnxruntime": _onnxruntime, "openvino": _openvino, "openvino_bf16": _openvino_bf16, "fused": _fused,
}


def build_twin(model: DFANet, fused: bool) -> DFANet:
    """A new eval-mode DFANet with ``model``'s weights and the given ``fused`` setting."""
    twin = DFANet(num_classes=model.num_classes, variant=model.variant.name, fused=fused)
    twin.load_state_dict(model.state_dict())
    return twin.eval()


# ---------------------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------------------


def check_output(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max |out - ref| / max |ref|, fraction of pixels with the same argmax class)."""
    if out.shape != ref.shape:
        raise ValueError(f"output shape {tuple(out.shape)} differs from eager's {tuple(ref.shape)}")
    scale = ref.abs().max().clamp_min(1e-12)
    rel = float((out - ref).abs().max() / scale)
    agree = float((out.argmax(1) == ref.argmax(1)).float().mean())
    return rel, agree


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    rounds: int,
    warmup: int = 1,
    pause_s: float = PAUSE_S,
    progress: bool = True,
    desc: str = "rounds",
) -> dict[str, list[float]]:
    """Seconds per call of each function: ``rounds`` rounds, each calling every function once.

    The order is rotated every round (no candidate always runs first, or always after the same one), and
    ``pause_s`` is slept before every call (outside the timing) so the previous runtime's threads go idle.
    """
    if rounds < 1:
        raise ValueError(f"rounds: expected >= 1, got {rounds}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            time.sleep(pause_s)
            fns[name]()
    gc.collect()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in tqdm(range(rounds), desc=desc, disable=not progress, file=sys.stderr, leave=False):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            time.sleep(pause_s)
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def peak_forward_mib(run: Callable[[], Any]) -> float:
    """Peak live MiB allocated through torch's CPU allocator during one call of ``run`` (see MEMORY_METHOD)."""
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


def parse_candidates(candidates: Sequence[str] | str | None) -> list[str]:
    """The candidate names asked for (None: all), checked; a string may list them separated by commas."""
    if candidates is None:
        return list(CANDIDATES)
    if isinstance(candidates, str):
        candidates = [c.strip() for c in candidates.split(",") if c.strip()]
    unknown = [c for c in candidates if c not in CANDIDATES]
    if unknown or not candidates:
        raise ValueError(f"candidates: expected names from {list(CANDIDATES)}, got {list(candidates)}")
    return list(dict.fromkeys(candidates))


class Comparison:
    """Builds and checks the candidates for one configuration; :meth:`time` runs the interleaved rounds.

    Sets ``torch.set_num_threads(threads)`` for its lifetime (restored by :meth:`close`; use it as a context
    manager). The candidates stay alive until then, so other timers (e.g. pytest-benchmark) can reuse them.
    """

    def __init__(self, variant: str = "A", height: int = 512, width: int = 1024, batch: int = 1, threads: int = 2,
                 candidates: Sequence[str] | str | None = None, seed: int = 0, tolerance: float = TOLERANCE,
                 verbose: bool = True):
        for name, value, low in (("height", height, MIN_INPUT_SIZE), ("width", width, MIN_INPUT_SIZE),
                                 ("batch", batch, 1), ("threads", threads, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        names = parse_candidates(candidates)
        self.config = {"variant": variant, "height": height, "width": width, "batch": batch, "threads": threads,
                       "seed": seed, "tolerance": tolerance, "candidates": names}
        self.verbose = verbose
        self.machine = machine_info(threads)  # before building: the load average is that of the run's start
        self._previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        self._work_dir = Path(tempfile.mkdtemp(prefix="dfanet-bench-"))
        self.candidates: dict[str, Candidate] = {}
        self.results: dict[str, CandidateResult] = {}
        try:
            self._build(names)
        except BaseException:
            self.close()
            raise

    def _build(self, names: list[str]) -> None:
        c = self.config
        _log(f"DFANet {c['variant']} at {c['batch']}x3x{c['height']}x{c['width']}, {c['threads']} threads; "
             f"candidates: {', '.join(names)}", self.verbose)
        model = build_model(c["variant"], seed=c["seed"])
        x = torch.randn(c["batch"], 3, c["height"], c["width"], generator=torch.Generator().manual_seed(c["seed"] + 2))
        with torch.inference_mode():
            reference = model(x).float()
        ctx = _Context(model, x, c["threads"], self._work_dir, self.verbose)
        for name in names:
            _log(f"building {name} ...", self.verbose)
            try:
                candidate = _BUILDERS[name](ctx)
            except Unavailable as why:
                self.results[name] = CandidateResult(name, "", "skipped", reason=str(why))
                _log(f"{name}: skipped — {why}", self.verbose)
                continue
            except Exception as err:  # one broken runtime must not hide the others' results; reported as an error
                self.results[name] = CandidateResult(name, "", "error", reason=f"failed to build: {_brief(err)}")
                _log(f"{name}: ERROR — failed to build: {_brief(err)}", self.verbose)
                continue
            result = CandidateResult(name, candidate.description, "ok", setup_s=candidate.setup_s,
                                     precision=candidate.precision)
            tolerance = c["tolerance"] if candidate.precision == "fp32" else BF16_TOLERANCE
            start = time.perf_counter()
            try:
                out = candidate.run()
            except Exception as err:
                result.status, result.reason = "error", f"first call failed: {_brief(err)}"
                self.results[name] = result
                _log(f"{name}: ERROR — {result.reason}", self.verbose)
                continue
            result.first_call_s = time.perf_counter() - start
            try:
                result.rel_err, result.argmax_agreement = check_output(_as_tensor(out), reference)
            except ValueError as err:
                result.status, result.reason = "mismatch", f"{err}; not timed"
            if result.rel_err is not None and not result.rel_err <= tolerance:  # `not <=` also catches NaN
                result.status = "mismatch"
                result.reason = (f"max |out - eager| / max |eager| = {result.rel_err:.2e} > tolerance "
                                 f"{tolerance:.0e}; not timed")
            self.results[name] = result
            _log(f"{name}: first call {result.first_call_s:.2f} s, max err / logit scale "
                 f"{_fmt_err(result.rel_err)} -> {result.status}", self.verbose)
            if result.status == "ok":
                self.candidates[name] = candidate

    def time(self, rounds: int = 10, warmup: int = 2, pause_s: float = PAUSE_S, memory: bool = True,
             progress: bool = True) -> Report:
        """Run the interleaved rounds over the checked candidates and return the report."""
        c = self.config
        _log(f"timing {len(self.candidates)} candidates: {warmup} warm-up + {rounds} interleaved rounds, "
             f"{pause_s * 1000:.0f} ms pause before each run", self.verbose)
        runs = {name: cand.run for name, cand in self.candidates.items()}
        times = time_interleaved(runs, rounds, warmup, pause_s, progress) if runs else {}
        notes = []
        for name, seconds in times.items():
            self.results[name].times_ms = [1000 * s for s in seconds]
        if memory:
            for name, cand in self.candidates.items():
                if cand.torch_based:
                    try:
                        self.results[name].peak_mib = peak_forward_mib(cand.run)
                    except (ImportError, AttributeError, RuntimeError) as err:  # private profiler API moved
                        notes.append(f"peak memory of {name} not measured: {type(err).__name__}: {err}")
        results = [self.results[name] for name in c["candidates"]]
        attach_ratios(results)
        config = dict(c, rounds=rounds, warmup=warmup, pause_s=pause_s)
        load = self.machine.get("load_average_1m_5m_15m")
        if load and load[0] > 0.5 * (self.machine["logical_cpus"] or 1):
            notes.append(f"the machine was busy at the start (1-minute load average {load[0]:.2f} on "
                         f"{self.machine['logical_cpus']} CPUs): OpenMP-threaded runtimes (torch eager, compile, "
                         "fused) lose far more to contention than ONNX Runtime's and OpenVINO's thread pools, so "
                         "even the ratios are unreliable; rerun on an idle machine")
        self.machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        notes.append("absolute times from a shared or busy CPU are context, not claims: compare the ratios, "
                     "which were measured side by side in the same rounds"
                     + (f" (1-minute load average at the start: {load[0]:.2f} on "
                        f"{self.machine['logical_cpus']} CPUs)" if load else ""))
        return Report(config, self.machine, _method(config), MEMORY_METHOD if memory else "not measured",
                      results, notes)

    def close(self) -> None:
        torch.set_num_threads(self._previous_threads)
        shutil.rmtree(self._work_dir, ignore_errors=True)

    def __enter__(self) -> "Comparison":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _brief(err: BaseException, limit: int = 400) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= limit else text[:limit] + " ..."


def _fmt_err(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1e}"


def _method(c: dict) -> str:
    return (
        f"{c['rounds']} interleaved rounds after {c['warmup']} warm-up round(s) (and one checked first call); each "
        f"round runs every candidate once, the order rotated each round, with a {c['pause_s'] * 1000:.0f} ms pause "
        "before each run. Wall time of one forward (time.perf_counter), input prepared beforehand; median and "
        "p20/p80 over rounds. Ratios: candidate median / fused median, and the p20–p80 of the per-round ratio. "
        f"All candidates share one random DFANet {c['variant']} (BN statistics randomised, seed {c['seed']}); each "
        f"output was checked against eager (max |diff| / max |eager logit| <= {c['tolerance']:.0e}; "
        f"{BF16_TOLERANCE:.0e} for a bf16 candidate) before timing. fp32 (bf16 where a row says so; such rows are "
        f"not baselines), batch {c['batch']}, {c['threads']} threads (torch.set_num_threads, ONNX Runtime "
        "intra_op_num_threads, OpenVINO INFERENCE_NUM_THREADS). Setup time (ONNX export + session build, "
        "torch.compile's compile) is reported apart and is not in the timings."
    )


def run_comparison(
    variant: str = "A",
    height: int = 512,
    width: int = 1024,
    batch: int = 1,
    threads: int = 2,
    rounds: int = 10,
    candidates: Sequence[str] | str | None = None,
    out_dir: str | Path | None = None,
    warmup: int = 2,
    pause_s: float = PAUSE_S,
    seed: int = 0,
    memory: bool = True,
    verbose: bool = True,
) -> Report:
    """Compare the fused DFANet with its unfused baselines on this CPU; see the module docstring for the method.

    Args:
        variant: "A", "B" or "A'". height, width: input size (>= 32). batch: images per forward.
        threads: CPU threads for every runtime. rounds: interleaved timing rounds (>= 10 for a report).
        candidates: names from :data:`CANDIDATES` (list or comma-separated string); None for all.
        out_dir: if given, the Markdown table, JSON and bar chart are written there (see :meth:`Report.write`).
        memory: also measure peak allocator memory of one forward for the torch-based candidates.
        verbose: log lines and a progress bar on stderr.

    Returns:
        The :class:`~dfanet.tools.bench_report.Report`; ``report.to_markdown()`` is the readable table.
    """
    with Comparison(variant, height, width, batch, threads, candidates, seed, verbose=verbose) as comparison:
        report = comparison.time(rounds, warmup, pause_s, memory=memory, progress=verbose)
    if out_dir is not None:
        paths = report.write(out_dir)
        _log("wrote " + ", ".join(str(p) for p in paths.values()), verbose)
    return report
