"""Backend selection: automatic choice per device, clear errors for unavailable ones, a working fallback."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import dfanet_kernels as dk
from dfanet_kernels import backends
from dfanet_kernels.constants import OPS

from ..utils import needs_cpu_kernels


def test_reference_is_always_available():
    assert "reference" in dk.available_backends("cpu")


def test_auto_picks_compiled_cpu_kernels_when_built():
    expected = "cpu" if "cpu" in dk.available_backends("cpu") else "reference"
    assert backends.resolve(None, torch.device("cpu")) == expected


@pytest.mark.parametrize(
    "backend, message",
    [("cuda", "backend 'cuda' runs on CUDA tensors, got a tensor on cpu"), ("gpu", "backend: expected one of")],
)
def test_unavailable_or_unknown_backend_is_a_clear_error(backend, message):
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match=message):
        dk.upsample_add([x], (5, 5), backend=backend)


@pytest.mark.parametrize("library", [None, b"not a shared library"], ids=["missing", "broken"])
def test_package_imports_without_the_compiled_library_and_warns(tmp_path, library):
    """A failed build must not break `import dfanet_kernels`: warn with the fix, and run on the reference. The child
    imports a copy of the package whose library is missing, or is a file the loader cannot load."""
    package = Path(dk.__file__).parent
    shutil.copytree(package, tmp_path / package.name, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    if library is not None:
        (tmp_path / package.name / backends.LIBRARY_PATH.name).write_bytes(library)
    script = textwrap.dedent(
        """
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import dfanet_kernels as dk
            import torch
            print(dk.available_backends("cpu"))
            y = dk.dwsep_conv(torch.randn(1, 2, 5, 5), torch.randn(2, 1, 3, 3), None, torch.randn(3, 2, 1, 1), None)
            print(tuple(y.shape))
        print([str(w.message) for w in caught])
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # no Triton-on-CPU in this child
    # `python -c` puts its working directory first on sys.path: the copy, not this checkout, is imported.
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env,
                            cwd=tmp_path)
    lines = result.stdout.splitlines()
    assert lines[0] == "['reference']"
    assert lines[1] == "(1, 3, 5, 5)"
    assert "pip install --no-build-isolation -e ." in lines[2] and "_C.abi3.so" in lines[2]


def test_compiled_cpu_kernels_are_built():
    """The CPU kernel tests skip when the extension is missing (so the reference-only fallback stays testable);
    this test makes a missing or broken build a failure instead of a quiet sea of skips."""
    assert "cpu" in dk.available_backends("cpu"), (
        f"{backends.LIBRARY_PATH} is missing or failed to load: rebuild with `pip install --no-build-isolation -e .`"
    )


@needs_cpu_kernels
@pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf (binutils) is not installed")
def test_compiled_library_needs_no_python():
    """The library is for C++ programs too (examples/cpp): it must need libtorch and libc10 only, neither libpython
    nor libtorch_python, and use no Python symbol (a PyInit function would leave Py* symbols undefined)."""
    path = str(backends.compiled_library())
    dynamic = subprocess.run(["readelf", "--dynamic", "--wide", path], capture_output=True, text=True, check=True)
    needed = [line.split("[", 1)[1].rstrip("]") for line in dynamic.stdout.splitlines() if "(NEEDED)" in line]
    assert "libtorch_cpu.so" in needed and "libc10.so" in needed, needed
    assert not [n for n in needed if "python" in n], needed
    symbols = subprocess.run(["readelf", "--dyn-syms", "--wide", path], capture_output=True, text=True, check=True)
    undefined = [f[7] for f in map(str.split, symbols.stdout.splitlines()) if len(f) >= 8 and f[6] == "UND"]
    assert not [s for s in undefined if s.startswith(("Py", "_Py"))], undefined


def test_installed_triton_makes_the_triton_backend_available():
    """The triton cases of the op tests skip when the backend is unavailable; a Triton that is installed but broken
    (or a torch without triton_op) must fail here instead of turning the Triton suite into skips. Under the tests'
    TRITON_INTERPRET=1 (tests/conftest.py, no GPU) the backend runs on CPU tensors."""
    import importlib.util

    if importlib.util.find_spec("triton") is None:
        pytest.skip("Triton is not installed (the package's [triton] extra)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert backends.unavailable_reason("triton", device) is None


@needs_cpu_kernels
def test_the_op_list_is_the_compiled_library_s_ops():
    """constants.OPS, the one list of op names the package registers for, names every op of csrc/ops.cpp."""
    names = {n.removeprefix("dfanet::") for n in torch._C._dispatch_get_all_op_names() if n.startswith("dfanet::")}
    assert {n for n in names if not n.endswith("_triton")} - {"cpu_isa"} == set(OPS)


def test_triton_launchers_are_ops_of_the_op_list():
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if backends.unavailable_reason("triton", device) is not None:
        pytest.skip("the Triton backend is unavailable")
    from dfanet_kernels import triton as triton_backend

    assert set(triton_backend.LAUNCHERS) <= set(OPS)
    assert all(hasattr(torch.ops.dfanet, f"{op}_triton") for op in triton_backend.LAUNCHERS)

@needs_cpu_kernels
@pytest.mark.parametrize("op", OPS)
def test_every_compiled_op_has_an_autograd_kernel(op):
    """csrc/autograd.cpp registers the backward refusal for each op of constants.OPS (its own list of names)."""
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"dfanet::{op}", "Autograd")


@needs_cpu_kernels
@pytest.mark.parametrize("op", ["dwsep_conv", "upsample_add", "conv1x1", "fc_attention"])
def test_backward_through_a_compiled_op_raises_instead_of_dropping_the_gradient(op):
    x = torch.randn(1, 4, 5, 5, requires_grad=True)
    calls = {
        "dwsep_conv": lambda: dk.dwsep_conv(x, torch.randn(4, 1, 3, 3), None, torch.randn(4, 4, 1, 1), None,
                                            backend="cpu"),
        "upsample_add": lambda: dk.upsample_add([x], (7, 7), backend="cpu"),
        "conv1x1": lambda: dk.conv1x1(x, torch.randn(3, 4, 1, 1), None, backend="cpu"),
        "fc_attention": lambda: dk.fc_attention(x, torch.randn(6, 4), None, torch.randn(4, 6, 1, 1), None,
                                                backend="cpu"),
    }
    y = calls[op]()
    with pytest.raises(RuntimeError, match=f"dfanet::{op} is inference-only"):
        (y.sum() + x.sum()).backward()
