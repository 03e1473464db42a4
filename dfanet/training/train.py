"""Segmentation training with the paper's recipe (section 4): SGD, momentum 0.9, weight decay 1e-5, "poly" learning
rate (power 0.9) from 0.2 at batch 48, pixel-wise cross-entropy, flip + rescale [0.75, 1.75] + crop."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..model import DFANet
from ..pretrained import load_weights
from . import checkpoint, distributed
from .data import IGNORE_INDEX, SegmentationFiles, TrainTransform, default_workers, get_dataset, train_loader
from .engine import LoopSettings, RunConfig, check_clip_grad, run
from .evaluate import EvalReport, evaluate, write_report
from .io import atomic_path
from .memory import check_training_memory

log = logging.getLogger(__name__)

BASE_LR, BASE_BATCH = 0.2, 48  # the paper's learning rate and the (global) batch it goes with
WEIGHTS = "weights.pt"
HISTORY = "eval-history.json"
MOST_WORKERS = 4  # the default --workers, on a machine (or affinity mask) with that many CPUs or more


@dataclass
class TrainConfig(RunConfig):
    dataset: str = "cityscapes"
    data_root: str = "data/cityscapes"
    split: str = "train"
    val_split: str | None = "val"      # evaluated at the end (None: skip)
    eval_every: int = 0                # also evaluate every N iterations (0: only at the end)
    iters: int | None = None           # None: the data set's default (Cityscapes 40K, as in the paper)
    batch_size: int = BASE_BATCH       # global: split over the processes
    crop: tuple[int, int] | None = None  # H, W; None: the data set's default
    scale: tuple[float, float] = (0.75, 1.75)
    weight_decay: float = 1e-5
    power: float = 0.9
    warmup_iters: int = 0
    sync_bn: bool = False
    weights: str | None = None         # start from these DFANet weights (a state_dict or a checkpoint)
    backbone: str | None = None        # ImageNet-pretrained Xception weights (dfanet pretrain) for all backbones
    backend: str | None = None         # fused-op backend for the final evaluation
    out: str = "runs/dfanet"
    workers: int = field(default_factory=lambda: default_workers(MOST_WORKERS))

    def __post_init__(self):  # lists from the command line or a JSON file: compare equal to a checkpoint's tuples
        self.crop = None if self.crop is None else tuple(self.crop)
        self.scale = tuple(self.scale)


class PolyLR:
    """LambdaLR factor: linear warm-up from 0 over ``warmup`` iterations, then (1 - it / total) ** power.

    A callable object (not a lambda) so that LambdaLR.state_dict saves its settings with the checkpoint."""

    def __init__(self, total: int, power: float = 0.9, warmup: int = 0):
        self.total, self.power, self.warmup = total, power, warmup

    def __call__(self, iteration: int) -> float:
        poly = max(0.0, 1.0 - iteration / self.total) ** self.power
        if iteration < self.warmup:
            return poly * (iteration + 1) / (self.warmup + 1)
        return poly


def segmentation_loss(model: nn.Module, batch, device: torch.device) -> torch.Tensor:
    """Mean pixel-wise cross-entropy over the labelled pixels. A crop with no labelled pixel (all 255) gives 0, not
    the NaN of F.cross_entropy's mean over nothing."""
    images, masks = (t.to(device, non_blocking=True) for t in batch)
    logits = model(images)
    total = F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (masks != IGNORE_INDEX).sum().clamp(min=1)


def check_config(cfg: TrainConfig, world_size: int) -> None:
    if cfg.batch_size < 1 or cfg.batch_size % world_size:
        raise ValueError(f"--batch-size: the global batch must be a positive multiple of the {world_size} "
                         f"processes, got {cfg.batch_size}")
    if cfg.iters is not None and cfg.iters < 1:
        raise ValueError(f"--iters: expected >= 1, got {cfg.iters}")
    if cfg.crop is not None and min(cfg.crop) < 32:
        raise ValueError(f"--crop: expected H and W >= 32 (DFANet's minimum), got {cfg.crop}")
    if not 0 < cfg.scale[0] <= cfg.scale[1]:
        raise ValueError(f"--scale: expected 0 < MIN <= MAX, got {cfg.scale}")
    if cfg.seed < 0:
        raise ValueError(f"--seed: expected >= 0, got {cfg.seed}")
    for name, least in (("checkpoint_every", 1), ("log_every", 1), ("keep_every", 0), ("eval_every", 0)):
        if getattr(cfg, name) < least:
            raise ValueError(f"--{name.replace('_', '-')}: expected >= {least}, got {getattr(cfg, name)}")
    if cfg.eval_every and not cfg.val_split:
        raise ValueError("--eval-every: needs a --val-split to evaluate on")
    check_clip_grad(cfg.clip_grad)
    if not cfg.power >= 0:  # also refuses NaN
        raise ValueError(f"--power: expected a poly schedule power >= 0, got {cfg.power}")
    if cfg.warmup_iters < 0:
        raise ValueError(f"--warmup-iters: expected >= 0, got {cfg.warmup_iters}")


@dataclass
class TrainResult:
    model: DFANet                  # the trained model (unwrapped, on the training device)
    iterations: int
    weights: Path                  # the exported inference weights (a plain state_dict)
    report: EvalReport | None = None  # the final evaluation, if one ran


