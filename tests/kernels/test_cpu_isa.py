"""Every CPU kernel on every instruction-set path (AVX-512, AVX2+FMA, portable) against the reference, and the
DFANET_CPU_ISA switch itself. The per-op test files run the default (best) path; this one repeats their core
correctness cases under each path, plus shapes that reach the kernels' less common branches."""

import pytest
import torch

import dfanet_kernels as dk
from dfanet_kernels import reference

from ..op_cases import dw_args
from ..utils import assert_close, needs_cpu_kernels, randn
from . import test_dwsep_conv as dwsep_tests
from . import test_fc_attention as fc_tests
from . import test_upsample as up_tests
from . import test_upsample_labels as labels_tests

# Beyond the per-op shapes: channel counts past the micro-kernel's two fixed tile strides (C > 304 takes the
# run-time stride), Cout spanning several register panels with a partial last vector, rows narrower than a vector.
WIDE_DWSEP = [(1, 320, 200, 5, 37), (2, 300, 33, 9, 4), (1, 65, 97, 3, 40)]


@needs_cpu_kernels
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("shape", dwsep_tests.SHAPES["cpu"] + WIDE_DWSEP, ids=lambda s: "x".join(map(str, s)))
def test_dwsep_conv(every_isa, shape, stride):
    dwsep_tests.test_dwsep_conv_matches_reference("cpu", shape, stride, "channels_last", torch.float32,
                                                  dwsep_tests.ATOL, dwsep_tests.RTOL)


@needs_cpu_kernels
@pytest.mark.parametrize("act_in, act_mid, act_out", [(True, False, False), (False, True, True), (True, True, True)])
@pytest.mark.parametrize("stride", [1, 2])
def test_dwsep_conv_flags(every_isa, act_in, act_mid, act_out, stride):
    for bias, residual in [(True, True), (False, False)]:
        dwsep_tests.test_dwsep_conv_every_activation_bias_residual_combination(
            *dwsep_tests.FLAG_CASES[0].values, act_in, act_mid, act_out, bias, bias, residual, stride)


@needs_cpu_kernels
@pytest.mark.parametrize("shape", fc_tests.SHAPES["cpu"], ids=lambda s: "x".join(map(str, s)))
def test_fc_attention(every_isa, shape):
    fc_tests.test_fc_attention_matches_reference("cpu", shape, True, True, "channels_last", torch.float32,
                                                 fc_tests.ATOL, fc_tests.RTOL)


@needs_cpu_kernels
@pytest.mark.parametrize("case", up_tests.CASES["cpu"], ids=lambda c: f"{c[0][0]}x{c[0][1]}-{len(c[1])}in")
def test_upsample(every_isa, case):
    fp32 = (torch.float32, up_tests.ATOL, up_tests.RTOL)
    up_tests.test_upsample_concat_matches_reference("cpu", case, 3, "strided", *fp32)
    up_tests.test_upsample_add_matches_reference("cpu", case, 1, "channels_last", *fp32)


@needs_cpu_kernels
@pytest.mark.parametrize("op", ["upsample_concat", "upsample_add"])
def test_upsample_of_a_same_size_input_is_a_bit_exact_copy(every_isa, op):
    up_tests.test_input_at_target_size_is_copied_bit_exactly(op, "cpu")


@needs_cpu_kernels
def test_upsample_add_of_more_sources_than_one_pass_takes(every_isa):
    """The kernel sums up to 16 sources per pass; more continue from the partial sum."""
    gen = torch.Generator().manual_seed(9)
    inputs = [randn(2, 5, 3 + i % 4, 4 + i % 3, gen=gen) for i in range(20)]
    out = dk.upsample_add(inputs, (9, 11), backend="cpu")
    assert_close(out, reference.upsample_add(inputs, (9, 11)), 1e-5, 1e-5)


@needs_cpu_kernels
def test_lone_same_size_add_keeps_negative_zero(every_isa):
    x = torch.tensor([-0.0, 1.0, -2.0]).reshape(1, 3, 1, 1).expand(1, 3, 2, 2).contiguous()
    out = dk.upsample_add([x], (2, 2), backend="cpu")
    assert torch.equal(out, x) and torch.signbit(out).tolist() == torch.signbit(x).tolist()


@needs_cpu_kernels
@pytest.mark.parametrize("c, src, size", [(19, (33, 65), (131, 259)), (5, (4, 3), (17, 13)), (33, (9, 7), (5, 20))])
def test_add_of_one_source_and_its_labels_blend_alike(every_isa, c, src, size):
    """A one-source add (DFANet's final upsample of the logits) and upsample_labels resize the same way (each source
    row horizontally once, then the vertical blend of two such rows), so the labels are the add's argmax exactly,
    channel counts with a partial last vector (19, 5, 33) and a downsampled axis (9 -> 5) included."""
    x = randn(2, c, *src, gen=torch.Generator().manual_seed(4))
    out = dk.upsample_add([x], size, backend="cpu")
    labels = dk.upsample_labels(x, size, backend="cpu")
    assert torch.equal(labels, out.argmax(1).to(labels.dtype))
    # ATen's 4-tap blend rounds differently from the kernels' separable one: up to ~2e-5 here.
    assert_close(out, reference.upsample_add([x], size), 5e-5, 1e-5)
    # The concat resizes vertically first: the same values up to rounding.
    assert_close(out, dk.upsample_concat([x], size, backend="cpu"), 5e-6, 1e-6)


