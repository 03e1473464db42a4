"""`dfanet predict` on videos: every frame out, the input's size, frame rate and timestamps kept, each frame's mask
the one predicting the decoded frame as an image gives, streamed (a bounded number of frames in flight), and bad
files refused by name before anything is written."""

import sys
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from dfanet import DFANet
from dfanet.tools.cli import main
from dfanet.tools.formats import render
from dfanet.tools.video import prefetched
from dfanet.training.images import normalize

from ..synthetic import draw_scene

FRAMES, HEIGHT, WIDTH, RATE = 12, 64, 96, 7


def write_video(path, frames, rate=RATE, codec="libx264", pix_fmt="yuv420p"):
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def read_video(path):
    """The decoded RGB frames, their times in seconds, and the stream's frame rate, time base and pixel format."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [(frame.to_ndarray(format="rgb24"), frame.time) for frame in container.decode(stream)]
        header = stream.average_rate, stream.time_base, stream.codec_context.pix_fmt
    return [rgb for rgb, _ in frames], [time for _, time in frames], header


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """Street-like scenes that move: 12 frames of 64x96 at 7 fps, H.264 in MP4."""
    rng = np.random.default_rng(0)
    frames = [draw_scene(rng, (HEIGHT, WIDTH))[0] for _ in range(FRAMES)]
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "w.pt"
    torch.save(DFANet(num_classes=19, variant="B").state_dict(), path)
    return path


def expected_pictures(video, weights, fmt):
    """Each decoded frame of ``video`` predicted as an image and rendered in ``fmt``."""
    model = DFANet(num_classes=19, variant="B")
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    frames, _, _ = read_video(video)
    with torch.no_grad():
        return [np.asarray(render(model.predict(normalize(rgb)[None])[0].numpy(), Image.fromarray(rgb), fmt, 19))
                for rgb in frames]


def predict(*argv) -> int:
    return main(["predict", *map(str, argv), "--variant", "B"])


@pytest.mark.parametrize("batch_size", [1, 5])  # 5: the last batch is short
def test_lossless_output_is_each_frame_predicted_as_an_image(clip, weights, tmp_path, batch_size):
    out = tmp_path / "seg.mkv"  # FFV1: lossless, so the masks compare exactly
    assert predict(clip, "--out", out, "--weights", weights, "--batch-size", batch_size) == 0
    frames, times, (rate, _, _) = read_video(out)
    _, clip_times, (clip_rate, _, _) = read_video(clip)
    assert len(frames) == FRAMES and frames[0].shape == (HEIGHT, WIDTH, 3)
    assert rate == clip_rate == RATE
    assert times == pytest.approx(clip_times, abs=5e-4)  # Matroska keeps milliseconds
    expected = expected_pictures(clip, weights, "color")
    assert len({colour.tobytes() for colour in expected}) > 1  # the masks change with the frames
    for got, want in zip(frames, expected):
        assert (got == want).all()


def test_mp4_output_keeps_the_time_base_and_stays_close_to_the_masks(clip, weights, tmp_path):
    """H.264 is lossy: 4:2:0 halves the colour resolution and quantisation moves every value a little. Measured with
    this libx264 build: a mean error of 2.3-2.8 levels (of 255) per frame, at most 0.05% of the values off by more
    than 25. The bounds leave room for other builds; the exact masks are the lossless test's (.mkv) to check."""
    out = tmp_path / "seg.mp4"
    assert predict(clip, "--out", out, "--weights", weights, "--format", "overlay", "--batch-size", 4) == 0
    frames, times, (rate, time_base, _) = read_video(out)
    _, clip_times, (clip_rate, clip_time_base, _) = read_video(clip)
    assert len(frames) == FRAMES and frames[0].shape == (HEIGHT, WIDTH, 3)
    assert (rate, time_base) == (clip_rate, clip_time_base)
    assert times == clip_times
    for got, want in zip(frames, expected_pictures(clip, weights, "overlay")):
        error = np.abs(got.astype(np.int16) - want)
        assert error.mean() < 4 and (error > 25).mean() < 0.01


def test_odd_sizes_and_other_rates_are_kept(tmp_path, weights):
    """libx264 takes 4:2:0 only at even sizes: an odd one is encoded 4:4:4 rather than resized."""
    rng = np.random.default_rng(1)
    frames = [draw_scene(rng, (51, 71))[0] for _ in range(3)]
    clip = write_video(tmp_path / "odd.mp4", frames, rate=Fraction(30000, 1001), pix_fmt="yuv444p")
    out = tmp_path / "odd-seg.mp4"
    assert predict(clip, "--out", out, "--weights", weights) == 0
    frames, times, (rate, _, pix_fmt) = read_video(out)
    _, clip_times, _ = read_video(clip)
    assert len(frames) == 3 and frames[0].shape == (51, 71, 3) and pix_fmt == "yuv444p"
    assert rate == Fraction(30000, 1001) and times == clip_times


