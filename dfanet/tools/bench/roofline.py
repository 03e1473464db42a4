"""Roofline floors of one fused DFANet forward on a named GPU, computed without one (method: docs/benchmarking.md,
"Roofline").

Every kernel of the forward, from the op calls of a recorded fused forward (``op_calls.record_op_calls``, on the
CPU backend, whose op boundaries are the model's: stem conv, one call per Xception block, FC attention, the
decoder head, the output's resize), gets its minimum traffic (every input and weight read once, every output
written once, at the dtype), its FLOPs (2 per MAC; dense convolutions, which tensor cores run at fp16/bf16, apart
from depthwise convolutions, resizes and FC attention's reductions, which run on the FMA units), and its floor on
the device: max(bytes / bandwidth, FLOPs / peak), and at least one CUDA-graph node (``GRAPH_NODE_US``). Two plans:

- ``ops``: the kernels the GPU backends launch today (dfanet_kernels.dispatch): one block kernel per Xception block
  on both (CUDA ``xception_block``, Triton ``xception_block_triton``), its concatenated input's sources read in
  place (a concatenation is written first only past a backend's source limit, 8 on CUDA, 4 on Triton; a block past
  64 mid channels is composed: upsample_concat, cuDNN 1x1 shortcut, three dwsep_conv); FC attention two kernels;
  the stem one conv3x3 kernel (CUDA ``conv3x3``, Triton ``conv3x3_triton``: the image read in its own layout, bias
  and ReLU fused); the decoder head one kernel (CUDA ``decoder_head``, Triton ``decoder_head_triton``). The
  Triton block kernel's y1/y2 go through a per-program fp32 scratch in global memory (L2-resident): reported beside
  the row (``triton_scratch_bytes``), not in its bytes or floor;
- ``fused``: issue 16's plan: the stem reading the image as it is, one kernel per Xception block reading the
  concatenation in place (today's block kernels: the same rows as ``ops``), FC attention in two kernels (pool +
  FCs, then the scaling), the decoder (its head and the output's resize) in one kernel. What still separates the
  plans: the output's resize, a kernel of its own today.

``python -m dfanet.tools.bench.roofline --device h100-sxm --dtype fp16 --size 1024 1024`` writes the tables; with
nvcc on the PATH they carry each CUDA kernel's registers, spills, shared memory and occupancy on sm_90
(``kernel_resources``). On a GPU, ``gpu.py`` puts the same floors beside the measured layer times.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Iterable, Sequence

from ...variants import VARIANTS
from .report import Column, markdown_table, write_markdown_and_json

if TYPE_CHECKING:
    import torch

    from .kernel_resources import KernelResources
    from .op_calls import OpCall

# A dependent kernel node of a CUDA graph costs about 2 us from one kernel's end to the next one's start on
# Hopper (issue 16's figure; the 2026-11-26 H200 run agrees: 204 nodes replayed in 8.84 ms against 8.70 ms of
# kernels, and a graph of tiny kernels runs at ~2 us per node). No kernel of the forward is cheaper than that.
GRAPH_NODE_US = 2.0
# Assumption, not a measurement: a streaming copy reaches about 90% of the datasheet's HBM bandwidth (issue 16
# uses ~3.0 TB/s of the H100 SXM's 3.35). On a GPU the bandwidth comes from a copy timed in the same run instead.
ACHIEVABLE_BANDWIDTH = 0.9
ITEMSIZE = {"fp16": 2, "bf16": 2, "fp32": 4}


@dataclass(frozen=True)
class Device:
    name: str  # the --device key
    label: str
    hbm_tb_s: float  # peak HBM bandwidth, TB/s
    tensor_tflops: float  # dense fp16/bf16 tensor-core peak (no sparsity)
    fma_tflops: float  # fp32 FMA peak (CUDA cores)
    source: str


DEVICES = {d.name: d for d in (
    Device("h100-sxm", "NVIDIA H100 SXM5 80GB", 3.35, 989.4, 66.9,
           "NVIDIA H100 Tensor Core GPU datasheet (SXM5): 3.35 TB/s HBM3, 1,979 TFLOPS fp16/bf16 tensor with "
           "sparsity (989 dense), 67 TFLOPS fp32"),
    Device("h200", "NVIDIA H200 SXM 141GB", 4.8, 989.4, 66.9,
           "NVIDIA H200 Tensor Core GPU datasheet (SXM): 4.8 TB/s HBM3e; compute as the H100 SXM"),
    Device("a100", "NVIDIA A100 SXM4 80GB", 2.039, 312.0, 19.5,
           "NVIDIA A100 Tensor Core GPU datasheet (80GB SXM): 2,039 GB/s HBM2e, 312 TFLOPS fp16/bf16 dense tensor, "
           "19.5 TFLOPS fp32"),
)}


def device_for(gpu_name: str) -> Device | None:
    """The DEVICES entry for a GPU by its name (torch.cuda.get_device_name), or None."""
    for token, key in (("H100", "h100-sxm"), ("H200", "h200"), ("A100", "a100")):
        if token in gpu_name:
            return DEVICES[key]
    return None


@dataclass(frozen=True)
class Roofline:
    """What bounds a kernel on one device at one dtype."""

    device: Device
    dtype: str
    bandwidth_gb_s: float  # achievable (assumed fraction of peak) or measured
    bandwidth_source: str

    @classmethod
    def assumed(cls, device: Device, dtype: str) -> "Roofline":
        return cls(device, dtype, device.hbm_tb_s * 1e3 * ACHIEVABLE_BANDWIDTH,
                   f"{ACHIEVABLE_BANDWIDTH:.0%} of the datasheet's {device.hbm_tb_s} TB/s (assumed)")

    @property
    def dense_tflops(self) -> float:
        # fp32 convolutions counted on the FMA units (no TF32): the floor of exact fp32.
        return self.device.tensor_tflops if self.dtype in ("fp16", "bf16") else self.device.fma_tflops

    def memory_us(self, k: "Kernel") -> float:
        return k.bytes / (self.bandwidth_gb_s * 1e3)

    def compute_us(self, k: "Kernel") -> float:
        # The two kinds of work share the SMs: their times add.
        return k.dense_flops / (self.dense_tflops * 1e6) + k.fma_flops / (self.device.fma_tflops * 1e6)

    def floor_us(self, k: "Kernel") -> float:
        """The roofline floor: max(bytes / bandwidth, FLOPs / peak)."""
        return max(self.memory_us(k), self.compute_us(k))

    def launch_floor_us(self, k: "Kernel") -> float:
        """The floor with the graph node: no kernel takes less than GRAPH_NODE_US."""
        return max(self.floor_us(k), GRAPH_NODE_US)

    def op_floor(self, call: "OpCall") -> dict:
        """One op call's minimum work and floors today (its kernels summed), for a row of measured times."""
        kernels = op_kernels(call, ITEMSIZE[self.dtype], self.dtype)
        return {"kernels": len(kernels), "bytes": sum(k.bytes for k in kernels),
                "floor_us": sum(map(self.floor_us, kernels)),
                "launch_floor_us": sum(map(self.launch_floor_us, kernels))}

    def bound(self, k: "Kernel") -> str:
        memory, compute = self.memory_us(k), self.compute_us(k)
        if max(memory, compute) < GRAPH_NODE_US:
            return "launch"
        return "memory" if memory >= compute else "compute"


