"""The candidates of the whole-model CPU comparison (method: docs/benchmarking.md): each builder returns a ready
:class:`Candidate` (one forward on the prepared input, and how to read its output) or raises :class:`Unavailable`.

All share one random DFANet (``models.build_model``): eager NCHW, eager channels_last, torch.compile, ONNX Runtime
and OpenVINO (both from one ONNX export of the unfused model), the fused path (``DFANet(fused=True)``) and, when
named (``OPT_IN``), its AOTInductor package (``dfanet export --format pt2``, compiled in the run), in fp32; and one
lower-precision row shown beside them, not as a baseline: OpenVINO in bf16 (its default on CPUs that compute
bf16 natively). To add a candidate: write a builder and add it to ``BUILDERS``.
"""

from __future__ import annotations

import functools
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ...model import DFANet
from .log import log
from .models import aoti_package, build_twin

CANDIDATES = ("eager", "channels_last", "compile", "onnxruntime", "openvino", "openvino_bf16", "fused", "aoti")
# Run only when named: the fused model itself in another runtime (a check of the package's speed, not a baseline),
# whose compile takes ~1.5 min on 2 CPUs, six times torch.compile's.
OPT_IN = ("aoti",)


class Unavailable(Exception):
    """A candidate cannot run here; the message says why (and how to fix it where that is a package install)."""


@dataclass
class Candidate:
    name: str
    description: str
    run: Callable[[], Any]  # one forward on the prepared input
    setup_s: float | None = None
    torch_based: bool = True  # allocates through torch (peak memory measurable)
    precision: str = "fp32"  # what it computes in; only fp32 candidates are baselines for the fused fp32 path


