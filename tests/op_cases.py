"""Argument builders and the float64 reference shared by the GPU-backend op tests (tests/test_cuda_ops.py,
tests/test_triton_ops.py); the CPU block tests (tests/test_xception_block.py) build their arguments here too.
Builders take the device the backend runs on; the reference always runs in float64 on the CPU."""

from __future__ import annotations

import torch

import dfanet_kernels as dk
from dfanet_kernels import reference

from .utils import in_layout

# (dtype, atol, rtol). fp32: the kernels sum at most 9 + C products of O(1) values in another order than the
# float64 reference, a few ulp (1.2e-7) times sqrt(terms): ~1e-6. fp16/bf16: the inputs are already rounded; the
# kernels accumulate in fp32 and round the depthwise result that feeds the pointwise product (as an fp16 conv does)
# and the output once each: an error of about the format's unit roundoff (fp16 2^-11 = 4.9e-4, bf16 2^-8 = 3.9e-3)
# relative to the values, ~5 standard deviations of it at the tail of 10^7 outputs.
DTYPES = [(torch.float32, 1e-5, 1e-5), (torch.float16, 2e-3, 2e-3), (torch.bfloat16, 1.6e-2, 1.6e-2)]
DTYPE_IDS = ["fp32", "fp16", "bf16"]


def rand(*shape, gen, device, scale=1.0, dtype=torch.float32):
    return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)


def f64(t):
    """The float64 CPU copy of t (None stays None) that the reference runs on."""
    return None if t is None else t.detach().to("cpu", torch.float64)


def dw_args(n, c, cout, h, w, stride, *, device, dtype=torch.float32, dw_bias=True, pw_bias=True, residual=True,
            seed=0):
    gen = torch.Generator().manual_seed(seed)
    ho, wo = dk.conv_output_size(h, stride), dk.conv_output_size(w, stride)
    return dict(
        x=rand(n, c, h, w, gen=gen, device=device, dtype=dtype),
        dw_weight=rand(c, 1, 3, 3, gen=gen, device=device, scale=1 / 3, dtype=dtype),
        dw_bias=rand(c, gen=gen, device=device, dtype=dtype) if dw_bias else None,
        pw_weight=rand(cout, c, 1, 1, gen=gen, device=device, scale=c**-0.5, dtype=dtype),
        pw_bias=rand(cout, gen=gen, device=device, dtype=dtype) if pw_bias else None,
        stride=stride,
        residual=rand(n, cout, ho, wo, gen=gen, device=device, dtype=dtype) if residual else None,
    )


def dw_expected(args, **flags):
    return reference.dwsep_conv(**{k: f64(v) if isinstance(v, torch.Tensor) else v for k, v in args.items()}, **flags)


