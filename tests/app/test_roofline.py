"""The roofline table (dfanet.tools.bench.roofline) and the resource usage beside it (kernel_resources): byte and
FLOP counts against hand-computed ones, totals against rows, the device table, the command line, ptxas parsing."""

from __future__ import annotations

import pytest
import torch

from dfanet.tools.bench import kernel_resources as kr
from dfanet.tools.bench import roofline as rl
from dfanet.tools.bench.op_calls import OpCall
from dfanet_kernels import cuda_toolkit

NVCC = cuda_toolkit.nvcc()


def meta(*shape):
    """A tensor with a shape and nothing else: the roofline reads shapes only."""
    t = torch.empty(*shape, device="meta", dtype=torch.float16)
    return t.contiguous(memory_format=torch.channels_last) if len(shape) == 4 else t


def test_dwsep_conv_bytes_and_flops_by_hand():
    # enc2's sep3 on A at 1024 x 1024: 12 -> 48 channels at 256 x 256, the block's input added.
    call = OpCall("dwsep_conv", (meta(1, 12, 256, 256), meta(12, 1, 3, 3), None, meta(48, 12, 1, 1), meta(48), 1,
                                 True, False, False, meta(1, 48, 256, 256)))
    (k,) = rl.op_kernels(call, itemsize=2)
    hw = 256 * 256
    assert k.bytes == 2 * (12 * hw + 12 * 9 + 48 * 12 + 48 + 48 * hw + 48 * hw)  # x, weights, residual, out
    assert k.dense_flops == 2 * 48 * 12 * hw and k.fma_flops == 2 * 9 * 12 * hw
    assert k.shapes == "12@256x256 -> 48 ch, stride 1, +residual"


def test_strided_dwsep_conv_counts_the_output_size():
    call = OpCall("dwsep_conv", (meta(1, 8, 512, 512), meta(8, 1, 3, 3), None, meta(12, 8, 1, 1), None, 2,
                                 True, False, False, None))
    (k,) = rl.op_kernels(call, itemsize=4)
    out = 256 * 256
    assert k.bytes == 4 * (8 * 512 * 512 + 72 + 96 + 12 * out)
    assert (k.dense_flops, k.fma_flops) == (2 * 12 * 8 * out, 2 * 9 * 8 * out)


def test_stem_is_one_kernel_reading_the_image_in_place():
    """conv3x3 on the GPU backends: one kernel (bias and ReLU fused) reading the NCHW image as it is, no layout copy
    and no ReLU kernel: the image, the weights and the NHWC output once each."""
    image = torch.empty(1, 3, 1024, 1024, device="meta", dtype=torch.float16)  # NCHW, as the model gets it
    (k,) = rl.op_kernels(OpCall("conv3x3", (image, meta(8, 3, 3, 3), meta(8), 2, True)), itemsize=2)
    assert (k.op, k.family, k.shapes) == ("conv3x3", "conv3x3", "3@1024x1024 -> 8 ch, stride 2")
    assert k.bytes == 2 * (3 * 1024 * 1024 + 8 * 27 + 8 + 8 * 512 * 512)
    assert (k.dense_flops, k.fma_flops) == (2 * 8 * 27 * 512 * 512, 0)
    # The CUDA instantiation the launcher picks: 32-bit indices, 16-byte stores of the 8 channels.
    assert k.cuda_kernel == "conv3x3_kernel<__half, int, true>"
    assert kr.conv3x3_launch(2**30, 8, 13, "bf16") == "conv3x3_kernel<__nv_bfloat16, long, false>"


def test_upsample_concat_reads_each_input_once_and_resizes_only_the_small_one():
    call = OpCall("upsample_concat", ([meta(1, 48, 256, 256), meta(1, 192, 64, 64)], (256, 256)))
    (k,) = rl.op_kernels(call, itemsize=2)
    assert k.bytes == 2 * (48 * 256 * 256 + 192 * 64 * 64 + 240 * 256 * 256)
    assert (k.dense_flops, k.fma_flops) == (0, rl.BILINEAR_FLOPS * 192 * 256 * 256)


