"""Each fused op (backend "cpu") against the torch sequence it replaces, at DFANet's real shapes.

Shapes follow --variant/--size/--batch (defaults: DFANet A at 512x1024, batch 1); the calls are the harness's
(``dfanet.tools.bench.op_calls``, shared with the GPU comparison). Both sides get the same inputs and go through the
same public wrapper (``backend="reference"`` runs the plain torch sequence of ``dfanet_kernels.reference``: F.relu,
depthwise conv2d, 1x1 conv2d, add (three of them and a 1x1 shortcut conv for a whole Xception block); conv2d + ReLU;
mean, linear, linear, relu, mul; F.interpolate + cat / add / argmax), so argument checking costs the same on both.
One case has another baseline: the block reading a concatenation (xception_block_cat) against the two CPU ops it
replaces, upsample_concat then xception_block. Each pair is checked equal (``dfanet.tools.bench.check``; labels:
equal on all but near-tied pixels), then timed in interleaved rounds (the speedups printed at the end) and recorded
with pytest-benchmark.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

import dfanet_kernels as dk
from dfanet.tools.bench.check import LABELS_AGREEMENT, OP_TOLERANCE, compare, labels_agreement
from dfanet.tools.bench.op_calls import OpCall, model_op_calls
from dfanet.tools.bench.report import op_speed_markdown, paired_ratio, write_markdown_and_json
from dfanet.tools.bench.timing import cpu_timer, interleaved, quantiles

IMPLS = ("fused_cpu", "baseline")
# Named calls of dfanet.tools.bench.op_calls, each against the torch sequence; the case below, against two CPU ops.
TORCH_BASELINE_CASES = ("conv3x3_stem", "dwsep_enc2", "dwsep_enc2_residual", "dwsep_enc3_strided",
                        "xception_block_enc2", "xception_block_enc3_strided", "xception_block_cat_enc2",
                        "fc_attention_enc4", "upsample_concat_enc2", "upsample_add_decoder", "conv1x1_low_reduce",
                        "decoder_head", "upsample_add_output", "upsample_labels_output")
TWO_OPS_CASE = "xception_block_cat_enc2_vs_two_cpu_ops"
CASES = TORCH_BASELINE_CASES + (TWO_OPS_CASE,)


@dataclass
class OpCase:
    name: str
    call: OpCall
    baseline: str = "torch sequence"  # what the fused call is timed against
    run_baseline: Callable[[], torch.Tensor] | None = None  # None: the call on backend "reference"

    def fused(self) -> torch.Tensor:
        return self.call.run("cpu")

    def baseline_call(self) -> torch.Tensor:
        return self.call.run("reference") if self.run_baseline is None else self.run_baseline()


def _upsample_concat_then_block(call: OpCall) -> torch.Tensor:
    """xception_block_cat's work as two CPU ops: the concatenation written, then read by the block."""
    inputs, *weights = call.args
    size = tuple(inputs[0].shape[-2:])
    return dk.xception_block(dk.upsample_concat(inputs, size, backend="cpu"), *weights, backend="cpu")


def make_cases(variant: str, batch: int, height: int, width: int) -> dict[str, OpCase]:
    calls = model_op_calls(variant, batch, height, width)
    cases = {name: OpCase(name, calls[name]) for name in TORCH_BASELINE_CASES}
    # what the block's virtual input saves against writing the concatenation first
    cat = calls["xception_block_cat_enc2"]
    cases[TWO_OPS_CASE] = OpCase(TWO_OPS_CASE, cat, "upsample_concat + xception_block (cpu)",
                                 functools.partial(_upsample_concat_then_block, cat))
    return cases


@pytest.fixture(scope="module")
def op_cases(bench_config, bench_summary):
    """The cases, each checked fused == baseline, then timed in interleaved rounds; prints the speedup table."""
    c = bench_config
    if "cpu" not in dk.available_backends("cpu"):
        pytest.skip("the compiled CPU kernels are not built (see README, 'Install')")
    previous = torch.get_num_threads()
    torch.set_num_threads(c.threads)
    try:
        with torch.inference_mode():
            cases = make_cases(c.variant, c.batch, c.height, c.width)
            for case in cases.values():
                out, expected = case.fused(), case.baseline_call()
                if out.is_floating_point():
                    rel, _ = compare(out, expected)
                    assert rel <= OP_TOLERANCE["fp32"], \
                        f"{case.name}: fused != {case.baseline}: max |diff| / max |baseline| = {rel:.1e}"
                else:  # labels: equal but where two values of a pixel tie within rounding
                    agree = labels_agreement(out, expected)
                    assert agree >= LABELS_AGREEMENT, f"{case.name}: labels agree on only {agree:.5f} of pixels"
            rows = []
            for case in cases.values():
                # Both sides use torch's OpenMP pool: no runtime switch, so no pause between them.
                t = interleaved({"fused": functools.partial(cpu_timer, case.fused),
                                 "baseline": functools.partial(cpu_timer, case.baseline_call)},
                                rounds=c.op_rounds, warmup=3)
                fused_ms, baseline_ms = quantiles(t["fused"], [50])[0], quantiles(t["baseline"], [50])[0]
                p20, _, p80 = paired_ratio(t["baseline"], t["fused"])
                rows.append({"op": case.name, "shapes": case.call.shapes, "baseline": case.baseline,
                             "baseline_ms": baseline_ms, "fused_ms": fused_ms, "speedup": baseline_ms / fused_ms,
                             "per_round_p20_p80": [p20, p80]})
        _report(c, rows, bench_summary)
        yield cases
    finally:
        torch.set_num_threads(previous)


def _report(c, rows: list[dict], bench_summary) -> None:
    title = f"DFANet {c.variant} ops at {c.batch}x3x{c.height}x{c.width}, {c.threads} threads, fp32, channels_last"
    method = (f"{c.op_rounds} interleaved rounds after 3 warm-up rounds, fused (backend 'cpu') and its baseline (the "
              "torch sequence, backend 'reference', unless the row names another) alternating, order rotated each "
              "round; median wall time per call; speedup = baseline median / fused median. Shared machine: compare "
              "the ratios, not the ms.")
    text = op_speed_markdown(title, rows, method)
    stem = f"ops-{c.variant.replace(chr(39), 'prime')}-{c.height}x{c.width}-b{c.batch}-t{c.threads}"
    write_markdown_and_json(c.out_dir, stem, text, {"title": title, "method": method, "rows": rows})
    bench_summary(f"fused ops vs torch sequence ({c.height}x{c.width})", text + f"Written: {c.out_dir / stem}.md/.json")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES)
def test_op_speed(case, impl, op_cases, bench_config, benchmark):
    op = op_cases[case]
    benchmark.group = f"op {case}: {op.call.shapes}"

    def run():
        with torch.inference_mode():
            if impl == "fused_cpu":
                op.fused()
            else:
                op.baseline_call()

    benchmark.pedantic(run, rounds=bench_config.op_rounds, iterations=1, warmup_rounds=2)
