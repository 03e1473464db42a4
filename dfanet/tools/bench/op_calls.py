"""The op calls DFANet makes, at the model's shapes: the rows of every per-op and per-layer table (method:
docs/benchmarking.md).

Two sources, one representation (:class:`OpCall`: a ``dfanet_kernels`` function and its arguments, runnable on any
backend and described in one way):

- :func:`model_op_calls`: named calls built from the variant's table (random weights and inputs at the shapes the
  model computes), for ``pytest bench/``'s per-op test and the GPU per-op rows;
- :func:`record_op_calls` + :func:`distinct_layers`: every distinct op call of one recorded forward, with the
  model's own activations, for the GPU per-layer rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

import dfanet_kernels as dk

from ...variants import feature_map_sizes, get_variant


@dataclass
class OpCall:
    """``dfanet_kernels.<op>(*args, backend=...)``; ``args`` in the op's positional order (as the dispatcher sees
    them, so a recorded call and a built one are alike)."""

    op: str
    args: tuple
    output: torch.Tensor | None = None  # what a recorded call returned (the roofline tells internal maps by it)

    def run(self, backend: str) -> torch.Tensor:
        return getattr(dk, self.op)(*self.args, backend=backend)

    @property
    def shapes(self) -> str:
        """The call in the words of the tables: channels, map size, stride."""
        return describe_call(self.op, self.args)


def describe_call(op: str, args: tuple) -> str:
    if op == "dwsep_conv":
        x, pw_weight, stride, residual = args[0], args[3], args[5], args[9]
        return (f"{_channels_map(x, pw_weight)}, stride {stride}" + (", +residual" if residual is not None else ""))
    if op in ("conv1x1", "conv3x3"):
        x, weight, stride, relu = args[0], args[1], args[3], args[4]
        return f"{_channels_map(x, weight)}, stride {stride}" + (", ReLU" if relu else "")
    if op in ("xception_block", "xception_block_cat"):
        x, pw_weights, stride, shortcut = args[0], args[2], args[4], args[5]
        source = _maps(x) if op == "xception_block_cat" else f"{x.shape[1]} ch, {x.shape[2]}x{x.shape[3]}"
        widths = "/".join(str(w.shape[0]) for w in pw_weights)
        return f"{source} -> {widths} ch, stride {stride}, " + ("identity" if shortcut is None else "1x1 shortcut")
    if op == "fc_attention":
        x, fc_weight = args[0], args[1]
        return f"{x.shape[1]} ch, {x.shape[2]}x{x.shape[3]}, K={fc_weight.shape[0]}"
    if op == "decoder_head":
        low, high, fuse_weight, classifier_weight = args[0], args[1], args[4], args[8]
        return (f"{_maps(low)}" + (f" + high {_maps(high)}" if high else "")
                + f" -> {fuse_weight.shape[0]} -> {classifier_weight.shape[0]} ch")
    if op == "upsample_labels":
        x, size = args
        return f"{_maps([x])} -> {size[0]}x{size[1]} labels"
    inputs, size = args  # upsample_concat, upsample_add
    return f"{_maps(inputs)} -> {size[0]}x{size[1]}"


def _channels_map(x: torch.Tensor, weight: torch.Tensor) -> str:
    return f"{x.shape[1]}->{weight.shape[0]} ch, {x.shape[2]}x{x.shape[3]}"


def _maps(inputs) -> str:
    return " + ".join(f"{t.shape[1]}@{t.shape[2]}x{t.shape[3]}" for t in inputs)


class _RandomTensors:
    """Seeded random tensors on one device and dtype; maps (4-d) channels_last, as the fused model keeps them."""

    def __init__(self, device, dtype, seed: int = 0):
        self.device, self.dtype, self.generator = device, dtype, torch.Generator().manual_seed(seed)

    def __call__(self, *shape: int, scale: float = 1.0, layout=torch.channels_last) -> torch.Tensor:
        t = (scale * torch.randn(*shape, generator=self.generator)).to(self.device, self.dtype)
        return t.contiguous(memory_format=layout if len(shape) == 4 else torch.contiguous_format)

    def pointwise(self, cout: int, cin: int, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """A k x k conv's weight (scaled to keep activations O(1)) and bias."""
        return self(cout, cin, k, k, scale=(cin * k * k) ** -0.5), self(cout, scale=0.1)

    def block_weights(self, cin: int, widths, stride: int) -> tuple:
        """xception_block's arguments after its input: three separable convs, and a 1x1 shortcut where the block
        changes size or width."""
        chans = [cin, *widths]
        dws = [self(c, 1, 3, 3, scale=1 / 3) for c in chans[:3]]
        pws, pbs = zip(*(self.pointwise(chans[i + 1], chans[i]) for i in range(3)))
        shortcut = self.pointwise(widths[-1], cin) if stride != 1 or cin != widths[-1] else (None, None)
        return (dws, list(pws), list(pbs), stride, *shortcut)