@needs_cpu_kernels
@pytest.mark.parametrize("c", range(1, 18))
def test_every_partial_vector_width(every_isa, c):
    """Channel counts 1..17 end in every partial-vector width of every path (AVX-512 16 lanes, AVX2 8, portable 4),
    whose loads and stores each path implements its own way (AVX2 stores the live lanes as 4-, 2- and 1-float
    stores): the pointwise epilogue (conv1x1 to c channels with and without ReLU, and with a residual via
    dwsep_conv; at c = 12 AVX2's two-pixel kernel, rows of 9 pixels leaving one for the generic one) and the
    resize's per-pixel and per-row blends (an add of one and of two sources, a concat)."""
    gen = torch.Generator().manual_seed(c)
    x = randn(2, 7, 5, 9, gen=gen)
    weight, bias = randn(c, 7, 1, 1, gen=gen), randn(c, gen=gen)
    for relu in (False, True):
        assert_close(dk.conv1x1(x, weight, bias, relu=relu, backend="cpu"), reference.conv(x, weight, bias, 1, relu),
                     1e-5, 1e-5)
    args = dw_args(2, c, 5, 9, c, 1, residual=True, seed=c, device="cpu")
    assert_close(dk.dwsep_conv(**args, backend="cpu"), reference.dwsep_conv(**args), 1e-5, 1e-5)
    small, same = randn(2, c, 3, 4, gen=gen), randn(2, c, 7, 9, gen=gen)
    for inputs in ([small], [small, same]):
        assert_close(dk.upsample_add(inputs, (7, 9), backend="cpu"), reference.upsample_add(inputs, (7, 9)),
                     5e-5, 1e-5)
    inputs = [same, small, randn(2, 3, 2, 2, gen=gen)]
    assert_close(dk.upsample_concat(inputs, (7, 9), backend="cpu"), reference.upsample_concat(inputs, (7, 9)),
                 5e-5, 1e-5)


@needs_cpu_kernels
@pytest.mark.parametrize("c, size", [(19, (520, 441)), (16, (512, 520))], ids=["odd-rows", "aligned-rows"])
def test_large_one_source_add_streams_the_same_values(every_isa, c, size):
    """An add of one source to an output of 16 MiB or more is written with non-temporal stores (upsample.cpp,
    kStreamBytes), each row's unaligned ends with plain ones (19 x 441 floats a row: rows at every alignment): the
    same values as the cached path, which an add of that source and a zero map takes, and the reference's."""
    gen = torch.Generator().manual_seed(c)
    src = randn(1, c, 130, 111, gen=gen)
    out = dk.upsample_add([src], size, backend="cpu")
    assert out.numel() * out.element_size() >= 16 << 20
    zero = torch.zeros(1, c, *size).contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, dk.upsample_add([src, zero], size, backend="cpu"))
    assert_close(out, reference.upsample_add([src], size), 5e-5, 1e-5)


@needs_cpu_kernels
@pytest.mark.parametrize("case", labels_tests.CASES["cpu"], ids=labels_tests.case_id)
def test_upsample_labels(every_isa, case):
    for layout in ("strided", "channels_last"):
        labels_tests.test_labels_match_the_reference_argmax("cpu", case, 2, layout, torch.float32)


@needs_cpu_kernels
@pytest.mark.parametrize("c", [2, 19, 37, 300])
def test_upsample_labels_ties_and_nan(every_isa, c):
    for src, size in [((5, 3), (10, 6)), ((5, 3), (20, 12)), ((1, 1), (4, 8))]:
        labels_tests.test_ties_go_to_the_first_channel("cpu", torch.float32, c, src, size)
    labels_tests.test_nan_and_inf_logits_win_as_in_torch_argmax("cpu")


@needs_cpu_kernels
def test_bad_isa_names_the_variable(monkeypatch):
    monkeypatch.setenv("DFANET_CPU_ISA", "sse9")
    with pytest.raises(RuntimeError, match="DFANET_CPU_ISA: expected one of auto, avx512, avx2, scalar, got 'sse9'"):
        dk.dwsep_conv(torch.randn(1, 2, 3, 3), torch.randn(2, 1, 3, 3), None, torch.randn(2, 2, 1, 1), None,
                      backend="cpu")


@needs_cpu_kernels
def test_auto_is_the_default(monkeypatch):
    best = torch.ops.dfanet.cpu_isa()
    monkeypatch.setenv("DFANET_CPU_ISA", "auto")
    assert torch.ops.dfanet.cpu_isa() == best


@needs_cpu_kernels
@pytest.mark.parametrize("flag", ["act_in", "act_mid", "act_out"])
def test_relu_keeps_nan_like_torch(every_isa, flag):
    """A NaN in the input must come out as NaN (as torch.relu keeps it), not as a plausible 0 from max(NaN, 0)."""
    args = dw_args(1, 20, 36, 6, 21, 1, residual=False, seed=11, device="cpu")
    args["x"][0, 3, 2, 7] = float("nan")
    out = dk.dwsep_conv(**args, **{flag: True}, backend="cpu")
    expected = reference.dwsep_conv(**args, **{flag: True})
    assert torch.equal(out.isnan(), expected.isnan()) and expected.isnan().any()
