"""Loading ImageNet-pretrained Xception weights into DFANet's three backbones."""

from __future__ import annotations

import os
import pickle
import zipfile

import torch
from torch import nn


def read_state_dict(path: str | os.PathLike, option: str = "--weights") -> dict[str, torch.Tensor]:
    """A state_dict from ``path`` (bare, or under "model"/"state_dict" of a checkpoint), loaded with weights_only;
    errors name ``option``, the flag that gave the file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{option}: no such file: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{option}: {path} is a folder, expected a weights file (.pt)") from None
    except Exception as err:  # pickle/zip errors: say which file and why instead of a bare unpickling trace
        raise ValueError(f"{option}: {path} is not a readable PyTorch weights file: {unreadable_reason(path, err)}"
                         ) from err
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{option}: {path} does not hold a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def unreadable_reason(path: str | os.PathLike, err: Exception) -> str:
    """Why torch.load refused ``path``, in words: torch's own text for a file that is not a weights file at all is
    a pickle opcode number (KeyError 101) or a page of advice about weights_only."""
    if os.path.getsize(path) == 0:
        return "the file is empty"
    text = str(err)
    if isinstance(err, pickle.UnpicklingError) and "Unsupported global" in text:
        refused = text[text.index("Unsupported global"):].split(" was not")[0]
        return f"it holds Python objects, not only tensors, which weights_only loading refuses ({refused})"
    if zipfile.is_zipfile(path):
        return f"a damaged torch.save archive ({text.splitlines()[0] if text else type(err).__name__})"
    return "not a file written by torch.save (truncated, or another kind of file)"


def load_weights(model: nn.Module, path: str | os.PathLike, option: str = "--weights") -> None:
    """Load a whole model's weights (a state_dict, or a checkpoint holding one) into ``model``; a file made for
    another variant or number of classes is a ValueError naming the file, not a bare load_state_dict trace."""
    state = read_state_dict(path, option)
    problems = state_dict_mismatch(model.state_dict(), state)
    if problems:
        raise ValueError(f"{option}: {path} does not fit {type(model).__name__}({model.extra_repr()}): {problems}")
    model.load_state_dict(state)


def state_dict_mismatch(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> str:
    """What keeps ``theirs`` from loading where ``ours`` is (missing, unexpected and reshaped tensors, an example
    of each), or "" if it fits."""
    problems = []
    missing = [k for k in ours if k not in theirs]
    unexpected = [k for k in theirs if k not in ours]
    reshaped = [k for k in ours if k in theirs and theirs[k].shape != ours[k].shape]
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if reshaped:
        k = reshaped[0]
        problems.append(f"{len(reshaped)} of another shape (e.g. {k}: {tuple(theirs[k].shape)} in the file, "
                        f"{tuple(ours[k].shape)} here)")
    return "; ".join(problems)


def backbone_key_map(model: nn.Module) -> dict[str, str]:
    """Our parameter/buffer name -> the classifier's name, for conv1 and every backbone (all share one source)."""
    mapping = {}
    for name in model.state_dict():
        if name.startswith("conv1."):
            mapping[name] = name
        elif name.startswith("backbones."):
            _, _, rest = name.split(".", 2)  # backbones.<n>.<rest>
            if rest.startswith("stages."):
                mapping[name] = rest
            elif rest.startswith("fca.fc."):
                mapping[name] = rest.removeprefix("fca.")
    return mapping


def load_backbone_state(model: nn.Module, path: str | os.PathLike, option: str = "--backbone") -> dict[str, list[str]]:
    """See :meth:`dfanet.DFANet.load_pretrained_backbone`."""
    source = read_state_dict(path, option)
    if any(k.startswith("backbones.") for k in source):  # the classifier's names have no backbone index
        raise ValueError(f"{option}: {path} is a DFANet state_dict, not Xception classifier weights (use --weights)")
    target = model.state_dict()
    loaded, skipped = [], []
    updates = {}
    for ours, theirs in backbone_key_map(model).items():
        tensor = source.get(theirs)
        if tensor is not None and tensor.shape == target[ours].shape:
            updates[ours] = tensor
            loaded.append(ours)
        else:
            skipped.append(ours)
    if not loaded:
        raise ValueError(
            f"{option}: nothing in {path} matches the backbone (expected keys like 'conv1.0.weight', "
            f"'stages.0.0.sep1.depthwise.weight', 'fc.weight'; found e.g. {sorted(source)[:3]})"
        )
    # conv1 and backbone 1 have exactly the classifier's shapes: any miss there means another variant's file.
    first = [k for k in skipped if k.startswith(("conv1.", "backbones.0."))]
    if first:
        raise ValueError(
            f"{option}: {path} does not fit variant {model.variant.name!r}: {len(first)} tensors of the "
            f"first backbone are missing or shaped differently (e.g. {first[0]})"
        )
    model.load_state_dict(updates, strict=False)
    return {"loaded": loaded, "skipped": skipped}
