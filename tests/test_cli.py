"""The dfanet command: --help everywhere, summary, predict (masks written, errors reported)."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dfanet import DFANet
from dfanet.cli import main
from dfanet.palette import palette


@pytest.mark.parametrize("command", [[], ["summary"], ["bench"], ["predict"], ["train"], ["eval"], ["pretrain"]])
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
    code = ("import sys\nfrom dfanet.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'dfanet.train', 'dfanet.data') if m in sys.modules))")
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
