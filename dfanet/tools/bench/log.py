"""Progress lines of the harness, on stderr (stdout carries the report)."""

from __future__ import annotations

import sys
import time


def log(message: str, verbose: bool = True) -> None:
    """``[dfanet bench HH:MM:SS] message``, written so that a running progress bar stays intact."""
    if not verbose:
        return
    line = f"[dfanet bench {time.strftime('%H:%M:%S')}] {message}"
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the GPU machines need not have tqdm (an 'app' extra); no bar runs there
        print(line, file=sys.stderr, flush=True)
    else:
        tqdm.write(line, file=sys.stderr)
