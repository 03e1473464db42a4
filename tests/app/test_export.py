"""dfanet export: its arguments, the pt2 package (the fused model through AOTInductor) loaded by a fresh Python
process and by the C++ example (examples/cpp), and the loader's one-line errors.

One tiny package (variant B, 64x96) is compiled per module (minutes on a 2-CPU machine) and shared; the tests that
use it are one xdist group, so that `--dist loadgroup` compiles it once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dfanet import DFANet
from dfanet.pt2 import load_pt2
from dfanet.testing import randomize_batchnorm
from dfanet.tools.cli import main
from dfanet.training.images import normalize, open_image, rgb_array
from dfanet_kernels import backends

from ..utils import needs_cpu_kernels

REPO = Path(__file__).resolve().parents[2]
SIZE = (64, 96)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(package path, the fused model it was exported from): weights with non-trivial BatchNorm, through the CLI."""
    folder = tmp_path_factory.mktemp("pt2")
    torch.manual_seed(0)
    model = DFANet(variant="B", fused=True)
    randomize_batchnorm(model, seed=1)
    torch.save(model.state_dict(), folder / "weights.pt")
    package = folder / "dfanet-b.pt2"
    assert main(["export", "--format", "pt2", "--out", str(package), "--weights", str(folder / "weights.pt"),
                 "--variant", "B", "--size", "x".join(map(str, SIZE))]) == 0
    return package, model.eval()


# --- the command line -----------------------------------------------------------------------------------------------

