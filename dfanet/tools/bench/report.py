"""Reports of the harness: Markdown tables, JSON and the PNG chart; nothing is timed here (method:
docs/benchmarking.md). Ratios are the numbers to quote: absolute milliseconds from a shared CPU are context.

Every table is a list of rows (dataclasses or dicts) rendered by :func:`markdown_table` through a list of
:class:`Column`: a new column (e.g. a kernel's floor time beside its measured one) is one more ``Column``.

- :class:`Report`, :class:`CandidateResult`: the whole-model CPU comparison (``dfanet bench``);
- :func:`op_speed_markdown`: ``pytest bench/``'s per-op table;
- :func:`gpu_markdown`: the GPU comparison's model (and predict against forward + argmax), op and layer tables;
- :func:`write_markdown_and_json`: the files beside each other.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .timing import quantiles

REFERENCE = "fused"  # every ratio is "candidate time / fused time": above 1 means fused is faster
# The fused model itself in another runtime (cpu_candidates.OPT_IN): a row beside fused, never a baseline, or the
# headline "fused vs best baseline" would compare the fused kernels with themselves.
FUSED_RUNTIMES = ("aoti",)


@dataclass
class CandidateResult:
    name: str
    description: str
    # "ok"; "skipped" (runtime missing); "error" (failed to build or run); "mismatch" (wrong output, not timed)
    status: str
    reason: str | None = None
    times_ms: list[float] = field(default_factory=list)  # one per round, in round order
    setup_s: float | None = None  # building it: ONNX export + session, or torch.compile's compile (first call)
    first_call_s: float | None = None  # the checked first call (after setup), lazy initialisation included
    rel_err: float | None = None  # max |out - eager| / max |eager|
    argmax_agreement: float | None = None  # fraction of pixels whose argmax class equals eager's
    peak_mib: float | None = None
    ratio_to_fused: float | None = None  # median / fused median
    paired_ratio: tuple[float, float, float] | None = None  # p20, median, p80 over rounds of time / fused time
    precision: str = "fp32"  # what the candidate computes in (fused: fp32)

    @property
    def timed(self) -> bool:
        return self.status == "ok" and bool(self.times_ms)

    @property
    def p20_ms(self) -> float:
        return quantiles(self.times_ms)[0]

    @property
    def median_ms(self) -> float:
        return quantiles(self.times_ms)[1]

    @property
    def p80_ms(self) -> float:
        return quantiles(self.times_ms)[2]


def attach_ratios(results: list[CandidateResult]) -> None:
    """Fill ``ratio_to_fused`` and ``paired_ratio`` of every timed result (no-op if fused was not timed)."""
    ref = next((r for r in results if r.name == REFERENCE and r.timed), None)
    if ref is None:
        return
    for r in results:
        if r.timed and len(r.times_ms) == len(ref.times_ms):
            r.ratio_to_fused = r.median_ms / ref.median_ms
            r.paired_ratio = paired_ratio(r.times_ms, ref.times_ms)


def paired_ratio(times, reference_times) -> tuple[float, float, float]:
    """p20, median and p80 of the per-round ratio time / reference time (rounds in the same order). Same round, same
    machine state: the per-round ratio cancels slow drifts in background load."""
    return quantiles([a / b for a, b in zip(times, reference_times)])


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{unit}"


def _spread(p20: float, p80: float, spec: str, unit: str = "") -> str:
    return f"{p20:{spec}}–{p80:{spec}}{unit}"


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[Any], str]  # the row's cell text
    numeric: bool = True  # right-aligned


def markdown_table(columns: Sequence[Column], rows) -> list[str]:
    """A Markdown table, one line per row."""
    lines = ["| " + " | ".join(c.header for c in columns) + " |",
             "|" + "|".join("---:" if c.numeric else "---" for c in columns) + "|"]
    return lines + ["| " + " | ".join(c.cell(row) for c in columns) + " |" for row in rows]


def _field(key: str) -> Column:
    """A text column showing row[key], headed by the key."""
    return Column(key, lambda row: str(row[key]), numeric=False)


CANDIDATE_COLUMNS = [
    Column("candidate", lambda r: r.name, numeric=False),
    Column("precision", lambda r: r.precision, numeric=False),
    Column("median ms", lambda r: f"{r.median_ms:.1f}"),
    Column("p20–p80 ms", lambda r: _spread(r.p20_ms, r.p80_ms, ".1f")),
    Column("time / fused (medians)", lambda r: _fmt(r.ratio_to_fused, ".2f", "x")),
    Column("per round p20–p80", lambda r: "–" if r.paired_ratio is None else
           _spread(r.paired_ratio[0], r.paired_ratio[2], ".2f", "x")),
    Column("max err / logit scale", lambda r: _fmt(r.rel_err, ".1e")),
    Column("peak MiB", lambda r: _fmt(r.peak_mib, ".0f")),
    Column("setup s", lambda r: _fmt(r.setup_s, ".1f")),
]


@dataclass
class Report:
    config: dict  # variant, height, width, batch, threads, rounds, warmup, pause_s, seed, tolerance
    machine: dict
    method: str
    memory_method: str
    results: list[CandidateResult]
    notes: list[str] = field(default_factory=list)

    def result(self, name: str) -> CandidateResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"no candidate {name!r} in this report; have {[r.name for r in self.results]}")

    @property
    def best_baseline(self) -> CandidateResult | None:
        """The fastest timed fp32 candidate other than fused (by median): lower-precision rows and the fused model in
        another runtime (:data:`FUSED_RUNTIMES`) are not baselines."""
        timed = [r for r in self.results
                 if r.timed and r.name != REFERENCE and r.name not in FUSED_RUNTIMES and r.precision == "fp32"]
        return min(timed, key=lambda r: r.median_ms, default=None)

    @property
    def lower_precision(self) -> list[CandidateResult]:
        """The timed candidates that compute in less than fp32 (shown beside the baselines)."""
        return [r for r in self.results if r.timed and r.precision != "fp32"]

    @property
    def fused_vs_best(self) -> float | None:
        """Best baseline median / fused median (above 1: fused is faster than every baseline)."""
        best = self.best_baseline
        return None if best is None or best.ratio_to_fused is None else best.ratio_to_fused

    @property
    def title(self) -> str:
        c = self.config
        return (f"DFANet {c['variant']}, {c['batch']}x3x{c['height']}x{c['width']}, fp32, {c['threads']} threads, "
                f"{self.machine['cpu']}")

    @property
    def stem(self) -> str:
        """File name stem for this configuration."""
        c = self.config
        variant = c["variant"].replace("'", "prime")
        return f"dfanet-{variant}-{c['height']}x{c['width']}-b{c['batch']}-t{c['threads']}"

    def to_markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines += markdown_table(CANDIDATE_COLUMNS, sorted((r for r in self.results if r.timed),
                                                          key=lambda r: r.median_ms))
        lines.append("")
        best, speedup = self.best_baseline, self.fused_vs_best
        if speedup is not None:
            verdict = "faster" if speedup > 1 else "slower (the fused path does NOT beat every baseline here)"
            lines.append(
                f"**fused vs best baseline ({best.name})**: {speedup:.2f}x — fused is {verdict}; "
                f"per round p20–p80 {_spread(best.paired_ratio[0], best.paired_ratio[2], '.2f', 'x')}."
            )
        else:
            lines.append("**fused vs best baseline**: not available (fused or every baseline was not timed).")
        for r in self.lower_precision:
            if r.ratio_to_fused is not None:
                verdict = "faster" if r.ratio_to_fused > 1 else "slower"
                lines.append(
                    f"**fused (fp32) vs {r.name} ({r.precision}, not a baseline: max err / logit scale "
                    f"{_fmt(r.rel_err, '.1e')}, argmax equal on {_fmt(r.argmax_agreement, '.1%')} of pixels)**: "
                    f"{r.ratio_to_fused:.2f}x — fused is {verdict}; per round p20–p80 "
                    f"{_spread(r.paired_ratio[0], r.paired_ratio[2], '.2f', 'x')}."
                )
        for r in self.results:
            if not r.timed:
                lines.append(f"- {r.name}: **{r.status}** — {r.reason}")
        lines += ["", "Candidates:"] + [f"- {r.name}: {r.description}" for r in self.results]
        lines += ["", f"Method: {self.method}", "", f"Peak memory: {self.memory_method}"]
        load, isa = self.machine.get("load_average_1m_5m_15m"), self.machine.get("cpu_isa")
        cpu = self.machine["cpu"] + (f" ({' '.join(isa)})" if isa else "")
        lines += [
            "",
            f"Machine: {cpu}, {self.machine['logical_cpus']} logical CPUs, load average at start "
            f"{_fmt(load[0] if load else None, '.2f')}; torch {self.machine['torch']}, onnxruntime "
            f"{self.machine['onnxruntime']}, openvino {self.machine['openvino']}; {self.machine['date_utc']}.",
        ]
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        results = []
        for r in self.results:
            d = asdict(r)
            if r.timed:
                d.update(median_ms=r.median_ms, p20_ms=r.p20_ms, p80_ms=r.p80_ms)
            results.append(d)
        best = self.best_baseline
        return {
            "title": self.title,
            "config": self.config,
            "machine": self.machine,
            "method": self.method,
            "memory_method": self.memory_method,
            "fused_vs_best_baseline": None if self.fused_vs_best is None else {
                "best_baseline": best.name, "speedup": self.fused_vs_best, "per_round_p20_p50_p80": best.paired_ratio,
            },
            "fused_vs_lower_precision": {r.name: {"precision": r.precision, "speedup": r.ratio_to_fused,
                                                  "per_round_p20_p50_p80": r.paired_ratio}
                                         for r in self.lower_precision},
            "results": results,
            "notes": self.notes,
        }

    def write_plot(self, path: str | Path) -> Path:
        """Bar chart of median ms per candidate (p20–p80 whiskers), each bar labelled with its ratio to fused."""
        # Figure + Agg canvas directly: no pyplot, so the caller's matplotlib backend is left alone.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        timed = sorted((r for r in self.results if r.timed), key=lambda r: r.median_ms, reverse=True)
        fig = Figure(figsize=(8, 1.2 + 0.55 * max(len(timed), 1)))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        medians = [r.median_ms for r in timed]
        errors = [[r.median_ms - r.p20_ms for r in timed], [r.p80_ms - r.median_ms for r in timed]]
        colours = ["tab:orange" if r.name == REFERENCE else "tab:blue" if r.precision == "fp32" else "tab:gray"
                   for r in timed]
        names = [r.name if r.precision == "fp32" else f"{r.name} ({r.precision})" for r in timed]
        ax.barh(names, medians, xerr=errors, color=colours, capsize=3)
        for i, r in enumerate(timed):
            ratio = "" if r.ratio_to_fused is None else f"  ({r.ratio_to_fused:.2f}x fused)"
            label = f" {r.median_ms:.1f} ms" + ratio
            ax.text(r.p80_ms, i, label, va="center", fontsize=8)
        ax.set_xlim(0, max((r.p80_ms for r in timed), default=1) * 1.45)
        ax.set_xlabel("median ms per forward (whiskers p20–p80); ratio = time / fused time")
        c = self.config
        ax.set_title(f"{self.title}\n{c['rounds']} interleaved rounds; shared machine: compare ratios, not ms",
                     fontsize=8)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=120)
        return path

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``<stem>.md``, ``<stem>.json`` and ``<stem>.png`` into ``out_dir``; returns the paths."""
        paths = write_markdown_and_json(out_dir, self.stem, self.to_markdown(), self.to_dict())
        paths["plot"] = self.write_plot(Path(out_dir) / f"{self.stem}.png")
        return paths


