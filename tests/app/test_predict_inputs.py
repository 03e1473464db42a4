"""What `dfanet predict` and the data sets do with awkward inputs: an input is never overwritten, 16-bit images are
scaled (not clipped) and float ones refused by name, huge images are refused from their header before any pixel is
decoded, and an output path through a file is a one-line error."""

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from dfanet.tools.cli import main
from dfanet.tools.predict import load_image, output_paths
from dfanet.training.images import MAX_PIXELS, open_image, rgb_array
from dfanet.training.io import atomic_path


@pytest.fixture
def image(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    path = folder / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


def predict(*argv) -> int:
    return main(["predict", *map(str, argv), "--variant", "B"])


@pytest.mark.parametrize("out", ["folder", "file", "symlink", "hardlink"])
def test_predict_never_writes_over_its_input(image, out, caplog):
    before = image.read_bytes()
    target = {"folder": image.parent, "file": image}.get(out)
    if out == "symlink":
        target = image.parent / "alias.png"
        target.symlink_to(image)
    elif out == "hardlink":
        target = image.parent / "other-name.png"
        os.link(image, target)
    assert predict(image, "--out", target) == 2
    assert "would replace the input" in caplog.text and str(image) in caplog.text
    assert image.read_bytes() == before


def test_no_mask_replaces_an_input_of_a_folder_or_a_kept_file(image, tmp_path):
    second = image.parent / "second.png"
    second.write_bytes(image.read_bytes())
    with pytest.raises(ValueError, match="would replace the input"):
        output_paths([image, second], str(image.parent))
    weights = tmp_path / "weights.png"  # any file the command reads, e.g. --weights, is kept the same way
    weights.write_bytes(b"x")
    with pytest.raises(ValueError, match=f"would replace the input {weights}"):
        output_paths([image], str(weights), keep=[weights])
    assert output_paths([image], str(tmp_path / "mask.png"), keep=[weights]) == [tmp_path / "mask.png"]


def test_sixteen_bit_images_are_scaled_to_eight_bits(tmp_path, image, caplog):
    values = np.array([[0, 257, 257 * 100, 65535, 128]], dtype=np.uint16).repeat(40, 0).repeat(10, 1)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as opened:
        assert opened.mode.startswith("I")  # what Pillow makes of a 16-bit PNG: I;16 or I
        rgb = rgb_array(opened, path)
    assert rgb.dtype == np.uint8 and rgb.shape == (40, 50, 3)
    assert rgb[0, ::10, 0].tolist() == [0, 1, 100, 255, 0]  # v / 257 rounded; 128 / 257 rounds to 0
    assert (rgb[..., 0] == rgb[..., 2]).all()
    _, tensor = load_image(path)
    assert tensor.shape == (1, 3, 40, 50)
    assert predict(path, "--out", tmp_path / "deep-mask.png") == 0


def test_float_images_are_refused_naming_the_file(tmp_path, caplog):
    path = tmp_path / "float.tiff"
    Image.fromarray(np.full((40, 40), 0.5, dtype=np.float32)).save(path)
    assert predict(path, "--out", tmp_path / "mask.png") == 2
    assert f"image: {path} is a 32-bit float image (mode F)" in caplog.text
    assert not (tmp_path / "mask.png").exists()


def png_with_header(path, width: int, height: int) -> None:
    """A PNG whose header claims width x height over a tiny image's data: only a reader that decodes fails."""
    small = path.with_suffix(".small.png")
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(small)
    data = bytearray(small.read_bytes())
    ihdr = bytearray(data[12:29])  # chunk type + 13 bytes of IHDR data
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("width, height", [(60000, 60000), (10000, 10000)])
def test_images_over_the_pixel_limit_are_refused_from_the_header(tmp_path, width, height, caplog):
    path = tmp_path / "huge.png"
    png_with_header(path, width, height)
    with pytest.raises(ValueError, match=f"image: {path} is .*over the limit of {MAX_PIXELS}"):
        open_image(path)
    assert predict(path, "--out", tmp_path / "mask.png") == 2
    assert str(path) in caplog.text and "over the limit" in caplog.text
    assert caplog.text.count("\n") <= 2  # a one-line error, no traceback


def test_max_pixels_flag_sets_the_limit(image, tmp_path, caplog):
    assert predict(image, "--out", tmp_path / "m.png", "--max-pixels", "1000") == 2
    assert f"image: {image} is 48x40 (WxH), 1920 pixels, over the limit of 1000" in caplog.text
    assert predict(image, "--out", tmp_path / "m.png", "--max-pixels", "1920") == 0


def test_out_below_a_file_is_a_one_line_error(image, tmp_path, caplog):
    afile = tmp_path / "afile.txt"
    afile.write_text("notes")
    assert predict(image, "--out", afile / "sub" / "out.png") == 2
    assert f"--out: {afile} is a file" in caplog.text
    with pytest.raises(NotADirectoryError, match=f"{afile} is a file, not a folder"):
        with atomic_path(afile / "sub" / "x.bin"):
            pass
    assert afile.read_text() == "notes"
