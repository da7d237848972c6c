"""Progress bars that appear only on a terminal, and progress lines for log files.

A bar on a redirected stderr fills log files with carriage returns and escape codes, so every
bar in robustmm goes through :func:`tqdm` here: the same signature as ``tqdm.auto.tqdm``, but
disabled unless stderr is a TTY (set ``ROBUSTMM_PROGRESS=1`` to force bars on, ``0`` off).
Long loops over a few slow steps (the cells of ``robustmm run``) go through :func:`steps`: a bar
on a terminal, otherwise one line per finished step on the ``robustmm.progress`` logger, which
logs at INFO unless configured otherwise, so a redirected run still shows where it is.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm as _tqdm

T = TypeVar("T")
log = logging.getLogger(__name__)
if log.level == logging.NOTSET:  # the CLI's default level is WARNING: progress lines show anyway
    log.setLevel(logging.INFO)


def bars_wanted() -> bool:
    """Whether progress bars should be drawn (stderr is a terminal, unless overridden)."""
    forced = os.environ.get("ROBUSTMM_PROGRESS")
    if forced in ("0", "1"):
        return forced == "1"
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def tqdm(*args: Any, disable: bool = False, **kwargs: Any) -> Any:
    """``tqdm.auto.tqdm`` that is off when stderr is not a terminal (see module docstring)."""
    return _tqdm(*args, disable=disable or not bars_wanted(), **kwargs)


def steps(items: Iterable[T], desc: str, *, name: Callable[[T], str] = str, enabled: bool = True) -> Iterator[T]:
    """Yield ``items`` while showing progress: a bar (the current item's ``name`` beside it) when
    :func:`bars_wanted`, otherwise one INFO line on ``robustmm.progress`` as each item finishes
    (its name, its seconds, how many are left), so a run redirected to a file is not silent.

    ``enabled=False`` or ``ROBUSTMM_PROGRESS=0`` shows nothing. An item counts as finished when
    the next one is asked for (a loop that raises or breaks logs no line for its last item)."""
    items = list(items)
    if not enabled or os.environ.get("ROBUSTMM_PROGRESS") == "0":
        yield from items
        return
    if bars_wanted():
        bar = _tqdm(items, desc=desc)
        for item in bar:
            bar.set_postfix_str(name(item))
            yield item
        return
    start = time.perf_counter()
    for i, item in enumerate(items):
        t0 = time.perf_counter()
        yield item
        now = time.perf_counter()
        log.info("%s: %s done in %.1fs (%d/%d, %d left, %.0fs elapsed)", desc, name(item), now - t0, i + 1,
                 len(items), len(items) - i - 1, now - start)
