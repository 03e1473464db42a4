"""The training loop that segmentation training and backbone pretraining share: resume, AMP, clipping, a stop on a
non-finite loss, a checkpoint before stopping on SIGTERM/SIGINT, rank-0 logging and atomic checkpoints."""

from __future__ import annotations

import copy
import logging
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..pretrained import state_dict_mismatch
from . import checkpoint
from .data import batches_of
from .distributed import Context, all_reduce_sum, unwrap
from .stopped import Stopped

log = logging.getLogger(__name__)

# Settings that may change between a run and its resumption without changing what it computes.
RUN_ONLY_SETTINGS = {"out", "resume", "workers", "log_every", "checkpoint_every", "keep_every", "val_split",
                     "eval_every", "val_root", "backend"}
# Settings a resumption may change that do change the floating-point results (kernels split their sums by thread
# and by device differently): the run goes on, but no longer bit-identical to an uninterrupted one.
NUMERICS_SETTINGS = {"device", "threads"}
# What training changes in an optimizer param group and in a scheduler's state; the rest are the run's settings.
PARAM_GROUP_PROGRESS = {"params", "lr"}
SCHEDULER_PROGRESS = {"last_epoch", "_step_count", "_last_lr", "_is_initial", "_get_lr_called_within_step"}


@dataclass
class RunConfig:
    """The settings every training command shares (``dfanet train`` and ``dfanet pretrain`` add their own): the
    model, the optimiser's common knobs, where the run writes and how it resumes, and where it runs. A command's
    config overrides ``out`` and ``workers`` with its own defaults."""

    variant: str = "A"
    lr: float | None = None            # None: the command's base rate scaled with its batch size
    momentum: float = 0.9
    clip_grad: float | None = None
    amp: bool = False
    out: str = "runs"
    resume: str | None = None
    checkpoint_every: int = 1000
    keep_every: int = 0
    log_every: int = 50
    workers: int = 0
    seed: int = 0
    device: str | None = None
    threads: int | None = None


DIVERGED = ("training diverged. Resume from the last checkpoint with a lower --lr, a --warmup-iters warm-up or "
            "--clip-grad (e.g. 1.0).")