@dataclass(frozen=True)
class Kernel:
    """One kernel's minimum work: ``bytes`` moved (inputs and weights read once, outputs written once)."""

    op: str  # what it computes
    shapes: str
    bytes: int
    dense_flops: int  # dense convolutions: tensor cores at fp16/bf16
    fma_flops: int  # depthwise convolutions, resizes, pooling, FC at batch 1: FMA units
    family: str = ""  # the compiled kernels (kernel_resources' families) that run it today, "" for cuDNN/ATen
    # The one CUDA kernel instantiation that runs it (its demangled name) and the dynamic shared memory it launches
    # with, where the launcher's choice is known offline (kernel_resources.xception_block_launch, conv3x3_launch);
    # "" otherwise.
    cuda_kernel: str = ""
    dynamic_smem: int = 0
    # The Triton block kernel's y1/y2 scratch traffic (global memory, L2-resident; not in ``bytes``, not in the floor:
    # triton_block_scratch).
    triton_scratch_bytes: int = 0


# ---------------------------------------------------------------------------------------------------------------
# Op calls -> kernels (shapes from the call's tensors; FLOPs = 2 per MAC)
# ---------------------------------------------------------------------------------------------------------------
BILINEAR_FLOPS = 8  # per resized output element: 4 taps, 4 multiply-adds
DW_TAPS = 9


def _tensors(value) -> list["torch.Tensor"]:
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _numel(value) -> int:
    return sum(t.numel() for t in _tensors(value))


def _out_hw(h: int, w: int, stride: int) -> tuple[int, int]:
    from dfanet_kernels import conv_output_size

    return conv_output_size(h, stride), conv_output_size(w, stride)


def _map(n: int, c: int, h: int, w: int) -> str:
    return f"{c}@{h}x{w}" + (f", batch {n}" if n > 1 else "")


class _Sizes:
    """Element counts -> bytes at one dtype."""

    def __init__(self, itemsize: int):
        self.itemsize = itemsize

    def __call__(self, *counts: int) -> int:
        return self.itemsize * sum(counts)


