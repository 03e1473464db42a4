"""Each fused op (backend "cpu") against the torch sequence it replaces, at DFANet's real shapes.

Shapes follow --variant/--size/--batch (defaults: DFANet A at 512x1024, batch 1). Both sides get channels_last
inputs and go through the same public wrapper (``backend="reference"`` runs the plain torch sequence of
``dfanet_kernels.reference``: F.relu, depthwise conv2d, 1x1 conv2d, add (three of them and a 1x1 shortcut conv for
a whole Xception block); mean, linear, linear, relu, mul;
F.interpolate + cat / add), so argument checking costs the same on both. One case has another baseline: the
block reading a concatenation (xception_block_cat) against the two CPU ops it replaces, upsample_concat then
xception_block. Each pair is checked equal, then timed in interleaved rounds (the speedups printed at the end) and
recorded with pytest-benchmark.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch

import dfanet_kernels as dk
from dfanet.tools.benchmark import time_interleaved
from dfanet.variants import feature_map_sizes, get_variant

IMPLS = ("fused_cpu", "baseline")
CASES = ("dwsep_enc2", "dwsep_enc2_residual", "dwsep_enc3_strided", "xception_block_enc2",
         "xception_block_enc3_strided", "xception_block_cat_enc2", "xception_block_cat_enc2_vs_two_cpu_ops",
         "fc_attention_enc4", "upsample_concat_enc2", "upsample_add_decoder", "upsample_add_output")
TORCH = "torch sequence"


@dataclass
class OpCase:
    name: str
    shapes: str
    run: Callable[[str], torch.Tensor]  # run(backend)
    baseline: str = TORCH  # what the fused call is timed against
    run_baseline: Callable[[], torch.Tensor] | None = None  # None: run("reference")

    def baseline_call(self) -> torch.Tensor:
        return self.run("reference") if self.run_baseline is None else self.run_baseline()


def _cl(*shape: int, generator: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    return (scale * torch.randn(*shape, generator=generator)).contiguous(memory_format=torch.channels_last)


def make_cases(variant: str, batch: int, height: int, width: int) -> dict[str, OpCase]:
    """The op calls of DFANet's first backbone, the second's first block and the decoder at this input size (shapes as
    the model computes them)."""
    spec = get_variant(variant)
    c2, _, c4 = spec.stage_channels
    (w2, _), (w3, _), _ = spec.stages
    d, k, n = spec.decoder_channels, spec.attention_hidden, batch
    sizes = feature_map_sizes(height, width)
    s2, s4, s5, s6 = sizes[2], sizes[4], sizes[5], sizes[6]  # 1/4 ... 1/64
    g = torch.Generator().manual_seed(0)

    def dwsep(cin, cout, size, stride, residual):
        x = _cl(n, cin, *size, generator=g)
        dw = torch.randn(cin, 1, 3, 3, generator=g) / 3
        pw = _cl(cout, cin, 1, 1, generator=g, scale=cin ** -0.5)
        pb = 0.1 * torch.randn(cout, generator=g)
        out_size = tuple(dk.conv_output_size(s, stride) for s in size)
        res = _cl(n, cout, *out_size, generator=g) if residual else None
        shapes = f"{cin}->{cout} ch, {size[0]}x{size[1]}, stride {stride}" + (", +residual" if residual else "")
        return shapes, lambda b: dk.dwsep_conv(x, dw, None, pw, pb, stride, act_in=True, residual=res, backend=b)

    def block_weights(cin, widths, stride):
        chans = [cin, *widths]
        dws = [torch.randn(chans[i], 1, 3, 3, generator=g) / 3 for i in range(3)]
        pws = [_cl(chans[i + 1], chans[i], 1, 1, generator=g, scale=chans[i] ** -0.5) for i in range(3)]
        pbs = [0.1 * torch.randn(chans[i + 1], generator=g) for i in range(3)]
        proj = stride != 1 or cin != widths[-1]
        sw = _cl(widths[-1], cin, 1, 1, generator=g, scale=cin ** -0.5) if proj else None
        sb = 0.1 * torch.randn(widths[-1], generator=g) if proj else None
        desc = f"->{'/'.join(map(str, widths))} ch, stride {stride}, " + ("1x1 shortcut" if proj else "identity")
        return (dws, pws, pbs, stride, sw, sb), desc

    def block(cin, widths, size, stride):
        x = _cl(n, cin, *size, generator=g)
        w, desc = block_weights(cin, widths, stride)
        return f"{cin}{desc}, {size[0]}x{size[1]}", lambda b: dk.xception_block(x, *w, backend=b)

    def block_cat(inputs, widths, stride):
        tensors = [_cl(n, c, *hw, generator=g) for c, hw in inputs]
        w, desc = block_weights(sum(c for c, _ in inputs), widths, stride)
        size = inputs[0][1]
        shapes = " + ".join(f"{c}ch@{hw[0]}x{hw[1]}" for c, hw in inputs) + f" {desc}, at {size[0]}x{size[1]}"

        def two_cpu_ops():
            return dk.xception_block(dk.upsample_concat(tensors, size, backend="cpu"), *w, backend="cpu")

        return shapes, lambda b: dk.xception_block_cat(tensors, *w, backend=b), two_cpu_ops

    def fc_attention():
        x = _cl(n, c4, *s4, generator=g)
        fw, fb = torch.randn(k, c4, generator=g) * c4 ** -0.5, 0.1 * torch.randn(k, generator=g)
        cw, cb = torch.randn(c4, k, 1, 1, generator=g) * k ** -0.5, 1 + 0.1 * torch.randn(c4, generator=g)
        return f"{c4} ch, {s4[0]}x{s4[1]}, hidden {k}", lambda b: dk.fc_attention(x, fw, fb, cw, cb, backend=b)

    def upsample(kind, inputs, size):
        tensors = [_cl(n, c, *hw, generator=g) for c, hw in inputs]
        op = dk.upsample_concat if kind == "concat" else dk.upsample_add
        desc = " + ".join(f"{c}ch@{hw[0]}x{hw[1]}" for c, hw in inputs) + f" -> {size[0]}x{size[1]}"
        return desc, lambda b: op(tensors, size, backend=b)

    # backbone 2's enc2 first block on its aggregated input: backbone 1's enc2 output and FC-attention output
    # (upsampled x4), concatenated; the concatenation (240 ch at 1/4 size) is read by the block, never written.
    cat_shapes, cat_run, cat_two_ops = block_cat([(c2, s2), (c4, s4)], w2, 2)
    made = {
        # enc2 block 2, sep1: ReLU -> dw3x3 -> 1x1 (c2 -> w2[0]); the depthwise result stays in cache when fused.
        "dwsep_enc2": dwsep(c2, w2[0], s2, 1, False),
        # enc2 block 2, sep3 with the identity shortcut added.
        "dwsep_enc2_residual": dwsep(w2[1], w2[2], s2, 1, True),
        # enc3 block 1, sep1: stride 2 from enc2's output.
        "dwsep_enc3_strided": dwsep(c2, w3[0], s2, 2, False),
        # enc2 block 2 whole (three separable convs + identity shortcut): intermediates never leave the cache.
        "xception_block_enc2": block(c2, w2, s2, 1),
        # enc3 block 1 whole: stride 2 and the strided 1x1 shortcut.
        "xception_block_enc3_strided": block(c2, w3, s2, 2),
        "xception_block_cat_enc2": (cat_shapes, cat_run),
        # the same against upsample_concat then xception_block on the CPU kernels: what the virtual input saves.
        "xception_block_cat_enc2_vs_two_cpu_ops": (cat_shapes, cat_run, "upsample_concat + xception_block (cpu)",
                                                   cat_two_ops),
        # backbone 1's FC attention on its enc4 output.
        "fc_attention_enc4": fc_attention(),
        # backbone 2's enc2 input: backbone 1's enc2 output and its FC attention upsampled x4, concatenated.
        "upsample_concat_enc2": upsample("concat", [(c2, s2), (c4, s4)], s2),
        # decoder: the fused low-level map plus the three reduced FC-attention outputs (1/16, 1/32, 1/64).
        "upsample_add_decoder": upsample("add", [(d, s2), (d, s4), (d, s5), (d, s6)], s2),
        # logits upsampled to the input size.
        "upsample_add_output": upsample("add", [(19, s2)], (height, width)),
    }
    assert set(made) == set(CASES)
    return {name: OpCase(name, *spec) for name, spec in made.items()}


@pytest.fixture(scope="module")
def op_cases(bench_config, bench_summary):
    """The cases, each checked fused == torch, then timed in interleaved rounds; prints the speedup table."""
    c = bench_config
    if "cpu" not in dk.available_backends("cpu"):
        pytest.skip("the compiled CPU kernels are not built (see README, 'Install')")
    previous = torch.get_num_threads()
    torch.set_num_threads(c.threads)
    try:
        with torch.inference_mode():
            cases = make_cases(c.variant, c.batch, c.height, c.width)
            for case in cases.values():
                ref = case.baseline_call()
                torch.testing.assert_close(case.run("cpu"), ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()),
                                           msg=lambda m, c=case: f"{c.name}: fused != {c.baseline}: {m}")
            rows = []
            for case in cases.values():
                # Both sides use torch's OpenMP pool: no runtime switch, so no pause between them.
                t = time_interleaved({"fused": lambda: case.run("cpu"), "baseline": case.baseline_call},
                                     rounds=c.op_rounds, warmup=3, pause_s=0.0, progress=False)
                fused, ref = np.asarray(t["fused"]) * 1e3, np.asarray(t["baseline"]) * 1e3
                per_round = np.percentile(ref / fused, [20, 80])
                rows.append({"op": case.name, "shapes": case.shapes, "baseline": case.baseline,
                             "baseline_ms": float(np.median(ref)),
                             "fused_ms": float(np.median(fused)), "speedup": float(np.median(ref) / np.median(fused)),
                             "per_round_p20_p80": [float(v) for v in per_round]})
        _report(c, rows, bench_summary)
        yield cases
    finally:
        torch.set_num_threads(previous)


def _report(c, rows: list[dict], bench_summary) -> None:
    title = f"DFANet {c.variant} ops at {c.batch}x3x{c.height}x{c.width}, {c.threads} threads, fp32, channels_last"
    lines = [
        f"### {title}", "",
        "| op | shapes | baseline | baseline ms | fused ms | speedup (medians) | per round p20–p80 |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lo, hi = r["per_round_p20_p80"]
        lines.append(f"| {r['op']} | {r['shapes']} | {r['baseline']} | {r['baseline_ms']:.2f} | {r['fused_ms']:.2f} | "
                     f"{r['speedup']:.2f}x | {lo:.2f}–{hi:.2f}x |")
    method = (f"{c.op_rounds} interleaved rounds after 3 warm-up rounds, fused (backend 'cpu') and its baseline (the "
              "torch sequence, backend 'reference', unless the row names another) alternating, order rotated each "
              "round; median wall time per call; speedup = baseline median / fused median. Shared machine: compare "
              "the ratios, not the ms.")
    lines += ["", f"Method: {method}"]
    text = "\n".join(lines) + "\n"
    c.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"ops-{c.variant.replace(chr(39), 'prime')}-{c.height}x{c.width}-b{c.batch}-t{c.threads}"
    (c.out_dir / f"{stem}.md").write_text(text)
    (c.out_dir / f"{stem}.json").write_text(json.dumps({"title": title, "method": method, "rows": rows}, indent=2))
    bench_summary(f"fused ops vs torch sequence ({c.height}x{c.width})", text + f"Written: {c.out_dir / stem}.md/.json")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES)
def test_op_speed(case, impl, op_cases, bench_config, benchmark):
    op = op_cases[case]
    benchmark.group = f"op {case}: {op.shapes}"

    def run():
        with torch.inference_mode():
            if impl == "fused_cpu":
                op.run("cpu")
            else:
                op.baseline_call()

    benchmark.pedantic(run, rounds=bench_config.op_rounds, iterations=1, warmup_rounds=2)
