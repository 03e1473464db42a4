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


# --- the messages name the flag and the cause --------------------------------------------------------------------

@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    from ..synthetic import make_cityscapes

    return make_cityscapes(tmp_path_factory.mktemp("cityscapes"), {"train": 2, "val": 1}, size=(48, 64))


def train_args(data, out, *extra):
    return ["train", "--dataset", "cityscapes", "--data-root", str(data), "--variant", "B", "--iters", "1",
            "--batch-size", "2", "--crop", "32", "32", "--workers", "0", "--threads", "1", "--device", "cpu",
            "--no-eval", "--out", str(out), *extra]


def test_a_missing_file_names_its_flag(cityscapes, tmp_path, caplog):
    """'pretrained weights: no such file: nope.pt' for dfanet eval --weights nope.pt."""
    from dfanet.tools.cli import main

    nope = tmp_path / "nope.pt"
    assert main(["eval", "--data-root", str(cityscapes), "--variant", "B", "--weights", str(nope),
                 "--workers", "0"]) == 2
    assert f"--weights: no such file: {nope}" in caplog.text
    caplog.clear()
    assert main(train_args(cityscapes, tmp_path / "out", "--backbone", str(nope))) == 2
    assert f"--backbone: no such file: {nope}" in caplog.text
    assert "pretrained weights" not in caplog.text


@pytest.mark.parametrize("content, reason", [
    (b"hello world\n", "not a file written by torch.save"),  # torch's reason was "(101)", a pickle opcode
    (b"", "the file is empty"),
])
def test_a_file_that_is_not_weights_is_explained(content, reason, tmp_path):
    from dfanet.pretrained import read_state_dict

    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        read_state_dict(path)
    assert str(err.value).startswith(f"--weights: {path} is not a readable PyTorch weights file: {reason}")
    assert "(101)" not in str(err.value)


def test_a_whole_pickled_model_is_explained(tmp_path):
    from dfanet.pretrained import read_state_dict

    path = tmp_path / "pickle.pt"
    torch.save({"model": XceptionClassifier("B")}, path)
    with pytest.raises(ValueError) as err:
        read_state_dict(path)
    assert str(err.value).endswith("it holds Python objects, not only tensors, which weights_only loading refuses "
                                   "(Unsupported global: GLOBAL dfanet.classifier.XceptionClassifier)")


def test_dfanet_weights_given_as_backbone_say_use_weights(cityscapes, tmp_path, caplog):
    """A DFANet weights.pt of the same variant passed as --backbone said it 'does not fit variant B'."""
    from dfanet.tools.cli import main

    path = tmp_path / "weights.pt"
    torch.save(DFANet(num_classes=19, variant="B").state_dict(), path)
    message = f"--backbone: {path} is a DFANet state_dict, not Xception classifier weights (use --weights)"
    with pytest.raises(ValueError) as err:
        DFANet(variant="B").load_pretrained_backbone(path)
    assert str(err.value) == message
    assert main(train_args(cityscapes, tmp_path / "out", "--backbone", str(path))) == 2
    assert message in caplog.text