def model_op_calls(variant: str, batch: int, height: int, width: int, dtype: torch.dtype = torch.float32,
                   device: torch.device | str = "cpu") -> dict[str, OpCall]:
    """Named op calls of one DFANet forward at this input (shapes as the model computes them): the stem, first
    backbone's blocks, the second backbone's first block on its concatenated input, FC attention, the decoder, and the
    last step as forward (upsample_add) and as predict (upsample_labels) make it."""
    spec = get_variant(variant)
    c2, _, c4 = spec.stage_channels
    (w2, _), (w3, _), (w4, _) = spec.stages
    d, k, n = spec.decoder_channels, spec.attention_hidden, batch
    sizes = feature_map_sizes(height, width)
    s2, s3, s4, s5, s6 = sizes[2], sizes[3], sizes[4], sizes[5], sizes[6]  # 1/4 ... 1/64 of the input
    t = _RandomTensors(device, dtype)

    def dwsep(cin, cout, size, stride, residual):
        out_size = [dk.conv_output_size(s, stride) for s in size]
        return OpCall("dwsep_conv", (t(n, cin, *size), t(cin, 1, 3, 3, scale=1 / 3), None, *t.pointwise(cout, cin),
                                     stride, True, False, False, t(n, cout, *out_size) if residual else None))

    def block(cin, widths, size, stride):
        return OpCall("xception_block", (t(n, cin, *size), *t.block_weights(cin, widths, stride)))

    def upsample(op, inputs, size):
        return OpCall(op, ([t(n, c, *hw) for c, hw in inputs], tuple(size)))

    def attention(c, size):
        # conv bias near 1: channel scales around ReLU(1), as in a trained model, not half of them zero.
        return OpCall("fc_attention", (t(n, c, *size), t(k, c, scale=c ** -0.5), t(k, scale=0.1),
                                       t(c, k, 1, 1, scale=k ** -0.5), 1 + t(c, scale=0.1)))

    def decoder_head():
        low, high = [t.pointwise(d, c2) for _ in range(3)], [t.pointwise(d, c4) for _ in range(3)]
        return OpCall("decoder_head", ([t(n, c2, *hw) for hw in (s2, s3, s4)], [t(n, c4, *hw) for hw in (s4, s5, s6)],
                                       [w for w, _ in low], [b for _, b in low], *t.pointwise(d, d),
                                       [w for w, _ in high], [b for _, b in high], *t.pointwise(19, d)))

    # backbone 2's enc2 input: backbone 1's enc2 output and its FC attention output (upsampled x4), concatenated.
    enc2_cat = [(c2, s2), (c4, s4)]
    return {
        # conv1 on the image as the model gets it (NCHW: the CPU kernel reads it in its own layout).
        "conv3x3_stem": OpCall("conv3x3", (t(n, 3, height, width, layout=torch.contiguous_format),
                                           *t.pointwise(spec.stem_channels, 3, 3), 2, True)),
        # enc2 block 2, sep1: ReLU -> dw3x3 -> 1x1 (c2 -> w2[0]); the depthwise result stays in cache when fused.
        "dwsep_enc2": dwsep(c2, w2[0], s2, 1, False),
        # enc2 block 2, sep3 with the identity shortcut added.
        "dwsep_enc2_residual": dwsep(w2[1], w2[2], s2, 1, True),
        # backbone 2's enc2 block 1, sep1, on the concatenation (what the GPU backends run it as): stride 2.
        "dwsep_enc2_first_strided": dwsep(c2 + c4, w2[0], s2, 2, False),
        # enc3 block 1, sep1: stride 2 from enc2's output.
        "dwsep_enc3_strided": dwsep(c2, w3[0], s2, 2, False),
        # enc4 block 2, sep3 with the identity shortcut added.
        "dwsep_enc4_residual": dwsep(w4[1], w4[2], s4, 1, True),
        # enc2 block 2 whole (three separable convs + identity shortcut): intermediates never leave the cache.
        "xception_block_enc2": block(c2, w2, s2, 1),
        # enc3 block 1 whole: stride 2 and the strided 1x1 shortcut.
        "xception_block_enc3_strided": block(c2, w3, s2, 2),
        # backbone 2's enc2 block 1 on its concatenated input (240 ch at 1/4 size on A): read, never written.
        "xception_block_cat_enc2": OpCall("xception_block_cat", ([t(n, c, *hw) for c, hw in enc2_cat],
                                                                 *t.block_weights(c2 + c4, w2, 2))),
        # backbone 1's FC attention on its enc4 output.
        "fc_attention_enc4": attention(c4, s4),
        "upsample_concat_enc2": upsample("upsample_concat", enc2_cat, s2),
        # decoder: the fused low-level map plus the three reduced FC-attention outputs (1/16, 1/32, 1/64).
        "upsample_add_decoder": upsample("upsample_add", [(d, s2), (d, s4), (d, s5), (d, s6)], s2),
        # the decoder's 1x1 reduction of backbone 1's enc2 output.
        "conv1x1_low_reduce": OpCall("conv1x1", (t(n, c2, *s2), *t.pointwise(d, c2), 1, True)),
        # the whole decoder: the three enc2 outputs (1/4, 1/8, 1/16) and FC-attention outputs (1/16 ... 1/64) to the
        # quarter-size logits.
        "decoder_head": decoder_head(),
        # logits upsampled to the input size.
        "upsample_add_output": upsample("upsample_add", [(19, s2)], (height, width)),
        # predict's last step instead: only each pixel's label at the input size, the resized logits never written.
        "upsample_labels_output": OpCall("upsample_labels", (t(n, 19, *s2), (height, width))),
    }