def write_markdown_and_json(out_dir: str | Path, stem: str, markdown: str, data: dict) -> dict[str, Path]:
    """``<stem>.md`` and ``<stem>.json`` in ``out_dir`` (made if missing); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / f"{stem}.md", "json": out / f"{stem}.json"}
    paths["markdown"].write_text(markdown)
    paths["json"].write_text(json.dumps(data, indent=2, default=str) + "\n")
    return paths


# ---------------------------------------------------------------------------------------------------------------
# pytest bench/'s per-op table: each fused CPU op against its baseline
# ---------------------------------------------------------------------------------------------------------------
OP_SPEED_COLUMNS = [
    _field("op"), _field("shapes"), _field("baseline"),
    Column("baseline ms", lambda r: f"{r['baseline_ms']:.2f}"),
    Column("fused ms", lambda r: f"{r['fused_ms']:.2f}"),
    Column("speedup (medians)", lambda r: f"{r['speedup']:.2f}x"),
    Column("per round p20–p80", lambda r: _spread(*r["per_round_p20_p80"], ".2f", "x")),
]


def op_speed_markdown(title: str, rows: list[dict], method: str) -> str:
    return "\n".join([f"### {title}", "", *markdown_table(OP_SPEED_COLUMNS, rows), "", f"Method: {method}"]) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# The GPU comparison's report (a dict, written as JSON as it is): model, op and layer tables
# ---------------------------------------------------------------------------------------------------------------
GPU_IMPLS = ("triton", "reference", "cuda")  # the op tables' implementation columns; "reference" is headed torch


def _ms(entry: dict, key: str) -> str:
    return f"{entry[key]:.3f}" if key in entry else "–"


def _ratio(row: dict, key: str) -> str:
    return f"{row[key]:.2f}" if key in row else "–"


def _impl_cell(row: dict, impl: str, ok: Callable[[dict], str]) -> str:
    e = row["impls"].get(impl)
    return "–" if e is None else e["status"] if e["status"] != "ok" else ok(e)


GPU_MODEL_COLUMNS = [
    Column("candidate", lambda e: e["name"], numeric=False),
    Column("median ms", lambda e: _ms(e, "median_ms")),
    Column("p20–p80 ms", lambda e: _spread(e["p20_ms"], e["p80_ms"], ".3f") if "p20_ms" in e else "–"),
    Column("kernel ms", lambda e: _ms(e, "kernel_ms")),
    Column("launches", lambda e: f"{e['launches']:.0f}" if "launches" in e else "–"),
    Column("peak MiB", lambda e: _fmt(e.get("peak_mib"), ".1f")),
    Column("/ fused_triton", lambda e: _ratio(e, "ratio_to_fused_triton")),
    Column("setup s", lambda e: str(e.get("setup_s", "–"))),
    Column("rel err", lambda e: f"{e['rel_err']:.1e}" if "rel_err" in e else "–"),
    Column("argmax agree", lambda e: f"{e['argmax_agreement']:.4f}" if "argmax_agreement" in e else "–"),
    Column("status", lambda e: e["status"] + (f": {e['reason']}" if e.get("reason") else ""), numeric=False),
]
# gpu.predict_rows: per fused backend, predict against forward + argmax (forward's logits alone beside them).
_PREDICT_WAYS = {"forward": "forward", "argmax": "forward + argmax", "predict": "predict"}  # row key -> header
GPU_PREDICT_COLUMNS = [
    _field("backend"),
    *(Column(f"{label} ms", lambda r, way=way: _fmt(r[f"{way}_ms"], ".3f")) for way, label in _PREDICT_WAYS.items()),
    Column("time: (forward + argmax) / predict", lambda r: f"{r['time_ratio']:.2f}"),
    *(Column(f"{label} MiB", lambda r, way=way: _fmt(r[f"{way}_mib"], ".1f")) for way, label in _PREDICT_WAYS.items()),
    Column("memory: (forward + argmax) / predict", lambda r: _fmt(r.get("memory_ratio"), ".2f")),
]
GPU_OP_COLUMNS = [
    _field("op"), _field("shapes"),
    Column("input", lambda r: f"{r['size'][0]}x{r['size'][1]}", numeric=False),
    Column("batch", lambda r: str(r["batch"])), _field("dtype"),
    *(Column("torch" if impl == "reference" else impl, lambda r, impl=impl: _impl_cell(
        r, impl, lambda e: _ms(e, "median_ms") + (f" ({e['kernel_ms']:.3f})" if "kernel_ms" in e else "")))
      for impl in GPU_IMPLS),
    Column("torch / triton", lambda r: _ratio(r, "torch_over_triton")),
    Column("cuda / triton", lambda r: _ratio(r, "cuda_over_triton")),
]
GPU_LAYER_COLUMNS = [
    _field("op"), _field("shapes"), Column("calls", lambda r: str(r["calls"])),
    *(Column(("torch" if impl == "reference" else impl) + " us", lambda r, impl=impl: _impl_cell(
        r, impl, lambda e: f"{e['median_ms'] * 1e3:.1f}")) for impl in GPU_IMPLS),
    Column("cuda / triton", lambda r: _ratio(r, "cuda_over_triton")),
    # The roofline (roofline.Roofline.op_floor): minimum bytes, and the floor with >= 2 us per kernel it launches.
    Column("MB", lambda r: f"{r['floor']['bytes'] / 1e6:.2f}" if "floor" in r else "–"),
    Column("floor us", lambda r: f"{r['floor']['launch_floor_us']:.1f}" if "floor" in r else "–"),
    *(Column(f"{impl} / floor", lambda r, impl=impl: _impl_cell(r, impl, lambda e: _ratio(e, "over_floor")))
      for impl in ("triton", "cuda")),
]


def gpu_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# DFANet GPU benchmark ({report['config']['variant']})", "",
        f"{m['device']}; torch {m['torch']} (CUDA {m.get('torch_cuda')}), Triton {m.get('triton')}, cuDNN "
        f"{m.get('cudnn')}; commit {m.get('git_commit')}; {m['date_utc']}. cuDNN TF32: {m.get('cudnn_allow_tf32')}. "
        f"Triton dwsep_conv tiles: "
        f"{'autotuned' if m.get('triton_autotune') == '1' else 'chosen from the shape (no autotuning)'}.", "",
        "Medians of CUDA-event times; ratios are candidate / fused_triton (model) and torch / triton (ops): "
        "above 1 means the Triton path is faster. Method: docs/benchmarking.md and dfanet/tools/bench/gpu.py.", "",
    ]
    if report.get("memory_method"):
        lines += [f"Peak MiB: {report['memory_method']}", ""]
    for case in report["model"]:
        lines += _model_tables(case)
    if report["ops"]:
        lines += ["## Ops (ms per call: events, and in brackets the GPU time of its kernels)", ""]
        lines += markdown_table(GPU_OP_COLUMNS, report["ops"]) + [""]
    for case in report.get("layers", []):
        lines += _layer_table(case)
    if report.get("errors"):
        lines += ["## Failed", ""] + [f"- {e}" for e in report["errors"]] + [""]
    if report["skipped_cases"]:
        lines += ["## Not run", ""] + [f"- {s}" for s in report["skipped_cases"]] + [""]
    lines.append(f"Total {report['elapsed_s']:.0f} s.")
    return "\n".join(lines) + "\n"


def _model_tables(case: dict) -> list[str]:
    """A model case: every candidate, then predict against forward + argmax, then the fused models' heaviest kernels."""
    h, w = case["size"]
    entries = [dict(e, name=name) for name, e in case["candidates"].items()]
    lines = [f"## Model {h}x{w}, batch {case['batch']}, {case['dtype']}", ""]
    lines += markdown_table(GPU_MODEL_COLUMNS, entries) + [""]
    for why in dict.fromkeys(e["peak_not_measured"] for e in entries if "peak_not_measured" in e):
        names = [e["name"] for e in entries if e.get("peak_not_measured") == why]
        lines += [f"Peak memory of {', '.join(names)}: {why}.", ""]
    if case.get("predict_vs_argmax"):
        lines += ["predict (the labels from the quarter-size logits, `upsample_labels`) against forward + argmax (the "
                  "labels from the full-size logits), per fused backend: medians and peak memory of one call; a ratio "
                  "above 1 means predict is faster, or needs less memory.", ""]
        lines += markdown_table(GPU_PREDICT_COLUMNS, case["predict_vs_argmax"]) + [""]
    for e in entries:
        if e.get("top_kernels"):
            lines += [f"Heaviest kernels of {e['name']} (ms per forward): "
                      + "; ".join(f"`{k['name'][:60]}` {k['ms']:.3f}" for k in e["top_kernels"]), ""]
    return lines