def train(cfg: TrainConfig) -> TrainResult:
    """Train DFANet on ``cfg.dataset``; one process, or each of torchrun's processes."""
    with distributed.session(cfg.device) as ctx:
        return _train(cfg, ctx)


def _train(cfg: TrainConfig, ctx: distributed.Context) -> TrainResult:
    check_config(cfg, ctx.world_size)
    distributed.check_backend(cfg.backend, ctx.device)  # it runs the evaluations: fail now, not after training
    distributed.set_threads(cfg.threads)
    if cfg.sync_bn and ctx.distributed and ctx.device.type != "cuda":
        raise ValueError("--sync-bn: SyncBatchNorm runs on CUDA only (torch has no CPU implementation)")
    spec = get_dataset(cfg.dataset)
    iters = cfg.iters or spec.iters
    crop = cfg.crop or spec.crop
    lr = cfg.lr if cfg.lr is not None else BASE_LR * cfg.batch_size / BASE_BATCH
    check_training_memory(cfg.variant, cfg.batch_size // ctx.world_size, crop, cfg.workers, cfg.amp, ctx.device)
    files = spec.open(cfg.data_root, cfg.split)
    val_files = spec.open(cfg.data_root, cfg.val_split) if cfg.val_split else None  # fail now, not after training
    if val_files is not None:
        check_val_files(val_files, ctx)
    out = Path(cfg.out)
    if ctx.is_main:
        log.info("%s %s: %d images, %d classes; DFANet %s; %d iterations, global batch %d (%d process(es) x %d), "
                 "crop %dx%d, lr %.4g, device %s", spec.name, cfg.split, len(files), files.num_classes, cfg.variant,
                 iters, cfg.batch_size, ctx.world_size, cfg.batch_size // ctx.world_size, *crop, lr, ctx.device)

    torch.manual_seed(cfg.seed)
    model = DFANet(files.num_classes, cfg.variant, fused=True, backend=cfg.backend)
    if cfg.backbone:
        report = model.load_pretrained_backbone(cfg.backbone)
        if ctx.is_main:
            log.info("backbone weights from %s: %d tensors loaded, %d kept their initialisation",
                     cfg.backbone, len(report["loaded"]), len(report["skipped"]))
    if cfg.weights:
        load_weights(model, cfg.weights)
    model.to(ctx.device)
    trained = distributed.wrap_model(model, ctx, cfg.sync_bn)
    if cfg.sync_bn and not ctx.distributed:
        log.warning("--sync-bn has no effect in a single process")

    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, PolyLR(iters, cfg.power, cfg.warmup_iters))
    transform = TrainTransform(crop, cfg.scale)
    pin = ctx.device.type == "cuda"

    def make_loader(start: int):
        return train_loader(files.read, len(files), transform, cfg.batch_size // ctx.world_size, cfg.seed,
                            ctx.rank, ctx.world_size, start, cfg.workers, pin)

    def evaluate_now(iteration: int) -> EvalReport:
        return _evaluate_weights(cfg, ctx, model, val_files, iteration)

    config = dataclasses.asdict(cfg)
    settings = LoopSettings("segmentation", iters, out, cfg.resume, cfg.checkpoint_every, cfg.keep_every,
                            cfg.log_every, cfg.amp, cfg.clip_grad, config, cfg.eval_every)
    done = run(trained, optimizer, scheduler, make_loader, segmentation_loss, settings, ctx,
               evaluate_now if cfg.eval_every else None)

    weights = out / WEIGHTS
    if ctx.is_main:
        checkpoint.save(weights, model.state_dict())
        log.info("inference weights: %s (dfanet eval/predict --weights)", weights)
    result = TrainResult(model, done, weights)
    if val_files is not None:
        result.report = evaluate_now(done)
        if ctx.is_main:
            write_report(result.report, out)
    return result


def check_val_files(files: SegmentationFiles, ctx: distributed.Context) -> None:
    """Every val pair's headers and label ids, so that a bad file stops the run now, not after all its iterations
    (about 17 ms a Cityscapes pair: 9 s for its 500). Every rank checks, so that all of them stop together."""
    began = time.perf_counter()
    files.check_all()
    if ctx.is_main:
        log.info("checked the %d %s pairs (readable, sizes, label ids) in %.1f s", len(files), files.split,
                 time.perf_counter() - began)


def _evaluate_weights(cfg: TrainConfig, ctx: distributed.Context, trained: DFANet, files: SegmentationFiles,
                      iteration: int) -> EvalReport:
    """What ``dfanet eval`` would report for the current weights: a fresh fused model in eval, whole images (the
    model being trained keeps its mode and state). Rank 0 logs the mIoU and adds it to eval-history.json."""
    with torch.random.fork_rng(devices=[]):  # its initialisation must not move the training run's RNG
        model = DFANet(trained.num_classes, cfg.variant, fused=True, backend=cfg.backend)
    model.load_state_dict(trained.state_dict())
    report = evaluate(model.to(ctx.device), files, ctx, workers=cfg.workers)
    if ctx.is_main:
        log.info("iteration %d: %s %s mIoU %.2f%%", iteration, files.name, files.split, 100 * report.scores.miou)
        path = Path(cfg.out) / HISTORY
        # A resumed run repeats the iterations after its checkpoint: their old entries give way to the new ones.
        history = [h for h in json.loads(path.read_text()) if h["iteration"] < iteration] if path.is_file() else []
        history.append({"iteration": iteration, **report.scores.to_dict()})
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(history, indent=1))
    return report
