"""dfanet train / eval / pretrain end to end on small synthetic data sets in the real layouts (CPU, variant B):
learning to a high held-out mIoU, exact resume, surviving SIGKILL, torchrun + DDP, clear errors."""

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dfanet import DFANet
from dfanet.tools.cli import main
from dfanet.training import checkpoint
from dfanet.training.train import BASE_BATCH, BASE_LR, PolyLR

from ..synthetic import cityscapes_mask_path, make_camvid, make_cityscapes, make_imagefolder

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}  # busy 2-core machines: 1 thread is fastest


@pytest.fixture(autouse=True)
def keep_thread_count():
    """--threads sets torch's global thread count; give the other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_cityscapes(tmp_path_factory.mktemp("cityscapes"), {"train": 16, "val": 6})


def train_args(data, out, iters=4, *extra):
    return ["train", "--dataset", "cityscapes", "--data-root", str(data), "--variant", "B", "--iters", str(iters),
            "--batch-size", "4", "--crop", "64", "64", "--workers", "0", "--threads", "1", "--device", "cpu",
            "--out", str(out), *extra]


def load_last(out) -> dict:
    return checkpoint.load(Path(out) / checkpoint.LAST, "segmentation")


# --- learning ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    started = time.perf_counter()
    args = train_args(data, out, 150, "--batch-size", "8", "--checkpoint-every", "50", "--eval-every", "75")
    assert main(args) == 0
    print(f"synthetic training: {time.perf_counter() - started:.0f} s")
    return out


def test_trains_from_scratch_to_a_high_held_out_miou(trained):
    report = json.loads((trained / "eval-cityscapes-val.json").read_text())
    print(f"held-out mIoU {report['miou']:.4f}")
    # 4 classes present (road, building, vegetation, car): chance is ~0.25; the shapes are learnable to ~0.9.
    assert report["miou"] >= 0.7
    present = {k for k, v in report["per_class_iou"].items() if v is not None}
    assert present == {"road", "building", "vegetation", "car"}
    assert load_last(trained)["iteration"] == 150
    history = json.loads((trained / "eval-history.json").read_text())
    assert [h["iteration"] for h in history] == [75, 150] and history[1]["miou"] == report["miou"]


def test_eval_of_the_exported_weights_on_the_fused_model_reports_that_miou(trained, data, tmp_path, capsys):
    weights = trained / "weights.pt"
    state = torch.load(weights, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # a plain state_dict
    DFANet(num_classes=19, variant="B", fused=True).load_state_dict(state)
    assert main(["eval", "--dataset", "cityscapes", "--data-root", str(data), "--split", "val", "--variant", "B",
                 "--weights", str(weights), "--workers", "0", "--threads", "1", "--device", "cpu",
                 "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "eval-cityscapes-val.json").read_text())
    assert report["miou"] == json.loads((trained / "eval-cityscapes-val.json").read_text())["miou"]
    speed = report["speed"]
    assert speed["batch"] == 1 and speed["threads"] == 1 and speed["images_timed"] == 6 and speed["fps"] > 0
    assert "warm-up runs excluded" in speed["method"]
    printed = capsys.readouterr().out
    assert f"mIoU {100 * report['miou']:.2f}%" in printed and "| car |" in printed
    assert (tmp_path / "eval-cityscapes-val.md").read_text().startswith("## DFANet on cityscapes val")


def test_predict_takes_the_exported_weights(trained, data, tmp_path):
    image = next((data / "leftImg8bit" / "val").glob("*/*.png"))
    assert main(["predict", str(image), "--out", str(tmp_path / "m.png"), "--weights", str(trained / "weights.pt"),
                 "--variant", "B"]) == 0
    assert (tmp_path / "m.png").is_file()


def test_batch_one_at_the_smallest_crop_and_amp_on_cpu(data, tmp_path, caplog):
    """Batch 1 at 32 x 32: the deepest maps are 1 x 1 (one value per channel for BatchNorm). --amp on the CPU
    warns and trains in fp32."""
    caplog.set_level(logging.INFO)
    assert main(train_args(data, tmp_path, 2, "--batch-size", "1", "--crop", "32", "32", "--amp", "--no-eval")) == 0
    assert "--amp works on CUDA only; training in fp32 on cpu" in caplog.text
    state = load_last(tmp_path)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_a_crop_without_labelled_pixels_has_loss_zero_not_nan():
    from dfanet.training.train import segmentation_loss

    model = DFANet(3, "B").train()
    images, masks = torch.randn(2, 3, 32, 32), torch.full((2, 32, 32), 255)
    loss = segmentation_loss(model, (images, masks), torch.device("cpu"))
    loss.backward()
    assert loss.item() == 0.0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_camvid_trains_with_its_11_classes(tmp_path):
    root = make_camvid(tmp_path / "camvid", {"train": 2, "val": 1})
    assert main(["train", "--dataset", "camvid", "--data-root", str(root), "--variant", "B", "--iters", "1",
                 "--batch-size", "2", "--crop", "48", "64", "--workers", "0", "--threads", "1", "--device", "cpu",
                 "--out", str(tmp_path / "out")]) == 0
    # The file name has the data set, as dfanet eval --out's: they used to be eval-val and eval-camvid-val.
    report = json.loads((tmp_path / "out" / "eval-camvid-val.json").read_text())
    assert (tmp_path / "out" / "eval-camvid-val.md").read_text().startswith("## DFANet on camvid val")
    assert list(report["per_class_iou"]) == ["sky", "building", "pole", "road", "sidewalk", "tree", "sign", "fence",
                                             "car", "pedestrian", "bicyclist"]
    assert load_last(tmp_path / "out")["model"]["decoder.classifier.weight"].shape[0] == 11


# --- resume -----------------------------------------------------------------------------------------------------

class Crash(Exception):
    pass


def test_resumed_run_equals_an_uninterrupted_one(data, tmp_path, monkeypatch):
    """4 iterations straight == 2, a crash right after the checkpoint, then 2 more resumed (with data loader
    workers this time): the same weights, optimizer state and schedule, bit for bit."""
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert main(train_args(data, straight, 4, "--no-eval")) == 0

    save = checkpoint.save

    def save_then_crash(path, obj):
        save(path, obj)
        if Path(path).name == checkpoint.LAST and obj["iteration"] == 2:
            raise Crash

    monkeypatch.setattr(checkpoint, "save", save_then_crash)
    with pytest.raises(Crash):
        main(train_args(data, interrupted, 4, "--no-eval", "--checkpoint-every", "1"))
    assert load_last(interrupted)["iteration"] == 2
    monkeypatch.setattr(checkpoint, "save", save)
    assert main(train_args(data, interrupted, 4, "--no-eval", "--resume", "auto", "--workers", "2")) == 0

    a, b = load_last(straight), load_last(interrupted)
    assert a["iteration"] == b["iteration"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert a["scheduler"] == b["scheduler"]


def test_sigkill_mid_run_then_resume(data, tmp_path, caplog):
    out = tmp_path / "run"
    iters = 40
    cmd = [sys.executable, "-m", "dfanet", *train_args(data, out, iters, "--no-eval", "--checkpoint-every", "2",
                                                       "--keep-every", "3")]
    log_file = tmp_path / "train.log"
    with open(log_file, "w") as log:
        proc = subprocess.Popen(cmd, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while not list(out.glob("checkpoint_iter*.pt")):
                assert proc.poll() is None, f"training exited early: {log_file.read_text()[-3000:]}"
                assert time.monotonic() < deadline, "no checkpoint within 180 s"
                time.sleep(0.05)
            time.sleep(0.3)  # well inside the run: iterations and checkpoint writes are under way
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    stopped = load_last(out)["iteration"]
    assert 3 <= stopped < iters
    for path in out.glob("*.pt"):  # no checkpoint is left truncated: the kill hits a temporary file at worst
        state = checkpoint.load(path, "segmentation")
        lr = BASE_LR * 4 / BASE_BATCH * PolyLR(iters)(state["iteration"])
        assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(lr, rel=1e-12)
    (out / ".checkpoint_last.pt.killed.tmp").write_bytes(b"half a checkpoint")  # as a kill mid-write leaves

    caplog.set_level(logging.INFO)
    assert main(train_args(data, out, iters, "--no-eval", "--checkpoint-every", "10", "--resume", "auto")) == 0
    assert f"resumed from {out / checkpoint.LAST} at iteration {stopped}" in caplog.text
    final = load_last(out)
    assert final["iteration"] == iters and final["scheduler"]["last_epoch"] == iters
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_sigterm_saves_a_checkpoint_and_stops(data, tmp_path):
    """What a scheduler does before preempting a job: SIGTERM to the process group (loader workers included).
    The run finishes its iteration, saves it (though no checkpoint is due) and exits with 128 + 15."""
    out = tmp_path / "run"
    log_file = tmp_path / "train.log"
    cmd = [sys.executable, "-m", "dfanet", *train_args(data, out, 200, "--no-eval", "--checkpoint-every", "1000",
                                                       "--log-every", "1", "--workers", "2")]
    with open(log_file, "w") as log:
        proc = subprocess.Popen(cmd, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while "iter 3/200" not in log_file.read_text():
                assert proc.poll() is None, f"training exited early: {log_file.read_text()[-3000:]}"
                assert time.monotonic() < deadline, "no progress within 180 s"
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGTERM)
            assert proc.wait(timeout=120) == 128 + signal.SIGTERM
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    state = load_last(out)
    assert 3 <= state["iteration"] < 200
    text = log_file.read_text()
    assert f"stopped by SIGTERM after iteration {state['iteration']}; checkpoint {out / checkpoint.LAST}" in text
    assert "Traceback" not in text


# --- multi-process ----------------------------------------------------------------------------------------------

RANK_SCRIPT = """
import os, sys, torch
from dfanet.training.train import TrainConfig, train
cfg = TrainConfig(dataset="cityscapes", data_root=sys.argv[1], out=sys.argv[2], variant="B", iters=3, batch_size=4,
                  crop=(64, 64), workers=0, threads=1, device="cpu", checkpoint_every=1)
