"""Training checkpoints: written atomically, loaded with weights_only=True, checked before use.

A checkpoint is a dict of tensors and plain Python values only (RNG states as tensors and ints), so that
``torch.load(weights_only=True)`` reads it and never runs code from the file.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from .io import atomic_path

FORMAT = "dfanet-checkpoint"
VERSION = 1
LAST = "checkpoint_last.pt"
_NUMBERED = re.compile(r"checkpoint_iter(\d+)\.pt")


def numbered_name(iteration: int) -> str:
    return f"checkpoint_iter{iteration:07d}.pt"


def rng_state() -> dict:
    """torch, CUDA, numpy and Python ``random`` generator states as tensors and ints."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: str | os.PathLike, obj: dict) -> None:
    """``torch.save`` through a temporary file + fsync + rename: ``path`` is never seen half-written."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def make_checkpoint(task: str, iteration: int, model: dict, optimizer: dict, scheduler: dict, scaler: dict,
                    config: dict) -> dict:
    return {"format": FORMAT, "version": VERSION, "task": task, "iteration": iteration, "model": model,
            "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler, "rng": rng_state(), "config": config}


def load(path: str | os.PathLike, task: str) -> dict:
    """A training checkpoint of ``task`` ("segmentation" or "pretrain"); errors name the file and the problem."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint: no such file: {path}") from None
    except Exception as err:  # truncated zip, pickle errors, objects weights_only refuses
        raise ValueError(
            f"checkpoint: {path} is not a readable PyTorch checkpoint (corrupt or truncated?): {err}") from err
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ValueError(f"checkpoint: {path} is a plain state_dict (model weights only), not a training "
                             "checkpoint: it has no optimizer, schedule or iteration to resume from. Pass it as "
                             "--weights to start a new run from these weights.")
        raise ValueError(f"checkpoint: {path} is not a dfanet training checkpoint (no format {FORMAT!r} marker)")
    if obj.get("version") != VERSION:
        raise ValueError(f"checkpoint: {path} has format version {obj.get('version')}, this dfanet reads {VERSION}")
    if obj.get("task") != task:
        raise ValueError(f"checkpoint: {path} is a {obj.get('task')!r} checkpoint, expected a {task!r} one")
    return obj


def latest(out: str | os.PathLike) -> Path | None:
    """The newest checkpoint in ``out``: checkpoint_last.pt, else the highest-numbered one; None if none."""
    out = Path(out)
    if (out / LAST).is_file():
        return out / LAST
    numbered = [(int(m.group(1)), p) for p in out.glob("checkpoint_iter*.pt") if (m := _NUMBERED.fullmatch(p.name))]
    return max(numbered)[1] if numbered else None


def remove_stale_temporaries(out: str | os.PathLike) -> list[Path]:
    """Temporary files that a killed run left behind (atomic_path cleans up only when it can run)."""
    stale = list(Path(out).glob(".*.pt.*.tmp"))  # atomic_path's temporary names for *.pt files
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
