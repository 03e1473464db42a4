"""Whole DFANet on CPU: fused vs eager NCHW, eager channels_last, torch.compile, ONNX Runtime, OpenVINO; and the
fused model's labels, ``predict`` vs forward + argmax.

The numbers to quote come from the interleaved comparisons (``dfanet.tools.bench.cpu_comparison``), run once for this
module and printed at the end of the session; each candidate is also recorded with pytest-benchmark.
"""

from __future__ import annotations

import time

import pytest

from dfanet.tools.bench.cpu_candidates import CANDIDATES
from dfanet.tools.bench.cpu_comparison import Comparison, predict_comparison
from dfanet.tools.bench.report import write_markdown_and_json
from dfanet.tools.bench.timing import PAUSE_S


@pytest.fixture(scope="module")
def comparison(bench_config, bench_summary):
    c = bench_config
    start = time.perf_counter()
    with Comparison(c.variant, c.height, c.width, c.batch, c.threads, c.candidates) as comp:
        report = comp.time(rounds=c.rounds)
        paths = report.write(c.out_dir)
        elapsed = time.perf_counter() - start
        bench_summary(
            f"DFANet {c.variant} whole model, {c.height}x{c.width} (interleaved rounds; quote these ratios)",
            report.to_markdown()
            + f"\nComparison (build + check + timing) took {elapsed:.0f} s; written: "
            + ", ".join(str(p) for p in paths.values()),
        )
        yield comp, report


@pytest.mark.parametrize("name", CANDIDATES)
def test_model_speed(name, comparison, bench_config, benchmark):
    comp, report = comparison
    if name not in comp.config["candidates"]:
        pytest.skip(f"{name} not selected (--candidates)")
    result = report.result(name)
    if result.status == "skipped":
        pytest.skip(result.reason)
    if result.status != "ok":
        pytest.fail(f"{name}: {result.status}: {result.reason}")
    c = bench_config
    benchmark.group = f"DFANet {c.variant} {c.batch}x3x{c.height}x{c.width}, {c.threads} threads (not interleaved)"
    benchmark.extra_info.update(
        description=result.description,
        interleaved_median_ms=result.median_ms,
        interleaved_ratio_to_fused=result.ratio_to_fused,
        rel_err_vs_eager=result.rel_err,
        setup_s=result.setup_s,
    )
    # setup's sleep is outside the timing: the previous test's runtime threads go idle first (docs/benchmarking.md).
    benchmark.pedantic(comp.candidates[name].run, setup=lambda: time.sleep(PAUSE_S),
                       rounds=c.rounds, iterations=1, warmup_rounds=1)


def test_predict_speed(bench_config, bench_summary):
    """predict (labels from the quarter-size logits) against forward + argmax on the fused model, in interleaved
    rounds; printed at the end of the session and written beside the other reports."""
    c = bench_config
    result = predict_comparison(c.variant, c.height, c.width, c.batch, c.threads, c.rounds)
    stem = f"predict-{c.variant.replace(chr(39), 'prime')}-{c.height}x{c.width}-b{c.batch}-t{c.threads}"
    write_markdown_and_json(c.out_dir, stem, result["markdown"], {k: v for k, v in result.items() if k != "markdown"})
    bench_summary(f"DFANet {c.variant} predict vs forward + argmax, {c.height}x{c.width}",
                  result["markdown"] + f"Written: {c.out_dir / stem}.md/.json")