def conv_kernel(x_shape, weight, bias, stride: int, e: _Sizes, family: str = "") -> tuple[Kernel, int]:
    """A dense k x k conv (cuDNN, or the compiled kernels of ``family``) and its output's element count."""
    n, c, h, w = x_shape
    ho, wo = _out_hw(h, w, stride)
    cout, k = weight.shape[0], weight.shape[-1]
    out = n * cout * ho * wo
    kernel = Kernel(f"conv{k}x{k}", f"{_map(n, c, h, w)} -> {cout} ch, stride {stride}",
                    e(n * c * h * w, weight.numel(), _numel(bias), out), 2 * out * c * k * k, 0, family)
    return kernel, out


def dwsep_kernel(x_shape, dw_weight, dw_bias, pw_weight, pw_bias, stride: int, residual: bool,
                 e: _Sizes) -> tuple[Kernel, tuple]:
    """A dwsep_conv kernel and its output's shape."""
    n, c, h, w = x_shape
    ho, wo = _out_hw(h, w, stride)
    cout = pw_weight.shape[0]
    out = n * cout * ho * wo
    kernel = Kernel("dwsep_conv", f"{_map(n, c, h, w)} -> {cout} ch, stride {stride}"
                    + (", +residual" if residual else ""),
                    e(n * c * h * w, dw_weight.numel(), _numel(dw_bias), pw_weight.numel(), _numel(pw_bias),
                      out * residual, out),
                    2 * out * c, 2 * DW_TAPS * n * c * ho * wo, "dwsep_conv")
    return kernel, (n, cout, ho, wo)


def upsample_kernel(op: str, inputs, size, e: _Sizes) -> Kernel:
    n, (h, w) = inputs[0].shape[0], size
    resized = sum(n * t.shape[1] * h * w for t in inputs if tuple(t.shape[-2:]) != tuple(size))  # output elements
    channels = sum(t.shape[1] for t in inputs) if op == "upsample_concat" else inputs[0].shape[1]
    out = n * channels * h * w
    adds = out * (len(inputs) - 1) if op == "upsample_add" else 0
    return Kernel(op, " + ".join(f"{t.shape[1]}@{t.shape[2]}x{t.shape[3]}" for t in inputs) + f" -> {h}x{w}",
                  e(_numel(inputs), out), 0, BILINEAR_FLOPS * resized + adds,
                  "upsample")


def composed_block_kernels(inputs, dw_weights, pw_weights, pw_biases, stride, shortcut_weight, shortcut_bias,
                           e: _Sizes) -> list[Kernel]:
    """An Xception block composed from the ops, as both GPU backends still run it past MAX_MID mid channels (and ran
    every block before their block kernels): the concatenation written where the input is one, the 1x1 shortcut
    conv, three dwsep_conv (ReLU first; the third adds the shortcut)."""
    kernels = []
    n, _, h, w = inputs[0].shape
    shape = (n, sum(t.shape[1] for t in inputs), h, w)
    if len(inputs) > 1:
        kernels.append(upsample_kernel("upsample_concat", inputs, (h, w), e))
    if shortcut_weight is not None:
        kernels.append(conv_kernel(shape, shortcut_weight, shortcut_bias, stride, e)[0])
    for i in range(3):
        kernel, shape = dwsep_kernel(shape, dw_weights[i], None, pw_weights[i], pw_biases[i], stride if i == 0 else 1,
                                     i == 2, e)
        kernels.append(kernel)
    return kernels


# The block kernels' limits (csrc/cuda/launchers.h kXceptionBlockMaxMid / kXceptionBlockMaxSources;
# dfanet_kernels/triton/xception_block.py MAX_MID, upsample.py MAX_SOURCES). Past MAX_MID both backends compose the
# block; past a backend's source limit it writes the concatenation first and its block kernel reads that.
MAX_MID = 64
CUDA_MAX_SOURCES = 8
TRITON_MAX_SOURCES = 4