def _inference(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run():
        with torch.inference_mode():
            return fn()
    return run


def as_tensor(out: Any) -> torch.Tensor:
    """A candidate's output (a tensor, or a runtime's numpy array) as a float tensor, for the check."""
    if isinstance(out, torch.Tensor):
        return out.float().contiguous()
    return torch.from_numpy(np.array(out, dtype=np.float32, copy=True))  # copy: runtimes reuse output buffers


class Context:
    """What the builders share: the model, the input, the thread count, and one lazily made ONNX export."""

    def __init__(self, model: DFANet, x: torch.Tensor, threads: int, work_dir: Path, verbose: bool):
        self.model, self.x, self.threads, self.work_dir, self.verbose = model, x, threads, work_dir, verbose
        self._onnx = None
        self._onnx_error: str | None = None

    def onnx(self):
        """The ONNX export of the unfused model (made once, shared by ONNX Runtime and OpenVINO)."""
        if self._onnx is None and self._onnx_error is None:
            try:
                import onnx  # noqa: F401  (the exporter and the plain-ONNX check need it)
            except ImportError:
                raise Unavailable("onnx is not installed (pip install onnx onnxscript)") from None
            else:
                from ...export import export_onnx

                n, _, h, w = self.x.shape
                log(f"exporting the unfused model to ONNX ({n}x3x{h}x{w}) ...", self.verbose)
                try:
                    self._onnx = export_onnx(self.model, self.work_dir / "dfanet-unfused.onnx", n, h, w)
                except (RuntimeError, ValueError) as err:
                    self._onnx_error = str(err)
                else:
                    onnx = self._onnx
                    log(f"exported with the {onnx.exporter} exporter in {onnx.seconds:.1f} s", self.verbose)
        if self._onnx_error is not None:
            raise RuntimeError(f"ONNX export failed: {self._onnx_error}")  # an error, not a missing runtime
        return self._onnx


def _eager(ctx: Context) -> Candidate:
    model, x = ctx.model, ctx.x
    return Candidate("eager", "unfused nn.Module, NCHW, eager (BatchNorm separate)",
                     _inference(lambda: model(x)))


def _channels_last(ctx: Context) -> Candidate:
    model = build_twin(ctx.model, fused=False).to(memory_format=torch.channels_last)
    x = ctx.x.contiguous(memory_format=torch.channels_last)  # converted once, outside the timing
    return Candidate("channels_last", "unfused nn.Module, model and input channels_last, eager",
                     _inference(lambda: model(x)))


def _compile(ctx: Context) -> Candidate:
    torch.compiler.reset()  # a fresh, honest compile: no graphs cached by an earlier comparison in this process
    # dynamic=False: a second input size in the same process must not switch to a dynamic-shape graph.
    compiled = torch.compile(ctx.model, dynamic=False)
    x = ctx.x
    run = _inference(lambda: compiled(x))
    log("torch.compile: compiling (first call) ...", ctx.verbose)
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    log(f"torch.compile: compiled in {seconds:.1f} s", ctx.verbose)
    return Candidate("compile", "torch.compile(unfused model), mode default, inductor, static shapes, NCHW input",
                     run, setup_s=seconds)


def _require(runtime: str) -> None:
    if importlib.util.find_spec(runtime) is None:
        raise Unavailable(f"{runtime} is not installed (pip install {runtime})")


def _from_onnx(ctx: Context, name: str, make_runner: Callable, source: str, precision: str = "fp32") -> Candidate:
    """The exported ONNX file run by another runtime (``make_runner`` from dfanet.export); ``source`` ends the
    description and may name the ``{exporter}``."""
    exported = ctx.onnx()
    start = time.perf_counter()
    run, description = make_runner(exported.path, ctx.threads)
    x = ctx.x.numpy()
    setup = exported.seconds + time.perf_counter() - start
    return Candidate(name, f"{description}; {source.format(exporter=exported.exporter)}", lambda: run(x),
                     setup_s=setup, torch_based=False, precision=precision)


def _onnxruntime(ctx: Context) -> Candidate:
    _require("onnxruntime")
    from ...export import onnxruntime_runner

    return _from_onnx(ctx, "onnxruntime", onnxruntime_runner, "unfused model, {exporter} ONNX exporter")


def _openvino(ctx: Context) -> Candidate:
    _require("openvino")
    from ...export import openvino_runner

    return _from_onnx(ctx, "openvino", openvino_runner, "from the same ONNX file")


def _openvino_bf16(ctx: Context) -> Candidate:
    _require("openvino")
    from ...export import openvino_native_bf16, openvino_runner

    if not openvino_native_bf16():
        raise Unavailable("this CPU has no native bf16 (OpenVINO's CPU OPTIMIZATION_CAPABILITIES lacks BF16), "
                          "so OpenVINO's default here is fp32: the openvino row")
    return _from_onnx(ctx, "openvino_bf16", functools.partial(openvino_runner, precision="bf16"),
                      "from the same ONNX file; lower precision, shown beside the fp32 rows, not a baseline",
                      precision="bf16")


def _fused(ctx: Context) -> Candidate:
    model, x = build_twin(ctx.model, fused=True), ctx.x
    return Candidate("fused", "DFANet(fused=True) in eval: BN folded, fused kernels (backend None = best for CPU), "
                     "NCHW input, read by the first conv kernel, NHWC inside", _inference(lambda: model(x)))


def _aoti(ctx: Context) -> Candidate:
    log(f"AOTInductor: exporting and compiling the fused model ({'x'.join(map(str, ctx.x.shape))}) ...", ctx.verbose)
    start = time.perf_counter()
    compiled = aoti_package(build_twin(ctx.model, fused=True), ctx.x, ctx.work_dir / "dfanet-fused.pt2")
    seconds = time.perf_counter() - start
    log(f"AOTInductor: compiled and loaded in {seconds:.1f} s", ctx.verbose)
    x = ctx.x
    return Candidate("aoti", "AOTInductor package of the fused model (dfanet export --format pt2: torch.export, "
                     "aoti_compile_and_package), loaded with dfanet.pt2.load_pt2, NCHW input",
                     _inference(lambda: compiled(x)), setup_s=seconds)


BUILDERS: dict[str, Callable[[Context], Candidate]] = {
    "eager": _eager, "channels_last": _channels_last, "compile": _compile,
    "onnxruntime": _onnxruntime, "openvino": _openvino, "openvino_bf16": _openvino_bf16, "fused": _fused,
    "aoti": _aoti,
}


def parse_candidates(candidates: Sequence[str] | str | None) -> list[str]:
    """The candidate names asked for (None: all but the OPT_IN ones), checked; a string may list them separated by
    commas."""
    if candidates is None:
        return [c for c in CANDIDATES if c not in OPT_IN]
    if isinstance(candidates, str):
        candidates = [c.strip() for c in candidates.split(",") if c.strip()]
    unknown = [c for c in candidates if c not in CANDIDATES]
    if unknown or not candidates:
        raise ValueError(f"candidates: expected names from {list(CANDIDATES)}, got {list(candidates)}")
    return list(dict.fromkeys(candidates))
