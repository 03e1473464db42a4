"""The fused model on every backend (the backend a parameter): against the unfused model, and on Triton and CUDA
against the same folded weights on the reference backend, in fp32 and (GPU only) fp16 at DFANet A's full size."""

import pytest
import torch

from dfanet import DFANet

from ..op_cases import DEVICES, on
from ..utils import FP16_MODEL_TOLERANCE, FP32_MODEL_TOLERANCE, assert_close, assert_logits_close, randomize_batchnorm
from .test_model import make_model


@pytest.fixture
def no_tf32():
    """Full fp32 in cuDNN convs and matmuls (the model's stem and decoder run F.conv2d on every backend, and the
    unfused model all its convs): TF32 rounds inputs to a 10-bit mantissa, which turns 1e-7 differences upstream into
    1e-3 jumps."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# (variant, batch, size) per backend.
UNFUSED_CASES = {
    "cpu": [("A", 1, (97, 131)), ("A", 2, (250, 500)), ("B", 3, (64, 96)), ("A'", 1, (128, 256))],
    "reference": [("A", 1, (97, 131)), ("A", 2, (250, 500)), ("B", 3, (64, 96)), ("A'", 1, (128, 256))],
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
