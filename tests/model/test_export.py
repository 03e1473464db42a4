"""dfanet.export: the ONNX baselines are the UNFUSED model, and they compute what eager computes."""

from __future__ import annotations

import pytest
import torch

from dfanet.export import check_plain_onnx, export_onnx, unfused_copy
from dfanet.model import DFANet

onnx = pytest.importorskip("onnx")


def test_unfused_copy_has_same_weights_and_is_unfused():
    fused = DFANet(variant="B", fused=True)
    twin = unfused_copy(fused)
    assert twin is not fused and not twin.fused and not twin.training
    for (name, a), b in zip(fused.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), name


def test_unfused_copy_rejects_other_modules():
    with pytest.raises(TypeError, match="model: expected a dfanet.DFANet"):
        unfused_copy(torch.nn.Conv2d(3, 3, 1))


def test_export_of_fused_model_is_plain_onnx_and_matches_eager(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model = DFANet(variant="B", fused=True).eval()  # a fused model must still export the unfused graph
    result = export_onnx(model, tmp_path / "m.onnx", batch=1, height=64, width=96)
    assert result.path.exists() and result.exporter in ("dynamo", "torchscript")
    domains = {n.domain for n in onnx.load(str(result.path)).graph.node}
    assert domains <= {"", "ai.onnx"}, domains
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = unfused_copy(model)(x)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    out = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_check_plain_onnx_rejects_custom_ops(tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("dwsep_conv", ["x"], ["y"], domain="dfanet")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("dfanet", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match=r"dfanet::dwsep_conv"):
        check_plain_onnx(path)
