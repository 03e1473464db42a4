"""dfanet train / eval on a GPU: AMP with loss scaling, pinned-memory loader workers, resume, CUDA RNG state,
evaluation timed with synchronisation. Needs a CUDA device (CI has none: run on a GPU machine)."""

import json

import pytest
import torch

from dfanet.tools.cli import main
from dfanet.training import checkpoint

from ..synthetic import make_cityscapes

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_cityscapes(tmp_path_factory.mktemp("cityscapes"), {"train": 8, "val": 2})


def test_amp_training_resumes_and_evaluates_on_cuda(data, tmp_path):
    args = ["train", "--data-root", str(data), "--variant", "B", "--batch-size", "4", "--crop", "64", "64",
            "--workers", "2", "--device", "cuda", "--amp", "--out", str(tmp_path), "--checkpoint-every", "1"]
    assert main([*args, "--iters", "3", "--no-eval"]) == 0
    state = checkpoint.load(tmp_path / checkpoint.LAST, "segmentation")
    assert state["scaler"]["scale"] > 0 and "cuda" in state["rng"]
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())

    assert main([*args, "--iters", "5", "--resume", "auto"]) == 0
    assert checkpoint.load(tmp_path / checkpoint.LAST, "segmentation")["iteration"] == 5
    report = json.loads((tmp_path / "eval-cityscapes-val.json").read_text())
    assert report["speed"]["device"] == torch.cuda.get_device_name() and report["speed"]["fps"] > 0
    assert "synchronised" in report["speed"]["method"]


def test_cuda_rng_state_round_trips():
    state = checkpoint.rng_state()
    expected = torch.rand(3, device="cuda")
    torch.cuda.manual_seed(123)
    checkpoint.set_rng_state(state)
    assert torch.equal(torch.rand(3, device="cuda"), expected)
