"""decoder_head (DFANet's decoder up to the quarter-size logits) on every backend against the float64 reference, on
odd shapes and layouts, with and without biases, maps smaller, equal to and larger than the output, the CUDA kernel
in every dtype; its prepared form; bad input is rejected naming the argument."""

import inspect

import pytest
import torch

import dfanet_kernels as dk

from .. import op_cases
from ..op_cases import DEVICES as DEV
from ..op_cases import DTYPES, check, on
from ..utils import LAYOUTS, needs_cpu_kernels

# fp32 on the CPU kernels: four 1x1 convs in a row (reduce: up to 192 terms; fuse and classifier: D terms) and two
# resized sums, in another order than the float64 reference; the inputs and weights are scaled so that every
# intermediate is O(1): a few ulp (1.2e-7) per step times sqrt(terms) stays well below 1e-5.
ATOL, RTOL = 1e-5, 1e-5

# (N, low maps [(C, H, W)], high maps [(C, H, W)], D, classes). The first is the output's size.
CASES = {
    "one-low": (1, [(5, 9, 13)], [], 3, 2),
    "dfanet-like-odd": (2, [(7, 17, 23), (7, 9, 12), (7, 5, 6)], [(11, 3, 4), (11, 2, 2), (11, 1, 1)], 6, 19),
    "model-widths": (1, [(48, 33, 65), (48, 17, 33), (48, 9, 17)], [(192, 5, 9), (192, 3, 5), (192, 2, 3)], 32, 19),
    "same-and-larger-maps": (1, [(4, 8, 8), (4, 16, 16)], [(3, 8, 8), (1, 11, 5)], 13, 21),
    "wide-row": (1, [(2, 3, 300)], [(9, 2, 40)], 17, 5),
}


PARAMS = [name for name in inspect.signature(dk.decoder_head).parameters if name != "backend"]


def decoder_args(*case, device="cpu", **options) -> dict:
    """decoder_head's arguments by name (op_cases.decoder_args)."""
    return dict(zip(PARAMS, op_cases.decoder_args(*case, device=device, **options)))


def expected(args):
    return op_cases.decoder_expected(list(args.values()))


@pytest.mark.parametrize("backend, name, layout", [
    on(backend, name, layout, id=f"{name}-{layout}") for backend in ("cpu", "triton", "cuda")
    for name in CASES for layout in LAYOUTS
    if backend != "triton" or (name in ("one-low", "dfanet-like-odd") and layout != "strided")
])
def test_decoder_head_matches_reference(backend, name, layout):
    args = decoder_args(*CASES[name], device=DEV[backend], layouts=(layout,))
    check(dk.decoder_head(**args, backend=backend), expected(args), ATOL, RTOL, backend)


@needs_cpu_kernels
@pytest.mark.parametrize("name", ["dfanet-like-odd", "same-and-larger-maps", "wide-row"])
def test_every_cpu_path_matches_reference(every_isa, name):
    """The AVX-512, AVX2 and portable paths of the CPU kernel (each this CPU runs), channels_last maps."""
    args = decoder_args(*CASES[name], seed=7)
    check(dk.decoder_head(**args, backend="cpu"), expected(args), ATOL, RTOL, "cpu")


@pytest.mark.parametrize("name", ["dfanet-like-odd", "model-widths", "same-and-larger-maps"])
@pytest.mark.parametrize("backend, dtype, atol, rtol", [on("cuda", *DTYPES[d], id=i) for d, i in ((1, "fp16"),
                                                                                                (2, "bf16"))])
def test_cuda_half_precision(backend, dtype, atol, rtol, name):
    """The CUDA kernel's 16-bit instantiations: fp32 arithmetic on the rounded inputs, the logits rounded once."""
    args = decoder_args(*CASES[name], device=DEV[backend], dtype=dtype, seed=9)
    check(dk.decoder_head(**args, backend=backend), expected(args), atol, rtol, backend)


@pytest.mark.parametrize("backend", [on("cpu"), on("cuda")])
def test_decoder_head_without_biases(backend):
    args = decoder_args(*CASES["dfanet-like-odd"], device=DEV[backend], biases=False, seed=3)
    check(dk.decoder_head(**args, backend=backend), expected(args), ATOL, RTOL, backend)


