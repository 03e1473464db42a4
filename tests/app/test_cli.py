"""The dfanet command: --help everywhere, summary, predict (masks written, errors reported)."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dfanet import DFANet
from dfanet.tools.cli import main
from dfanet.tools.palette import palette


@pytest.mark.parametrize("command", [[], ["summary"], ["bench"], ["predict"], ["export"], ["train"], ["eval"],
                                     ["pretrain"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: dfanet" in out
    if command in (["train"], ["pretrain"]):  # the options built only for their own command are there
        assert "--batch-size" in out and "--data-root" in out


def test_help_does_not_import_torch():
    """`dfanet --help` answers at once: building the parser imports neither torch nor the training modules."""
    code = ("import sys\nfrom dfanet.tools.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'dfanet.training.train', 'dfanet.training.data') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_console_script_is_installed():
    exe = shutil.which("dfanet")
    cmd = [exe] if exe else [sys.executable, "-m", "dfanet"]
    result = subprocess.run([*cmd, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "summary" in result.stdout


def test_summary_at_a_given_size(capsys):
    assert main(["summary", "--variant", "B", "--size", "256x512"]) == 0
    out = capsys.readouterr().out
    assert "| B | 256x512 | 1.09 |" in out


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for name, size in [("a.png", (97, 131)), ("b.jpg", (64, 40))]:
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / name)
    return folder


def test_predict_one_image_with_weights(images, tmp_path):
    torch.manual_seed(0)
    model = DFANet(num_classes=5, variant="B")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "mask.png"
    assert main(["predict", str(images / "a.png"), "--out", str(out), "--weights", str(tmp_path / "w.pt"),
                 "--variant", "B", "--num-classes", "5"]) == 0
    mask = np.asarray(Image.open(out))
    assert mask.shape == (97, 131, 3)
    colours = {tuple(c) for c in mask.reshape(-1, 3)}
    assert colours <= {tuple(c) for c in palette(5)}


def test_predict_folder_with_overlay(images, tmp_path):
    out = tmp_path / "masks"
    assert main(["predict", str(images), "--out", str(out), "--variant", "B", "--overlay"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert Image.open(out / "b.png").size == (40, 64)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "missing.png", "--out", "m.png"], "no such file or folder: missing.png"),
        (["predict", "{images}/a.png", "{images}/b.jpg", "--out", "m.png"], "expected a folder"),
        (["predict", "{images}/a.png", "--out", "m.png", "--weights", "{images}/b.jpg"], "not a readable PyTorch"),
    ],
)
def test_predict_errors_are_reported_not_raised(argv, message, images, caplog, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert main([a.format(images=images) for a in argv]) == 2
    assert message in caplog.text


def test_predict_rejects_a_non_image(tmp_path, caplog):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["predict", str(bad), "--out", str(tmp_path / "m.png"), "--variant", "B"]) == 2
    assert "cannot read" in caplog.text


# --- option values: a clear error naming the flag, never a traceback ---------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["eval", "--data-root", "d", "--weights", "w.pt", "--threads", "-1"],
     "argument --threads: expected an integer >= 1, got -1"),
    (["predict", "x.png", "--out", "o", "--threads", "0"], "argument --threads: expected an integer >= 1, got 0"),
    (["bench", "--threads", "two"], "argument --threads: expected an integer, got 'two'"),
    (["train", "--data-root", "d", "--threads", "-1"], "argument --threads: expected an integer >= 1, got -1"),
    (["eval", "--data-root", "d", "--weights", "w.pt", "--device", "foo"],
     "argument --device: expected cpu, cuda or cuda:N, got 'foo'"),
    (["train", "--data-root", "d", "--device", "cuda:x"],
     "argument --device: expected cpu, cuda or cuda:N, got 'cuda:x'"),
])
def test_bad_threads_and_device_name_the_flag(argv, message, capsys):
    """torch.set_num_threads(-1) and torch.device("foo") raised bare RuntimeErrors (a traceback)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("threads", [0, -1, True, 1.5])
def test_thread_counts_are_checked_in_python_too(threads):
    """train() and pretrain() take the count through distributed.set_threads; torch's own error names no option."""
    from dfanet.training.distributed import set_threads

    before = torch.get_num_threads()
    with pytest.raises(ValueError, match="--threads: expected an integer >= 1"):
        set_threads(threads)
    assert torch.get_num_threads() == before


