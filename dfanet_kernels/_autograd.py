"""The compiled ops are inference-only: a backward through one raises, naming the op.

Without a registered autograd formula PyTorch's fallback lets ``backward()`` run and gives the op's inputs no
gradient, with only a one-time warning: training through them would be silently wrong. (The Triton ops, built
with torch.library.triton_op, already raise.) Train with the plain nn.Module path, as DFANet does in train().
"""

from __future__ import annotations

import torch

from .backends import compiled_library
from .constants import OPS


def _refuse(op: str):
    def backward(ctx, *grads):
        raise RuntimeError(
            f"dfanet::{op} is inference-only and has no backward: train the unfused modules (DFANet in train(), or "
            "backend='reference'), or run the fused op under torch.no_grad()"
        )

    return backward


def _register() -> None:
    for op in OPS:
        torch.library.register_autograd(f"dfanet::{op}", _refuse(op))


if compiled_library() is not None:
    _register()