def fc_args(n, c, h, w, k, *, device, dtype=torch.float32, fc_bias=True, conv_bias=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return dict(
        x=rand(n, c, h, w, gen=gen, device=device, dtype=dtype),
        fc_weight=rand(k, c, gen=gen, device=device, scale=c**-0.5, dtype=dtype),
        fc_bias=rand(k, gen=gen, device=device, dtype=dtype) if fc_bias else None,
        conv_weight=rand(c, k, 1, 1, gen=gen, device=device, scale=max(k, 1) ** -0.5, dtype=dtype),
        # A positive mean keeps most scales above 0, so the product (not only the ReLU) is tested.
        conv_bias=(rand(c, gen=gen, device=device) + 1).to(dtype) if conv_bias else None,
    )


def fc_expected(args):
    return reference.fc_attention(**{k: f64(v) for k, v in args.items()})


def up_inputs(case, n, layout, dtype=torch.float32, same_channels=False, seed=0, *, device):
    gen = torch.Generator().manual_seed(seed)
    size, specs = case
    channels = specs[0][0]
    inputs = [in_layout(rand(n, channels if same_channels else c, h, w, gen=gen, device=device, dtype=dtype), layout)
              for c, h, w in specs]
    return inputs, size


# (N, [(C_k, H_k, W_k) of each input], C1, C2, C3, stride, projection): an Xception block (or, with several inputs,
# a block reading a concatenation) at odd sizes: stride 2 on odd H and W with N > 1, the identity shortcut, a
# 1 x 1 map, and the model's 48@H x W + 192@H/4 x W/4 aggregation input.
BLOCK_CASES = [
    (2, [(8, 13, 11)], 12, 12, 48, 2, True),
    (3, [(12, 9, 7)], 12, 12, 12, 1, False),
    (1, [(5, 1, 1)], 7, 7, 9, 2, True),
    (2, [(48, 11, 13), (192, 3, 4)], 12, 12, 48, 2, True),
]


def check_same_size_copy(op, backend, device):
    """upsample_concat / upsample_add of one input already at the target size copy it bit for bit: no 0 * neighbour
    term and no 0 + x, so inf, NaN and -0.0 come through unchanged, as the reference returns x."""
    x = rand(2, 5, 9, 11, gen=torch.Generator().manual_seed(5), device=device)
    x[0, 0, 0, :3] = torch.tensor([float("inf"), float("nan"), -0.0])
    out = getattr(dk, op)([x], (9, 11), backend=backend)
    assert torch.equal(out.contiguous().cpu().view(torch.int32), x.cpu().view(torch.int32))


def check_half_pixel_convention(backend, device):
    """align_corners=False: output pixel centres map to (i + 0.5) * scale - 0.5, clamped at the border."""
    x = torch.tensor([0.0, 1.0], device=device).reshape(1, 1, 1, 2)
    out = dk.upsample_concat([x], (1, 4), backend=backend)
    assert torch.equal(out.flatten().cpu(), torch.tensor([0.0, 0.25, 0.75, 1.0]))


def block_case_id(case):
    n, specs, c1, c2, c3, stride, projection = case
    return f"n{n}-" + "+".join(f"{c}@{h}x{w}" for c, h, w in specs) + f"-s{stride}-{'proj' if projection else 'id'}"


def block_args(n, specs, c1, c2, c3, stride, projection, *, device, dtype=torch.float32, seed=0):
    """Arguments of xception_block_cat (``inputs`` plus the block's weights)."""
    gen = torch.Generator().manual_seed(seed)
    c = [sum(ck for ck, _, _ in specs), c1, c2, c3]
    return dict(
        inputs=[rand(n, ck, h, w, gen=gen, device=device, dtype=dtype) for ck, h, w in specs],
        dw_weights=[rand(c[i], 1, 3, 3, gen=gen, device=device, scale=1 / 3, dtype=dtype) for i in range(3)],
        pw_weights=[rand(c[i + 1], c[i], 1, 1, gen=gen, device=device, scale=c[i] ** -0.5, dtype=dtype)
                    for i in range(3)],
        pw_biases=[rand(c[i + 1], gen=gen, device=device, dtype=dtype) for i in range(3)],
        stride=stride,
        shortcut_weight=rand(c3, c[0], 1, 1, gen=gen, device=device, scale=c[0] ** -0.5, dtype=dtype)
        if projection else None,
        shortcut_bias=rand(c3, gen=gen, device=device, dtype=dtype) if projection else None,
    )


def block_expected(args):
    converted = {k: [f64(t) for t in v] if isinstance(v, list) else f64(v) if isinstance(v, torch.Tensor) else v
                 for k, v in args.items()}
    return reference.xception_block_cat(**converted)


def check_block(case, backend, device, check):
    """xception_block_cat (and, for one input, xception_block and PreparedBlock) of ``case`` on ``backend`` against
    the float64 reference; ``check(out, expected, atol, rtol)`` is the calling test file's output check.

    fp32: three convs in a row (plus a resize), each summing 9 + C products in another order than the float64
    reference: a few ulp times sqrt(terms) per conv on O(1) values, far below 5e-5 after three (as on the CPU)."""
    args = block_args(*case, device=device)
    inputs = args.pop("inputs")
    expected = block_expected({"inputs": inputs, **args})
    check(dk.xception_block_cat(inputs, **args, backend=backend), expected, 5e-5, 2e-5)
    if len(inputs) == 1:
        check(dk.xception_block(inputs[0], **args, backend=backend), expected, 5e-5, 2e-5)
        block = dk.PreparedBlock(**args, backend=backend)
        assert torch.equal(block(inputs[0]), dk.xception_block(inputs[0], **args, backend=backend))
