"""What `pip install -e .` alone gives: the model and the kernels run with torch and numpy only, none of the
application's packages (the extras `app`, `video` and `bench`) importable, and the library never imports the
application."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import dfanet

# Every package an extra brings (pyproject.toml), as imported.
APPLICATION_PACKAGES = ("PIL", "tqdm", "cityscapesscripts", "tomli", "av", "matplotlib", "onnx", "onnxscript",
                        "onnxruntime", "openvino", "pytest", "pytest_benchmark", "triton")

# Run in a fresh interpreter where the application's packages cannot be imported: a None in sys.modules makes
# `import X` raise ModuleNotFoundError and importlib.util.find_spec(X) return None, as for a package not installed.
BLOCKER = f"""
import sys
for name in {APPLICATION_PACKAGES!r}:
    sys.modules[name] = None
"""


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + code], capture_output=True, text=True, timeout=300)


def test_model_and_kernels_run_without_the_application_packages():
    code = """
import torch
import dfanet_kernels as dk
from dfanet import DFANet
import dfanet.cuda_graph, dfanet.export, dfanet.pt2, dfanet.pretrained, dfanet.classifier, dfanet.testing

torch.manual_seed(0)
unfused = DFANet(num_classes=5, variant="B").eval()
dfanet.testing.randomize_batchnorm(unfused, seed=1)
fused = DFANet(num_classes=5, variant="B", fused=True)
fused.load_state_dict(unfused.state_dict())
fused.eval()
x = torch.randn(1, 3, 67, 45)
with torch.no_grad():
    out, expected = fused(x), unfused(x)
assert out.shape == (1, 5, 67, 45), out.shape
diff = ((out - expected).abs().max() / expected.abs().max()).item()
assert diff < 1e-4, diff
print("backends", dk.available_backends("cpu"))
print("application_modules", sorted(m for m in sys.modules if m.startswith(("dfanet.training", "dfanet.tools"))))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["application_modules"] == "[]", f"the library imported the application: {lines['application_modules']}"


def test_a_command_without_its_extra_names_the_extra_to_install(tmp_path):
    code = f"""
from dfanet.tools.cli import main
code = main(["predict", {str(tmp_path / "x.png")!r}, "--out", {str(tmp_path / "m.png")!r}])
print("exit", code)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "exit 2" in result.stdout
    assert "pip install 'dfanet-kernels[app]'" in result.stderr


def test_the_library_never_imports_the_application():
    """Imports run one way: dfanet.training and dfanet.tools use the model; no module of the model imports them
    (dfanet/__main__.py is the command's entry point, not part of the library)."""
    package = Path(dfanet.__file__).parent
    offenders = []
    for path in sorted(package.glob("*.py")):
        if path.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = ("." * node.level) + (node.module or "")
                names = [a.name for a in node.names]
                if any(part in ("training", "tools") for part in target.lstrip(".").split(".")[:1]) or (
                        node.level == 1 and not node.module and {"training", "tools"} & set(names)):
                    offenders.append(f"{path.name}:{node.lineno} from {target} import {', '.join(names)}")
                if (node.module or "").startswith(("dfanet.training", "dfanet.tools")):
                    offenders.append(f"{path.name}:{node.lineno} from {node.module}")
            elif isinstance(node, ast.Import):
                offenders += [f"{path.name}:{node.lineno} import {a.name}" for a in node.names
                              if a.name.startswith(("dfanet.training", "dfanet.tools"))]
    assert not offenders, offenders
