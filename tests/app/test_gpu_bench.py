"""The GPU comparison (dfanet.tools.bench.gpu, on the harness): its report and helpers here, the whole run in its CPU
dry run.

The benchmark itself only means something on a GPU (bench/gpu_check.sh runs it there); these tests keep it from
breaking in between, so a short GPU session never ends with a traceback instead of a report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dfanet.tools.bench import gpu
from dfanet.tools.bench.check import exact_fp32
from dfanet.tools.bench.memory import peak_call_mib
from dfanet.tools.bench.op_calls import OpCall, distinct_layers
from dfanet.tools.bench.report import gpu_markdown
from dfanet.tools.bench.timing import interleaved, kernel_profile

ROOT = Path(__file__).resolve().parents[2]


def _report() -> dict:
    machine = dict(device="NVIDIA H200", torch="2.11.0", torch_cuda="13.0", triton="3.6.0", cudnn=91900,
                   git_commit="abc1234", date_utc="2026-11-26T23:47:14+00:00", cudnn_allow_tf32=True,
                   triton_autotune="0")
    candidates = {
        "fused_triton_predict": {"status": "ok", "median_ms": 33.1, "p20_ms": 32.9, "p80_ms": 33.4, "setup_s": 0.0,
                                 "argmax_agreement": 1.0, "ratio_to_fused_triton": 0.949, "peak_mib": 21.4},
        "fused_triton_argmax": {"status": "ok", "median_ms": 35.2, "p20_ms": 35.0, "p80_ms": 35.5, "setup_s": 0.0,
                                "argmax_agreement": 1.0, "ratio_to_fused_triton": 1.009, "peak_mib": 103.0},
        "fused_triton_pt2": {"status": "skipped", "reason": "the package takes a float32 input"},
        "compile": {"status": "skipped", "reason": "--compile-mode none"},
        "eager_nchw": {"status": "ok", "median_ms": 18.978, "p20_ms": 18.372, "p80_ms": 19.369, "kernel_ms": 3.113,
                       "launches": 639.0, "setup_s": 0.0, "rel_err": 0.0, "ratio_to_fused_triton": 0.544,
                       "peak_not_measured": "RuntimeError: boom"},
        "fused_triton": {"status": "ok", "median_ms": 34.872, "p20_ms": 34.127, "p80_ms": 35.183, "kernel_ms": 8.715,
                         "launches": 203.0, "setup_s": 29.853, "rel_err": 1.4e-3, "argmax_agreement": 0.99987,
                         "ratio_to_fused_triton": 1.0, "peak_mib": 96.0,
                         "top_kernels": [{"name": "_upsample_kernel", "ms": 5.533},
                                         {"name": "_dwsep_conv_kernel", "ms": 2.821}]},
    }
    ops = [{"op": "upsample_add_output", "shapes": "19 ch 256x256 -> 1024x1024", "size": [1024, 1024], "batch": 1,
            "dtype": "fp32", "torch_over_triton": 0.035, "cuda_over_triton": 0.058,
            "impls": {"triton": {"status": "ok", "median_ms": 5.32, "kernel_ms": 5.291},
                      "reference": {"status": "ok", "median_ms": 0.185, "kernel_ms": 0.181},
                      "cuda": {"status": "error", "reason": "RuntimeError: boom"}}}]
    layer_rows = [
        {"op": "dwsep_conv", "shapes": "240->12 ch, 256x256, stride 2", "calls": 1, "cuda_over_triton": 2.8,
         "floor": {"kernels": 1, "bytes": 63_700_000, "floor_us": 21.1, "launch_floor_us": 21.1},
         "impls": {"triton": {"status": "ok", "median_ms": 0.077, "over_floor": 3.65},
                   "reference": {"status": "ok", "median_ms": 0.043},
                   "cuda": {"status": "ok", "median_ms": 0.2156, "over_floor": 10.22}}},
        {"op": "upsample_add", "shapes": "19@256x256 -> 1024x1024", "calls": 2, "cuda_over_triton": 0.06,
         "floor": {"kernels": 1, "bytes": 84_700_000, "floor_us": 28.1, "launch_floor_us": 28.1},
         "impls": {"triton": {"status": "ok", "median_ms": 5.291, "over_floor": 188.3},
                   "reference": {"status": "mismatch"}, "cuda": {"status": "ok", "median_ms": 0.304,
                                                                  "over_floor": 10.82}}},
    ]
    layers = [{"size": [1024, 1024], "batch": 1, "dtype": "fp32", "rows": layer_rows, "timing": "CUDA-graph replays",
               "totals_ms": {"triton": 10.659, "cuda": 0.8236}, "floor_ms": 0.0773,
               "roofline": {"device": "h200", "bandwidth_gb_s": 4312.0,
                            "bandwidth_source": "a NVIDIA H200 copy timed in this run"}}]
    predict = [{"backend": "triton", "forward_ms": 34.872, "forward_mib": 96.0, "argmax_ms": 35.2, "argmax_mib": 103.0,
                "predict_ms": 33.1, "predict_mib": 21.4, "time_ratio": 35.2 / 33.1, "memory_ratio": 103.0 / 21.4}]
    return {"config": {"variant": "A"}, "machine": machine, "elapsed_s": 67.0, "skipped_cases": ["model x: budget"],
            "memory_method": "the CUDA allocator's peak",
            "model": [{"size": [1024, 1024], "batch": 1, "dtype": "fp32", "candidates": candidates,
                       "predict_vs_argmax": predict}], "ops": ops, "layers": layers}


def test_report_shows_times_kernel_times_launches_and_ratios():
    text = gpu_markdown(_report())
    assert ("| fused_triton | 34.872 | 34.127–35.183 | 8.715 | 203 | 96.0 | 1.00 | 29.853 | 1.4e-03 | 0.9999 | ok |"
            in text)
    # predict's labels: no logits to compare, the agreement with eager's argmax instead.
    assert "| fused_triton_predict | 33.100 | 32.900–33.400 | – | – | 21.4 | 0.95 | 0.0 | – | 1.0000 | ok |" in text
    assert "| compile | – | – | – | – | – | – | – | – | – | skipped: --compile-mode none |" in text
    assert "Peak MiB: the CUDA allocator's peak" in text
    assert "Peak memory of eager_nchw: RuntimeError: boom." in text
    # predict against forward + argmax side by side: times, peaks, and forward + argmax over predict.
    assert ("| backend | forward ms | forward + argmax ms | predict ms | time: (forward + argmax) / predict | "
            "forward MiB | forward + argmax MiB | predict MiB | memory: (forward + argmax) / predict |") in text
    assert "| triton | 34.872 | 35.200 | 33.100 | 1.06 | 96.0 | 103.0 | 21.4 | 4.81 |" in text
    assert "Heaviest kernels of fused_triton (ms per forward): `_upsample_kernel` 5.533; `_dwsep_conv_kernel` 2.821" \
        in text
    assert "Heaviest kernels of eager_nchw" not in text
    assert ("| upsample_add_output | 19 ch 256x256 -> 1024x1024 | 1024x1024 | 1 | fp32 | 5.320 (5.291) | "
            "0.185 (0.181) | error | 0.04 | 0.06 |") in text
    assert "- model x: budget" in text
    assert "## Layers of one fused forward: 1024x1024, batch 1, fp32" in text
    assert ("| dwsep_conv | 240->12 ch, 256x256, stride 2 | 1 | 77.0 | 43.0 | 215.6 | 2.80 | 63.70 | 21.1 | 3.65 | "
            "10.22 |") in text
    assert "| upsample_add | 19@256x256 -> 1024x1024 | 2 | 5291.0 | mismatch | 304.0 | 0.06 | 84.70 | 28.1 | 188.30 |" \
        in text
    # Per forward: bytes and floors summed over calls (63.7 + 2 x 84.7 MB; 21.1 + 2 x 28.1 us), the ratios of sums.
    assert "| all, per forward | | 3 | 10.659 ms | – | 0.824 ms | 0.08 | 233.1 | 0.077 ms | 137.89 | 10.65 |" in text
    assert "over 4312 GB/s (a NVIDIA H200 copy timed in this run), or its FLOPs over the peaks of h200" in text
    assert "CUDA as fast as Triton or faster on 1 of 2 layers." in text


def test_exact_fp32_turns_tf32_off_and_restores_it():
    saved = torch.backends.cudnn.allow_tf32
    try:
        for before in (True, False):
            torch.backends.cudnn.allow_tf32 = before
            with exact_fp32():
                assert torch.backends.cudnn.allow_tf32 is False
            assert torch.backends.cudnn.allow_tf32 is before
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def test_kernel_profile_is_empty_without_a_gpu_and_counts_launches_with_one():
    if not torch.cuda.is_available():
        assert kernel_profile(lambda: torch.ones(3) * 2) == {}
        return
    x = torch.ones(1024, device="cuda")
    result = kernel_profile(lambda: (x * 2) + 1, calls=3, top=2)
    assert result["launches"] == 2 and result["kernel_ms"] > 0 and len(result["top_kernels"]) == 2


# With the export tests' group: one AOTInductor compile at a time on this worker, not two racing for the CPUs and the
# compile cache.
@pytest.mark.xdist_group("pt2")
def test_dry_run_writes_a_report_with_every_case(tmp_path):
    """The whole run on the CPU (Triton under its interpreter, 32x32, one round): every model candidate it can
    build there matches eager and every op row is timed. With --pt2 the CPU backend's package is built (~45 s of
    AOTInductor compiling here), the Triton one refused with the reason."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # A budget far past the subprocess timeout: every section runs however slow the machine (on a loaded 2-CPU VM
    # the default 300 s ran out before the op table, which was then recorded as skipped).
    result = subprocess.run([sys.executable, "-m", "dfanet.tools.bench.gpu", "--dry-run", "--pt2", "cpu,triton",
                             "--budget-s", "3600", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_bench.json").read_text())
    (case,) = report["model"]
    candidates = case["candidates"]
    statuses = {name: entry["status"] for name, entry in candidates.items()}
    assert statuses["fused_triton"] == statuses["eager_nchw"] == statuses["eager_cl"] == "ok", statuses
    # predict's labels (upsample_labels) and forward + argmax's, checked against eager's argmax, on both backends.
    for name in ("fused_triton_predict", "fused_cpu_predict", "fused_triton_argmax", "fused_cpu_argmax"):
        entry = candidates[name]
        assert entry["status"] == "ok" and entry["argmax_agreement"] >= 0.999 and "rel_err" not in entry, entry
    # The fused model's AOTInductor package: compiled as setup, checked against eager like the others, and timed.
    pt2 = candidates["fused_cpu_pt2"]
    assert pt2["status"] == "ok" and pt2["setup_s"] > 1 and pt2["rel_err"] <= 1e-4 and pt2["median_ms"] > 0, pt2
    assert "Triton kernels for a GPU only" in candidates["fused_triton_pt2"]["reason"]
    # Peak memory of one call (the CPU profiler's, as in the CPU comparison): forward's counts its own full-size
    # logits, which predict never writes, so predict peaks below them; the interpreter's rows say why they have none.
    logits_mib = 19 * 32 * 32 * 4 / 2**20
    peaks = {name: candidates[name]["peak_mib"] for name in ("eager_nchw", "fused_cpu", "fused_cpu_argmax",
                                                               "fused_cpu_predict", "fused_cpu_pt2")}
    assert peaks["fused_cpu"] >= logits_mib and peaks["fused_cpu_argmax"] > peaks["fused_cpu"], peaks
    assert 0 < peaks["fused_cpu_predict"] < logits_mib and peaks["eager_nchw"] >= logits_mib, peaks
    assert peaks["fused_cpu_pt2"] >= logits_mib, peaks
    assert candidates["fused_triton_predict"]["peak_not_measured"] == gpu.INTERPRETER_PEAK
    triton_row, cpu_row = case["predict_vs_argmax"]
    assert cpu_row["backend"] == "cpu" and cpu_row["predict_mib"] == peaks["fused_cpu_predict"]
    assert cpu_row["memory_ratio"] == peaks["fused_cpu_argmax"] / peaks["fused_cpu_predict"] > 1
    assert cpu_row["time_ratio"] == candidates["fused_cpu_argmax"]["median_ms"] / candidates["fused_cpu_predict"][
        "median_ms"]
    assert triton_row["backend"] == "triton" and triton_row["predict_mib"] is None and "memory_ratio" not in triton_row
    assert report["memory_method"].startswith("peak of live bytes allocated through torch's CPU allocator")
    assert len(report["ops"]) == 8
    assert all(row["impls"]["triton"]["status"] == "ok" for row in report["ops"])
    # Every distinct op call of one forward, each op kind among them, all timed and summed per forward.
    (layers,) = report["layers"]
    assert {row["op"] for row in layers["rows"]} == {"conv3x3", "xception_block", "xception_block_cat",
                                                     "fc_attention", "decoder_head", "upsample_add"}
    assert all(row["impls"][impl]["status"] == "ok" for row in layers["rows"] for impl in ("triton", "reference"))
    total = sum(row["calls"] * row["impls"]["triton"]["median_ms"] for row in layers["rows"])
    assert abs(layers["totals_ms"]["triton"] - total) <= 1e-9 * total
    # The roofline beside every row: a floor of at least 2 us per kernel, and measured / floor.
    assert layers["roofline"]["bandwidth_gb_s"] > 0
    for row in layers["rows"]:
        assert row["floor"]["bytes"] > 0 and row["floor"]["launch_floor_us"] >= 2 * row["floor"]["kernels"]
        triton = row["impls"]["triton"]
        assert triton["over_floor"] == triton["median_ms"] * 1e3 / row["floor"]["launch_floor_us"]
    floor = sum(row["calls"] * row["floor"]["launch_floor_us"] for row in layers["rows"]) / 1e3
    assert abs(layers["floor_ms"] - floor) <= 1e-9 * floor
    text = (tmp_path / "gpu_bench.md").read_text()
    assert text.startswith("# DFANet GPU benchmark (A)") and "| triton / floor | cuda / floor |" in text
    assert "| memory: (forward + argmax) / predict |" in text


def test_pt2_candidate_is_built_only_where_it_runs_and_the_budget_leaves_its_compile(capsys):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    plenty, short = (lambda: 1000.0), (lambda: gpu.PT2_SETUP_S - 1.0)
    for backend in ("cuda", "triton"):
        assert gpu.pt2_skip_reason(backend, cuda, "fp32", ["triton", "cuda"], plenty) is None
    assert gpu.pt2_skip_reason("cpu", cpu, "fp32", ["triton", "cpu"], plenty) is None  # the dry run's
    assert gpu.pt2_skip_reason("cuda", cuda, "fp32", ["triton", "cuda"], short) == (
        f"time budget: {gpu.PT2_SETUP_S - 1} s left, exporting and compiling the package takes ~{gpu.PT2_SETUP_S} s")
    assert gpu.pt2_skip_reason("cuda", cuda, "fp16", ["triton", "cuda"], plenty) == (
        "the package takes a float32 input (dfanet.pt2.export_pt2): fp32 cases only")
    assert gpu.pt2_skip_reason("cuda", cuda, "fp32", ["triton"], plenty) == (
        "backend 'cuda' does not run on cuda here (these do: triton)")
    assert "for a GPU only" in gpu.pt2_skip_reason("triton", cpu, "fp32", ["triton", "cpu"], plenty)
    # Opt-in: minutes of compiling per backend.
    assert gpu.parse_args([]).pt2 == [] and gpu.parse_args(["--pt2", "cuda,triton"]).pt2 == ["cuda", "triton"]
    with pytest.raises(SystemExit):
        gpu.parse_args(["--pt2", "tensorrt"])
    assert "--pt2: unknown 'tensorrt', expected some of ['cuda', 'triton', 'cpu'] or none" in capsys.readouterr().err


def test_predict_rows_pair_each_backends_predict_with_its_forward_and_argmax():
    """Only the eager (non-graph) predict rows have a forward + argmax twin; a backend whose predict was not timed
    has no row."""
    def timed(ms, mib):
        return {"status": "ok", "median_ms": ms, "peak_mib": mib}

    results = {"fused_cuda": timed(8.0, 90.0), "fused_cuda_argmax": timed(9.0, 100.0),
               "fused_cuda_predict": timed(6.0, 20.0), "fused_cuda_predict_graph": timed(5.0, 0.0),
               "fused_triton_argmax": timed(30.0, 100.0), "fused_triton_predict": {"status": "mismatch"},
               "eager_nchw": timed(19.0, 200.0)}
    assert gpu.predict_rows(results) == [
        {"backend": "cuda", "forward_ms": 8.0, "forward_mib": 90.0, "argmax_ms": 9.0, "argmax_mib": 100.0,
         "predict_ms": 6.0, "predict_mib": 20.0, "time_ratio": 1.5, "memory_ratio": 5.0}]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no GPU"))])
def test_peak_call_mib_counts_one_calls_allocations_above_what_was_held_before(device):
    held = torch.ones(2**20, device=device)  # 4 MiB allocated before the call: not counted
    # ones (1 MiB) and the product (1 MiB, the output) are alive together.
    assert peak_call_mib(lambda: torch.ones(2**18, device=device) * 2, device) == pytest.approx(2.0, abs=1e-3)
    del held


def test_distinct_layers_counts_repeated_calls_and_separates_shapes_strides_and_layouts():
    x = torch.zeros(1, 8, 5, 7)
    w = torch.zeros(4, 8, 1, 1)

    def call(t, stride=1):
        return OpCall("dwsep_conv", (t, None, None, w, None, stride, True, False, False, None))

    calls = [call(x), call(x.clone()), call(x, stride=2), call(x.to(memory_format=torch.channels_last)),
             call(torch.zeros(1, 8, 5, 8)), call(x)]
    layers = distinct_layers(calls)
    assert [count for _, count in layers] == [3, 1, 1, 1]
    assert calls[2].shapes == "8->4 ch, 5x7, stride 2"


def test_a_failing_section_is_reported_and_the_rest_still_runs(tmp_path, monkeypatch):
    """One broken table must not cost a GPU session the others: the error is reported and the exit code is 1."""
    for name in ("TRITON_INTERPRET", "DFANET_TRITON_AUTOTUNE"):  # main() sets them; restored after the test
        monkeypatch.setenv(name, os.environ.get(name, ""))

    def broken(*args):
        raise RuntimeError("boom")

    op_row = {"op": "x", "shapes": "y", "size": [32, 32], "batch": 1, "dtype": "fp32", "impls": {}}
    monkeypatch.setattr(gpu, "run_layer_case", broken)
    monkeypatch.setattr(gpu, "run_op_case", lambda *args: [op_row])
    assert gpu.main(["--dry-run", "--skip-model", "--out", str(tmp_path)]) == 1
    report = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert report["errors"] == ["layers 32x32 batch 1 fp32: RuntimeError: boom"]
    assert report["ops"] == [op_row]
    assert "## Failed\n\n- layers 32x32 batch 1 fp32: RuntimeError: boom" in (tmp_path / "gpu_bench.md").read_text()


def test_an_unknown_variant_is_refused_before_any_case(capsys):
    """Not by every case failing in turn on a GPU session's time."""
    with pytest.raises(SystemExit) as exit_:
        gpu.parse_args(["--variant", "C"])
    assert exit_.value.code == 2 and "argument --variant: invalid choice: 'C'" in capsys.readouterr().err


def test_interleaved_times_every_timer_once_a_round_in_a_rotating_order():
    order = []

    def timer(name):
        return lambda: order.append(name) or float(len(order))

    times = interleaved({name: timer(name) for name in "abc"}, rounds=3)
    assert order == list("abcbcacab")
    assert times == {"a": [1.0, 6.0, 8.0], "b": [2.0, 4.0, 9.0], "c": [3.0, 5.0, 7.0]}
    assert interleaved({}, rounds=3) == {}
