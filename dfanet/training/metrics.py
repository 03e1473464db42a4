"""Segmentation scores from a confusion matrix: per-class IoU, mIoU, pixel accuracy; Markdown and JSON reports."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .data import IGNORE_INDEX


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """num_classes x num_classes int64 counts, rows = ground truth, columns = prediction; ``ignore_index``
    pixels are left out. ``pred`` and ``target`` hold class ids of the same shape."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target: expected the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    keep = target != ignore_index
    t, p = target[keep].long(), pred[keep].long()
    for name, ids in (("target", t), ("pred", p)):
        if ids.numel() and (ids.min() < 0 or ids.max() >= num_classes):
            raise ValueError(f"{name}: expected class ids in [0, {num_classes}) or {ignore_index}, "
                             f"got values in [{ids.min().item()}, {ids.max().item()}]")
    return torch.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


@dataclass
class Scores:
    """Scores of a whole data set from its accumulated confusion matrix (the Cityscapes benchmark's definition:
    IoU = TP / (TP + FP + FN) per class over all pixels; a class absent from both the ground truth and the
    predictions has no IoU and is left out of the mean)."""

    confusion: torch.Tensor
    classes: tuple[str, ...]

    @property
    def per_class_iou(self) -> list[float]:
        cm = self.confusion.double()
        tp = cm.diag()
        union = cm.sum(0) + cm.sum(1) - tp
        return [t / u if u > 0 else math.nan for t, u in zip(tp.tolist(), union.tolist())]

    @property
    def miou(self) -> float:
        present = [v for v in self.per_class_iou if not math.isnan(v)]
        return sum(present) / len(present) if present else math.nan

    @property
    def pixel_accuracy(self) -> float:
        total = self.confusion.sum().item()
        return self.confusion.diag().sum().item() / total if total else math.nan

    def to_dict(self) -> dict:
        """JSON-ready: an IoU that does not exist (NaN) is None (null)."""
        def value(v: float) -> float | None:
            return None if math.isnan(v) else v

        return {
            "miou": value(self.miou),
            "pixel_accuracy": value(self.pixel_accuracy),
            "per_class_iou": {name: value(v) for name, v in zip(self.classes, self.per_class_iou)},
            "confusion_matrix": self.confusion.tolist(),
        }

    def to_markdown(self) -> str:
        lines = ["| class | IoU (%) |", "|---|---:|"]
        for name, value in zip(self.classes, self.per_class_iou):
            lines.append(f"| {name} | {'n/a' if math.isnan(value) else f'{100 * value:.2f}'} |")
        lines.append(f"| **mIoU** | **{100 * self.miou:.2f}** |")
        return "\n".join(lines)
