"""Whole-model CPU speed comparison behind ``dfanet bench``: the fused DFANet against the unfused model on every
common runtime (the candidates: ``cpu_candidates``).

Method (docs/benchmarking.md): every candidate's output is checked against eager before it is timed (fp32 and bf16
each against their own tolerance); a mismatching one is reported, not timed, and a candidate whose runtime is missing
(or fails to build) is reported as skipped or as an error, with the reason. After warm-up, R interleaved rounds with
a pause (``timing.interleaved``). Reported (``report.Report``): median and p20/p80 per candidate, each candidate's
median over fused's, the per-round ratio's p20–p80, and fused against the best baseline. Set-up costs (ONNX export,
torch.compile) are reported apart.

Entry point: :func:`run_comparison`; :class:`Comparison` keeps the built candidates for other timers (bench/).
:func:`predict_comparison` times the fused model's two ways to labels, ``predict`` and forward + argmax.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

import torch

from ...model import MIN_INPUT_SIZE
from .check import CPU_MODEL_TOLERANCE, LABELS_AGREEMENT, compare, labels_agreement
from .cpu_candidates import BUILDERS, Candidate, Context, Unavailable, as_tensor, parse_candidates
from .log import log
from .machine import load_average, machine_info
from .memory import CPU_MEMORY_METHOD, peak_call_mib
from .models import build_model, build_twin, forward_labels, random_input
from .report import CandidateResult, Column, Report, attach_ratios, markdown_table, paired_ratio
from .timing import PAUSE_S, cpu_timer, interleaved, quantiles


class Comparison:
    """Builds and checks the candidates for one configuration; :meth:`time` runs the interleaved rounds.

    Sets ``torch.set_num_threads(threads)`` for its lifetime (restored by :meth:`close`; use it as a context
    manager). The candidates stay alive until then, so other timers (e.g. pytest-benchmark) can reuse them.
    """

    def __init__(self, variant: str = "A", height: int = 512, width: int = 1024, batch: int = 1, threads: int = 2,
                 candidates: Sequence[str] | str | None = None, seed: int = 0,
                 tolerance: float = CPU_MODEL_TOLERANCE["fp32"], verbose: bool = True):
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
        log(f"DFANet {c['variant']} at {c['batch']}x3x{c['height']}x{c['width']}, {c['threads']} threads; "
            f"candidates: {', '.join(names)}", self.verbose)
        model = build_model(c["variant"], seed=c["seed"])
        x = random_input(c["batch"], c["height"], c["width"], seed=c["seed"] + 2)
        with torch.inference_mode():
            reference = model(x).float()
        ctx = Context(model, x, c["threads"], self._work_dir, self.verbose)
        for name in names:
            log(f"building {name} ...", self.verbose)
            try:
                candidate = BUILDERS[name](ctx)
            except Unavailable as why:
                self.results[name] = CandidateResult(name, "", "skipped", reason=str(why))
                log(f"{name}: skipped — {why}", self.verbose)
                continue
            except Exception as err:  # one broken runtime must not hide the others' results; reported as an error
                self.results[name] = CandidateResult(name, "", "error", reason=f"failed to build: {_brief(err)}")
                log(f"{name}: ERROR — failed to build: {_brief(err)}", self.verbose)
                continue
            result = CandidateResult(name, candidate.description, "ok", setup_s=candidate.setup_s,
                                     precision=candidate.precision)
            tolerance = c["tolerance"] if candidate.precision == "fp32" else CPU_MODEL_TOLERANCE[candidate.precision]
            start = time.perf_counter()
            try:
                out = candidate.run()
            except Exception as err:
                result.status, result.reason = "error", f"first call failed: {_brief(err)}"
                self.results[name] = result
                log(f"{name}: ERROR — {result.reason}", self.verbose)
                continue
            result.first_call_s = time.perf_counter() - start
            try:
                result.rel_err, result.argmax_agreement = compare(as_tensor(out), reference)
            except ValueError as err:
                result.status, result.reason = "mismatch", f"{err}; not timed"
            if result.rel_err is not None and not result.rel_err <= tolerance:  # `not <=` also catches NaN
                result.status = "mismatch"
                result.reason = (f"max |out - eager| / max |eager| = {result.rel_err:.2e} > tolerance "
                                 f"{tolerance:.0e}; not timed")
            self.results[name] = result
            log(f"{name}: first call {result.first_call_s:.2f} s, max err / logit scale "
                f"{_fmt_err(result.rel_err)} -> {result.status}", self.verbose)
            if result.status == "ok":
                self.candidates[name] = candidate

    def time(self, rounds: int = 10, warmup: int = 2, pause_s: float = PAUSE_S, memory: bool = True,
             progress: bool = True) -> Report:
        """Run the interleaved rounds over the checked candidates and return the report."""
        c = self.config
        log(f"timing {len(self.candidates)} candidates: {warmup} warm-up + {rounds} interleaved rounds, "
            f"{pause_s * 1000:.0f} ms pause before each run", self.verbose)
        measures = {name: functools.partial(cpu_timer, cand.run) for name, cand in self.candidates.items()}
        for name, times_ms in interleaved(measures, rounds, warmup, pause_s, progress).items():
            self.results[name].times_ms = times_ms
        notes = []
        if memory:
            for name, cand in self.candidates.items():
                if cand.torch_based:
                    try:
                        self.results[name].peak_mib = peak_call_mib(cand.run)
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
        self.machine["load_average_end"] = load_average()
        notes.append("absolute times from a shared or busy CPU are context, not claims: compare the ratios, "
                     "which were measured side by side in the same rounds"
                     + (f" (1-minute load average at the start: {load[0]:.2f} on "
                        f"{self.machine['logical_cpus']} CPUs)" if load else ""))
        return Report(config, self.machine, _method(config), CPU_MEMORY_METHOD if memory else "not measured",
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
        "before each run. Wall time of one forward (time.perf_counter; the torch candidates under "
        "torch.inference_mode()), input prepared beforehand; median and "
        "p20/p80 over rounds. Ratios: candidate median / fused median, and the p20–p80 of the per-round ratio. "
        f"All candidates share one random DFANet {c['variant']} (BN statistics randomised, seed {c['seed']}); each "
        f"output was checked against eager (max |diff| / max |eager logit| <= {c['tolerance']:.0e}; "
        f"{CPU_MODEL_TOLERANCE['bf16']:.0e} for a bf16 candidate) before timing. fp32 (bf16 where a row says so; such "
        f"rows are not baselines), batch {c['batch']}, {c['threads']} threads (torch.set_num_threads, ONNX Runtime "
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
        candidates: names from :data:`CANDIDATES` (list or comma-separated string); None for all but :data:`OPT_IN`.
        out_dir: if given, the Markdown table, JSON and bar chart are written there (see :meth:`Report.write`).
        memory: also measure peak allocator memory of one forward for the torch-based candidates.
        verbose: log lines and a progress bar on stderr.

    Returns:
        The :class:`~dfanet.tools.bench.report.Report`; ``report.to_markdown()`` is the readable table.
    """
    with Comparison(variant, height, width, batch, threads, candidates, seed, verbose=verbose) as comparison:
        report = comparison.time(rounds, warmup, pause_s, memory=memory, progress=verbose)
    if out_dir is not None:
        paths = report.write(out_dir)
        log("wrote " + ", ".join(str(p) for p in paths.values()), verbose)
    return report


