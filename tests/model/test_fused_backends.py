"""The fused model on every backend (the backend a parameter): against the unfused model (logits, and predict's
labels), and on Triton and CUDA against the same folded weights on the reference backend, in fp32 and (GPU only)
fp16 at DFANet A's full size."""

import pytest
import torch

from dfanet import DFANet
from dfanet_kernels.constants import labels_dtype

from ..op_cases import DEVICES, on
from ..utils import FP16_MODEL_TOLERANCE, FP32_MODEL_TOLERANCE, assert_close, assert_logits_close, randomize_batchnorm
from .test_model import make_model


@pytest.fixture
def no_tf32():
    """Full fp32 in cuDNN convs and matmuls (the CUDA backend's decoder runs F.conv2d, and the unfused model all its
    convs): TF32 rounds inputs to a 10-bit mantissa, which turns 1e-7 differences upstream into 1e-3 jumps."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# (variant, batch, size) per backend.
UNFUSED_CASES = {
    "cpu": [("A", 1, (97, 131)), ("A", 2, (250, 500)), ("B", 3, (64, 96)), ("A'", 1, (128, 256))],
    "reference": [("A", 1, (97, 131)), ("A", 2, (250, 500)), ("B", 3, (64, 96)), ("A'", 1, (128, 256))],
    "triton": [("B", 2, (67, 45))],  # the NCHW image read in place by the stem kernel; ~10 s under the interpreter
    "cuda": [("A", 1, (97, 131)), ("A", 2, (512, 1024))],
}


@torch.no_grad()
@pytest.mark.usefixtures("no_tf32")
@pytest.mark.parametrize("backend, variant, batch, size", [
    on(backend, *case, id=f"{case[0]}-{case[1]}x{case[2][0]}x{case[2][1]}")
    for backend, cases in UNFUSED_CASES.items() for case in cases
])
def test_fused_matches_unfused_in_eval(backend, variant, batch, size):
    model = make_model(variant).to(DEVICES[backend])
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(12)).to(DEVICES[backend])
    unfused = model(x)
    model.fused, model.backend = True, backend
    fused = model(x)
    assert fused.is_contiguous(memory_format=torch.channels_last)
    assert_logits_close(fused, unfused, **FP32_MODEL_TOLERANCE)


# (variant, classes, batch, size) per backend: 19 classes at odd sizes with batch > 1, and 300 (int64 labels).
PREDICT_CASES = {
    "cpu": [("A", 19, 2, (97, 131)), ("B", 300, 1, (64, 96))],
    "reference": [("B", 19, 2, (97, 131))],
    "triton": [("B", 5, 2, (67, 45))],  # ~10 s under the interpreter
    "cuda": [("A", 19, 2, (97, 131)), ("A", 19, 2, (512, 1024))],
}


@torch.no_grad()
@pytest.mark.usefixtures("no_tf32")
@pytest.mark.parametrize("backend, variant, classes, batch, size", [
    on(backend, *case, id=f"{case[0]}-{case[1]}cls-{case[2]}x{case[3][0]}x{case[3][1]}")
    for backend, cases in PREDICT_CASES.items() for case in cases
])
def test_fused_predict_matches_the_unfused_argmax(backend, variant, classes, batch, size):
    """DFANet(fused=True).predict, whose last step is upsample_labels on the quarter-size logits, against the unfused
    model's forward(x).argmax(1). The fused logits differ from the unfused by at most FP32_MODEL_TOLERANCE's max_rel
    of the logit scale, so a label can only change where the unfused top two logits are within twice that: every
    pixel with a wider margin must agree, and at least FP32_MODEL_TOLERANCE's argmax share of all pixels."""
    model = make_model(variant, num_classes=classes).to(DEVICES[backend])
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(12)).to(DEVICES[backend])
    logits = model(x)
    expected = model.predict(x)
    assert torch.equal(expected, logits.argmax(1).to(labels_dtype(classes)))  # unfused: forward + argmax exactly
    model.fused, model.backend = True, backend
    labels = model.predict(x)
    assert labels.dtype == labels_dtype(classes) and labels.shape == (batch, *size)
    top2 = logits.topk(2, dim=1).values
    clear = top2[:, 0] - top2[:, 1] > 2 * FP32_MODEL_TOLERANCE["max_rel"] * logits.abs().max()
    assert torch.equal(labels[clear], expected[clear])
    assert (labels == expected).float().mean() >= FP32_MODEL_TOLERANCE["argmax"]
    if backend in ("reference", "cpu"):  # the labels kernel blends as the fused upsample does, bit for bit
        assert torch.equal(labels, model(x).argmax(1).to(labels.dtype))


@torch.no_grad()
@pytest.mark.usefixtures("no_tf32")
@pytest.mark.parametrize("backend, batch, size", [on("triton", 1, (64, 64), id="1x64x64"),
                                                  on("triton", 2, (67, 45), id="2x67x45")])
def test_dfanet_b_matches_the_reference_backend(backend, batch, size):
    """The whole fused forward (every op family, the model's shapes and flags) vs the same folded weights on the
    reference backend; 67 x 45 makes every stride-2 layer see odd sizes. 64 x 64 is about 10 s under the
    interpreter (~200 launches)."""
    torch.manual_seed(0)
    model = DFANet(num_classes=5, variant="B", fused=True, backend=backend)
    randomize_batchnorm(model)
    model.eval().to(DEVICES[backend])
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(8)).to(DEVICES[backend])
    out = model(x)
    model.backend = "reference"
    expected = model(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    scale = expected.abs().max().item()
    # fp32 through ~45 fused layers: errors stay ~1e-6 of the logit scale (measured 5e-7); 1e-5 leaves room.
    assert_close(out, expected, atol=1e-5 * scale, rtol=1e-5)


@torch.no_grad()
@pytest.mark.usefixtures("no_tf32")
# fp32: cuDNN may pick Winograd/FFT algorithms (errors ~1e-5 relative), hence 1e-4 rather than the interpreter's
# 1e-5; a wrong tap, bias or ReLU moves logits by O(scale).
@pytest.mark.parametrize("backend, dtype, tolerance", [
    on("triton", torch.float32, dict(max_rel=1e-4, mean_rel=1e-5, argmax=0.999), id="fp32", gpu=True),
    on("triton", torch.float16, FP16_MODEL_TOLERANCE, id="fp16", gpu=True),
    on("cuda", torch.float16, FP16_MODEL_TOLERANCE, id="fp16"),
])
def test_dfanet_a_at_full_size_matches_the_reference_backend(backend, dtype, tolerance):
    model = make_model("A", fused=True, backend=backend).to(DEVICES[backend], dtype)
    x = torch.randn(2, 3, 512, 1024, generator=torch.Generator().manual_seed(12)).to(DEVICES[backend], dtype)
    out = model(x)
    model.backend = "reference"
    expected = model(x)
    assert_logits_close(out, expected, **tolerance)
