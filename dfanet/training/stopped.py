"""The exception a training run ends with when a signal stopped it, in a module of its own without torch, so that the
command line can catch it without importing the training machinery first."""

from __future__ import annotations

import signal
from pathlib import Path


class Stopped(Exception):
    """Training stopped on a signal after saving a checkpoint; ``exit_code`` is the shell's 128 + signal number."""

    def __init__(self, signum: int, iteration: int, path: Path):
        super().__init__(f"stopped by {signal.Signals(signum).name} after iteration {iteration}; checkpoint {path}; "
                         "continue with --resume auto")
        self.exit_code = 128 + signum