def test_device_names_are_checked_in_python_too():
    from dfanet.training.distributed import pick_device

    with pytest.raises(ValueError, match="--device: expected cpu, cuda or cuda:N, got 'cuda:x'"):
        pick_device("cuda:x")


# --- predict ------------------------------------------------------------------------------------------------------

def test_predict_refuses_images_that_would_share_an_output_file(images, tmp_path, caplog):
    """dup/a/x.png and dup/b/x.png (or x.png and x.jpg) both went to out/x.png: one mask silently lost."""
    for folder in ("a", "b"):
        (images / folder).mkdir()
        shutil.copy(images / "a.png", images / folder / "x.png")
    shutil.copy(images / "b.jpg", images / "a" / "x.jpg")
    out = tmp_path / "masks"
    for pair in (["a/x.png", "b/x.png"], ["a/x.png", "a/x.jpg"]):
        caplog.clear()
        first, second = (images / p for p in pair)
        assert main(["predict", str(first), str(second), "--out", str(out), "--variant", "B"]) == 2
        assert f"--out: {first} and {second} would both be written to {out / 'x.png'}" in caplog.text
        assert not out.exists()  # refused before any work


def test_predict_the_same_image_twice_is_no_collision(images, tmp_path):
    from dfanet.tools.predict import output_paths

    assert output_paths([images / "a.png", images / "a.png"], str(tmp_path)) == [tmp_path / "a.png"] * 2


def test_predict_draws_no_progress_bar_off_a_terminal(images, tmp_path, capsys):
    """The bar went into piped output (and between the log lines) whenever there were two images or more."""
    assert main(["predict", str(images), "--out", str(tmp_path / "masks"), "--variant", "B"]) == 0
    err = capsys.readouterr().err
    assert "predict:" not in err and "img/s" not in err


def test_predict_refuses_an_unusable_backend_before_any_work(images, tmp_path, caplog):
    out = tmp_path / "m.png"
    assert main(["predict", str(images / "a.png"), "--out", str(out), "--variant", "B", "--backend", "cuda"]) == 2
    assert "--backend cuda: unavailable on cpu" in caplog.text and not out.exists()


def test_predict_refuses_a_too_small_image_by_name_before_any_work(images, tmp_path, caplog):
    """A 20x20 PNG in a folder: "x: expected H and W >= 32, got 20 x 20" named no file, after the earlier images'
    masks were written."""
    tiny = images / "c_tiny.png"  # sorted after a.png and b.jpg
    Image.fromarray(np.zeros((20, 24, 3), dtype=np.uint8)).save(tiny)
    out = tmp_path / "masks"
    assert main(["predict", str(images), "--out", str(out), "--variant", "B"]) == 2
    assert f"image: {tiny} is 24x20 (WxH); DFANet takes images of at least 32x32" in caplog.text
    assert not out.exists()


def test_predict_out_with_another_extension_says_what_it_takes(images, tmp_path, caplog):
    """--out m.jpg for one image said "with 1 images, expected a folder", though the extension was the problem."""
    assert main(["predict", str(images / "a.png"), "--out", str(tmp_path / "m.jpg"), "--variant", "B"]) == 2
    assert f"--out: expected a .png file name or a folder, got {tmp_path / 'm.jpg'}" in caplog.text
    folder = tmp_path / "masks.v2"  # an existing folder is one, whatever its name
    folder.mkdir()
    assert main(["predict", str(images / "a.png"), "--out", str(folder), "--variant", "B"]) == 0
    assert (folder / "a.png").is_file()


# --- loader workers -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cpus, expected", [
    (range(16), {"train": 4, "pretrain": 8, "eval": 2}),
    (range(2), {"train": 2, "pretrain": 2, "eval": 2}),
    (range(1), {"train": 1, "pretrain": 1, "eval": 1}),
])
def test_default_workers_are_capped_at_the_cpus_available(cpus, expected, monkeypatch):
    """--workers 4 by default made torch warn (twice) that the suggested maximum is 2 on a 2-CPU machine."""
    from dfanet.tools.cli import parse_args

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(cpus), raising=False)
    assert {command: parse_args([command]).workers for command in expected} == expected
    assert parse_args(["train", "--workers", "6"]).workers == 6  # asked for: as asked
