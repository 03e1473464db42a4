"""A bad file met inside a DataLoader worker: the command exits promptly, with the same one-line error that it gives
with --workers 0. train and pretrain used to hang at exit (their loader workers ignore SIGTERM, and nothing shut them
down), and the error was torch's page of "Original Traceback" with the file named on its last line."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dfanet import DFANet
from dfanet.tools.cli import main
from dfanet.training.data import EvalDataset, eval_transform, get_dataset

from ..synthetic import cityscapes_mask_path, make_cityscapes, make_imagefolder

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
EXIT_TIMEOUT = 90  # seconds; these runs take ~5 on a busy 2-core machine


def run_cli(args: list[str]) -> tuple[int, str]:
    """``python -m dfanet <args>``'s exit code and output; a run that does not end in time fails the test (its whole
    process group is killed, loader workers included) instead of hanging the suite."""
    proc = subprocess.Popen([sys.executable, "-m", "dfanet", *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"dfanet {args[0]} did not exit within {EXIT_TIMEOUT} s:\n{output[-3000:]}")
    return proc.returncode, output


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "weights.pt"
    torch.save(DFANet(num_classes=19, variant="B").state_dict(), path)
    return path


def corrupt_cityscapes(tmp_path: Path, split: str) -> tuple[Path, Path]:
    """A small Cityscapes tree whose first ``split`` image is not a PNG; returns it and that image."""
    root = make_cityscapes(tmp_path / "broken", {"train": 4, "val": 2}, size=(48, 64))
    image = root / "leftImg8bit" / split / "city0" / "city0_000000_000000_leftImg8bit.png"
    image.write_bytes(b"not a png")
    return root, image


# --- the hang at exit -------------------------------------------------------------------------------------------

def test_train_with_a_corrupt_image_in_a_worker_exits(tmp_path):
    root, image = corrupt_cityscapes(tmp_path, "train")
    code, output = run_cli(["train", "--dataset", "cityscapes", "--data-root", str(root), "--variant", "B",
                            "--iters", "2", "--batch-size", "4", "--crop", "32", "32", "--workers", "2",
                            "--threads", "1", "--device", "cpu", "--out", str(tmp_path / "out")])
    assert code == 2, output[-3000:]
    assert f"{image}: cannot read as an image" in output


def test_eval_with_a_corrupt_image_in_a_worker_exits(weights, tmp_path):
    """A guard: eval's workers keep the default SIGTERM, so they never hung the exit; now they are shut down too."""
    root, image = corrupt_cityscapes(tmp_path, "val")
    code, output = run_cli(["eval", "--dataset", "cityscapes", "--data-root", str(root), "--variant", "B",
                            "--weights", str(weights), "--workers", "2", "--threads", "1", "--device", "cpu",
                            "--warmup", "0"])
    assert code == 2, output[-3000:]
    assert f"{image}: cannot read as an image" in output


def test_pretrain_with_a_corrupt_image_in_a_worker_exits(tmp_path):
    folder = make_imagefolder(tmp_path / "images")
    image = folder / "red" / "0.png"
    image.write_bytes(b"not a png")
    code, output = run_cli(["pretrain", "--data-root", str(folder), "--variant", "B", "--epochs", "1",
                            "--batch-size", "8", "--crop", "32", "32", "--workers", "2", "--threads", "1",
                            "--device", "cpu", "--out", str(tmp_path / "out")])
    assert code == 2, output[-3000:]
    assert f"{image}: cannot read as an image" in output


# --- the message ------------------------------------------------------------------------------------------------

def break_mask(root: Path, how: str) -> Path:
    """Spoil the first val pair as the walkthrough did; returns the file the error must name."""
    mask = cityscapes_mask_path(root, "val", 0)
    raw = np.asarray(Image.open(mask)).copy()
    if how == "unknown ids":
        raw[0, 0] = 200
        Image.fromarray(raw).save(mask)
    elif how == "wrong size":
        Image.fromarray(raw[:20]).save(mask)
    elif how == "RGB mask":
        Image.fromarray(np.stack([raw] * 3, axis=-1)).save(mask)
    elif how == "unreadable image":
        image = root / "leftImg8bit" / "val" / "city0" / "city0_000000_000000_leftImg8bit.png"
        image.write_bytes(b"not a png")
        return image
    return mask


ERRORS = {"unknown ids": ": unknown label ids [200]", "wrong size": ": mask is 64x20 (WxH) but its image",
          "RGB mask": ": expected a single-channel label image, got mode RGB",
          "unreadable image": ": cannot read as an image"}


@pytest.mark.parametrize("how", list(ERRORS))
def test_eval_reports_a_worker_data_error_in_one_line(how, weights, tmp_path, caplog, capsys):
    root = make_cityscapes(tmp_path / "city", {"val": 2}, size=(48, 64))
    bad = break_mask(root, how)
    assert main(["eval", "--dataset", "cityscapes", "--data-root", str(root), "--variant", "B", "--weights",
                 str(weights), "--workers", "1", "--threads", "1", "--device", "cpu", "--warmup", "0"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith(f"{bad}{ERRORS[how]}"), errors
    assert "\n" not in errors[0]


def test_the_original_message_crosses_the_worker_boundary(tmp_path):
    """SampleError takes the worker's own message back out of the one torch re-raises it with."""
    from dfanet.training.data import SampleError, batches_of

    root = make_cityscapes(tmp_path / "city", {"val": 1}, size=(48, 64))
    mask = break_mask(root, "unknown ids")
    files = get_dataset("cityscapes").open(root, "val")
    with pytest.raises(SampleError) as in_process:
        EvalDataset(files.read, eval_transform, [0])[0]
    loader = DataLoader(EvalDataset(files.read, eval_transform, [0]), num_workers=1)
    with pytest.raises(SampleError) as in_worker, batches_of(loader) as batches:
        next(batches)
    assert str(in_worker.value) == str(in_process.value)
    assert str(in_worker.value).startswith(f"{mask}: unknown label ids [200] (known: ")
    assert str(SampleError("no worker around it")) == "no worker around it"


def test_training_with_the_default_workers_does_not_warn(tmp_path):
    """--workers 4 by default made torch warn (twice) that the suggested maximum is 2 on a 2-CPU machine. Run as a
    user runs it, in its own process, like the other runs here."""
    root = make_cityscapes(tmp_path / "city", {"train": 2}, size=(48, 64))
    code, output = run_cli(["train", "--data-root", str(root), "--variant", "B", "--iters", "1", "--batch-size", "2",
                            "--crop", "32", "32", "--threads", "1", "--device", "cpu", "--no-eval",
                            "--out", str(tmp_path / "out")])
    assert code == 0, output[-3000:]
    assert "suggested max number of worker" not in output
