"""The DFANet configurations of the paper (Li et al., CVPR 2019, Table 1 and Table 5)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str
    # Per encoder stage (enc2, enc3, enc4): the three separable-conv widths of a block, and the number of blocks.
    stages: tuple[tuple[tuple[int, int, int], int], ...]
    stem_channels: int = 8          # conv1: 3x3, stride 2
    attention_hidden: int = 1000    # FC attention keeps the ImageNet classifier's 1000 outputs
    decoder_channels: int = 32
    # What the paper reports (Table 5): input size, GFLOPs, parameters in millions.
    paper_input: tuple[int, int] = (1024, 1024)
    paper_gflops: float = 0.0
    paper_params_m: float = 0.0

    @property
    def stage_channels(self) -> tuple[int, int, int]:
        """Output channels of enc2, enc3, enc4."""
        return tuple(widths[-1] for widths, _ in self.stages)


_XCEPTION_A = (((12, 12, 48), 4), ((24, 24, 96), 6), ((48, 48, 192), 4))
_XCEPTION_B = (((8, 8, 32), 4), ((16, 16, 64), 6), ((32, 32, 128), 4))

VARIANTS: dict[str, Variant] = {
    "A": Variant("A", _XCEPTION_A, paper_gflops=3.4, paper_params_m=7.8),
    "B": Variant("B", _XCEPTION_B, paper_gflops=2.1, paper_params_m=4.8),
    # A' is network A run on 512 x 1024 input (the paper's 160 FPS row): same weights, smaller input.
    "A'": Variant("A'", _XCEPTION_A, paper_input=(512, 1024), paper_gflops=1.7, paper_params_m=7.8),
}


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"variant: expected one of {sorted(VARIANTS)}, got {name!r}")
    return VARIANTS[name]


def feature_map_sizes(height: int, width: int, levels: int = 7) -> list[tuple[int, int]]:
    """The input size, then the map size after each of `levels` stride-2 steps (conv1 halves the input, then every
    encoder stage of every backbone halves again): entry k is the 1/2**k map, rounded as the model's 3x3 convs do."""
    from dfanet_kernels import conv_output_size  # here, not at the top: the command line's parser imports this module

    sizes = [(height, width)]
    for _ in range(levels):
        sizes.append(tuple(conv_output_size(s, 2) for s in sizes[-1]))
    return sizes
