"""Evaluation as in the paper: whole images at full resolution, no test-time augmentation, the fused model in eval;
mIoU from the confusion matrix over the whole split, and the forward pass's speed."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..model import DFANet
from .data import EvalDataset, SegmentationFiles, batches_of, eval_transform
from .distributed import Context, all_reduce_sum
from .io import atomic_path
from .metrics import Scores, confusion_matrix

log = logging.getLogger(__name__)


@dataclass
class EvalReport:
    dataset: str
    split: str
    scores: Scores
    speed: dict

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, **self.scores.to_dict(), "speed": self.speed}

    def to_markdown(self) -> str:
        s = self.speed
        return (f"## DFANet on {self.dataset} {self.split}: mIoU {100 * self.scores.miou:.2f}%\n\n"
                f"{self.scores.to_markdown()}\n\n"
                f"Speed: {s['fps']:.1f} FPS (median {s['median_ms']:.2f} ms per image). Method: {s['method']}\n")


@torch.no_grad()
def evaluate(model: DFANet, files: SegmentationFiles, ctx: Context, workers: int = 2, warmup: int = 3) -> EvalReport:
    """Score ``model`` (put in eval; fused if it was built with fused=True) on every image of ``files``, from the
    labels of ``model.predict`` (what ``dfanet predict`` writes); under torchrun each process takes every
    world_size-th image and the confusion matrices are summed."""
    if model.num_classes != files.num_classes:
        raise ValueError(f"model: has {model.num_classes} classes, the {files.name} data set {files.num_classes}")
    model.eval()
    device = ctx.device
    indices = range(ctx.rank, len(files), ctx.world_size)
    loader = DataLoader(EvalDataset(files.read, eval_transform, indices), batch_size=1, num_workers=workers,
                        pin_memory=device.type == "cuda")
    confusion = torch.zeros(files.num_classes, files.num_classes, dtype=torch.int64, device=device)
    times, sizes = [], set()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    from tqdm import tqdm

    with batches_of(loader) as batches, tqdm(batches, total=len(loader), desc=f"eval {files.name}", unit="img",
                                             disable=None if ctx.is_main else True) as bar:  # None: tty only
        for i, (image, mask) in enumerate(bar):
            image, mask = image.to(device, non_blocking=True), mask.to(device, non_blocking=True)
            if i == 0:  # first calls fold BN, pick kernels, fill caches: not what a deployed model pays per image
                for _ in range(warmup):
                    model.predict(image)
            sync()
            start = time.perf_counter()
            # predict, not forward + argmax: fused, it never writes the full-size logits; unfused it is exactly
            # forward(image).argmax(1), so the unfused model's confusion matrix is what it always was.
            labels = model.predict(image)
            sync()
            times.append(time.perf_counter() - start)
            sizes.add(f"{image.shape[-2]}x{image.shape[-1]}")
            confusion += confusion_matrix(labels, mask, files.num_classes)
    all_reduce_sum(confusion, ctx)

    times.sort()
    threads = torch.get_num_threads()
    speed = {
        "fps": len(times) / sum(times) if times else float("nan"),
        "median_ms": 1000 * times[len(times) // 2] if times else float("nan"),
        "images_timed": len(times),
        "batch": 1,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": threads,
        "warmup_runs": warmup,
        "input_sizes": sorted(sizes),
        "method": (f"model.predict (the forward pass to per-pixel labels, argmax included) on one image at a time "
                   f"(batch 1) at full resolution "
                   f"({', '.join(sorted(sizes))}) on {device}"
                   + (f" ({torch.cuda.get_device_name(device)}, synchronised)" if device.type == "cuda" else
                      f" with {threads} threads")
                   + f"; {warmup} warm-up runs excluded; data loading and scoring not timed"
                   + (f"; timed on rank 0's {len(times)} of the images" if ctx.distributed else "") + "."),
    }
    return EvalReport(files.name, files.split, Scores(confusion.cpu(), files.classes), speed)


def report_stem(dataset: str, split: str) -> str:
    """The evaluation reports' file name (less .md/.json), the same for dfanet train and dfanet eval --out."""
    return f"eval-{dataset}-{split}"


def write_report(report: EvalReport, out: Path) -> tuple[Path, Path]:
    """``out/eval-<dataset>-<split>.md`` and ``.json``, each written atomically."""
    stem = report_stem(report.dataset, report.split)
    paths = out / f"{stem}.md", out / f"{stem}.json"
    with atomic_path(paths[0]) as tmp:
        tmp.write_text(report.to_markdown())
    with atomic_path(paths[1]) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2))
    log.info("evaluation report: %s, %s", *paths)
    return paths
