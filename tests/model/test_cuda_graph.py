"""dfanet.cuda_graph.capture: the replayed graph computes what the model computes, for every new input."""

import pytest
import torch

from dfanet import DFANet
from dfanet.cuda_graph import capture

from ..utils import randomize_batchnorm

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_capture_rejects_cpu_input_and_training_mode():
    model = DFANet(num_classes=3, variant="B", fused=True)
    with pytest.raises(ValueError, match="example_input: expected a CUDA tensor, got cpu"):
        capture(model.eval(), torch.randn(1, 3, 64, 64))
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="model: expected eval mode"):
            capture(model.train().cuda(), torch.randn(1, 3, 64, 64, device="cuda"))


@needs_cuda
@torch.no_grad()
@pytest.mark.parametrize("backend", ["triton", None])
def test_graph_replay_matches_the_model_for_new_inputs(backend):
    torch.manual_seed(0)
    model = DFANet(num_classes=5, variant="B", fused=True, backend=backend)
    randomize_batchnorm(model)
    model.eval().cuda()
    gen = torch.Generator().manual_seed(1)
    forward = capture(model, torch.randn(1, 3, 96, 128, generator=gen).cuda())
    for _ in range(2):  # the graph must read each new input, not the captured one
        x = torch.randn(1, 3, 96, 128, generator=gen).cuda()
        torch.testing.assert_close(forward(x).clone(), model(x), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match=r"x: expected shape \(1, 3, 96, 128\)"):
        forward(torch.randn(1, 3, 64, 64, device="cuda"))
