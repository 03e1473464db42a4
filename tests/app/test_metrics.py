"""Confusion-matrix mIoU against hand-computed examples; the ignore label; classes without IoU; reports."""

import json
import math

import pytest
import torch

from dfanet.training.metrics import Scores, confusion_matrix


def test_confusion_matrix_and_iou_by_hand():
    target = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 1], [1, 2, 0]])  # the last pixel is ignored whatever it predicts
    cm = confusion_matrix(pred, target, num_classes=4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    scores = Scores(cm, ("a", "b", "c", "d"))
    # IoU = TP / (TP + FP + FN): a 1/(1+0+1), b 2/(2+1+0), c 1/1; d is in neither ground truth nor prediction.
    iou = scores.per_class_iou
    assert iou[:3] == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert math.isnan(iou[3])
    assert scores.miou == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert scores.pixel_accuracy == pytest.approx(4 / 5)


def test_a_predicted_class_absent_from_the_ground_truth_counts_as_zero():
    target = torch.tensor([0, 0, 0, 0])
    pred = torch.tensor([0, 0, 0, 1])
    scores = Scores(confusion_matrix(pred, target, 2), ("a", "b"))
    assert scores.per_class_iou == pytest.approx([3 / 4, 0.0])
    assert scores.miou == pytest.approx(3 / 8)


def test_ignored_pixels_change_nothing():
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (2, 17, 23), generator=gen)
    pred = torch.randint(0, 5, (2, 17, 23), generator=gen)
    ignored = torch.rand(target.shape, generator=gen) < 0.3
    cm = confusion_matrix(pred, target.masked_fill(ignored, 255), 5)
    assert torch.equal(cm, confusion_matrix(pred[~ignored], target[~ignored], 5))
    assert cm.sum() == (~ignored).sum()


def test_accumulated_matrices_equal_one_over_everything():
    gen = torch.Generator().manual_seed(1)
    target = torch.randint(0, 3, (4, 8, 8), generator=gen)
    pred = torch.randint(0, 3, (4, 8, 8), generator=gen)
    summed = sum(confusion_matrix(p, t, 3) for p, t in zip(pred, target))
    assert torch.equal(summed, confusion_matrix(pred, target, 3))


@pytest.mark.parametrize("pred, target, message", [
    (torch.tensor([0, 5]), torch.tensor([0, 1]), r"pred: expected class ids in \[0, 3\)"),
    (torch.tensor([0, 1]), torch.tensor([0, 7]), r"target: expected class ids in \[0, 3\) or 255"),
    (torch.tensor([0, 1, 2]), torch.tensor([0, 1]), "expected the same shape"),
])
def test_bad_ids(pred, target, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(pred, target, 3)


def test_reports():
    cm = confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 3)
    scores = Scores(cm, ("road", "car", "sky"))
    report = json.loads(json.dumps(scores.to_dict()))  # strict JSON: no NaN
    assert report["per_class_iou"] == {"road": 0.5, "car": 0.5, "sky": None}
    assert report["miou"] == 0.5
    md = scores.to_markdown()
    assert "| road | 50.00 |" in md and "| sky | n/a |" in md and "| **mIoU** | **50.00** |" in md