class NonFiniteLossError(FloatingPointError):
    def __init__(self, iteration: int, loss: float, lr: float):
        super().__init__(f"loss is {loss} at iteration {iteration} (lr {lr:.4g}): {DIVERGED}")
        self.iteration = iteration


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_requests() -> Iterator[list[int]]:
    """The signals received while inside, for the loop to stop at the end of its iteration (a scheduler's SIGTERM
    before preemption, Ctrl-C). A second signal stops at once (KeyboardInterrupt)."""
    received: list[int] = []

    def handler(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        log.warning("%s: saving a checkpoint after this iteration, then stopping (again to stop at once)",
                    signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield received
        return
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@dataclass
class LoopSettings:
    task: str                       # "segmentation" or "pretrain": a checkpoint resumes only its own task
    iters: int
    out: Path
    resume: str | None = None       # a checkpoint path, "auto" (the latest in out, if any) or None
    checkpoint_every: int = 1000
    keep_every: int = 0             # also keep checkpoint_iter<N>.pt every N iterations (0: only the last)
    log_every: int = 50
    amp: bool = False
    clip_grad: float | None = None
    config: dict = field(default_factory=dict)
    eval_every: int = 0             # call ``evaluate`` every N iterations (the caller evaluates the end itself)

    def __post_init__(self):
        check_clip_grad(self.clip_grad)


def check_clip_grad(clip_grad: float | None) -> None:
    """None turns clipping off; 0 would too, silently, and a negative norm flips the gradients."""
    if clip_grad is not None and not (math.isfinite(clip_grad) and clip_grad > 0):
        raise ValueError(f"--clip-grad: expected a gradient norm > 0 (leave it out not to clip), got {clip_grad}")


def resolve_resume(resume: str | None, out: Path) -> Path | None:
    if resume is None:
        return None
    if resume == "auto":
        found = checkpoint.latest(out)
        if found is None:
            log.info("--resume auto: no checkpoint in %s yet, starting from scratch", out)
        return found
    return Path(resume)


def run(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, make_loader: Callable[[int], Iterable],
        loss_fn: Callable[[nn.Module, object, torch.device], torch.Tensor], settings: LoopSettings,
        ctx: Context, evaluate: Callable[[int], object] | None = None) -> int:
    """Train ``model`` (DDP-wrapped or not) from iteration 0, or from the checkpoint ``settings.resume`` names,
    to ``settings.iters``. ``make_loader(start)`` gives the batches from iteration ``start`` on; ``loss_fn(model,
    batch, device)`` the scalar loss of one batch; ``evaluate(iteration)``, if given, runs on every process every
    ``settings.eval_every`` iterations before the end. Returns the last iteration done."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    out = settings.out
    module = unwrap(model)
    amp = settings.amp and ctx.device.type == "cuda"
    if settings.amp and not amp:
        log.warning("--amp works on CUDA only; training in fp32 on %s", ctx.device)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=amp)

    start = 0
    resume_path = resolve_resume(settings.resume, out)
    if resume_path is not None:
        start = resume(resume_path, module, optimizer, scheduler, scaler, settings, ctx)
    if start >= settings.iters:
        log.info("nothing to do: the checkpoint is at iteration %d of %d", start, settings.iters)
        return start

    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        for p in checkpoint.remove_stale_temporaries(out):
            log.info("removed %s, left by an interrupted write", p)

    def check_finite(iteration: int) -> None:
        """A finite loss can still come with an overflowing update: never let NaN weights replace the last good
        checkpoint, which is what a resume with gentler settings needs. All ranks check (BatchNorm statistics
        are per rank) and agree, so that they stop together."""
        bad = [name for name, t in module.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if all_reduce_sum(torch.tensor([len(bad)], device=ctx.device), ctx).item():
            where = bad[0] if bad else "a tensor of another process"
            raise FloatingPointError(f"{where} is not finite after iteration {iteration} (not saved): {DIVERGED}")

    def save(iteration: int) -> None:
        state = checkpoint.make_checkpoint(settings.task, iteration, module.state_dict(), optimizer.state_dict(),
                                           scheduler.state_dict(), scaler.state_dict(), settings.config)
        if settings.keep_every and iteration % settings.keep_every == 0:
            checkpoint.save(out / checkpoint.numbered_name(iteration), state)
        checkpoint.save(out / checkpoint.LAST, state)

    model.train()
    began, window_start, window_loss, window_n = time.perf_counter(), time.perf_counter(), 0.0, 0
    with batches_of(make_loader(start)) as batches, stop_requests() as received, logging_redirect_tqdm(), tqdm(
            total=settings.iters, initial=start, desc=settings.task, unit="it",
            disable=None if ctx.is_main else True, dynamic_ncols=True) as bar:  # None: on a terminal only
        for iteration in range(start, settings.iters):
            batch = next(batches)
            lr = optimizer.param_groups[0]["lr"]
            with torch.autocast(ctx.device.type, dtype=torch.float16, enabled=amp):
                loss = loss_fn(model, batch, ctx.device)
            # Every rank sees the same mean loss and stop requests, so all of them stop together.
            shared = torch.stack([loss.detach().float(), torch.tensor(float(len(received)), device=loss.device)])
            total_loss, stop_requested = all_reduce_sum(shared, ctx).tolist()
            mean_loss = total_loss / ctx.world_size
            if not math.isfinite(mean_loss):
                raise NonFiniteLossError(iteration + 1, mean_loss, lr)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if settings.clip_grad is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), settings.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()

            done = iteration + 1
            window_loss, window_n = window_loss + mean_loss, window_n + 1
            bar.update(1)
            bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.4g}", refresh=False)
            if ctx.is_main and (done % settings.log_every == 0 or done == settings.iters):
                now = time.perf_counter()
                rate = window_n / (now - window_start)
                log.info("iter %d/%d  loss %.4f  lr %.5g  %.2f it/s  eta %s", done, settings.iters,
                         window_loss / window_n, lr, rate, _duration((settings.iters - done) / rate))
                window_start, window_loss, window_n = now, 0.0, 0
            keep = settings.keep_every and done % settings.keep_every == 0
            if done % settings.checkpoint_every == 0 or keep or done == settings.iters or stop_requested:
                check_finite(done)
                if ctx.is_main:
                    save(done)
            if stop_requested and done < settings.iters:
                raise Stopped(received[0] if received else signal.SIGTERM, done, out / checkpoint.LAST)
            if evaluate is not None and done % settings.eval_every == 0 and done < settings.iters:
                evaluate(done)
    if ctx.is_main:
        log.info("trained iterations %d-%d in %s; checkpoint %s", start + 1, settings.iters,
                 _duration(time.perf_counter() - began), out / checkpoint.LAST)
    return settings.iters


def resume(path: Path, module: nn.Module, optimizer: torch.optim.Optimizer, scheduler, scaler: torch.amp.GradScaler,
           settings: LoopSettings, ctx: Context) -> int:
    """Load the checkpoint at ``path`` into the training state; returns its iteration."""
    state = checkpoint.load(path, settings.task)
    start = state["iteration"]
    if ctx.is_main:
        report_setting_changes(state["config"], settings.config)
    load_model_state(module, state, path, settings.config)
    rescheduled = load_optimization_state(optimizer, scheduler, state["optimizer"], state["scheduler"], start)
    load_scaler_state(scaler, state["scaler"])
    checkpoint.set_rng_state(state["rng"])
    if ctx.is_main:
        lr = optimizer.param_groups[0]["lr"]
        log.info("resumed from %s at iteration %d (lr %.6g)", path, start, lr)
        if rescheduled:
            log.warning("the optimizer and learning-rate schedule follow this run's settings, not the checkpoint's: "
                        "lr %.6g at iteration %d (the checkpoint's schedule had %.6g)", lr, start,
                        state["optimizer"]["param_groups"][0]["lr"])
    return start


def report_setting_changes(saved: dict, current: dict) -> None:
    """Warn about the settings a resumed run changes, apart from those that only say how it runs."""
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))

    def listed(keys: list[str]) -> str:
        return ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys)

    differ = [k for k in changed if k not in RUN_ONLY_SETTINGS | NUMERICS_SETTINGS]
    if differ:
        log.warning("resuming with different settings than the checkpoint's: %s", listed(differ))
    numerics = [k for k in changed if k in NUMERICS_SETTINGS]
    if numerics:
        log.warning("resuming on another device or thread count (%s): the floating-point results depend on them, "
                    "so the run will not be bit-identical to an uninterrupted one", listed(numerics))


def load_model_state(module: nn.Module, state: dict, path: Path, config: dict) -> None:
    """The checkpoint's weights into ``module``; one made for another variant or data set (number of classes) is
    a ValueError naming the file and what differs, not load_state_dict's page of size mismatches."""
    problems = state_dict_mismatch(module.state_dict(), state["model"])
    if problems:
        saved = state["config"]
        differ = [f"{k} {saved.get(k)!r} (this run: {config.get(k)!r})" for k in ("variant", "dataset")
                  if saved.get(k) != config.get(k)]
        because = f": it was trained with {', '.join(differ)}" if differ else ""
        raise ValueError(f"checkpoint: {path} does not fit {type(module).__name__}({module.extra_repr()}){because}; "
                         f"{problems}")
    module.load_state_dict(state["model"])


def load_optimization_state(optimizer: torch.optim.Optimizer, scheduler, saved_optimizer: dict,
                            saved_scheduler: dict, start: int) -> bool:
    """Restore the optimizer's state (momentum) and the schedule at iteration ``start``. Where the optimizer
    settings or the schedule that the caller built from this run's settings (--lr, --iters, --power, ...) differ
    from the checkpoint's, this run's win: the new schedule is replayed to ``start``, as an uninterrupted run with
    these settings would have it. Returns whether they differed (if not, the resumption is exact)."""
    current_groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    current_schedule = copy.deepcopy(scheduler.state_dict())
    optimizer.load_state_dict(saved_optimizer)
    scheduler.load_state_dict(saved_scheduler)
    saved_groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    if _settings(saved_groups, PARAM_GROUP_PROGRESS) == _settings(current_groups, PARAM_GROUP_PROGRESS) and \
            _settings([saved_scheduler], SCHEDULER_PROGRESS) == _settings([current_schedule], SCHEDULER_PROGRESS):
        return False
    for group, settings in zip(optimizer.param_groups, current_groups):
        group.update(settings)
    scheduler.load_state_dict(current_schedule)  # a LambdaLR's factor object takes its saved settings back, too
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": this replays, it does not train
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(start):
            scheduler.step()
    return True


def _settings(states: list[dict], progress: set[str]) -> list[dict]:
    return [{k: v for k, v in state.items() if k not in progress} for state in states]


def load_scaler_state(scaler: torch.amp.GradScaler, saved: dict) -> None:
    """A run without --amp saves a disabled scaler's empty state, which an enabled scaler refuses to load: an
    --amp resumption of such a checkpoint starts loss scaling afresh."""
    if scaler.is_enabled() and not saved:
        log.info("the checkpoint was trained without --amp: loss scaling starts afresh")
        return
    scaler.load_state_dict(saved)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s"