result = train(cfg)
params = torch.cat([p.detach().flatten() for p in result.model.parameters()])
torch.save({"params": params, "confusion": result.report.scores.confusion},
           os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.pt"))
"""


def test_torchrun_two_processes_train_the_same_weights(data, tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script), str(data), str(out)], env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert torch.equal(rank0["params"], rank1["params"])
    torch.manual_seed(0)
    initial = torch.cat([p.detach().flatten() for p in DFANet(19, "B").parameters()])
    assert not torch.equal(rank0["params"], initial)  # it did train
    assert load_last(out)["iteration"] == 3
    # The sharded evaluation (3 images per process, matrices summed) equals one process's.
    assert torch.equal(rank0["confusion"], rank1["confusion"]) and rank0["confusion"].sum() > 0
    assert main(["eval", "--data-root", str(data), "--variant", "B", "--weights", str(out / "weights.pt"),
                 "--workers", "0", "--out", str(tmp_path)]) == 0
    single = json.loads((tmp_path / "eval-cityscapes-val.json").read_text())["confusion_matrix"]
    assert rank0["confusion"].tolist() == single


def test_sync_bn_on_cpu_is_refused(data, tmp_path, monkeypatch, caplog):
    from dfanet.training import distributed

    @contextlib.contextmanager
    def two_process_session(device):
        yield distributed.Context(0, 2, 0, torch.device("cpu"))

    monkeypatch.setattr(distributed, "session", two_process_session)
    assert main(train_args(data, tmp_path, 2, "--sync-bn")) == 2
    assert "--sync-bn: SyncBatchNorm runs on CUDA only" in caplog.text


# --- divergence, config, errors ---------------------------------------------------------------------------------

def test_non_finite_loss_stops_with_a_clear_error(data, tmp_path, monkeypatch, caplog):
    from dfanet.training import train as train_module

    calls, real_loss = [], train_module.segmentation_loss

    def loss_that_blows_up(model, batch, device):
        calls.append(1)
        loss = real_loss(model, batch, device)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(train_module, "segmentation_loss", loss_that_blows_up)
    assert main(train_args(data, tmp_path, 5, "--checkpoint-every", "1")) == 2
    assert "loss is nan at iteration 3 (lr " in caplog.text
    assert "lower --lr" in caplog.text and "--clip-grad" in caplog.text
    assert load_last(tmp_path)["iteration"] == 2  # the last good state is there to resume from


def test_non_finite_weights_are_never_saved(data, tmp_path, monkeypatch, caplog):
    """A finite loss with an overflowing update: the checkpoint keeps the last finite weights."""
    from dfanet.training import train as train_module

    calls, real_loss = [], train_module.segmentation_loss

    def loss_then_bad_update(model, batch, device):
        calls.append(1)
        loss = real_loss(model, batch, device)
        if len(calls) == 2:
            model.decoder.classifier.bias.data[0] = float("inf")  # behind autograd's back, as an overflow would be
        return loss

    monkeypatch.setattr(train_module, "segmentation_loss", loss_then_bad_update)
    assert main(train_args(data, tmp_path, 5, "--checkpoint-every", "1")) == 2
    assert "decoder.classifier.bias is not finite after iteration 2 (not saved): training diverged" in caplog.text
    state = load_last(tmp_path)
    assert state["iteration"] == 1 and torch.isfinite(state["model"]["decoder.classifier.bias"]).all()


def test_config_file_with_command_line_overrides(data, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'dataset = "cityscapes"\ndata-root = "{data}"\nvariant = "B"\niters = 2\nbatch_size = 4\n'
                      f'crop = [64, 64]\nlr = 0.01\nworkers = 0\nthreads = 1\nval_split = "val"\n')
    assert main(["train", "--config", str(config), "--out", str(tmp_path), "--iters", "3", "--no-eval"]) == 0
    state = load_last(tmp_path)
    assert state["iteration"] == 3  # the flag beats the file
    assert state["config"]["variant"] == "B" and state["config"]["crop"] == (64, 64) and state["config"]["lr"] == 0.01
    assert state["optimizer"]["param_groups"][0]["initial_lr"] == 0.01


@pytest.mark.parametrize("text, message", [
    ("itters = 3\n", "unknown setting 'itters'"),
    ('variant = "C"\n', "variant = 'C': expected one of"),
    ("crop = [64]\n", "crop = [64]: expected a list of 2 values"),
    ("crop = [16, 64]\n", "expected >= 32"),
    ("iters = \n", "is not valid TOML"),
    # As strict as the flags: int() truncated 2.9 to 2 and took true as 1.
    ("iters = 2.9\n", "iters = 2.9: expected an integer, got 2.9"),
    ("batch_size = true\n", "batch_size = True: expected an integer, got True"),
    ("crop = [64.7, 96]\n", "crop = [64.7, 96]: expected an integer, got '64.7'"),
    ("lr = false\n", "lr = False: expected a number, got False"),
    ("threads = -1\n", "threads = -1: expected an integer >= 1, got -1"),
    ('split = ["train"]\n', "split = ['train']: expected a string, got ['train']"),
])
def test_bad_config_files_name_the_file_and_setting(text, message, tmp_path, caplog):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    assert main(["train", "--config", str(config), "--data-root", str(tmp_path)]) == 2
    assert f"--config: {config}" in caplog.text and message in caplog.text


def test_resume_errors_name_the_file(data, tmp_path, caplog):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00" * 100)
    plain = tmp_path / "weights.pt"
    torch.save(DFANet(19, "B").state_dict(), plain)
    for path, message in [(corrupt, f"checkpoint: {corrupt} is not a readable PyTorch checkpoint"),
                          (plain, f"checkpoint: {plain} is a plain state_dict (model weights only)"),
                          (tmp_path / "none.pt", f"checkpoint: no such file: {tmp_path / 'none.pt'}")]:
        caplog.clear()
        assert main(train_args(data, tmp_path / "out", 2, "--resume", str(path))) == 2
        assert message in caplog.text


def test_weights_of_another_variant_are_reported(data, tmp_path, caplog):
    weights = tmp_path / "b.pt"
    torch.save(DFANet(19, "B").state_dict(), weights)
    assert main(["eval", "--data-root", str(data), "--variant", "A", "--weights", str(weights), "--workers", "0"]) == 2
    assert f"weights: {weights} does not fit DFANet(variant='A'" in caplog.text
    assert main(train_args(data, tmp_path / "out", 1, "--weights", str(weights), "--variant", "A")) == 2
    assert "of another shape (e.g. backbones.0.stages.0.0.sep1.pointwise.weight" in caplog.text


def test_truncated_checkpoint_is_refused(data, tmp_path):
    assert main(train_args(data, tmp_path, 1, "--no-eval")) == 0
    whole = (tmp_path / checkpoint.LAST).read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=f"{cut} is not a readable PyTorch checkpoint"):
        checkpoint.load(cut, "segmentation")
    with pytest.raises(ValueError, match="is a 'segmentation' checkpoint, expected a 'pretrain' one"):
        checkpoint.load(tmp_path / checkpoint.LAST, "pretrain")


def test_wrong_data_root_is_reported(tmp_path, caplog):
    assert main(train_args(tmp_path / "nowhere", tmp_path / "out")) == 2
    assert f"--data-root {tmp_path / 'nowhere'} is not a folder" in caplog.text


@pytest.mark.parametrize("spoil", ["val mask with label id 200", "unreadable val image", "truncated val mask"])
def test_a_bad_val_file_stops_the_run_before_training(spoil, tmp_path, caplog):
    """Only the val folders were checked up front: a bad val file trained every iteration, then failed."""
    import numpy as np
    from PIL import Image

    root = make_cityscapes(tmp_path / "city", {"train": 4, "val": 2}, size=(48, 64))
    mask = cityscapes_mask_path(root, "val", 1)
    if spoil == "val mask with label id 200":
        raw = np.asarray(Image.open(mask)).copy()
        raw[5, 5] = 200
        Image.fromarray(raw).save(mask)
        bad, message = mask, "unknown label ids [200]"
    elif spoil == "unreadable val image":
        bad, message = root / "leftImg8bit" / "val" / "city1" / "city1_000000_000001_leftImg8bit.png", \
            "cannot read as an image"
        bad.write_bytes(b"not a png")
    else:
        mask.write_bytes(mask.read_bytes()[:-40])
        bad, message = mask, "cannot decode"
    out = tmp_path / "out"
    assert main(train_args(root, out, 2)) == 2
    assert f"{bad}: {message}" in caplog.text
    assert not (out / checkpoint.LAST).exists()  # stopped before the first iteration


def test_rng_states_round_trip():
    import random

    import numpy as np

    state = checkpoint.rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    checkpoint.set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0])
    assert (np.random.rand(3) == expected[1]).all() and random.random() == expected[2]


def test_poly_schedule_with_warmup():
    poly = PolyLR(100, power=0.9, warmup=4)
    assert [poly(i) for i in range(4)] == pytest.approx([(1 - i / 100) ** 0.9 * (i + 1) / 5 for i in range(4)])
    assert poly(10) == pytest.approx(0.9 ** 0.9) and poly(100) == 0.0


# --- pretraining ------------------------------------------------------------------------------------------------

def test_pretrain_writes_weights_that_load_into_dfanet(tmp_path):
    images = make_imagefolder(tmp_path / "imagenet")
    val = make_imagefolder(tmp_path / "val", per_class=3, seed=1)
    out = tmp_path / "pretrain"
    args = ["pretrain", "--data-root", str(images), "--variant", "B", "--epochs", "2", "--lr-step-epochs", "1",
            "--batch-size", "4", "--crop", "32", "32", "--workers", "0", "--threads", "1", "--device", "cpu",
            "--out", str(out), "--val-root", str(val)]
    assert main(args) == 0
    top1 = json.loads((out / "val-top1.json").read_text())
    assert top1["images"] == 6 and top1["top1"] in {i / 6 for i in range(7)}
    state = checkpoint.load(out / checkpoint.LAST, "pretrain")
    assert state["iteration"] == 4  # 8 images, batch 4: 2 iterations per epoch
    group = state["optimizer"]["param_groups"][0]
    assert group["nesterov"] and group["weight_decay"] == 4e-5 and group["momentum"] == 0.9
    assert group["lr"] == pytest.approx(0.3 * 4 / 256 * 0.1)  # x0.1 after the first epoch
    model = DFANet(num_classes=19, variant="B")
    report = model.load_pretrained_backbone(out / "backbone.pt")
    assert not [k for k in report["skipped"] if k.startswith(("conv1.", "backbones.0."))]
    assert "backbones.2.fca.fc.weight" in report["loaded"]


class Lambda(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_top1_accuracy_by_hand(tmp_path):
    """A "model" that tells red from blue by the mean colour is always right; one that always says class 0 is
    right on half of a balanced folder."""
    from dfanet.training.distributed import Context
    from dfanet.training.pretrain import ImageFolder, top1_accuracy

    folder = ImageFolder(make_imagefolder(tmp_path, per_class=3))
    assert folder.classes == ["blue", "red"]
    ctx = Context(0, 1, 0, torch.device("cpu"))
    by_colour = Lambda(lambda x: torch.stack([x[:, 2].mean((1, 2)), x[:, 0].mean((1, 2))], dim=1))
    always_blue = Lambda(lambda x: torch.tensor([[1.0, 0.0]]).expand(len(x), 2))
    assert top1_accuracy(by_colour, folder, (32, 32), ctx, batch_size=4) == 1.0
    assert top1_accuracy(always_blue, folder, (32, 32), ctx, batch_size=4) == 0.5


def test_pretrain_on_a_folder_without_classes(tmp_path, caplog):
    assert main(["pretrain", "--data-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert f"no class folders in {tmp_path}" in caplog.text


@pytest.mark.parametrize("command", ["train", "eval", "pretrain"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: dfanet {command}" in capsys.readouterr().out


# --- resuming with other settings -------------------------------------------------------------------------------

def test_resume_with_a_longer_schedule_follows_the_new_settings(data, tmp_path, caplog):
    """--iters 2, then --iters 5 --lr 0.5 --power 1 --warmup-iters 1 --resume auto: the checkpoint's PolyLR(2) and
    lr used to be restored, so iterations 3..5 trained at lr 0. Now they follow the new schedule at iteration 2."""
    assert main(train_args(data, tmp_path, 2, "--no-eval", "--lr", "0.01")) == 0
    caplog.clear()
    caplog.set_level(logging.INFO)
    assert main(train_args(data, tmp_path, 5, "--no-eval", "--lr", "0.5", "--power", "1", "--warmup-iters", "1",
                           "--keep-every", "1", "--resume", "auto")) == 0
    assert "the optimizer and learning-rate schedule follow this run's settings" in caplog.text
    new_schedule = PolyLR(5, power=1.0, warmup=1)
    for iteration in (3, 4):
        state = checkpoint.load(tmp_path / checkpoint.numbered_name(iteration), "segmentation")
        group = state["optimizer"]["param_groups"][0]
        assert group["lr"] == pytest.approx(0.5 * new_schedule(iteration), rel=1e-12) and group["initial_lr"] == 0.5
    final = load_last(tmp_path)
    assert final["scheduler"]["lr_lambdas"] == [{"total": 5, "power": 1.0, "warmup": 1}]
    assert final["optimizer"]["state"]  # the momentum buffers came from the checkpoint


def _train_steps(optimizer, scheduler, steps: int) -> None:
    for _ in range(steps):
        optimizer.param_groups[0]["params"][0].grad = torch.full((3,), 0.5)
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize("make_scheduler", [
    lambda o, total: torch.optim.lr_scheduler.LambdaLR(o, PolyLR(total, 0.9, 2)),
    lambda o, total: torch.optim.lr_scheduler.MultiStepLR(o, [total // 2], 0.1),  # dfanet pretrain's
])
def test_a_changed_schedule_is_replayed_to_the_resumed_iteration(make_scheduler):
    from dfanet.training.engine import load_optimization_state

    def build(lr, total, momentum=0.9):
        param = torch.nn.Parameter(torch.ones(3))
        optimizer = torch.optim.SGD([param], lr=lr, momentum=momentum)
        return optimizer, make_scheduler(optimizer, total)

    old_optimizer, old_scheduler = build(0.1, 10)
    _train_steps(old_optimizer, old_scheduler, 7)
    saved = old_optimizer.state_dict(), old_scheduler.state_dict()

    # Unchanged settings: the exact state, as saved.
    optimizer, scheduler = build(0.1, 10)
    assert not load_optimization_state(optimizer, scheduler, *saved, 7)
    assert scheduler.state_dict() == old_scheduler.state_dict()
    assert optimizer.param_groups[0]["lr"] == old_optimizer.param_groups[0]["lr"]

    # New lr, length and momentum: exactly what an uninterrupted run with them has at iteration 7.
    optimizer, scheduler = build(0.5, 40, momentum=0.5)
    assert load_optimization_state(optimizer, scheduler, *saved, 7)
    straight_optimizer, straight_scheduler = build(0.5, 40, momentum=0.5)
    _train_steps(straight_optimizer, straight_scheduler, 7)
    assert scheduler.state_dict() == straight_scheduler.state_dict()
    group, straight = optimizer.param_groups[0], straight_optimizer.param_groups[0]
    assert {k: v for k, v in group.items() if k != "params"} == {k: v for k, v in straight.items() if k != "params"}
    assert torch.equal(optimizer.state[group["params"][0]]["momentum_buffer"],
                       old_optimizer.state[old_optimizer.param_groups[0]["params"][0]]["momentum_buffer"])


def test_resume_from_another_variant_or_dataset_names_the_file(data, tmp_path, caplog):
    """load_state_dict's page of size mismatches (a traceback) became one error naming the file and the cause."""
    out = tmp_path / "city"
    assert main(train_args(data, out, 1, "--no-eval")) == 0
    last = out / checkpoint.LAST
    caplog.clear()
    assert main(train_args(data, out, 2, "--no-eval", "--variant", "A", "--resume", "auto")) == 2
    assert f"checkpoint: {last} does not fit DFANet(variant='A'" in caplog.text
    assert "it was trained with variant 'B' (this run: 'A')" in caplog.text

    camvid = make_camvid(tmp_path / "camvid", {"train": 1})
    caplog.clear()
    assert main(["train", "--dataset", "camvid", "--data-root", str(camvid), "--variant", "B", "--iters", "2",
                 "--batch-size", "1", "--crop", "32", "32", "--workers", "0", "--threads", "1", "--device", "cpu",
                 "--no-eval", "--out", str(tmp_path / "camvid-out"), "--resume", str(last)]) == 2
    assert f"checkpoint: {last} does not fit DFANet(variant='B', num_classes=11" in caplog.text
    assert "it was trained with dataset 'cityscapes' (this run: 'camvid')" in caplog.text
    assert "decoder.classifier.weight: (19, " in caplog.text


def test_resuming_with_another_thread_count_warns_it_is_not_bit_exact(data, tmp_path, caplog):
    """The thread count changes the floating-point results (BatchNorm statistics differ after 3 iterations with 1
    and 2 threads): it was listed as a setting that changes nothing."""
    assert main(train_args(data, tmp_path, 2, "--no-eval", "--keep-every", "1")) == 0
    caplog.clear()
    assert main(train_args(data, tmp_path, 2, "--no-eval", "--threads", "2",
                           "--resume", str(tmp_path / checkpoint.numbered_name(1)))) == 0
    assert ("resuming on another device or thread count (threads: 1 -> 2): the floating-point results depend on "
            "them, so the run will not be bit-identical") in caplog.text
    assert "resuming with different settings" not in caplog.text  # still allowed, and not a change of recipe


def test_amp_resume_of_a_checkpoint_trained_without_amp():
    """A disabled GradScaler saves {}, which an enabled one refuses to load (CUDA --amp resuming a run without it)."""
    from dfanet.training.engine import load_scaler_state

    without_amp = torch.amp.GradScaler("cpu", enabled=False).state_dict()
    assert without_amp == {}
    with pytest.raises(RuntimeError, match="empty"):
        torch.amp.GradScaler("cpu").load_state_dict(without_amp)  # what engine.run called
    scaler = torch.amp.GradScaler("cpu")
    load_scaler_state(scaler, without_amp)
    assert scaler.state_dict() == torch.amp.GradScaler("cpu").state_dict()  # a fresh scaler
    saved = {**scaler.state_dict(), "scale": 1024.0}
    load_scaler_state(scaler, saved)
    assert scaler.state_dict()["scale"] == 1024.0
    load_scaler_state(torch.amp.GradScaler("cpu", enabled=False), saved)  # the other way round: ignored


# --- option checks ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--clip-grad", "-1"], "--clip-grad: expected a gradient norm > 0 (leave it out not to clip), got -1.0"),
    (["--clip-grad", "0"], "--clip-grad: expected a gradient norm > 0 (leave it out not to clip), got 0.0"),
    (["--clip-grad", "nan"], "--clip-grad: expected a gradient norm > 0"),
    (["--power", "-0.5"], "--power: expected a poly schedule power >= 0, got -0.5"),
    (["--warmup-iters", "-1"], "--warmup-iters: expected >= 0, got -1"),
])
def test_bad_schedule_and_clipping_settings_are_refused(flags, message, data, tmp_path, caplog):
    """A negative --clip-grad flipped the gradients, 0 silently turned clipping off."""
    assert main(train_args(data, tmp_path, 1, "--no-eval", *flags)) == 2
    assert message in caplog.text
    assert not (tmp_path / checkpoint.LAST).exists()


def test_clipping_trains_and_the_loop_checks_its_norm_too(data, tmp_path):
    from dfanet.training.engine import LoopSettings

    assert main(train_args(data, tmp_path, 1, "--no-eval", "--clip-grad", "0.5")) == 0
    with pytest.raises(ValueError, match="--clip-grad: expected a gradient norm > 0"):
        LoopSettings("pretrain", 1, tmp_path, clip_grad=0.0)  # dfanet pretrain's path


def test_an_unusable_backend_is_refused_before_training(data, tmp_path, caplog):
    """--backend runs the evaluations: --backend cuda on a CPU run used to fail only after the whole training."""
    assert main(train_args(data, tmp_path, 1, "--backend", "cuda")) == 2
    assert "--backend cuda: unavailable on cpu" in caplog.text
    assert not (tmp_path / checkpoint.LAST).exists()
    with pytest.raises(ValueError, match="backend: expected one of"):
        from dfanet.training.train import TrainConfig, train

        train(TrainConfig(data_root=str(data), variant="B", device="cpu", backend="Cpu"))