@needs_cpu_kernels
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_decoder_head_is_the_same_on_any_thread_count(threads):
    """Rows are split over the threads; each row's arithmetic does not depend on the split."""
    args = decoder_args(*CASES["model-widths"], seed=5)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = dk.decoder_head(**args, backend="cpu")
        torch.set_num_threads(threads)
        assert torch.equal(dk.decoder_head(**args, backend="cpu"), one)
    finally:
        torch.set_num_threads(before)


@needs_cpu_kernels
def test_prepared_decoder_equals_the_public_op():
    args = decoder_args(*CASES["dfanet-like-odd"], seed=2)
    prepared = dk.PreparedDecoder(args["low_weights"], args["low_biases"], args["fuse_weight"], args["fuse_bias"],
                                  args["high_weights"], args["high_biases"], args["classifier_weight"],
                                  args["classifier_bias"], backend="cpu")
    assert torch.equal(prepared(args["low"], args["high"]), dk.decoder_head(**args, backend="cpu"))
    with pytest.raises(ValueError, match=r"high: expected 3 maps \(one per prepared weight\), got 2"):
        prepared(args["low"], args["high"][:2])


@needs_cpu_kernels
def test_opcheck_cpu_op():
    a = decoder_args(*CASES["dfanet-like-odd"], seed=1)
    a["low_biases"][1] = None
    torch.library.opcheck(torch.ops.dfanet.decoder_head.default, tuple(a.values()))


def _bad(change):
    args = decoder_args(*CASES["dfanet-like-odd"], seed=4)
    change(args)
    return args


@pytest.mark.parametrize("backend", ["reference", on("cpu")])
@pytest.mark.parametrize("change, error, message", [
    (lambda a: a.update(low=[]), TypeError, r"low: expected a non-empty list of tensors"),
    (lambda a: a["high"].__setitem__(1, a["high"][1].double()), TypeError,
     r"high\[1\]: expected dtype torch.float32 \(that of low\[0\]\), got torch.float64"),
    (lambda a: a["low"].__setitem__(2, a["low"][2][0]), ValueError, r"low\[2\]: expected .*4-D"),
    (lambda a: a["high"].__setitem__(0, a["high"][0][:1]), ValueError,
     r"high\[0\]: expected batch size 2 \(that of low\[0\]\), got 1"),
    (lambda a: a["low_weights"].pop(), TypeError, r"low_weights: expected a list of 3 \(one per low-level map\)"),
    (lambda a: a["high_weights"].__setitem__(2, a["high_weights"][2][:, :5]), ValueError, r"high_weights\[2\]"),
    (lambda a: a.update(fuse_bias=a["fuse_bias"][:2]), ValueError, r"fuse_bias"),
    (lambda a: a.update(classifier_weight=a["classifier_weight"][:, :4]), ValueError, r"classifier_weight"),
])
def test_bad_input_names_the_argument(backend, change, error, message):
    with pytest.raises(error, match=message):
        dk.decoder_head(**_bad(change), backend=backend)


@needs_cpu_kernels
def test_direct_op_calls_are_checked_too():
    """torch.ops.dfanet.decoder_head checks its arguments in C++ (csrc/checks.h) before any kernel runs."""
    a = decoder_args(*CASES["dfanet-like-odd"], seed=4)
    a["high_weights"] = a["high_weights"][:2]
    with pytest.raises(RuntimeError, match=r"high_weights: expected 3 tensors \(one per map\), got 2"):
        torch.ops.dfanet.decoder_head(*a.values())
    a = decoder_args(*CASES["dfanet-like-odd"], seed=4)
    a["low_weights"][1] = a["low_weights"][1][:, :3]
    with pytest.raises(RuntimeError, match=r"low_weights\[1\]: expected shape"):
        torch.ops.dfanet.decoder_head(*a.values())


@pytest.mark.parametrize("backend", [on("cuda")])
def test_cuda_limits_name_the_argument(backend):
    """Past the CUDA kernel's 8 maps a list or 128 decoder channels: an error naming the argument, no launch."""
    args = decoder_args(1, [(2, 5, 6)] * 9, [], 4, 3, device=DEV[backend])
    with pytest.raises(RuntimeError, match=r"low, high: the cuda backend takes at most 8 low and 8 high maps, got 9"):
        dk.decoder_head(**args, backend=backend)
    args = decoder_args(1, [(2, 5, 6)], [], 129, 3, device=DEV[backend])
    with pytest.raises(RuntimeError, match=r"fuse_weight: the cuda backend takes at most 128 decoder channels"):
        dk.decoder_head(**args, backend=backend)
