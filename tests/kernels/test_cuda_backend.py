"""What only the CUDA backend (csrc/cuda, torch.ops.dfanet.* on CUDA tensors) has: it is built on a GPU machine, its
registration (opcheck), the glue's own checks of direct op calls, the current stream, CUDA graph capture,
torch.compile, the tensors' device. The ops' results on CUDA are tested with the other backends' in
tests/kernels/test_<op>.py, the model on CUDA in tests/model/test_fused_backends.py.

Runs where there is a GPU (bench/gpu_check.sh; bench/compute_sanitizer.sh runs the CUDA cases under
compute-sanitizer). Without one, test_cuda_emulated.py runs the same kernels on the CPU and test_cuda_compile.py
compiles them.
"""

from functools import partial

import pytest
import torch

import dfanet_kernels as dk
from dfanet_kernels import backends

from .. import op_cases

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICE = torch.device("cuda")
rand = partial(op_cases.rand, device=DEVICE)
dw_args = partial(op_cases.dw_args, device=DEVICE)
fc_args = partial(op_cases.fc_args, device=DEVICE)


def test_cuda_backend_is_built():
    """On a GPU machine the CUDA kernels must be there: every other test here would fail less clearly."""
    assert backends.unavailable_reason("cuda", DEVICE) is None
    assert dk.available_backends(DEVICE)[-1] == "cuda"


# ------------------------------------------------------------------------------------------------------------------
# The glue: checks, registration, streams, devices
# ------------------------------------------------------------------------------------------------------------------
OPS = ["dwsep_conv", "fc_attention", "upsample_concat", "upsample_add", "upsample_labels", "xception_block", "conv3x3"]


@pytest.mark.parametrize("op", OPS)
def test_opcheck(op):
    # dwsep_conv in fp16 with C, Cout >= 16: the tensor-core path.
    args = op_cases.op_args(op, device=DEVICE, dwsep=(2, 20, 17, 9, 6), dtype=torch.float16)
    torch.library.opcheck(getattr(torch.ops.dfanet, op).default, args)


def test_direct_op_calls_check_device_and_dtype():
    """torch.ops.dfanet.* skip the Python checks; the glue's own checks must stop a bad call before any kernel."""
    gen = torch.Generator()
    x = rand(1, 4, 5, 5, gen=gen)
    dw, pw = rand(4, 1, 3, 3, gen=gen), rand(2, 4, 1, 1, gen=gen)
    with pytest.raises(RuntimeError, match="dw_weight: expected device cuda"):
        torch.ops.dfanet.dwsep_conv(x, dw.cpu(), None, pw, None, 1, False, False, False, None)
    with pytest.raises(RuntimeError, match="the cuda backend takes float32, float16 or bfloat16"):
        torch.ops.dfanet.dwsep_conv(x.double(), dw.double(), None, pw.double(), None, 1, False, False, False, None)
    with pytest.raises(RuntimeError, match=r"dw_weight: expected shape \[4, 1, 3, 3\]"):
        torch.ops.dfanet.dwsep_conv(x, dw[:3], None, pw, None, 1, False, False, False, None)
    with pytest.raises(RuntimeError, match=r"inputs\[1\]: expected dtype"):
        torch.ops.dfanet.upsample_add([x, x.half()], [7, 7])
    with pytest.raises(RuntimeError, match="x: the cuda backend takes float32, float16 or bfloat16"):
        torch.ops.dfanet.upsample_labels(x.double(), [7, 7])
    with pytest.raises(RuntimeError, match="size: expected two positive ints"):
        torch.ops.dfanet.upsample_labels(x, [7, 0])
    block = op_cases.op_args("xception_block", device=DEVICE)
    with pytest.raises(RuntimeError, match=r"inputs\[1\]: expected dtype"):
        torch.ops.dfanet.xception_block([block[0][0], block[0][1].half()], *block[1:])
    with pytest.raises(RuntimeError, match="inputs\\[0\\]: the cuda backend takes float32, float16 or bfloat16"):
        torch.ops.dfanet.xception_block([t.double() for t in block[0]],
                                        *[t.double() if isinstance(t, torch.Tensor) else t for t in block[1:]])
    with pytest.raises(TypeError, match="backend 'cuda' takes dtype"):
        dk.fc_attention(x.double(), rand(3, 4, gen=gen).double(), None, rand(4, 3, 1, 1, gen=gen).double(), None,
                        backend="cuda")


def chain_inputs(device=DEVICE, seed=7):
    a = dw_args(2, 24, 40, 17, 17, 2, seed=seed)
    a.update((k, v) for k, v in fc_args(2, 40, 9, 9, 100, seed=seed).items() if k != "x")
    block = op_cases.block_args(2, [(40, 9, 9), (24, 17, 17)], 12, 12, 48, 2, True, device="cpu", seed=seed)
    a.update((f"block_{k}", v) for k, v in block.items() if k != "inputs")
    move = lambda v: v.to(device) if isinstance(v, torch.Tensor) else v  # noqa: E731
    return {k: [move(t) for t in v] if isinstance(v, list) else move(v) for k, v in a.items()}


def chain(a):
    """One call of each op, chained as in DFANet (the model's flags, NHWC intermediates); GPU work only."""
    y = dk.dwsep_conv(a["x"], a["dw_weight"], a["dw_bias"], a["pw_weight"], a["pw_bias"], a["stride"], act_in=True,
                      residual=a["residual"], backend="cuda")
    y = dk.fc_attention(y, a["fc_weight"], a["fc_bias"], a["conv_weight"], a["conv_bias"], backend="cuda")
    z = dk.xception_block_cat([y, a["x"]], **{k[6:]: v for k, v in a.items() if k.startswith("block_")},
                              backend="cuda")
    y = dk.upsample_concat([y, a["x"], z], (17, 17), backend="cuda")
    return dk.upsample_add([y, y[:, :, :9, :9]], (33, 33), backend="cuda")


def test_kernels_run_on_the_current_stream():
    inputs = chain_inputs()
    expected = chain(inputs)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        # A kernel launched on another stream than this one would start before the sleep ends and the copy is made.
        torch.cuda._sleep(50_000_000)
        out = chain({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()})
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(out, expected)


def test_cuda_graph_capture_and_replay():
    """What a CUDA graph of the fused model needs: the launches capture (no sync, no host-side allocation)."""
    inputs = chain_inputs()
    expected = chain(inputs)  # also the warm-up outside the capture
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.cuda.graph(graph):
        out = chain(inputs)
    torch.cuda.current_stream().wait_stream(side)
    out.zero_()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, expected)


def test_torch_compile_fullgraph_through_cuda_ops():
    inputs = chain_inputs()
    compiled = torch.compile(lambda a, b: chain(a) * 2 + b.sum(), fullgraph=True)
    b = torch.ones(3, device=DEVICE)
    torch.testing.assert_close(compiled(inputs, b), chain(inputs) * 2 + b.sum(), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_runs_on_the_tensors_device_not_the_current_one():
    expected = chain(chain_inputs())
    with torch.cuda.device(0):
        out = chain(chain_inputs(torch.device("cuda:1")))
    assert out.device == torch.device("cuda:1")
    assert torch.equal(out.cpu(), expected.cpu())