def record_op_calls(model: torch.nn.Module, x: torch.Tensor) -> list[OpCall]:
    """Every dfanet op one forward of ``model`` calls, in order (op named without its backend suffix). A dispatch
    mode sees the Triton ops too: their plain eager shortcut steps aside while one is active."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            output = func(*args, **(kwargs or {}))
            if func.namespace == "dfanet":
                self.calls.append(_public_call(func._opname.removesuffix("_triton"), args, output))
            return output

    with Recorder() as recorder:
        model(x)
    return recorder.calls


def _public_call(op: str, args: tuple, output: torch.Tensor) -> OpCall:
    """A recorded call in the public op's argument order. The C++ block op (the CPU backend's) takes its input as a
    list and each layer's weights one by one; the public ops take one tensor (xception_block) or a list
    (xception_block_cat) and a list per kind of weight."""
    if op != "xception_block":
        return OpCall(op, args, output)
    inputs, *layers, stride, shortcut_weight, shortcut_bias = args
    dw_weights, pw_weights, pw_biases = (list(layers[i::3]) for i in range(3))
    if len(inputs) == 1:
        op, inputs = "xception_block", inputs[0]
    else:
        op, inputs = "xception_block_cat", list(inputs)
    return OpCall(op, (inputs, dw_weights, pw_weights, pw_biases, stride, shortcut_weight, shortcut_bias), output)


def distinct_layers(calls: list[OpCall]) -> list[tuple[OpCall, int]]:
    """The distinct calls in order of first use, each with how many times the forward makes it."""
    layers: dict[Any, list] = {}
    for call in calls:
        key = (call.op, _signature(call.args))
        if key in layers:
            layers[key][1] += 1
        else:
            layers[key] = [call, 1]
    return [(call, count) for call, count in layers.values()]


def _signature(value):
    """What makes two calls the same layer: shapes, strides and dtypes of the tensors, and every other argument."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape), value.stride(), value.dtype
    if isinstance(value, (list, tuple)):
        return tuple(_signature(v) for v in value)
    return value
