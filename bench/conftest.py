"""Speed comparisons of DFANet on CPU, run with ``pytest bench/`` (``pytest tests`` never collects them).

Options (see ``pytest bench/ --help``, group "dfanet bench"): ``--size HxW`` (default 512x1024; e.g. 1024x1024),
``--variant``, ``--batch``, ``--threads``, ``--rounds``, ``--op-rounds``, ``--candidates``, ``--bench-out``.

The readable tables (medians, and ratios measured side by side in interleaved rounds) are printed at the end of
the session and written to ``--bench-out``; pytest-benchmark's own table times each candidate on its own, one
after another, and is there for its tooling (``--benchmark-json``, ``--benchmark-compare``), not for ratios.

The slowest step is torch.compile's first compile, far quicker once inductor's on-disk cache is warm; leave
``compile`` out of ``--candidates`` to skip it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from dfanet.tools.cli import parse_size

_SUMMARY = pytest.StashKey[list]()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def pytest_addoption(parser):
    group = parser.getgroup("dfanet bench", "DFANet speed comparisons (bench/)")
    group.addoption("--size", type=parse_size, default=(512, 1024), help="input HxW (default 512x1024)")
    group.addoption("--variant", default="A", choices=["A", "B", "A'"], help="DFANet variant (default A)")
    group.addoption("--batch", type=_positive, default=1, help="images per forward (default 1)")
    group.addoption("--threads", type=_positive, default=2, help="CPU threads for every runtime (default 2)")
    group.addoption("--rounds", type=_positive, default=10,
                    help="interleaved whole-model rounds, also pytest-benchmark rounds per candidate (default 10)")
    group.addoption("--op-rounds", type=_positive, default=30, help="rounds per op benchmark (default 30)")
    group.addoption("--candidates", default=None,
                    help="comma-separated whole-model candidates (default all: eager, channels_last, compile, "
                         "onnxruntime, openvino, openvino_bf16, fused)")
    group.addoption("--bench-out", default=str(Path(__file__).parent / "out"),
                    help="where the Markdown/JSON/PNG reports go (default bench/out/)")


@dataclass(frozen=True)
class BenchConfig:
    variant: str
    height: int
    width: int
    batch: int
    threads: int
    rounds: int
    op_rounds: int
    candidates: str | None
    out_dir: Path


@pytest.fixture(scope="session")
def bench_config(pytestconfig) -> BenchConfig:
    height, width = pytestconfig.getoption("--size")
    return BenchConfig(
        variant=pytestconfig.getoption("--variant"),
        height=height,
        width=width,
        batch=pytestconfig.getoption("--batch"),
        threads=pytestconfig.getoption("--threads"),
        rounds=pytestconfig.getoption("--rounds"),
        op_rounds=pytestconfig.getoption("--op-rounds"),
        candidates=pytestconfig.getoption("--candidates"),
        out_dir=Path(pytestconfig.getoption("--bench-out")),
    )


@pytest.fixture(scope="session")
def bench_summary(pytestconfig):
    """``add(title, text)``: queue a section for the end-of-session summary (printed after pytest-benchmark's)."""

    def add(title: str, text: str) -> None:
        pytestconfig.stash.setdefault(_SUMMARY, []).append((title, text))

    return add


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for title, text in config.stash.get(_SUMMARY, []):
        terminalreporter.write_sep("=", title)
        terminalreporter.write_line(text)
