"""Output folders: checked before any work, and one run at a time.

* :func:`check_writable_dir` / :func:`check_writable_file` find out at once (by creating and
  removing a probe file) whether a command will be able to write its outputs, so a bad ``--out``
  is a one-line error before minutes of evaluation rather than after. The probe is an unnamed
  file (``O_TMPFILE``), so a process killed while probing leaves nothing behind; where the file
  system has none, it is a named ``.robustmm-probe.XXXXXXXX.tmp`` locked (``flock``) until it is
  removed, a name that :func:`robustmm.persist.sweep_stale_temps` removes once its lock is free,
  so the next atomic write into the folder sweeps the probe of a killed process.
* :class:`FolderLock` is an OS-level lock (``fcntl.flock``) on ``DIR/.robustmm.lock``, held for a
  whole ``robustmm run``. The kernel releases it when the process exits or crashes, so a stale
  lock file never blocks a later run; the pid, host and start time written inside name the holder.

Base layer: imports only :mod:`robustmm.errors`.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import string
import tempfile
import time
from pathlib import Path
from typing import Any

from .errors import RobustMMError

LOCK_NAME = ".robustmm.lock"
#: the named probe's prefix (with mkstemp's 8 characters and ``.tmp``: a persist temp-file name)
PROBE_PREFIX = ".robustmm-probe."
#: unnamed temp files (Linux); 0 where the platform has none, and then the probe is named
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)


class OutputError(RobustMMError):
    """An output path that cannot be created or written."""


class FolderLockedError(RobustMMError):
    """An output folder that another live robustmm process is writing to."""


def check_writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) if needed and prove it writable with a probe file.

    Raises :class:`OutputError` (one line) when it is a file, lies below a file, or cannot be
    created or written; returns the folder as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        _probe(path)
    except OSError as e:
        raise OutputError(f"{what} {path} cannot be written: {e.strerror or e}") from None
    return path


def _probe(folder: Path) -> None:
    """Create a file in ``folder`` and remove it (OSError if it cannot be created), leaving
    nothing behind even if this process is killed meanwhile (see the module docstring)."""
    if _O_TMPFILE:
        try:
            os.close(os.open(folder, _O_TMPFILE | os.O_WRONLY, 0o600))  # unnamed: gone with its last fd
            return
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):  # no O_TMPFILE on this file system
                raise
    fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, suffix=".tmp", dir=folder)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a sweeper leaves a locked probe alone
        os.unlink(probe)
    except FileNotFoundError:
        pass  # swept before the lock was taken: it was created, which is all a probe proves
    finally:
        os.close(fd)


def check_writable_file(path: str | Path, what: str = "output file") -> Path:
    """Check, before any work, that ``path`` can be written: its folder is created and probed,
    and ``path`` itself must not be a folder. Nothing is left behind but the folder."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder, not a file")
    try:
        check_writable_dir(path.parent, "its folder")
    except OutputError as e:
        raise OutputError(f"{what} {path} cannot be written: {e}") from None
    return path


def fill_template(path: str, **fields: Any) -> str:
    """Fill the ``{model}``-style fields of an output path (values made path-safe).

    Only plain ``{name}`` fields are filled: attribute or index access (``{model.__class__}``,
    ``{model[0]}``), conversions (``{model!r}``) and format specs (``{model:>99}``) reach into the
    value rather than name a field, so they are one-line errors, and so is an unknown field
    (listing the known ones) or an unbalanced brace. ``{{`` and ``}}`` are literal braces.
    """
    known = " ".join("{" + k + "}" for k in fields)
    out = []
    try:
        parts = list(string.Formatter().parse(path))
    except ValueError as e:
        raise OutputError(f"--out {path!r}: {e}; fields are {known} (write {{{{ and }}}} for braces)") from None
    for literal, name, spec, conversion in parts:
        out.append(literal)
        if name is None:
            continue
        if name not in fields or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            plain = name.split(".", 1)[0].split("[", 1)[0] in fields
            why = "only plain fields are filled, not" if plain else "unknown template field"
            raise OutputError(f"--out {path!r}: {why} {shown}; use {known}")
        out.append(str(fields[name]).replace("/", "_").replace(":", "_"))
    return "".join(out)


def _holder(lock_path: Path) -> dict[str, Any]:
    try:
        return json.loads(lock_path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


class FolderLock:
    """``with FolderLock(dir, wait=False):`` -- exclusive use of an output folder.

    Without ``wait`` a folder locked by another live process raises :class:`FolderLockedError`
    naming the holder's pid, host and start time; with ``wait`` it blocks until the lock is free.
    """

    def __init__(self, folder: str | Path, *, wait: bool = False):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.wait = wait
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        """Take the lock (see the class docstring); returns self."""
        check_writable_dir(self.folder)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            flags = fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB
            fcntl.flock(fd, flags)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputError(f"cannot lock {self.path}: {e.strerror or e}") from None
            h = _holder(self.path)
            who = f"pid {h.get('pid', '?')} on {h.get('host', '?')} since {h.get('started', '?')}"
            raise FolderLockedError(f"{self.folder} is in use by another robustmm run ({who}); "
                                    "wait for it, or pass --wait to queue behind it") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock back (the lock file stays; an unlocked file blocks nobody)."""
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
