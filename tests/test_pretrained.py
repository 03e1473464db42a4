"""load_pretrained_backbone: the classifier's weights land in every backbone; bad files give clear errors."""

import pytest
import torch

from dfanet import DFANet
from dfanet.classifier import XceptionClassifier


@pytest.fixture
def classifier_file(tmp_path):
    torch.manual_seed(3)
    clf = XceptionClassifier("B")
    for p in clf.parameters():
        torch.nn.init.normal_(p)
    path = tmp_path / "xception_b.pt"
    torch.save({"model": {f"module.{k}": v for k, v in clf.state_dict().items()}}, path)
    return clf, path


def test_weights_land_in_all_three_backbones(classifier_file):
    clf, path = classifier_file
    model = DFANet(num_classes=5, variant="B")
    report = model.load_pretrained_backbone(path)
    ours = model.state_dict()
    assert torch.equal(ours["conv1.0.weight"], clf.conv1[0].weight)
    for n in range(3):
        assert torch.equal(ours[f"backbones.{n}.stages.2.3.sep2.pointwise.weight"],
                           clf.stages[2][3].sep2.pointwise.weight)
        assert torch.equal(ours[f"backbones.{n}.fca.fc.weight"], clf.fc.weight)
    # Backbone 1 sees exactly the classifier's inputs, so all of it loads; later backbones' first blocks see
    # concatenated inputs (more channels) and keep their initialisation.
    assert not any(k.startswith("backbones.0.") for k in report["skipped"])
    assert "backbones.1.stages.0.0.sep1.depthwise.weight" in report["skipped"]
    assert "backbones.1.stages.0.1.sep1.depthwise.weight" in report["loaded"]


def test_weights_of_another_variant_are_refused(classifier_file):
    _, path = classifier_file
    with pytest.raises(ValueError, match="does not fit variant 'A'"):
        DFANet(variant="A").load_pretrained_backbone(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        DFANet(variant="B").load_pretrained_backbone(tmp_path / "nope.pt")


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.pt is not a readable PyTorch weights file"):
        DFANet(variant="B").load_pretrained_backbone(path)


def test_unrelated_state_dict(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="nothing in .* matches the backbone"):
        DFANet(variant="B").load_pretrained_backbone(path)


def test_pickled_objects_are_refused(tmp_path):
    """weights_only=True: a file holding arbitrary Python objects is rejected, not executed."""
    path = tmp_path / "pickle.pt"
    torch.save({"model": XceptionClassifier("B")}, path)  # a whole module, not a state_dict
    with pytest.raises(ValueError, match="not a readable PyTorch weights file"):
        DFANet(variant="B").load_pretrained_backbone(path)