PREDICT_COLUMNS = [
    Column("fused model", lambda r: r["name"], numeric=False),
    Column("median ms", lambda r: f"{r['median_ms']:.1f}"),
    Column("p20–p80 ms", lambda r: f"{r['p20_ms']:.1f}–{r['p80_ms']:.1f}"),
    Column("time / predict (medians)", lambda r: f"{r['ratio_to_predict']:.2f}x"),
    Column("per round p20–p80", lambda r: f"{r['per_round_p20_p80'][0]:.2f}–{r['per_round_p20_p80'][1]:.2f}x"),
    Column("peak MiB", lambda r: "–" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"),
]


def predict_comparison(variant: str = "A", height: int = 1024, width: int = 1024, batch: int = 1, threads: int = 2,
                       rounds: int = 10, warmup: int = 2, pause_s: float = PAUSE_S, seed: int = 0,
                       memory: bool = True, verbose: bool = True) -> dict:
    """``DFANet.predict`` (the quarter-size logits' labels from ``upsample_labels``, the full-size logits never
    written) against ``forward(x).argmax(1)`` on the same fused model (backend None: the CPU kernels): time and
    peak memory. The two label maps are checked to agree (``LABELS_AGREEMENT``) before timing; then interleaved
    rounds as in :class:`Comparison`. Returns the title, method, rows and Markdown table."""
    machine = machine_info(threads)  # before the work: the load average is that of the run's start
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = build_twin(build_model(variant, seed=seed), fused=True)
        x = random_input(batch, height, width, seed=seed + 2)
        runs = {"forward + argmax": lambda: forward_labels(model, x), "predict": lambda: model.predict(x)}
        with torch.inference_mode():
            agree = labels_agreement(runs["predict"](), runs["forward + argmax"]())
            if agree < LABELS_AGREEMENT:
                raise RuntimeError(f"predict's labels agree with forward + argmax on only {agree:.5f} of pixels")
            log(f"predict vs forward + argmax at {batch}x3x{height}x{width}: labels agree on {agree:.6f} of pixels; "
                f"timing {warmup} warm-up + {rounds} interleaved rounds", verbose)
            times = interleaved({name: functools.partial(cpu_timer, run) for name, run in runs.items()}, rounds,
                                warmup, pause_s, verbose, desc="predict rounds")
            peaks = {name: peak_call_mib(run) if memory else None for name, run in runs.items()}
    finally:
        torch.set_num_threads(previous)
    rows = []
    for name, t in times.items():
        p20, median, p80 = quantiles(t)
        ratio_p20, _, ratio_p80 = paired_ratio(t, times["predict"])
        rows.append({"name": name, "median_ms": median, "p20_ms": p20, "p80_ms": p80,
                     "ratio_to_predict": median / quantiles(times["predict"])[1],
                     "per_round_p20_p80": [ratio_p20, ratio_p80], "peak_mib": peaks[name], "times_ms": t})
    title = (f"DFANet {variant} fused, {batch}x3x{height}x{width}, {threads} threads: predict vs forward + argmax "
             f"(labels agree on {agree:.6f} of pixels)")
    method = (f"{rounds} interleaved rounds after {warmup} warm-up round(s), {pause_s * 1000:.0f} ms pause before "
              "each run; wall time per call, median and p20/p80; the ratios as in the whole-model comparison, against "
              f"predict. Peak memory: {CPU_MEMORY_METHOD if memory else 'not measured'}")
    markdown = "\n".join([f"### {title}", "", *markdown_table(PREDICT_COLUMNS, rows), "", f"Method: {method}"]) + "\n"
    return {"title": title, "method": method, "rows": rows, "markdown": markdown, "agreement": agree,
            "machine": machine}
