"""Backbone pretraining with the paper's ImageNet recipe (section 4.1): Xception A/B as a classifier, Nesterov SGD
(momentum 0.9), weight decay 4e-5, lr 0.3 at batch 256 for 30 epochs then 0.03 for 30, 224 x 224 random crops and
flips. Reads an ImageFolder-style directory (one sub-folder of images per class); writes weights that
``DFANet.load_pretrained_backbone`` (and ``dfanet train --backbone``) takes."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from ..classifier import XceptionClassifier
from ..variants import get_variant
from . import checkpoint, distributed
from .data import EvalDataset, batches_of, default_workers, random_crop, train_loader
from .distributed import Context, all_reduce_sum
from .engine import LoopSettings, RunConfig, run
from .images import IMAGE_SUFFIXES, normalize, open_image, rgb_array
from .io import atomic_path

log = logging.getLogger(__name__)

BASE_LR, BASE_BATCH = 0.3, 256
BACKBONE = "backbone.pt"
MOST_WORKERS = 8  # the default --workers, on a machine (or affinity mask) with that many CPUs or more


class ImageFolder:
    """``root/<class>/<image>``: classes are the sorted sub-folder names. ``read(i)`` -> (H x W x 3 uint8, class)."""

    def __init__(self, root: str | Path):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"imagefolder: --data-root {root} is not a folder")
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not self.classes:
            raise FileNotFoundError(f"imagefolder: no class folders in {root} (expected <data-root>/<class>/<image>)")
        self.samples = [(p, label) for label, name in enumerate(self.classes)
                        for p in sorted((root / name).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not self.samples:
            raise FileNotFoundError(f"imagefolder: no images in the class folders of {root}")

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, index: int) -> tuple[np.ndarray, int]:
        path, label = self.samples[index]
        return rgb_array(open_image(path), path), label


def rescale_for_crop(image: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """As in AlexNet [15], which the paper follows: the image rescaled so that it covers 256/224 of the crop."""
    h, w = image.shape[:2]
    s = max(crop[0] / h, crop[1] / w) * 256 / 224
    size = (max(crop[0], round(h * s)), max(crop[1], round(w * s)))
    return np.asarray(Image.fromarray(image).resize(size[::-1], Image.Resampling.BILINEAR))


@dataclass(frozen=True)
class ClassifierTransform:
    """Training: rescale, a random crop, a flip half the time."""

    crop: tuple[int, int]

    def __call__(self, image: np.ndarray, label: int, rng: np.random.Generator):
        image = rescale_for_crop(image, self.crop)
        if rng.random() < 0.5:
            image = image[:, ::-1]
        tensor, _ = random_crop(image, None, self.crop, rng)
        return tensor, label


@dataclass(frozen=True)
class CenterCrop:
    """Validation: rescale, the central crop."""

    crop: tuple[int, int]

    def __call__(self, image: np.ndarray, label: int):
        image = rescale_for_crop(image, self.crop)
        top, left = (image.shape[0] - self.crop[0]) // 2, (image.shape[1] - self.crop[1]) // 2
        return normalize(image[top:top + self.crop[0], left:left + self.crop[1]]), label


@torch.no_grad()
def top1_accuracy(model: nn.Module, folder: ImageFolder, crop: tuple[int, int], ctx: Context, batch_size: int,
                  workers: int = 0) -> float:
    """Single-crop top-1 accuracy on ``folder`` (under torchrun each process takes every world_size-th image)."""
    dataset = EvalDataset(folder.read, CenterCrop(crop), range(ctx.rank, len(folder), ctx.world_size))
    counts = torch.zeros(2, dtype=torch.int64, device=ctx.device)  # correct, seen
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=ctx.device.type == "cuda")
    with batches_of(loader) as batches:
        for images, labels in batches:
            labels = labels.to(ctx.device)
            counts[0] += (model(images.to(ctx.device)).argmax(1) == labels).sum()
            counts[1] += len(labels)
    correct, seen = all_reduce_sum(counts, ctx).tolist()
    return correct / seen


@dataclass
class PretrainConfig(RunConfig):
    data_root: str = "data/imagenet/train"
    epochs: int = 60
    lr_step_epochs: int = 30           # lr x 0.1 after this many epochs
    batch_size: int = BASE_BATCH       # global: split over the processes
    crop: tuple[int, int] = (224, 224)
    weight_decay: float = 4e-5
    weights: str | None = None         # start from these classifier weights
    val_root: str | None = None        # an ImageFolder with the same classes: top-1 accuracy at the end
    out: str = "runs/pretrain"
    workers: int = field(default_factory=lambda: default_workers(MOST_WORKERS))

    def __post_init__(self):  # a list from the command line compares equal to a checkpoint's tuple
        self.crop = tuple(self.crop)


def classification_loss(model: nn.Module, batch, device: torch.device) -> torch.Tensor:
    images, labels = (t.to(device, non_blocking=True) for t in batch)
    return F.cross_entropy(model(images).float(), labels)


def pretrain(cfg: PretrainConfig) -> Path:
    """Train the classifier; returns the path of the backbone weights (rank 0 writes them)."""
    with distributed.session(cfg.device) as ctx:
        return _pretrain(cfg, ctx)


def _pretrain(cfg: PretrainConfig, ctx: distributed.Context) -> Path:
    if cfg.batch_size < 1 or cfg.batch_size % ctx.world_size:
        raise ValueError(f"--batch-size: the global batch must be a positive multiple of the {ctx.world_size} "
                         f"processes, got {cfg.batch_size}")
    if cfg.epochs < 1 or cfg.seed < 0:
        raise ValueError(f"--epochs >= 1 and --seed >= 0 expected, got {cfg.epochs} and {cfg.seed}")
    distributed.set_threads(cfg.threads)
    folder = ImageFolder(cfg.data_root)
    val = ImageFolder(cfg.val_root) if cfg.val_root else None
    if val is not None and val.classes != folder.classes:
        raise ValueError(f"--val-root: the class folders of {cfg.val_root} differ from those of {cfg.data_root}")
    # The FC layer becomes DFANet's FC attention, which is as wide as ImageNet's 1000 classes: keep that width
    # whatever the number of classes here, so the weights always fit.
    width = get_variant(cfg.variant).attention_hidden
    if len(folder.classes) > width:
        raise ValueError(f"imagefolder: {len(folder.classes)} classes, but the FC attention takes at most {width}")
    iters_per_epoch = math.ceil(len(folder) / cfg.batch_size)
    iters = cfg.epochs * iters_per_epoch
    lr = cfg.lr if cfg.lr is not None else BASE_LR * cfg.batch_size / BASE_BATCH
    if ctx.is_main:
        log.info("pretraining Xception %s on %d images of %d classes: %d epochs x %d iterations, global batch %d, "
                 "lr %.4g (x0.1 after epoch %d), device %s", cfg.variant, len(folder), len(folder.classes),
                 cfg.epochs, iters_per_epoch, cfg.batch_size, lr, cfg.lr_step_epochs, ctx.device)

    torch.manual_seed(cfg.seed)
    model = XceptionClassifier(cfg.variant, num_classes=width)
    if cfg.weights:
        from ..pretrained import load_weights

        load_weights(model, cfg.weights)
    model.to(ctx.device)
    trained = distributed.wrap_model(model, ctx, sync_bn=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                nesterov=True)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [cfg.lr_step_epochs * iters_per_epoch], 0.1)
    transform = ClassifierTransform(cfg.crop)

    def make_loader(start: int):
        return train_loader(folder.read, len(folder), transform, cfg.batch_size // ctx.world_size, cfg.seed,
                            ctx.rank, ctx.world_size, start, cfg.workers, ctx.device.type == "cuda")

    config = {**dataclasses.asdict(cfg), "classes": folder.classes}
    settings = LoopSettings("pretrain", iters, Path(cfg.out), cfg.resume, cfg.checkpoint_every, cfg.keep_every,
                            cfg.log_every, cfg.amp, cfg.clip_grad, config)
    run(trained, optimizer, scheduler, make_loader, classification_loss, settings, ctx)
    path = Path(cfg.out) / BACKBONE
    if ctx.is_main:
        checkpoint.save(path, distributed.unwrap(trained).state_dict())
        log.info("backbone weights: %s (dfanet train --backbone)", path)
    if val is not None:
        accuracy = top1_accuracy(distributed.unwrap(trained), val, cfg.crop, ctx, cfg.batch_size // ctx.world_size,
                                 cfg.workers)
        if ctx.is_main:
            log.info("top-1 accuracy on %s: %.2f%% (%d images, one central crop)", cfg.val_root, 100 * accuracy,
                     len(val))
            with atomic_path(Path(cfg.out) / "val-top1.json") as tmp:
                tmp.write_text(json.dumps({"top1": accuracy, "images": len(val), "val_root": cfg.val_root}))
    return path
