"""DFANet: Deep Feature Aggregation for Real-Time Semantic Segmentation (Li et al., CVPR 2019), with fused kernels."""

from .variants import VARIANTS, Variant, get_variant

__all__ = ["DFANet", "VARIANTS", "Variant", "get_variant"]


def __getattr__(name: str):
    # DFANet (and with it torch) on first use: `dfanet --help` imports this package and needs neither.
    if name == "DFANet":
        from .model import DFANet

        return DFANet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
