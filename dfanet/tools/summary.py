"""Parameter and multiply-accumulate counts per variant, next to the paper's Table 5 figures."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..model import DFANet
from ..variants import VARIANTS, get_variant


@dataclass(frozen=True)
class Summary:
    variant: str
    height: int
    width: int
    params_m: float          # all parameters, millions
    attention_params_m: float  # of which the three FC attentions' 1000-wide layers
    gmacs: float             # multiply-accumulates of convolutions and matmuls, billions
    paper_gflops: float
    paper_params_m: float


def summarize(variant: str, height: int | None = None, width: int | None = None, num_classes: int = 19) -> Summary:
    """Count DFANet ``variant`` at ``height`` x ``width`` (default: the paper's input size for the variant).

    MACs come from torch.utils.flop_counter, which counts convolutions and matrix products (2 FLOPs per MAC; we
    report MACs, the unit real-time segmentation papers call "FLOPs"). ReLU, BN, additions, pooling and bilinear
    resizing are not counted, as in the paper's convention.
    """
    spec = get_variant(variant)
    height, width = height or spec.paper_input[0], width or spec.paper_input[1]
    model = DFANet(num_classes, variant).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, height, width))
    params = sum(p.numel() for p in model.parameters())
    attention = sum(p.numel() for name, p in model.named_parameters() if ".fca." in name)
    return Summary(variant, height, width, params / 1e6, attention / 1e6, counter.get_total_flops() / 2e9,
                   spec.paper_gflops, spec.paper_params_m)


def summary_table(rows: list[Summary]) -> str:
    """A Markdown table of ``rows``."""
    lines = [
        "| variant | input | params (M) | of which FC attention (M) | GMACs | paper GFLOPs | paper params (M) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.variant} | {r.height}x{r.width} | {r.params_m:.2f} | {r.attention_params_m:.2f} | {r.gmacs:.2f} | "
            f"{r.paper_gflops:.1f} | {r.paper_params_m:.1f} |"
        )
    return "\n".join(lines)


def default_rows() -> list[Summary]:
    """Each variant at the paper's input size for it."""
    return [summarize(name) for name in VARIANTS]
