"""DFANet: Deep Feature Aggregation for Real-Time Semantic Segmentation (Li et al., CVPR 2019), with fused kernels."""

from .model import DFANet
from .variants import VARIANTS, Variant, get_variant

__all__ = ["DFANet", "VARIANTS", "Variant", "get_variant"]