def test_fc_attention_two_kernels_today_and_in_the_fused_plan():
    x = meta(1, 192, 64, 64)
    weights = (meta(1000, 192), meta(1000), meta(192, 1000, 1, 1), meta(192))
    attention = OpCall("fc_attention", (x, *weights), output=meta(1, 192, 64, 64))
    today = rl.op_kernels(attention, itemsize=2)
    assert [k.op for k in today] == ["fc_attention: pool + fc", "fc_attention: scale"]
    n_x, fc = 192 * 64 * 64, 2 * 1000 * 192
    assert sum(k.fma_flops for k in today) == 2 * n_x + 2 * fc
    # The map and every weight read once for the scale vector (fp32), then the map read again and written once.
    weight_elements = 1000 * 192 * 2 + 1000 + 192
    assert today[0].bytes == 2 * (n_x + weight_elements) + 4 * 192
    assert today[1].bytes == 2 * 2 * n_x + 4 * 192
    # The fused plan: the same two kernels, then a decoder of one conv on the attention's output.
    conv = OpCall("conv1x1", (attention.output, meta(32, 192, 1, 1), meta(32), 1, True), output=meta(1, 32, 64, 64))
    pool_fc, scale, decoder = rl.fused_kernels([attention, conv], itemsize=2)
    assert (pool_fc, scale) == tuple(today)
    assert decoder.bytes == 2 * (n_x + 32 * 192 + 32 + 32 * 64 * 64)


def block_call(inputs, mids=(12, 12, 48), stride=2, projection=True):
    """An xception_block_cat call on ``inputs`` (the sources of its concatenated input) with mid/output widths
    ``mids``, its weights and biases fp16 meta tensors."""
    c0 = sum(t.shape[1] for t in inputs)
    widths = (c0, *mids)
    dw = [meta(widths[i], 1, 3, 3) for i in range(3)]
    pw = [meta(widths[i + 1], widths[i], 1, 1) for i in range(3)]
    pb = [meta(c) for c in mids]
    shortcut = (meta(mids[2], c0, 1, 1), meta(mids[2])) if projection else (None, None)
    return OpCall("xception_block_cat", (list(inputs), dw, pw, pb, stride, *shortcut))


def test_block_today_is_one_kernel_reading_each_source_once_at_its_own_size():
    """The second backbone's first block of A, scaled down: 48@32x32 and 192@8x8 concatenated (the 8x8 one resized
    on the fly, never written), stride 2 -> 12/12/48 channels at 16x16, a 1x1 shortcut. One kernel on both backends;
    its bytes are the two sources at their own sizes, the weights and the output; its FLOPs the composed block's."""
    call = block_call([meta(1, 48, 32, 32), meta(1, 192, 8, 8)])
    (k,) = rl.op_kernels(call, itemsize=2, dtype="fp16")
    weights = (240 * 9 + 12 * 9 + 12 * 9) + (12 * 240 + 12 * 12 + 48 * 12) + (12 + 12 + 48) + (48 * 240 + 48)
    out = 48 * 16 * 16
    assert k.bytes == 2 * (48 * 32 * 32 + 192 * 8 * 8 + weights + out)
    # The concatenation (240@32x32) is neither written nor read: less than reading it once alone.
    assert k.bytes < 2 * 240 * 32 * 32
    px = 16 * 16  # output pixels: every pointwise GEMM and depthwise conv runs at the strided size
    assert k.dense_flops == 2 * px * (12 * 240 + 12 * 12 + 48 * 12 + 48 * 240)
    assert k.fma_flops == 2 * 9 * px * (240 + 12 + 12) + rl.BILINEAR_FLOPS * 192 * 32 * 32
    assert (k.op, k.family, k.shapes) == ("xception_block_cat", "xception_block", call.shapes)
    assert k.shapes == "48@32x32 + 192@8x8 -> 12/12/48 ch, stride 2, 1x1 shortcut"
    # The CUDA instantiation: 16x16 outputs are 4 tiles of 8x8, fewer than 132 SMs: 4x4 tiles; tensor cores.
    assert (k.cuda_kernel, k.dynamic_smem) == kr.xception_block_launch(1, 12, 12, 2, 16, 16, "fp16")
    assert k.cuda_kernel == "xception_block_kernel<__half, 4, 1, true>"
    # Triton's y1/y2 scratch through L2: 4 tiles of 8x8, each y1 (256 rows x 16 channels) and y2 (128 x 16) written,
    # sep2 reading 9 x 10x10 x 16 values of y1, sep3 9 x 8x8 x 16 of y2 in one pass (48 output channels), fp32.
    assert k.triton_scratch_bytes == 4 * 4 * (256 * 16 + 128 * 16 + 9 * 100 * 16 + 9 * 64 * 16)
    assert rl.triton_block_scratch(1, 12, 12, 48, 16, 16) == (4 * 4 * (256 * 16 + 128 * 16), k.triton_scratch_bytes)
    # The same kernel, row for row, in the fused plan; the FLOPs equal the composed block's, its bytes are far fewer.
    composed = rl.composed_block_kernels(*call.args, rl._Sizes(2))
    assert [c.op for c in composed] == ["upsample_concat", "conv1x1", "dwsep_conv", "dwsep_conv", "dwsep_conv"]
    assert sum(c.dense_flops for c in composed) == k.dense_flops and sum(c.fma_flops for c in composed) == k.fma_flops
    assert sum(c.bytes for c in composed) > 2 * k.bytes


