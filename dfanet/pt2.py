"""Compile the FUSED DFANet into an AOTInductor package (.pt2), and load one back.

``torch.export`` traces the fused model in eval, BatchNorm folded, into a graph of the ``dfanet::`` custom ops (the
fused kernels), which AOTInductor compiles into one shared library packaged with the weights. The package runs
without the model's Python code: from Python (:func:`load_pt2`) or from C++ (examples/cpp), in both cases once the
kernels' library has registered the ops. Shapes are static: the package takes the input shape it was exported for,
which it records in its metadata (``INPUT_SHAPE``), and nothing else; the compiled code does not check it.
"""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import torch

import dfanet_kernels

from .export import ExportResult
from .model import DFANet

# Metadata keys of a dfanet package (AOTInductor keeps string pairs): "NxCxHxW" of the input, and the classes.
INPUT_SHAPE = "dfanet.input_shape"
NUM_CLASSES = "dfanet.num_classes"


def export_pt2(model: DFANet, path: str | os.PathLike, batch: int = 1, height: int = 512,
               width: int = 1024) -> ExportResult:
    """Trace the fused ``model`` (left in eval) for a static ``batch x 3 x height x width`` float32 input on its
    device and compile it with AOTInductor into the package ``path`` (written as it is compiled: callers that need
    the file complete or absent write to a temporary path and rename it, as ``dfanet export`` does)."""
    if not isinstance(model, DFANet) or not model.fused:
        got = "DFANet(fused=False)" if isinstance(model, DFANet) else type(model).__name__
        raise TypeError(f"model: expected a dfanet.DFANet(fused=True), got {got}")
    model.eval()
    example = torch.randn(batch, 3, height, width, device=next(model.parameters()).device)
    metadata = {INPUT_SHAPE: "x".join(map(str, example.shape)), NUM_CLASSES: str(model.num_classes)}
    start = time.perf_counter()
    with torch.no_grad():
        program = torch.export.export(model, (example,))
        # An open file, not the path: AOTInductor insists on a name ending in .pt2, which a temporary one need not.
        with open(path, "wb") as file:
            torch._inductor.aoti_compile_and_package(program, package_path=file,
                                                     inductor_configs={"aot_inductor.metadata": metadata})
    return ExportResult(Path(path), "aotinductor", time.perf_counter() - start)


class Pt2Model:
    """A loaded package: ``model(x) -> logits`` for a float32 ``x`` of ``input_shape`` on ``device`` (checked here,
    since the compiled code would read out of bounds of any other shape)."""

    def __init__(self, compiled, path: Path):
        metadata = compiled.get_metadata()
        if INPUT_SHAPE not in metadata:
            raise ValueError(f"{path}: an AOTInductor package, but not of DFANet (`dfanet export --format pt2`)")
        self._compiled = compiled
        self.input_shape = tuple(int(v) for v in metadata[INPUT_SHAPE].split("x"))
        self.num_classes = int(metadata[NUM_CLASSES])
        self.device = metadata["AOTI_DEVICE_KEY"]  # "cpu" or "cuda", as AOTInductor records it

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) != self.input_shape or x.dtype != torch.float32 or x.device.type != self.device:
            raise ValueError(f"x: this package takes a float32 tensor on {self.device} of shape {self.input_shape}, "
                             f"got {x.dtype} on {x.device} of shape {tuple(x.shape)}")
        return self._compiled(x.contiguous())  # compiled for the strides of the contiguous example


def _is_package(path: Path) -> bool:
    """Whether ``path`` is a zip archive holding an AOTInductor model (as a .pt2 package does)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/data/aotinductor/" in name for name in archive.namelist())


def load_pt2(path: str | os.PathLike) -> Pt2Model:
    """The package at ``path`` (from :func:`export_pt2`), ready to run. Errors are one line naming the file:
    FileNotFoundError for no file, ValueError for a file that is not a DFANet package or cannot be loaded,
    RuntimeError when the kernels' library that the package calls is not built."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    if not _is_package(path):
        raise ValueError(f"{path}: not an AOTInductor package (.pt2 from `dfanet export --format pt2`)")
    if dfanet_kernels.backends.compiled_library() is None:
        raise RuntimeError(f"{path}: the package calls the dfanet kernels, whose compiled library is not built; "
                           f"{dfanet_kernels.backends.REBUILD_HINT}")
    try:
        compiled = torch._inductor.aoti_load_package(path)
    except RuntimeError as err:  # e.g. a package from another torch, or a damaged library inside
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path}: cannot load the AOTInductor package ({first_line})") from None
    return Pt2Model(compiled, path)
