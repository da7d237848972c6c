"""Progress bars that appear only on a terminal.

A bar on a redirected stderr fills log files with carriage returns and escape codes, so every
bar in robustmm goes through :func:`tqdm` here: the same signature as ``tqdm.auto.tqdm``, but
disabled unless stderr is a TTY (set ``ROBUSTMM_PROGRESS=1`` to force bars on, ``0`` off).
"""
from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm as _tqdm


def bars_wanted() -> bool:
    """Whether progress bars should be drawn (stderr is a terminal, unless overridden)."""
    forced = os.environ.get("ROBUSTMM_PROGRESS")
    if forced in ("0", "1"):
        return forced == "1"
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def tqdm(*args: Any, disable: bool = False, **kwargs: Any) -> Any:
    """``tqdm.auto.tqdm`` that is off when stderr is not a terminal (see module docstring)."""
    return _tqdm(*args, disable=disable or not bars_wanted(), **kwargs)