def test_help_names_both_formats(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "{onnx,pt2}" in out and "--weights" in out and "AOTInductor" in out


@pytest.mark.parametrize("argv, message", [
    (["--out", "m.pt2"], "the following arguments are required: --format"),
    (["--format", "pt2"], "the following arguments are required: --out"),
    (["--format", "tflite", "--out", "m"], "argument --format: invalid choice: 'tflite'"),
    (["--format", "pt2", "--out", "m.pt2", "--size", "16x16"], "argument --size: expected H and W >= 32"),
    (["--format", "pt2", "--out", "m.pt2", "--batch", "0"], "argument --batch: expected an integer >= 1, got 0"),
    (["--format", "pt2", "--out", "m.pt2", "--variant", "C"], "argument --variant: invalid choice: 'C'"),
])
def test_bad_arguments_name_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unwritable_out_and_missing_weights_are_one_line_errors_before_any_compile(tmp_path, caplog):
    (tmp_path / "notes.txt").write_text("a file")
    (tmp_path / "models").mkdir()
    assert main(["export", "--format", "pt2", "--out", str(tmp_path / "notes.txt" / "m.pt2"), "--variant", "B"]) == 2
    assert main(["export", "--format", "pt2", "--out", str(tmp_path / "m.pt2"), "--variant", "B",
                 "--weights", str(tmp_path / "none.pt")]) == 2
    assert main(["export", "--format", "pt2", "--out", str(tmp_path / "models"), "--variant", "B"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "notes.txt is a file, not a folder" in errors[0] and "\n" not in errors[0]
    assert "none.pt" in errors[1] and "\n" not in errors[1]
    assert errors[2] == f"--out: {tmp_path / 'models'} is a folder; expected the name of the file to write"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "notes.txt"]  # no file, no temporary left behind
    assert not list((tmp_path / "models").iterdir())


def test_onnx_format_writes_what_export_onnx_writes(tmp_path, capsys, monkeypatch):
    """The onnx format is dfanet.export.export_onnx (tests/model/test_export.py tests it; a real export costs over a
    minute here), called with the options and a temporary path that then replaces --out."""
    pytest.importorskip("onnx")
    import dfanet.export

    calls = []

    def fake_export(model, path, batch, height, width):
        calls.append((model.variant.name, model.fused, batch, height, width))
        Path(path).write_bytes(b"onnx")
        return dfanet.export.ExportResult(Path(path), "dynamo", 0.5)

    monkeypatch.setattr(dfanet.export, "export_onnx", fake_export)
    out = tmp_path / "m.onnx"
    assert main(["export", "--format", "onnx", "--out", str(out), "--variant", "B", "--size", "64x96",
                 "--batch", "2"]) == 0
    assert calls == [("B", True, 2, 64, 96)]  # export_onnx itself exports the fused model's unfused twin
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"] and out.read_bytes() == b"onnx"
    assert f"{out}: onnx, 0.0 MiB, exported in 0.5 s (dynamo)" in capsys.readouterr().out


# --- the package ----------------------------------------------------------------------------------------------------

@needs_cpu_kernels
@pytest.mark.xdist_group("pt2")
def test_graph_calls_the_fused_kernels_as_custom_ops(exported):
    """What is compiled is the fused model: the package's wrapper calls the dfanet:: ops (through AOTInductor's
    proxy executor, i.e. the dispatcher), and no convolution of its own."""
    with zipfile.ZipFile(exported[0]) as archive:
        extern = [n for n in archive.namelist() if n.endswith(".wrapper.json")]
        calls = archive.read(extern[0]).decode()
    for op in ("dfanet::conv3x3", "dfanet::xception_block", "dfanet::fc_attention", "dfanet::upsample_add",
               "dfanet::decoder_head"):
        assert op in calls or op.replace("::", ".") in calls, op
    assert "aten::convolution" not in calls and "aten.convolution" not in calls


@needs_cpu_kernels
@pytest.mark.xdist_group("pt2")
def test_package_in_a_fresh_process_equals_the_fused_model(exported, tmp_path):
    """A process that imports only torch and dfanet_kernels (the ops' library) runs the package and gets the fused
    model's logits. Both run the same kernels on the same folded weights in the same order, so they agree to the
    last bits; the tolerance, 1e-6 of the logit scale, only allows for a kernel's work split differing between the
    processes, and is far below what a wrong weight, tap or bias would change (O(1) of the scale)."""
    package, model = exported
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(2))
    torch.save(x, tmp_path / "x.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        import dfanet_kernels  # registers the dfanet:: ops the package calls
        assert "dfanet" not in sys.modules  # the model's Python code is not needed
        compiled = torch._inductor.aoti_load_package({str(package)!r})
        torch.save(compiled(torch.load({str(tmp_path / "x.pt")!r}, weights_only=True)), {str(tmp_path / "y.pt")!r})
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with torch.no_grad():
        expected = model(x)
    out = torch.load(tmp_path / "y.pt", weights_only=True)
    assert out.shape == (1, 19, *SIZE)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6 * float(expected.abs().max()))


@needs_cpu_kernels
@pytest.mark.xdist_group("pt2")
def test_load_pt2_checks_the_input(exported):
    compiled = load_pt2(exported[0])
    assert (compiled.input_shape, compiled.num_classes, compiled.device) == ((1, 3, *SIZE), 19, "cpu")
    for bad in (torch.randn(1, 3, 64, 64), torch.randn(2, 3, *SIZE), torch.randn(1, 3, *SIZE, dtype=torch.float64)):
        with pytest.raises(ValueError, match=r"x: this package takes a float32 tensor on cpu of shape \(1, 3, 64, 96"):
            compiled(bad)
    x = torch.randn(1, 3, *SIZE)
    torch.testing.assert_close(compiled(x.contiguous(memory_format=torch.channels_last)), compiled(x), rtol=0, atol=0)


def _torch_export_archive(path: Path) -> Path:
    """A .pt2 of another kind: torch.export.save's program archive, no AOTInductor model inside."""
    torch.export.save(torch.export.export(torch.nn.ReLU(), (torch.randn(2),)), path)
    return path


@pytest.mark.parametrize("make, error, message", [
    (lambda p: p / "none.pt2", FileNotFoundError, "none.pt2: no such file"),
    (lambda p: p, FileNotFoundError, ": not a file"),
    (lambda p: (p / "m.pt2").write_text("not a zip") and p / "m.pt2", ValueError, "m.pt2: not an AOTInductor package"),
    (lambda p: torch.save({"w": torch.ones(1)}, p / "w.pt") or p / "w.pt", ValueError,
     "w.pt: not an AOTInductor package"),
    (lambda p: _torch_export_archive(p / "program.pt2"), ValueError, "program.pt2: not an AOTInductor package"),
], ids=["missing", "folder", "text", "state-dict", "torch-export-archive"])
def test_load_pt2_errors_are_one_line_naming_the_file(tmp_path, make, error, message):
    path = make(tmp_path)
    with pytest.raises(error) as info:
        load_pt2(path)
    assert message in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


# --- the C++ example ------------------------------------------------------------------------------------------------

def _missing_build_tools() -> str | None:
    if shutil.which("cmake") is None:
        return "cmake is not installed"
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        return f"no C++ compiler ({os.environ.get('CXX', 'c++')}) on PATH"
    return None


@pytest.fixture(scope="module")
def dfanet_infer(tmp_path_factory) -> Path:
    """examples/cpp built against this torch and this checkout's kernels' library."""
    build = tmp_path_factory.mktemp("cpp-build")
    configure = ["cmake", "-S", str(REPO / "examples" / "cpp"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
                 f"-DDFANET_KERNELS_LIBRARY={backends.compiled_library()}"]
    for command in (configure, ["cmake", "--build", str(build), "--parallel", str(os.cpu_count() or 1)]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return build / "dfanet_infer"


@needs_cpu_kernels
@pytest.mark.skipif(_missing_build_tools() is not None, reason=str(_missing_build_tools()))
@pytest.mark.xdist_group("pt2")
def test_cpp_example_writes_the_python_mask(exported, dfanet_infer, tmp_path):
    """The C++ program's mask is the Python one: the same normalisation (float32, as dfanet/training/images.py), the
    same kernels on the same weights, then argmax; so equal, pixel for pixel."""
    package, model = exported
    rgb = np.random.default_rng(3).integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "image.png")
    result = subprocess.run([str(dfanet_infer), str(package), str(tmp_path / "image.png"), str(tmp_path / "mask.png")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with open_image(tmp_path / "image.png") as image:
        x = normalize(rgb_array(image, tmp_path / "image.png"))[None]
    with torch.no_grad():
        expected = model(x).argmax(1)[0].numpy().astype(np.uint8)
    with Image.open(tmp_path / "mask.png") as mask:
        assert mask.mode == "L"
        np.testing.assert_array_equal(np.asarray(mask), expected)
    Image.fromarray(rgb[:32]).save(tmp_path / "small.png")  # another size than the package's: refused, by name
    result = subprocess.run([str(dfanet_infer), str(package), str(tmp_path / "small.png"), str(tmp_path / "m2.png")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "small.png: 32x96 (HxW), but the package takes one image of 1x3x64x96" in \
        result.stderr and not (tmp_path / "m2.png").exists()
    result = subprocess.run([str(dfanet_infer), str(tmp_path / "none.pt2"), str(tmp_path / "image.png"),
                             str(tmp_path / "m3.png")], capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stderr) == (1, f"dfanet_infer: {tmp_path / 'none.pt2'}: no such file\n")