def test_block_identity_shortcut_and_batch():
    call = block_call([meta(2, 48, 16, 16)], mids=(12, 12, 48), stride=1, projection=False)
    (k,) = rl.op_kernels(call, itemsize=4)
    weights = (48 + 12 + 12) * 9 + (12 * 48 + 12 * 12 + 48 * 12) + (12 + 12 + 48)  # no shortcut weights
    assert k.bytes == 4 * (2 * 48 * 256 + weights + 2 * 48 * 256)
    assert k.cuda_kernel == "xception_block_kernel<float, 4, 1, false>"  # 8 tiles of 8x8: the 4x4 edge, FMA
    assert k.triton_scratch_bytes == 4 * 8 * (256 * 16 + 128 * 16 + 9 * 100 * 16 + 9 * 64 * 16)


def test_blocks_past_a_backends_limits_write_the_concatenation_or_compose():
    # Five sources: the Triton kernel takes 4, so the Triton backend writes the concatenation first (CUDA reads up
    # to 8 in place: the row says so); its block kernel then reads the written 80@16x16 once.
    five = [meta(1, 16, 16, 16), *(meta(1, 16, 8, 8) for _ in range(4))]
    concat, block = rl.op_kernels(block_call(five), itemsize=2)
    assert concat.op == "upsample_concat (Triton only: CUDA reads <= 8 in place)" and concat.family == "upsample"
    assert concat.bytes == 2 * (16 * 256 + 4 * 16 * 64 + 80 * 256)
    weights = 80 * 9 + 2 * 12 * 9 + 12 * 80 + 144 + 48 * 12 + 72 + 48 * 80 + 48
    assert block.bytes == 2 * (80 * 256 + weights + 48 * 64) and block.family == "xception_block"
    composed = rl.composed_block_kernels(*block_call(five).args, rl._Sizes(2))
    assert (concat.dense_flops + block.dense_flops, concat.fma_flops + block.fma_flops) == (
        sum(k.dense_flops for k in composed), sum(k.fma_flops for k in composed))
    nine = [meta(1, 16, 16, 16)] * 9  # past both: a plain concatenation row
    assert [k.op for k in rl.op_kernels(block_call(nine), itemsize=2)] == ["upsample_concat", "xception_block_cat"]
    # Mid widths past 64: both backends compose the block from the ops.
    wide = rl.op_kernels(block_call([meta(1, 48, 16, 16), meta(1, 48, 8, 8)], mids=(72, 72, 96)), itemsize=2)
    assert [k.op for k in wide] == ["upsample_concat", "conv1x1", "dwsep_conv", "dwsep_conv", "dwsep_conv"]
    assert all(k.triton_scratch_bytes == 0 and not k.cuda_kernel for k in wide)


