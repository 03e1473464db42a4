"""Export the UNFUSED DFANet to ONNX, and load that file into ONNX Runtime or OpenVINO.

These are the deployment baselines the fused path is measured against (``dfanet.tools.bench.cpu_candidates``), so the
exported graph is always the plain nn.Module network (BatchNorm and all, in eval), never the fused kernels: exporting a
fused model exports an unfused twin with the same weights, and the written file is checked to hold only standard
ONNX operators. Shapes are static (the model upsamples to target tensor sizes, so any H, W >= 32 exports).
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .model import DFANet

# Operator domains of standard ONNX; anything else would be a custom op (e.g. a fused kernel) in the graph.
_STANDARD_DOMAINS = ("", "ai.onnx")


@dataclass
class ExportResult:
    path: Path
    exporter: str  # "dynamo" (torch.export-based, the default since torch 2.9) or "torchscript" (legacy fallback)
    seconds: float


def unfused_copy(model: DFANet) -> DFANet:
    """A new eval-mode ``DFANet(fused=False)`` with ``model``'s weights (``model`` itself is left as it is)."""
    if not isinstance(model, DFANet):
        raise TypeError(f"model: expected a dfanet.DFANet, got {type(model).__name__}")
    twin = DFANet(num_classes=model.num_classes, variant=model.variant.name, fused=False)
    twin.load_state_dict(model.state_dict())
    return twin.to(next(model.parameters()).device).eval()


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporters' chatter (registration notes, tracer warnings on shape checks, the dynamo exporter's
    optimiser passes, which log at INFO) for one export."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_onnx(model: DFANet, path: str | Path, batch: int = 1, height: int = 512, width: int = 1024) -> ExportResult:
    """Export the unfused ``model`` for a static ``batch x 3 x height x width`` input to one ONNX file at ``path``.

    Uses torch's default (torch.export-based) exporter, falling back to the legacy TorchScript exporter if it
    fails; raises RuntimeError with both errors if neither works, ValueError if the graph is not plain ONNX.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = unfused_copy(model)
    example = (torch.randn(batch, 3, height, width, device=next(plain.parameters()).device),)
    errors = []
    for exporter in ("dynamo", "torchscript"):
        start = time.perf_counter()
        try:
            with _quiet_exporter(), torch.no_grad():
                if exporter == "dynamo":
                    # external_data=False: one self-contained file (DFANet's weights are far below ONNX's 2 GB limit).
                    torch.onnx.export(plain, example, str(path), dynamo=True, external_data=False, verbose=False,
                                      input_names=["image"], output_names=["logits"])
                else:
                    torch.onnx.export(plain, example, str(path), dynamo=False,
                                      input_names=["image"], output_names=["logits"])
        except Exception as err:  # try the other exporter; report both if neither works
            errors.append(f"{exporter} exporter: {type(err).__name__}: {err}")
            continue
        seconds = time.perf_counter() - start
        check_plain_onnx(path)
        return ExportResult(path, exporter, seconds)
    raise RuntimeError("ONNX export of the unfused DFANet failed:\n" + "\n".join(errors))


def check_plain_onnx(path: str | Path) -> None:
    """Raise ValueError if the ONNX file at ``path`` holds any non-standard (custom, e.g. fused-kernel) operator."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    custom = sorted({f"{n.domain}::{n.op_type}" for n in graph.node if n.domain not in _STANDARD_DOMAINS})
    if custom:
        raise ValueError(f"{path}: expected only standard ONNX operators (the unfused model), found {custom}")


def onnxruntime_runner(path: str | Path, threads: int) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """An ONNX Runtime CPU session for ``path`` as ``run(x) -> logits``, and a one-line description of its settings."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # a single chain of ops: parallelism is within ops
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: x})[0]

    return run, f"ONNX Runtime {ort.__version__}, CPUExecutionProvider, ORT_ENABLE_ALL, {threads} intra-op threads"


def openvino_native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 natively here (AVX512-BF16 or AMX); where it does, bf16 is the
    plugin's default inference precision."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def openvino_runner(path: str | Path, threads: int,
                    precision: str = "f32") -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """An OpenVINO CPU compiled model for ``path`` as ``run(x) -> logits``, and a one-line description.

    ``precision`` is the INFERENCE_PRECISION_HINT: "f32" (the default here, like every other candidate; on CPUs
    with AMX/AVX512-BF16 OpenVINO itself would otherwise pick bf16) or "bf16"."""
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
    compiled = core.compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    output = compiled.output(0)
    precision = compiled.get_property("INFERENCE_PRECISION_HINT")
    precision = getattr(precision, "get_type_name", lambda: str(precision))()  # an ov.Type, e.g. "f32"

    def run(x: np.ndarray) -> np.ndarray:
        return request.infer({0: x}, share_inputs=True)[output]

    return run, f"OpenVINO {ov.__version__}, CPU plugin, LATENCY hint, {precision} precision, {threads} threads"