def triton_block_scratch(n: int, c1: int, c2: int, c3: int, ho: int, wo: int, sms: int = 132) -> tuple[int, int]:
    """The Triton block kernel's fp32 y1/y2 scratch in global memory (dfanet_kernels/triton/xception_block.py,
    mirrored): its footprint (one region per program of the persistent grid, min(tiles, sms) programs) and the
    bytes the kernel moves through it: per 8 x 8 output tile, y1's 16 x 16 padded rows x C1P channels and y2's 128
    x C2P written whole, sep2's depthwise reading 9 taps x 10 x 10 pixels x C1P, sep3's 9 x 8 x 8 x C2P per
    64-channel output pass. Written and read back by the same program (``.cg``: from L2, its lines rewritten every
    tile), so in L2, not HBM, while the footprint fits."""
    tile, block_r1, block_r2, max_block_n = 8, 256, 128, 64

    def padded(c: int) -> int:
        return max(16, 1 << (c - 1).bit_length())

    c1p, c2p = padded(c1), padded(c2)
    tiles = n * -(-ho // tile) * -(-wo // tile)
    block_n = max(16, min(max_block_n, padded(c3)))
    per_tile = (block_r1 * c1p + block_r2 * c2p + 9 * (tile + 2) ** 2 * c1p
                + -(-c3 // block_n) * 9 * tile * tile * c2p)
    return 4 * min(tiles, sms) * (block_r1 * c1p + block_r2 * c2p), 4 * tiles * per_tile


def block_kernels(call: "OpCall", e: _Sizes, dtype: str) -> list[Kernel]:
    """What the GPU backends launch today for an Xception block call (dfanet_kernels.dispatch.run_block): one block
    kernel (CUDA ``dfanet::xception_block``, Triton ``dfanet::xception_block_triton``) reading its inputs in place,
    each concatenation source once at its own size, then every weight once, writing the output once; its FLOPs those
    of the composed block. The concatenation is written first by a separate upsample_concat kernel past the
    backend's source limit: here for more than TRITON_MAX_SOURCES inputs, the Triton backend's launches (the CUDA
    backend reads up to CUDA_MAX_SOURCES in place; the row's name says so). Past MAX_MID mid channels both backends
    compose the block (composed_block_kernels)."""
    inputs = call.args[0] if call.op == "xception_block_cat" else [call.args[0]]
    dw_weights, pw_weights, pw_biases, stride, shortcut_weight, shortcut_bias = call.args[1:]
    composed = composed_block_kernels(inputs, *call.args[1:], e)
    c1, c2, c3 = (w.shape[0] for w in pw_weights)
    if max(c1, c2) > MAX_MID:
        return composed
    kernels = []
    if len(inputs) > TRITON_MAX_SOURCES:
        concat = composed[0]
        note = "" if len(inputs) > CUDA_MAX_SOURCES else f" (Triton only: CUDA reads <= {CUDA_MAX_SOURCES} in place)"
        kernels.append(replace(concat, op=concat.op + note))
    n, c0, h, w = inputs[0].shape[0], sum(t.shape[1] for t in inputs), *inputs[0].shape[2:]
    source_elements = n * c0 * h * w if kernels else _numel(inputs)  # the written concatenation, or each source
    weights = [*dw_weights, *pw_weights, *pw_biases, shortcut_weight, shortcut_bias]
    ho, wo = _out_hw(h, w, stride)
    rest = composed[len(kernels):]
    kernels.append(Kernel(call.op, call.shapes, e(source_elements, _numel(weights), n * c3 * ho * wo),
                          sum(k.dense_flops for k in rest), sum(k.fma_flops for k in rest), "xception_block",
                          triton_scratch_bytes=triton_block_scratch(n, c1, c2, c3, ho, wo)[1],
                          **_block_launch(n, c1, c2, stride, ho, wo, dtype)))
    return kernels


def decoder_kernels(call: "OpCall", e: _Sizes, dtype: str) -> list[Kernel]:
    """decoder_head as every GPU backend runs it (dfanet_kernels.dispatch.run_decoder_head): one kernel (CUDA
    ``dfanet::decoder_head``, Triton ``dfanet::decoder_head_triton``) reading each map and weight once and writing
    the logits once; its FLOPs those of the composed decoder: each map's 1x1 conv at its own size, the resizes of the
    reduced maps, the fuse conv and the classifier."""
    import torch

    from dfanet_kernels import reference

    composed = []

    def conv(x, weight, bias, relu: bool) -> "torch.Tensor":
        composed.append(conv_kernel(x.shape, weight, bias, 1, e)[0])
        return torch.empty(x.shape[0], weight.shape[0], *x.shape[2:], device="meta")

    def add(inputs, size) -> "torch.Tensor":
        composed.append(upsample_kernel("upsample_add", inputs, size, e))
        return torch.empty(inputs[0].shape[0], inputs[0].shape[1], *size, device="meta")

    # The decoder's own wiring, its layers recording kernels instead of computing: the work the one kernel does.
    reference.decoder_head_with(conv, add, *call.args)
    low, high = call.args[:2]
    launch = _decoder_launch(low, high, call.args[4].shape[0], call.args[8].shape[0], dtype)
    return [Kernel(call.op, call.shapes, e(_numel(call.args), _output_numel(call)),
                   sum(k.dense_flops for k in composed), sum(k.fma_flops for k in composed), "decoder_head",
                   **launch)]


def attention_kernels(x, fc_weight, fc_bias, conv_weight, conv_bias, e: _Sizes) -> list[Kernel]:
    """FC attention as the GPU backends run it: one kernel for the scale vector (the mean over H x W, then both FCs,
    in tiles handed over through device counters; its fp32 scratch stays in L2), one scaling the map."""
    n, c, h, w = x.shape
    k = fc_weight.shape[0]
    f32 = _Sizes(4)
    shapes = f"{_map(n, c, h, w)}, K={k}"
    weights = e(fc_weight.numel(), _numel(fc_bias), conv_weight.numel(), _numel(conv_bias))
    return [
        Kernel("fc_attention: pool + fc", shapes, e(x.numel()) + weights + f32(n * c), 0,
               x.numel() + 4 * n * k * c, "attention_vector"),
        Kernel("fc_attention: scale", shapes, e(2 * x.numel()) + f32(n * c), 0, x.numel(), "attention_scale"),
    ]


def op_kernels(call: "OpCall", itemsize: int, dtype: str | None = None) -> list[Kernel]:
    """The kernels the GPU backends launch for one op call, today. ``dtype`` (default: fp32 or fp16 by
    ``itemsize``) names the CUDA block kernels' instantiations."""
    e, args = _Sizes(itemsize), call.args
    dtype = dtype or {4: "fp32", 2: "fp16"}[itemsize]
    if call.op == "conv3x3":  # one kernel: the image read in its own layout, bias and ReLU fused
        from .kernel_resources import conv3x3_launch

        x, weight, bias, stride, _ = args
        kernel, out = conv_kernel(x.shape, weight, bias, stride, e, "conv3x3")
        return [replace(kernel, cuda_kernel=conv3x3_launch(x.numel(), out, weight.shape[0], dtype))]
    if call.op == "conv1x1":
        x, weight, bias, stride, relu = args
        conv, out = conv_kernel(x.shape, weight, bias, stride, e)
        # reference.conv: F.conv2d, then F.relu
        return [conv, Kernel("relu", conv.shapes, e(2 * out), 0, 0)] if relu else [conv]
    if call.op == "dwsep_conv":
        x, dw_weight, dw_bias, pw_weight, pw_bias, stride, _, _, _, residual = args
        return [dwsep_kernel(x.shape, dw_weight, dw_bias, pw_weight, pw_bias, stride, residual is not None, e)[0]]
    if call.op in ("xception_block", "xception_block_cat"):
        return block_kernels(call, e, dtype)
    if call.op == "fc_attention":
        return attention_kernels(*args, e)
    if call.op in ("upsample_concat", "upsample_add"):
        return [upsample_kernel(call.op, args[0], args[1], e)]
    if call.op == "decoder_head":
        return decoder_kernels(call, e, dtype)
    raise ValueError(f"no roofline for op {call.op!r}")


def _merged(op: str, shapes: str, parts: Sequence[Kernel], nbytes: int) -> Kernel:
    """One kernel doing the work of ``parts`` and moving ``nbytes``."""
    return Kernel(op, shapes, nbytes, sum(k.dense_flops for k in parts), sum(k.fma_flops for k in parts))


def _output_numel(call: "OpCall") -> int:
    return call.output.numel()


def _block_launch(n: int, c1: int, c2: int, stride: int, ho: int, wo: int, dtype: str) -> dict:
    """The CUDA backend's block kernel for a block (kernel_resources.xception_block_launch): the instantiation and
    the dynamic shared memory it launches with."""
    from .kernel_resources import xception_block_launch

    launch = xception_block_launch(n, c1, c2, stride, ho, wo, dtype)
    return {} if launch is None else {"cuda_kernel": launch[0], "dynamic_smem": launch[1]}


def _decoder_launch(low, high, d: int, k: int, dtype: str) -> dict:
    """The CUDA backend's decoder kernel for a decoder_head call (kernel_resources.decoder_head_launch)."""
    from .kernel_resources import decoder_head_launch

    launch = decoder_head_launch([tuple(t.shape) for t in [*low, *high]], d, k, dtype)
    return {} if launch is None else {"cuda_kernel": launch[0], "dynamic_smem": launch[1]}


def fused_kernels(calls: Sequence["OpCall"], itemsize: int, dtype: str | None = None) -> list[Kernel]:
    """Issue 16's plan for the forward of ``calls`` (recorded, outputs included): the stem in one kernel reading
    the image as it is, one kernel per Xception block (its input, concatenation or not, read in place: today's block
    kernel, the same row as in op_kernels, wherever the backends launch one), FC attention in two (pool + FCs to the
    scale vector; the scaling: what the GPU backends launch today), and the decoder (every call after the last FC
    attention) in one. ``dtype`` (default: fp32 or fp16 by ``itemsize``) names the CUDA block kernels'
    instantiations."""
    e = _Sizes(itemsize)
    dtype = dtype or {4: "fp32", 2: "fp16"}[itemsize]
    last_attention = max(i for i, c in enumerate(calls) if c.op == "fc_attention")
    kernels = []
    for call in calls[:last_attention + 1]:
        parts = op_kernels(call, itemsize, dtype)
        if call.op == "fc_attention":  # already the plan's two kernels: the scale vector, the scaling
            kernels += parts
        elif len(parts) == 1 and parts[0].family in ("xception_block", "conv3x3"):  # today's one kernel already
            kernels += parts
        else:  # a block with a written concatenation or composed today
            kernels.append(_merged(call.op, call.shapes, parts, e(_numel(call.args), _output_numel(call))))
    tail = calls[last_attention + 1:]
    internal = {id(c.output) for c in tail}
    read = {id(t): t for c in tail for t in _tensors(c.args) if id(t) not in internal}
    parts = [k for c in tail for k in op_kernels(c, itemsize)]
    kernels.append(_merged("decoder", f"{len(tail)} ops -> {_map(*tail[-1].output.shape)}", parts,
                           e(sum(t.numel() for t in read.values()), _output_numel(tail[-1]))))
    return kernels


# ---------------------------------------------------------------------------------------------------------------
# The table: distinct kernels with their counts, floors and totals
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    kernel: Kernel
    count: int
    floor_us: float
    launch_floor_us: float
    bound: str
    resources: dict | None = None  # "cuda" and "triton": the kernels' KernelResources as dicts (roofline_report)


def rows_of(kernels: Iterable[Kernel], roofline: Roofline) -> list[Row]:
    """Distinct kernels in order of first use, each with how many times the forward runs it."""
    counts: dict[Kernel, int] = {}
    for k in kernels:
        counts[k] = counts.get(k, 0) + 1
    return [Row(k, n, roofline.floor_us(k), roofline.launch_floor_us(k), roofline.bound(k))
            for k, n in counts.items()]


def totals(rows: Sequence[Row]) -> dict:
    """Per forward: bytes, FLOPs, kernels, the sum of floors and the sum with the graph node per kernel."""
    return {
        "kernels": sum(r.count for r in rows),
        "bytes": sum(r.count * r.kernel.bytes for r in rows),
        "dense_flops": sum(r.count * r.kernel.dense_flops for r in rows),
        "fma_flops": sum(r.count * r.kernel.fma_flops for r in rows),
        "triton_scratch_bytes": sum(r.count * r.kernel.triton_scratch_bytes for r in rows),
        "floor_us": sum(r.count * r.floor_us for r in rows),
        "launch_floor_us": sum(r.count * r.launch_floor_us for r in rows),
    }


def _resource(header: str, cell) -> Column:
    """``header`` of CUDA / Triton: ``cell(resources)`` of each, "–" where there is none."""
    def text(row: "Row") -> str:
        found = row.resources or {}
        return "/".join("–" if found.get(b) is None else cell(found[b]) for b in ("cuda", "triton"))

    return Column(header + " cuda/triton", text)


ROOFLINE_COLUMNS = [
    Column("kernel", lambda r: r.kernel.op, numeric=False),
    Column("shapes", lambda r: r.kernel.shapes, numeric=False),
    Column("count", lambda r: str(r.count)),
    Column("MB", lambda r: f"{r.kernel.bytes / 1e6:.3f}"),
    Column("dense MFLOP", lambda r: f"{r.kernel.dense_flops / 1e6:.1f}"),
    Column("dw/FMA MFLOP", lambda r: f"{r.kernel.fma_flops / 1e6:.1f}"),
    Column("floor us", lambda r: f"{r.floor_us:.2f}"),
    Column("bound", lambda r: r.bound, numeric=False),
    Column("x count, >= 2 us", lambda r: f"{r.count * r.launch_floor_us:.1f}"),
    Column("Triton scratch MB (L2)",
           lambda r: f"{r.kernel.triton_scratch_bytes / 1e6:.1f}" if r.kernel.triton_scratch_bytes else "–"),
]
RESOURCE_COLUMNS = [
    _resource("registers", lambda r: str(r["registers"])),
    _resource("spill B", lambda r: str(r["spill_stores"] + r["spill_loads"])),
    _resource("smem KB", lambda r: f"{r['smem_bytes'] / 1024:.1f}"),
    _resource("threads", lambda r: str(r["threads"])),
    _resource("occupancy", lambda r: f"{r['occupancy']:.0%}"),
]


def totals_line(label: str, t: dict) -> str:
    return (f"**{label}**: {t['kernels']} kernels, {t['bytes'] / 1e6:.1f} MB, {t['dense_flops'] / 1e9:.2f} GFLOP "
            f"dense + {t['fma_flops'] / 1e9:.2f} GFLOP depthwise/FMA; sum of floors {t['floor_us'] / 1e3:.3f} ms, "
            f"with >= {GRAPH_NODE_US:g} us per kernel {t['launch_floor_us'] / 1e3:.3f} ms"
            + (f"; the Triton block kernels' y1/y2 scratch moves {t['triton_scratch_bytes'] / 1e6:.1f} MB more through "
               f"L2 (not counted)." if t.get("triton_scratch_bytes") else "."))


# ---------------------------------------------------------------------------------------------------------------
# The offline report
# ---------------------------------------------------------------------------------------------------------------
def record_forward(variant: str, batch: int, height: int, width: int) -> list["OpCall"]:
    """The op calls of one fused forward (CPU backend, fp32: the shapes do not depend on the dtype)."""
    import torch

    from .models import build_model, build_twin, random_input
    from .op_calls import record_op_calls

    model = build_twin(build_model(variant), fused=True, backend="cpu")
    with torch.no_grad():
        return record_op_calls(model, random_input(batch, height, width))


def _match_launches(kernels: Sequence[Kernel], launches: Sequence["KernelResources"]) -> dict:
    """Kernel -> the Triton kernel launched for it, within one op call: the call's kernels and launches of a family
    in order where their counts agree; otherwise (Triton's upsample_concat launches once per input) the family's
    launch with the most registers for each."""
    from .kernel_resources import worst

    matched = {}
    for family in {k.family for k in kernels if k.family}:
        mine = [k for k in kernels if k.family == family]
        theirs = [r for r in launches if r.family == family]
        if len(mine) == len(theirs):
            matched.update(zip(mine, theirs))
        elif theirs:
            matched.update((k, worst(theirs, family, theirs[0].dtype)) for k in mine)
    return matched


def roofline_report(calls: Sequence["OpCall"], roofline: Roofline, config: dict,
                    cuda: Sequence["KernelResources"] = (),
                    triton: Sequence[Sequence["KernelResources"]] = ()) -> dict:
    """Both plans' rows and totals; with ``cuda`` (kernel_resources.cuda_resources) and ``triton`` (per call,
    kernel_resources.triton_resources) the resources of today's kernels: the CUDA family's kernel with the most
    registers at the dtype, and the Triton kernel launched for that very row."""
    from .kernel_resources import launched, worst

    itemsize = ITEMSIZE[roofline.dtype]
    today, triton_of = [], {}
    for i, call in enumerate(calls):
        kernels = op_kernels(call, itemsize)
        today += kernels
        if triton:
            triton_of.update(_match_launches(kernels, triton[i]))
    fused = fused_kernels(calls, itemsize, roofline.dtype)
    plans = {"ops": rows_of(today, roofline), "fused": rows_of(fused, roofline)}
    for row in plans["ops"] + plans["fused"]:  # the fused plan's block rows are today's block kernels
        if row.kernel.family and (cuda or triton):
            # The CUDA block kernel: the instantiation the launcher picks and the shared memory it launches with.
            found = {"cuda": launched(cuda, row.kernel.cuda_kernel, roofline.dtype, row.kernel.dynamic_smem)
                     if row.kernel.cuda_kernel else worst(cuda, row.kernel.family, roofline.dtype),
                     "triton": triton_of.get(row.kernel)}
            row.resources = {backend: r and asdict(r) for backend, r in found.items()}
    compiled = [r for r in cuda if r.dtype == roofline.dtype]
    compiled += {id(r): r for launches in triton for r in launches}.values()
    return {
        "config": config,
        "device": asdict(roofline.device),
        "bandwidth_gb_s": roofline.bandwidth_gb_s,
        "bandwidth_source": roofline.bandwidth_source,
        "graph_node_us": GRAPH_NODE_US,
        "plans": {name: {"totals": totals(rows), "rows": [asdict(r) for r in rows]} for name, rows in plans.items()},
        "resources": [asdict(r) for r in compiled],
    }


PLAN_TITLES = {
    "ops": "Today's op boundaries (the kernels the GPU backends launch: one block kernel per Xception block on CUDA "
           "and Triton)",
    "fused": "Fused across ops (issue 16's plan: stem in 1, today's block kernels, FC attention in 2, decoder in 1)",
}


def roofline_markdown(report: dict, command: str) -> str:
    from .kernel_resources import RESOURCE_TABLE_COLUMNS, KernelResources

    c, d = report["config"], report["device"]
    lines = [f"# Roofline of one fused forward: DFANet {c['variant']} {c['height']}x{c['width']}, batch {c['batch']}, "
             f"{c['dtype']}, {d['label']}", "", f"Command: `{command}`", "",
             f"Device: {d['source']}. Bandwidth {report['bandwidth_gb_s']:.0f} GB/s: {report['bandwidth_source']}. "
             f"Dense convolutions at {d['tensor_tflops'] if c['dtype'] != 'fp32' else d['fma_tflops']} TFLOPS "
             f"({'tensor cores' if c['dtype'] != 'fp32' else 'fp32 FMA, no TF32'}), depthwise convolutions, resizes "
             f"and FC attention at {d['fma_tflops']} TFLOPS (FMA). Floor = max(bytes / bandwidth, FLOPs / peak); "
             f"no kernel under {report['graph_node_us']:g} us (one dependent CUDA-graph node). Bytes: every input "
             f"and weight read once, every output written once; a block kernel reads each source of its "
             f"concatenated input once, at its own size (the concatenation is never written). Triton scratch: the "
             f"Triton block kernel's fp32 y1/y2, written and read back per 8x8 tile through a per-program region "
             f"of global memory (at most 13 MB for the persistent grid on 132 SMs: L2-resident), counted apart, not "
             f"in MB or the floor; the CUDA block kernel keeps them in shared memory. Method: docs/benchmarking.md "
             f"(Roofline).", ""]
    ops, fused = (report["plans"][p]["totals"] for p in ("ops", "fused"))
    lines += [totals_line("Today", ops), "", totals_line("Fused plan", fused), "",
              f"Gap: today's floor is {ops['launch_floor_us'] / fused['launch_floor_us']:.1f}x the fused plan's "
              f"(with the per-kernel minimum), {ops['bytes'] / fused['bytes']:.1f}x its traffic.", ""]
    resources = [KernelResources(**r) for r in report["resources"]]
    for plan, data in report["plans"].items():
        rows = [Row(Kernel(**r["kernel"]), r["count"], r["floor_us"], r["launch_floor_us"], r["bound"],
                    r["resources"]) for r in data["rows"]]
        columns = ROOFLINE_COLUMNS + (RESOURCE_COLUMNS if resources and any(r.resources for r in rows) else [])
        lines += [f"## {PLAN_TITLES[plan]}", ""] + markdown_table(columns, rows) + ["", totals_line("All",
                                                                                                   data["totals"]), ""]
    if resources:
        lines += ["Resource columns, cuda/triton: the CUDA kernel (csrc/cuda) of the row's family at this dtype with "
                  "the most registers (for a block or stem row, in both plans: the instantiation the launcher picks "
                  "for it, with the dynamic shared memory it launches with), and the Triton kernel the Triton "
                  "backend launches for that row (its tiles as the launcher picks them), each compiled offline for "
                  "sm_90 (ptxas); spill = spill stores + loads; occupancy = resident threads / 2048 on an sm_90 SM "
                  "(kernel_resources).", "",
                  "## Kernels compiled for sm_90", ""]
        for source in ("cuda", "triton"):
            mine = [r for r in resources if (r.source == "triton") == (source == "triton")]
            if mine:
                top = max(mine, key=lambda r: r.registers)
                spilled = [f"`{r.name}` {r.spill_stores}/{r.spill_loads} B" for r in mine
                           if r.spill_stores + r.spill_loads]
                occupancies = [r.occupancy for r in mine]
                lines.append(f"- {source}: at most {top.registers} registers (`{top.name}`); "
                             + (f"spill stores/loads in {', '.join(spilled)}" if spilled else "no spills")
                             + f"; occupancy {min(occupancies):.0%} to {max(occupancies):.0%}.")
        lines += [""] + markdown_table(RESOURCE_TABLE_COLUMNS, resources) + [""]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dfanet.tools.bench.roofline", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="h100-sxm", help=f"one of {sorted(DEVICES)} (default h100-sxm)")
    p.add_argument("--dtype", default="fp16", choices=sorted(ITEMSIZE))
    p.add_argument("--size", nargs=2, type=int, default=(1024, 1024), metavar=("H", "W"))
    p.add_argument("--variant", default="A", choices=list(VARIANTS), help="DFANet variant (default A)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--out", help="folder for roofline-<device>-<dtype>-....md/.json (default: print only)")
    p.add_argument("--no-resources", action="store_true",
                   help="skip the offline compiles for sm_90 (registers, spills, shared memory, occupancy of the CUDA "
                        "kernels with nvcc, of the Triton kernels with Triton: a minute or more)")
    args = p.parse_args(argv)
    if args.device not in DEVICES:
        p.error(f"--device: unknown {args.device!r}, expected one of {sorted(DEVICES)}")
    if min(args.size) < 32 or args.batch < 1:
        p.error("--size: H and W >= 32 (DFANet's minimum); --batch >= 1")
    return args


def main(argv=None) -> int:
    from .kernel_resources import cuda_resources, triton_resources
    from .log import log

    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m dfanet.tools.bench.roofline", *argv])
    h, w = args.size
    calls = record_forward(args.variant, args.batch, h, w)
    cuda, triton = [], []
    if not args.no_resources:
        cuda, reason = cuda_resources()
        if reason:
            log(f"no CUDA resource usage: {reason}")
        triton, reason = triton_resources(calls, args.dtype)
        if reason:
            log(f"no Triton resource usage: {reason}")
    config = dict(variant=args.variant, height=h, width=w, batch=args.batch, dtype=args.dtype)
    report = roofline_report(calls, Roofline.assumed(DEVICES[args.device], args.dtype), config, cuda, triton)
    markdown = roofline_markdown(report, command)
    if args.out:
        stem = f"roofline-{args.device}-{args.dtype}-{args.variant.replace(chr(39), 'prime')}-{h}x{w}-b{args.batch}"
        paths = write_markdown_and_json(args.out, stem, markdown, dict(report, command=command))
        log(f"wrote {paths['markdown']}")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
