"""Capture DFANet's whole (fused) forward in one CUDA graph: the batch-1 latency path for a fixed input shape.

At batch 1 the fused forward is a few hundred small kernels, and the time to launch them from Python (argument
checks, Triton's launcher) exceeds the time the GPU needs to run them. A CUDA graph records the launches once and
replays them with one call.

    from dfanet.cuda_graph import capture
    model = DFANet(num_classes=19, fused=True, backend="triton").cuda().eval()
    forward = capture(model, torch.randn(1, 3, 1024, 1024, device="cuda"))
    logits = forward(frame)   # frame: same shape, dtype and device as the example

The replay runs the weights as they were at capture (folded BatchNorm included): capture again after changing
them. The returned tensor is the graph's static output, overwritten by the next call: clone it to keep it.
"""

from __future__ import annotations

from typing import Callable

import torch

WARMUP_CALLS = 3  # before capture: folds BN, autotunes the Triton kernels and picks cuDNN algorithms, off-graph


def capture(model: torch.nn.Module, example_input: torch.Tensor, warmup: int = WARMUP_CALLS,
            labels: bool = False) -> Callable:
    """A function that runs ``model(x)`` (``model.predict(x)`` with ``labels=True``: a DFANet's labels) by replaying
    a CUDA graph captured on ``example_input``'s shape.

    ``model`` must be in eval mode and on the same CUDA device as ``example_input``. Every call must pass a tensor
    of the example's shape, dtype and device (any memory layout); it is copied into the graph's static input.
    """
    if not isinstance(example_input, torch.Tensor) or example_input.device.type != "cuda":
        where = example_input.device if isinstance(example_input, torch.Tensor) else type(example_input).__name__
        raise ValueError(f"example_input: expected a CUDA tensor, got {where}")
    if model.training:
        raise ValueError("model: expected eval mode (call model.eval() first); training cannot run in a CUDA graph")
    static_input = example_input.detach().clone()
    run = model.predict if labels else model

    # Warm-up on a side stream, as torch.cuda.graphs recommends: lazy work (BN folding, Triton autotuning, cuDNN
    # algorithm search) must not happen during capture.
    stream = torch.cuda.Stream(device=static_input.device)
    stream.wait_stream(torch.cuda.current_stream(static_input.device))
    with torch.no_grad(), torch.cuda.stream(stream):
        for _ in range(max(1, warmup)):
            run(static_input)
    torch.cuda.current_stream(static_input.device).wait_stream(stream)

    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        static_output = run(static_input)

    def replay(x: torch.Tensor) -> torch.Tensor:
        if x.shape != static_input.shape or x.dtype != static_input.dtype or x.device != static_input.device:
            raise ValueError(
                f"x: expected shape {tuple(static_input.shape)}, dtype {static_input.dtype} on "
                f"{static_input.device} (the captured input), got {tuple(x.shape)}, {x.dtype} on {x.device}"
            )
        static_input.copy_(x)
        graph.replay()
        return static_output

    replay.graph = graph  # keeps the graph (and its memory pool) alive with the function
    return replay