def _layer_table(case: dict) -> list[str]:
    h, w = case["size"]
    totals = case["totals_ms"]
    lines = [f"## Layers of one fused forward: {h}x{w}, batch {case['batch']}, {case['dtype']}", "",
             f"Every distinct op call of the model (calls: how many times one forward makes it), us per call: medians "
             f"of {case['timing']}, i.e. the GPU time of the kernels without the CPU's launch cost. torch = the "
             f"unfused sequence the op replaces (cuDNN, TF32 on).", ""]
    roofline = case.get("roofline")
    if roofline:
        lines += [f"Floor: the op's minimum bytes over {roofline['bandwidth_gb_s']:.0f} GB/s "
                  f"({roofline['bandwidth_source']}), or its FLOPs over the peaks of {roofline['device']}, and at "
                  f"least 2 us per kernel it launches (a CUDA-graph node); impl / floor = measured / floor "
                  f"(docs/benchmarking.md, Roofline).", ""]
    # The per-forward sums in ms (a forward's total), not us like the rows above them.
    cells = [f"{totals[impl]:.3f} ms" if impl in totals else "–" for impl in GPU_IMPLS]
    ratio = f"{totals['cuda'] / totals['triton']:.2f}" if "cuda" in totals and "triton" in totals else "–"
    floor = case.get("floor_ms")
    over = [f"{totals[impl] / floor:.2f}" if floor and impl in totals else "–" for impl in ("triton", "cuda")]
    calls = sum(r["calls"] for r in case["rows"])
    lines += markdown_table(GPU_LAYER_COLUMNS, case["rows"])
    lines += [f"| all, per forward | | {calls} | {' | '.join(cells)} | {ratio} | "
              f"{_fmt(floor and sum(r['calls'] * r['floor']['bytes'] for r in case['rows']) / 1e6, '.1f')} | "
              f"{_fmt(floor, '.3f', ' ms')} | {' | '.join(over)} |", ""]
    compared = [r["cuda_over_triton"] for r in case["rows"] if "cuda_over_triton" in r]
    if compared:
        lines += [f"CUDA as fast as Triton or faster on {sum(v <= 1 for v in compared)} of {len(compared)} layers.",
                  ""]
    return lines