def test_block_kernel_limits_match_the_backends():
    """roofline's mirrors of the block kernels' limits and Triton's tiles against the sources they copy."""
    import re

    text = (kr.ROOT / "csrc" / "cuda" / "launchers.h").read_text()
    assert int(re.search(r"kXceptionBlockMaxMid = (\d+);", text).group(1)) == rl.MAX_MID
    assert int(re.search(r"kXceptionBlockMaxSources = (\d+);", text).group(1)) == rl.CUDA_MAX_SOURCES
    pytest.importorskip("triton")
    from dfanet_kernels.triton import upsample
    from dfanet_kernels.triton import xception_block as xb

    assert (xb.MAX_MID, upsample.MAX_SOURCES) == (rl.MAX_MID, rl.TRITON_MAX_SOURCES)
    assert (xb._PROGRAMS_PER_SM, xb._ASSUMED_SMS) == (1, 132)
    for c0, c1, c2, c3 in ((48, 12, 12, 48), (96, 24, 24, 96), (192, 48, 48, 192), (240, 12, 12, 48), (8, 5, 40, 20)):
        t = xb._tiles(c0, c1, c2, c3, False)  # the GPU's tiles, not the interpreter's
        per_program = t["BLOCK_R1"] * t["C1P"] + t["BLOCK_R2"] * t["C2P"]
        per_tile = per_program + 9 * (t["TILE"] + 2) ** 2 * t["C1P"] \
            + -(-c3 // t["BLOCK_N"]) * 9 * t["TILE"] ** 2 * t["C2P"]
        tiles = 3 * 5  # 24 x 40 outputs
        assert rl.triton_block_scratch(1, c1, c2, c3, 24, 40) == (4 * tiles * per_program, 4 * tiles * per_tile)


def test_block_kernel_launches_by_hand():
    """The CUDA block kernel's instantiation and dynamic shared memory (xception_block.cu's plan and layout), in
    floats: input halo chunk or y2, y1, the GEMM's A and B chunks (and on tensor cores the accumulators' scratch),
    depthwise weights and biases."""
    # enc2's first block of A at 1024 x 1024: 256 x 256 outputs, 1024 tiles of 8 x 8; stride 2: a 25 x 25 halo of
    # 8 channels; y1 12 x 12; tensor cores: A 144 pixels x 24 halves, B 48 channels x 24 halves, 8 warps' 16 x 20
    # scratch; sep1's 16 x 9 taps, sep2/sep3 taps and biases.
    assert kr.xception_block_launch(1, 12, 12, 2, 256, 256, "fp16") == (
        "xception_block_kernel<__half, 8, 1, true>",
        4 * (25 * 25 * 8 + 144 * 12 + 144 * 12 + 48 * 12 + 8 * 16 * 20 + 16 * 9 + 24 * 10))
    # enc4 of the third backbone: 32 x 32 outputs, 16 tiles of 8 x 8 < 132 SMs: 4 x 4 tiles, 128 threads; y2 (6 x 6
    # x 48) outgrows the stride-1 halo (10 x 10 x 16); FMA: A pitch 64 + 1, B 16 x (96 + 1).
    assert kr.xception_block_launch(1, 48, 48, 1, 32, 32, "fp32") == (
        "xception_block_kernel<float, 4, 3, false>", 4 * (36 * 48 + 64 * 48 + 16 * 65 + 16 * 97 + 16 * 9 + 96 * 10))
    assert kr.xception_block_launch(1, 65, 12, 1, 32, 32, "bf16") is None  # composed by the glue


def test_fused_plan_blocks_name_their_cuda_kernel():
    ws = [meta(c, 1, 3, 3) for c in (48, 12, 12)], [meta(12, 48, 1, 1), meta(12, 12, 1, 1), meta(48, 12, 1, 1)]
    block = OpCall("xception_block", (meta(1, 48, 64, 64), *ws, [meta(12), meta(12), meta(48)], 1, None, None),
                   output=meta(1, 48, 64, 64))
    weights = (meta(1000, 48), meta(1000), meta(48, 1000, 1, 1), meta(48))
    attention = OpCall("fc_attention", (block.output, *weights), output=meta(1, 48, 64, 64))
    conv = OpCall("conv1x1", (attention.output, meta(32, 48, 1, 1), meta(32), 1, True), output=meta(1, 32, 64, 64))
    kernel = rl.fused_kernels([block, attention, conv], itemsize=2, dtype="bf16")[0]
    assert (kernel.family, kernel.cuda_kernel) == (
        "xception_block", "xception_block_kernel<__nv_bfloat16, 4, 1, true>")
    assert kernel.dynamic_smem == kr.xception_block_launch(1, 12, 12, 1, 64, 64, "bf16")[1]
    compiled = kr.KernelResources(kernel.cuda_kernel, "xception_block.cu", "xception_block", "bf16", 128, 0, 0, 0, 0,
                                  128, 0.0)
    found = kr.launched([compiled], kernel.cuda_kernel, "bf16", kernel.dynamic_smem)
    assert found.smem_bytes == kernel.dynamic_smem and found.occupancy == kr.occupancy(128, kernel.dynamic_smem, 128)


def test_floor_bound_and_launch_floor():
    roof = rl.Roofline(rl.DEVICES["h100-sxm"], "fp16", bandwidth_gb_s=3000.0, bandwidth_source="test")
    big = rl.Kernel("copy", "", bytes=30_000_000, dense_flops=0, fma_flops=0)
    assert roof.floor_us(big) == pytest.approx(10.0) and roof.bound(big) == "memory"
    tiny = rl.Kernel("copy", "", bytes=3_000, dense_flops=0, fma_flops=0)
    assert roof.bound(tiny) == "launch" and roof.launch_floor_us(tiny) == rl.GRAPH_NODE_US
    dense = rl.Kernel("gemm", "", bytes=0, dense_flops=int(989.4e6 * 5), fma_flops=int(66.9e6 * 5))
    assert roof.compute_us(dense) == pytest.approx(10.0) and roof.bound(dense) == "compute"
    # fp32: dense convolutions on the FMA units.
    assert rl.Roofline(rl.DEVICES["h100-sxm"], "fp32", 3000.0, "test").compute_us(dense) == pytest.approx(
        5 * 989.4 / 66.9 + 5)


def test_device_table_is_sane():
    assert set(rl.DEVICES) == {"h100-sxm", "h200", "a100"}
    for d in rl.DEVICES.values():
        assert 1.5 < d.hbm_tb_s < 6 and d.tensor_tflops > 4 * d.fma_tflops > 0 and "datasheet" in d.source
    assert rl.DEVICES["h200"].tensor_tflops == rl.DEVICES["h100-sxm"].tensor_tflops
    assert rl.Roofline.assumed(rl.DEVICES["h100-sxm"], "fp16").bandwidth_gb_s == pytest.approx(3015)


def test_totals_are_the_sum_of_rows_and_kernel_counts_follow_the_model():
    calls = rl.record_forward("A", 1, 64, 64)
    roof = rl.Roofline.assumed(rl.DEVICES["h100-sxm"], "fp16")
    report = rl.roofline_report(calls, roof, dict(variant="A", height=64, width=64, batch=1, dtype="fp16"))
    for plan in report["plans"].values():
        rows, t = plan["rows"], plan["totals"]
        assert t["bytes"] == sum(r["count"] * r["kernel"]["bytes"] for r in rows)
        assert t["launch_floor_us"] == pytest.approx(sum(r["count"] * r["launch_floor_us"] for r in rows))
        assert t["launch_floor_us"] >= t["kernels"] * rl.GRAPH_NODE_US
    ops, fused = (report["plans"][p]["totals"] for p in ("ops", "fused"))
    # Today: the stem's one conv3x3 kernel, 42 block kernels (no concatenation written: 2 sources at most), 3 x 2
    # FC attention kernels, the decoder kernel, the output's resize. Fused: stem, the same 42, 3 x 2, decoder.
    assert ops["kernels"] == 1 + 42 + 6 + 1 + 1 == 51
    assert fused["kernels"] == 1 + 42 + 6 + 1
    assert fused["bytes"] < ops["bytes"] and fused["dense_flops"] == ops["dense_flops"]
    blocks = {p: [(r["kernel"], r["count"]) for r in report["plans"][p]["rows"]
                  if r["kernel"]["family"] == "xception_block"] for p in ("ops", "fused")}
    assert blocks["ops"] == blocks["fused"] and sum(n for _, n in blocks["ops"]) == 42
    assert sum(k["op"] == "xception_block_cat" for k, _ in blocks["ops"]) == 6  # 2 backbones x 3 aggregations
    assert not any(r["kernel"]["op"] in ("dwsep_conv", "upsample_concat") for r in report["plans"]["ops"]["rows"])
    assert ops["triton_scratch_bytes"] == fused["triton_scratch_bytes"] == sum(
        k["triton_scratch_bytes"] * n for k, n in blocks["ops"]) > 0
    # What separates the plans: the output's resize apart from the decoder kernel; the stem is one kernel in both.
    assert ops["kernels"] - fused["kernels"] == 1
    stems = [next(r for r in report["plans"][p]["rows"] if r["kernel"]["op"] == "conv3x3") for p in ("ops", "fused")]
    assert stems[0] == stems[1] and stems[0]["count"] == 1 and stems[0]["kernel"]["family"] == "conv3x3"
    assert not any(r["kernel"]["op"] in ("to channels_last", "relu") and "3@" in r["kernel"]["shapes"]
                   for r in report["plans"]["ops"]["rows"])
    (decoder,) = [r["kernel"] for r in report["plans"]["ops"]["rows"] if r["kernel"]["family"] == "decoder_head"]
    assert decoder["cuda_kernel"] == "decoder_head_kernel<__half, int, 1>" and decoder["dynamic_smem"] > 0
    text = rl.roofline_markdown(report, "cmd")
    assert "## Fused across ops" in text and "at its own size" in text and "Triton scratch MB (L2)" in text


def test_block_rows_carry_the_launched_cuda_kernel_and_their_triton_launch():
    calls = rl.record_forward("A", 1, 64, 64)
    roof = rl.Roofline.assumed(rl.DEVICES["h100-sxm"], "fp16")
    names = {k.cuda_kernel for c in calls if c.op.startswith("xception_block")
             for k in rl.op_kernels(c, 2, "fp16")}
    cuda = [kr.KernelResources(name, "xception_block.cu", "xception_block", "fp16", 128, 0, 0, 0, 1024, 128, 0.25)
            for name in names]
    cuda.append(kr.KernelResources("scale_kernel<__half, int>", "fc_attention.cu", "attention_scale", "fp16", 25,
                                   0, 0, 0, 0, 256, 1.0))
    triton = [[_resources(f"block {i}", "xception_block", 200)] if c.op.startswith("xception_block")
              else [] for i, c in enumerate(calls)]
    report = rl.roofline_report(calls, roof, dict(variant="A", height=64, width=64, batch=1, dtype="fp16"), cuda,
                                triton)
    for plan in ("ops", "fused"):
        rows = [r for r in report["plans"][plan]["rows"] if r["kernel"]["family"] == "xception_block"]
        assert rows
        for row in rows:
            k, found = row["kernel"], row["resources"]
            assert found["cuda"]["name"] == k["cuda_kernel"]
            assert found["cuda"]["smem_bytes"] == 1024 + k["dynamic_smem"]  # static + what it launches with
            assert found["triton"]["family"] == "xception_block" and found["triton"]["name"].startswith("block ")
        scale = next(r for r in report["plans"][plan]["rows"] if r["kernel"]["op"] == "fc_attention: scale")
        assert scale["resources"]["cuda"]["name"] == "scale_kernel<__half, int>"


def test_cli_help_and_a_bad_device(capsys):
    with pytest.raises(SystemExit) as exit_:
        rl.parse_args(["--help"])
    assert exit_.value.code == 0 and "--device" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        rl.parse_args(["--device", "h300"])
    assert exit_.value.code == 2 and "unknown 'h300'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # refused by the parser, not by a traceback after tracing the model
        rl.parse_args(["--variant", "C"])
    assert exit_.value.code == 2 and "argument --variant: invalid choice: 'C'" in capsys.readouterr().err


PTXAS = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_ZN6dfanet4cuda12scale_kernelI6__halfiEEvPKT_' for 'sm_90'
ptxas info    : Function properties for _ZN6dfanet4cuda12scale_kernelI6__halfiEEvPKT_
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 25 registers, used 0 barriers
ptxas info    : Compile time = 9.594 ms
ptxas info    : Compiling entry function '_ZN6dfanet4cuda22dwsep_conv_wmma_kernelI6__halfEEvNS0_6ParamsE' for 'sm_90'
ptxas info    : Function properties for _ZN6dfanet4cuda22dwsep_conv_wmma_kernelI6__halfEEvNS0_6ParamsE
    24 bytes stack frame, 16 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 114 registers, used 1 barriers, 28416 bytes smem, 400 bytes cmem[0]
"""
PTX = """\
.visible .entry _ZN6dfanet4cuda22dwsep_conv_wmma_kernelI6__halfEEvNS0_6ParamsE(
\t.param .align 8 .b8 p[128]
)
.maxntid 128, 1, 1
.minnctapersm 2
"""


def test_ptxas_report_and_launch_bounds_are_parsed():
    usage = kr.parse_ptxas(PTXAS)
    assert usage["_ZN6dfanet4cuda12scale_kernelI6__halfiEEvPKT_"] == dict(
        registers=25, spill_stores=0, spill_loads=0, stack_bytes=0, smem_bytes=0)
    assert usage["_ZN6dfanet4cuda22dwsep_conv_wmma_kernelI6__halfEEvNS0_6ParamsE"] == dict(
        registers=114, spill_stores=16, spill_loads=8, stack_bytes=24, smem_bytes=28416)
    threads = kr.parse_launch_bounds(PTX)
    assert threads == {"_ZN6dfanet4cuda22dwsep_conv_wmma_kernelI6__halfEEvNS0_6ParamsE": 128}
    (scale, wmma) = kr.describe("x.cu", usage, threads)
    assert (wmma.family, wmma.dtype, wmma.threads) == ("dwsep_conv", "fp16", 128)
    assert (scale.family, scale.threads) == ("attention_scale", 256)  # no launch bounds: 256 assumed


def test_occupancy_on_sm90():
    assert kr.occupancy(32, 0, 256) == 1.0  # 8 blocks of 256 threads, 8192 registers each
    # 128 registers x 256 threads: 32768 registers a block, two blocks an SM.
    assert kr.occupancy(128, 0, 256) == 0.25
    # 114 registers round up to 120 a thread (3840 a warp): 17 warps fit, 4 blocks of 4 warps.
    assert kr.occupancy(114, 28416, 128) == 0.25
    assert kr.occupancy(16, 100 * 1024, 128) == 2 * 128 / 2048  # shared memory: two blocks


@pytest.mark.skipif(NVCC is None, reason="nvcc not found (PATH, CUDA_HOME)")
def test_one_cuda_file_compiles_to_resources_for_every_dtype():
    kernels = kr.compile_sm90(kr.ROOT / "csrc" / "cuda" / "fc_attention.cu", NVCC)
    assert {(k.family, k.dtype) for k in kernels} >= {(f, d) for f in ("attention_vector", "attention_scale")
                                                      for d in ("fp16", "bf16", "fp32")}
    assert all(k.registers > 0 and k.threads > 0 and 0 < k.occupancy <= 1 for k in kernels)


def _resources(name: str, family: str, registers: int) -> kr.KernelResources:
    return kr.KernelResources(name, "triton", family, "fp16", registers, 0, 0, 0, 0, 128, 0.5)


def test_triton_launches_are_matched_to_the_rows_of_their_call():
    dw = [rl.Kernel("dwsep_conv", str(i), 1, 0, 0, "dwsep_conv") for i in range(3)]
    concat = rl.Kernel("upsample_concat", "", 1, 0, 0, "upsample")
    shortcut = rl.Kernel("conv1x1", "", 1, 0, 0)
    launches = [_resources("up a", "upsample", 30), _resources("up b", "upsample", 40),
                *(_resources(f"dw {i}", "dwsep_conv", 100 + i) for i in range(3))]
    matched = rl._match_launches([concat, shortcut, *dw], launches)
    # One launch per separable conv, in order; the concatenation (one launch per input) gets its worst launch.
    assert [matched[k].name for k in dw] == ["dw 0", "dw 1", "dw 2"]
    assert matched[concat].name == "up b" and shortcut not in matched


def test_triton_resources_need_the_compiler_not_the_interpreter():
    # tests/conftest.py sets TRITON_INTERPRET=1 for this process: the kernels are set up for the interpreter.
    per_call, reason = kr.triton_resources([], "fp16")
    assert per_call == [] and "TRITON_INTERPRET" in reason


TRITON_SCRIPT = """
import json, dataclasses, torch
from triton.runtime.driver import driver
from dfanet.tools.bench import kernel_resources as kr
from dfanet.tools.bench.op_calls import OpCall

logits = torch.empty(1, 19, 64, 64).contiguous(memory_format=torch.channels_last)
per_call, reason = kr.triton_resources([OpCall("upsample_add", ([logits], (256, 256)))], "fp16")
assert reason is None and driver._active is None, (reason, driver._active)  # the offline driver is gone again
print(json.dumps([dataclasses.asdict(r) for r in per_call[0]]))
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the kernels are compiled and run for real")
def test_a_triton_launch_is_captured_and_compiled_for_sm90():
    """The launcher's own tiles for DFANet's final resize at fp16, from a capture on meta tensors, compiled for sm_90
    (a few seconds; in a subprocess, without this process's TRITON_INTERPRET)."""
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", TRITON_SCRIPT], capture_output=True, text=True, env=env,
                            timeout=300, cwd=kr.ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    (launch,) = json.loads(result.stdout.splitlines()[-1])
    assert launch["name"].startswith("_upsample_kernel[BLOCK_W=") and launch["family"] == "upsample"
    assert launch["dtype"] == "fp16" and launch["threads"] == 256 and 0 < launch["registers"] <= 255
    assert 0 < launch["occupancy"] <= 1
