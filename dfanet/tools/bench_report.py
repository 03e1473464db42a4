"""The result of a whole-model speed comparison (``dfanet.tools.benchmark``): statistics, ratios, Markdown, JSON, plot.

Only data and presentation live here; nothing is timed. Ratios are the numbers to quote (docs/benchmarking.md):
absolute milliseconds from a shared CPU are context, not claims.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

REFERENCE = "fused"  # every ratio is "candidate time / fused time": above 1 means fused is faster


def quantiles(values, qs=(20, 50, 80)) -> tuple[float, ...]:
    """Percentiles (linear interpolation) of ``values``."""
    return tuple(float(v) for v in np.percentile(np.asarray(values, dtype=float), qs))


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
            # Same round, same machine state: the per-round ratio cancels slow drifts in background load.
            r.paired_ratio = quantiles([a / b for a, b in zip(r.times_ms, ref.times_ms)])


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(threads: int) -> dict:
    """What the numbers were measured on: CPU, threads, library versions, date, load average (noise indicator)."""
    import torch

    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "load_average_1m_5m_15m": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime"),
        "openvino": _version("openvino"),
        "dfanet_kernels": _version("dfanet-kernels"),
        "git_commit": _git_commit(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{unit}"


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
        """The fastest timed fp32 candidate other than fused (by median): lower-precision rows are not baselines."""
        timed = [r for r in self.results if r.timed and r.name != REFERENCE and r.precision == "fp32"]
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
        lines = [
            f"### {self.title}",
            "",
            "| candidate | precision | median ms | p20–p80 ms | time / fused (medians) | per round p20–p80 | "
            "max err / logit scale | peak MiB | setup s |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sorted((r for r in self.results if r.timed), key=lambda r: r.median_ms):
            paired = "–" if r.paired_ratio is None else f"{r.paired_ratio[0]:.2f}–{r.paired_ratio[2]:.2f}x"
            lines.append(
                f"| {r.name} | {r.precision} | {r.median_ms:.1f} | {r.p20_ms:.1f}–{r.p80_ms:.1f} "
                f"| {_fmt(r.ratio_to_fused, '.2f', 'x')} | {paired} | {_fmt(r.rel_err, '.1e')} "
                f"| {_fmt(r.peak_mib, '.0f')} | {_fmt(r.setup_s, '.1f')} |"
            )
        lines.append("")
        best, speedup = self.best_baseline, self.fused_vs_best
        if speedup is not None:
            verdict = "faster" if speedup > 1 else "slower (the fused path does NOT beat every baseline here)"
            paired = best.paired_ratio
            lines.append(
                f"**fused vs best baseline ({best.name})**: {speedup:.2f}x — fused is {verdict}; "
                f"per round p20–p80 {paired[0]:.2f}–{paired[2]:.2f}x."
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
                    f"{r.paired_ratio[0]:.2f}–{r.paired_ratio[2]:.2f}x."
                )
        for r in self.results:
            if not r.timed:
                lines.append(f"- {r.name}: **{r.status}** — {r.reason}")
        lines += ["", "Candidates:"] + [f"- {r.name}: {r.description}" for r in self.results]
        lines += ["", f"Method: {self.method}", "", f"Peak memory: {self.memory_method}"]
        load = self.machine.get("load_average_1m_5m_15m")
        lines += [
            "",
            f"Machine: {self.machine['cpu']}, {self.machine['logical_cpus']} logical CPUs, load average at start "
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
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"markdown": out / f"{self.stem}.md", "json": out / f"{self.stem}.json",
                 "plot": out / f"{self.stem}.png"}
        paths["markdown"].write_text(self.to_markdown())
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        self.write_plot(paths["plot"])
        return paths