def test_a_folder_of_images_and_videos(clip, tmp_path, weights):
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "street.mp4").write_bytes(clip.read_bytes())
    (folder / "other.mkv").write_bytes(clip.read_bytes())  # any container PyAV reads; the output is .mp4
    Image.fromarray(read_video(clip)[0][0]).save(folder / "still.png")
    (folder / "notes.txt").write_text("not an input")
    out = tmp_path / "out"
    assert predict(folder, "--out", out, "--weights", weights) == 0
    assert sorted(p.name for p in out.iterdir()) == ["other.mp4", "still.png", "street.mp4"]
    assert len(read_video(out / "other.mp4")[0]) == FRAMES


def junk_video(path):
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")


def tiny_video(path):
    write_video(path, [np.zeros((20, 24, 3), dtype=np.uint8)] * 2)


def audio_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.mark.parametrize("make, message", [
    (junk_video, "video: {path}: cannot read"),
    (tiny_video, "video: {path} has 24x20 (WxH) frames; DFANet takes images of at least 32x32"),
    (audio_only, "video: {path} has no video stream"),
])
def test_bad_videos_are_one_line_errors_naming_the_file_before_any_work(clip, tmp_path, caplog, make, message):
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "a_good.mp4").write_bytes(clip.read_bytes())  # sorted first: refused before its output is written
    bad = folder / "b_bad.mp4"
    make(bad)
    out = tmp_path / "out"
    assert predict(folder, "--out", out) == 2
    assert message.format(path=bad) in caplog.text
    assert caplog.text.count("\n") <= 2 and not out.exists()  # the random-weights warning and the error


@pytest.mark.parametrize("argv, message", [
    (["--out", "{tmp}/seg.mp4", "--format", "labelid"], "--format labelid: ids need an exact, lossless picture"),
    (["--out", "{tmp}/seg.png"], "--out: expected a .mp4 or .mkv file name or a folder, got {tmp}/seg.png"),
])
def test_what_a_video_output_cannot_be_is_refused(clip, tmp_path, caplog, argv, message):
    assert predict(clip, *[a.format(tmp=tmp_path) for a in argv]) == 2
    assert message.format(tmp=tmp_path) in caplog.text
    assert not list(tmp_path.iterdir())


def test_without_pyav_the_error_names_the_extra(clip, tmp_path, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # what `import av` meets when PyAV is not installed
    assert predict(clip, "--out", tmp_path / "seg.mp4") == 2
    assert "pip install 'dfanet-kernels[video]'" in caplog.text


def test_no_progress_bar_off_a_terminal(clip, tmp_path, capsys):
    assert predict(clip, "--out", tmp_path / "seg.mp4") == 0
    assert "frame/s" not in capsys.readouterr().err


def test_a_failure_mid_video_leaves_no_output(clip, tmp_path, monkeypatch):
    """The error reaches the caller, the threads stop, and the half-written video is removed."""
    from dfanet.tools.video import predict_video

    model = DFANet(num_classes=19, variant="B").eval()
    calls = []

    def failing_predict(x):
        calls.append(len(x))
        if len(calls) == 3:
            raise RuntimeError("out of memory (simulated)")
        return DFANet.predict(model, x)

    monkeypatch.setattr(model, "predict", failing_predict)
    with pytest.raises(RuntimeError, match="simulated"):
        predict_video(model, clip, tmp_path / "seg.mp4", batch_size=2)
    assert calls == [2, 2, 2] and not list(tmp_path.iterdir())


def test_frames_are_drawn_a_bounded_number_ahead():
    """What keeps a long video out of memory: the decoder runs at most ``depth`` frames ahead of the model."""
    from concurrent.futures import ThreadPoolExecutor

    drawn = []

    def frames():
        for index in range(100):
            drawn.append(index)
            yield index

    with ThreadPoolExecutor(1) as pool:
        stream = prefetched(frames(), 4, pool)
        for taken, _ in enumerate(stream, 1):
            pool.submit(lambda: None).result()  # let the drawing thread catch up
            assert len(drawn) <= taken + 4
    assert drawn == list(range(100))
