"""`dfanet predict --format`: colour, overlay, Cityscapes label ids and train ids; and the label-id files scored by
cityscapesscripts' own evaluator give what `dfanet eval` gives on the same predictions."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dfanet import DFANet
from dfanet.tools.cli import main
from dfanet.tools.formats import cityscapes_label_ids
from dfanet.tools.predict import load_image
from dfanet.training.data import IGNORE_INDEX, get_dataset
from dfanet.training.images import normalize

from ..synthetic import make_cityscapes


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    return make_cityscapes(tmp_path_factory.mktemp("cityscapes"), {"val": 4}, size=(64, 96))


@torch.no_grad()
def probe_trained_weights(files, path) -> DFANet:
    """DFANet B with random features and a least-squares classifier on them (a linear probe, fitted in a second,
    where training takes minutes on a CPU): masks of several classes that follow the scenes' shapes and are partly
    right, so that the IoUs the evaluators compare are neither all 0 nor all 1. Saved to ``path``."""
    torch.manual_seed(0)
    model = DFANet(num_classes=19, variant="B", fused=False).eval()  # the module path, where a hook sees features
    features = []
    model.decoder.classifier.register_forward_hook(lambda module, args, out: features.append(args[0]))
    inputs, targets = [], []
    for index in range(len(files)):
        rgb, mask = files.read(index)
        model(normalize(rgb)[None])
        feature = features.pop()[0]  # C x h x w, the classifier's input
        target = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=feature.shape[-2:])[0, 0].long()
        keep = target != IGNORE_INDEX
        inputs.append(feature[:, keep].T)
        targets.append(target[keep])
    x = torch.cat(inputs)
    x = torch.cat([x, torch.ones(len(x), 1)], 1)  # the bias
    solution = torch.linalg.lstsq(x, F.one_hot(torch.cat(targets), 19).float()).solution
    model.decoder.classifier.weight.copy_(solution[:-1].T[..., None, None])
    model.decoder.classifier.bias.copy_(solution[-1])
    torch.save(model.state_dict(), path)
    return model


@pytest.fixture(scope="module")
def weights(cityscapes, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "probe.pt"
    probe_trained_weights(get_dataset("cityscapes").open(cityscapes, "val"), path)
    return path


def test_label_ids_are_cityscapes_ids_of_the_train_ids():
    from cityscapesscripts.helpers.labels import labels

    table = cityscapes_label_ids()
    assert table.tolist()[:3] == [7, 8, 11]  # road, sidewalk, building
    assert {label.trainId: label.id for label in labels if 0 <= label.trainId < 255} == dict(enumerate(table))
    # What makes its evaluator and dfanet eval agree on void: the classes it leaves out of the scores are exactly
    # those the data set maps to 255 (ignore).
    assert all(label.ignoreInEval == (not 0 <= label.trainId < 255) for label in labels)


def test_trainid_and_labelid_files_hold_the_predicted_ids(cityscapes, weights, tmp_path):
    image = next((cityscapes / "leftImg8bit" / "val").glob("*/*.png"))
    for fmt in ("trainid", "labelid"):
        assert main(["predict", str(image), "--out", str(tmp_path / f"{fmt}.png"), "--weights", str(weights),
                     "--variant", "B", "--format", fmt]) == 0
    model = DFANet(num_classes=19, variant="B")
    model.load_state_dict(torch.load(weights, weights_only=True))
    expected = model.eval().predict(load_image(image)[1])[0].numpy()
    with Image.open(tmp_path / "trainid.png") as train_ids, Image.open(tmp_path / "labelid.png") as label_ids:
        assert train_ids.mode == label_ids.mode == "L"  # 8-bit, one channel
        assert (np.asarray(train_ids) == expected).all()
        assert (np.asarray(label_ids) == cityscapes_label_ids()[expected]).all()
    assert len(np.unique(expected)) >= 3  # the probe's masks are not one class


def test_color_and_overlay(cityscapes, weights, tmp_path):
    images = cityscapes / "leftImg8bit" / "val" / "city0"
    for fmt in ("color", "overlay"):
        assert main(["predict", str(images), "--out", str(tmp_path / fmt), "--weights", str(weights), "--variant", "B",
                     "--format", fmt]) == 0
    for path in (tmp_path / "color").iterdir():
        color, blended = (np.asarray(Image.open(folder / path.name), dtype=np.int16)
                          for folder in (tmp_path / "color", tmp_path / "overlay"))
        rgb = np.asarray(Image.open(images / path.name), dtype=np.int16)
        assert color.shape == blended.shape == rgb.shape
        assert np.abs(2 * blended - color - rgb).max() <= 2  # half and half, each rounded


@pytest.mark.parametrize("fmt, num_classes, message", [
    ("labelid", 5, "--format labelid: Cityscapes label ids exist for its 19 train ids, and this model has 5 classes"),
    ("trainid", 300, "--format trainid: an 8-bit PNG holds train ids 0-254"),
])
def test_id_formats_the_model_cannot_fill_are_refused_before_any_work(cityscapes, tmp_path, caplog, fmt,
                                                                      num_classes, message):
    image = next((cityscapes / "leftImg8bit" / "val").glob("*/*.png"))
    out = tmp_path / "ids.png"
    assert main(["predict", str(image), "--out", str(out), "--variant", "B", "--num-classes", str(num_classes),
                 "--format", fmt]) == 2
    assert message in caplog.text and not out.exists()


def cityscapes_evaluator(data_root, predictions, monkeypatch) -> dict:
    """cityscapesscripts' pixel-level evaluator, as its main() runs it, over the gtFine val masks of ``data_root``
    and the label-id files found (by city_sequence_frame name) under ``predictions``."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs

    # Its settings are one module-level object: changed for this test only. The instance-level scores need
    # *_instanceIds.png files and call np.in1d, which numpy 2.4 removed.
    for name, value in {"evalInstLevelScore": False, "JSONOutput": False, "quiet": True,
                        "predictionPath": str(predictions), "predictionWalk": None}.items():
        monkeypatch.setattr(cs.args, name, value)
    ground_truth = sorted(str(p) for p in (data_root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    return cs.evaluateImgLists([cs.getPrediction(cs.args, gt) for gt in ground_truth], ground_truth, cs.args)


def test_cityscapes_evaluator_on_labelid_files_agrees_with_dfanet_eval(cityscapes, weights, tmp_path, monkeypatch):
    """Both score the same predictions of the same images against the same masks, and both count void pixels
    (ego vehicle here) in neither a class's false positives nor its false negatives, so the confusion matrices
    over the 19 classes are equal and the IoUs differ by float rounding only (1e-12 is a thousand times that)."""
    leftimg = cityscapes / "leftImg8bit" / "val"
    assert main(["predict", *map(str, sorted(leftimg.iterdir())), "--out", str(tmp_path / "results"), "--weights",
                 str(weights), "--variant", "B", "--format", "labelid"]) == 0
    assert main(["eval", "--dataset", "cityscapes", "--data-root", str(cityscapes), "--weights", str(weights),
                 "--variant", "B", "--out", str(tmp_path), "--workers", "0", "--warmup", "0"]) == 0
    ours = json.loads((tmp_path / "eval-cityscapes-val.json").read_text())
    theirs = cityscapes_evaluator(cityscapes, tmp_path / "results", monkeypatch)
    assert theirs["averageScoreClasses"] == pytest.approx(ours["miou"], abs=1e-12)
    assert 0.05 < ours["miou"] < 0.95  # non-trivial masks: partly right
    for name, iou in ours["per_class_iou"].items():
        if iou is None:  # in neither the masks nor the predictions
            assert math.isnan(theirs["classScores"][name])
        else:
            assert theirs["classScores"][name] == pytest.approx(iou, abs=1e-12)


def test_eval_scores_predict_labels_as_the_unfused_forward_argmax_did(cityscapes, weights):
    """evaluate() scores model.predict's labels; its confusion matrix, fused or not, is the one that the unfused
    model's forward + argmax (what evaluate used to score) gives on the same images."""
    from dfanet.training.distributed import Context
    from dfanet.training.evaluate import evaluate
    from dfanet.training.metrics import confusion_matrix

    files = get_dataset("cityscapes").open(cityscapes, "val")
    state = torch.load(weights, weights_only=True)
    unfused = DFANet(num_classes=19, variant="B", fused=False).eval()
    unfused.load_state_dict(state)
    expected = torch.zeros(19, 19, dtype=torch.int64)
    with torch.no_grad():
        for index in range(len(files)):
            rgb, mask = files.read(index)
            labels = unfused(normalize(rgb)[None]).argmax(1)
            expected += confusion_matrix(labels, torch.from_numpy(mask.astype(np.int64))[None], 19)
    assert expected.diagonal().sum() > 0 and expected.sum() > expected.diagonal().sum()  # partly right
    ctx = Context(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    for fused in (False, True):
        model = DFANet(num_classes=19, variant="B", fused=fused)
        model.load_state_dict(state)
        confusion = evaluate(model, files, ctx, workers=0, warmup=0).scores.confusion
        assert torch.equal(confusion, expected), f"fused={fused}"
