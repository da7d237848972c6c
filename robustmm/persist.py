"""Crash-safe writes: every file robustmm writes goes through a temp file, fsync and rename.

A reader (or a resumed run) therefore sees either the previous file or the complete new one,
never a torn write. The weights + JSON sidecar pair used by TinyBind, calibration heads and the
patch is written here too, so all three get the same atomicity and the same load errors.

Temp files are named ``.NAME.XXXXXXXX.tmp`` next to their target and ``flock``-ed by their writer
until the rename. A writer killed in between leaves its temp file behind; the next atomic write
into that folder removes every such file whose lock is free (its writer is dead: the kernel drops
the lock with the process), so leftovers never pile up and a live writer's file is never touched.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

from .errors import CheckpointError, MissingWeightsError

#: temp files of :func:`atomic_write_bytes` (mkstemp's 8 random characters), and the fixed
#: ``.NAME.safetensors.tmp`` of robustmm versions before the per-writer names
_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$|^\..+\.safetensors\.tmp$")
#: the sidecar key that ties a JSON sidecar to the exact bytes of its weights file
HASH_KEY = "weights_sha256"


def sweep_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temp files that killed writers left in ``folder``; return what was removed.

    A candidate is removed only when its lock can be taken (no live writer holds it) and the name
    still points at the file that was locked. Safe to run while other robustmm processes write
    into the same folder: their temp files are locked until renamed.
    """
    folder = Path(folder)
    removed = []
    try:
        names = [e.name for e in os.scandir(folder) if _TEMP.match(e.name)]
    except OSError:
        return removed
    for name in names:
        path = folder / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # gone already, a symlink or unreadable: not ours to judge
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live writer holds it
            now = os.stat(path, follow_symlinks=False)
            if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                os.unlink(path)
                removed.append(path)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def _locked_temp(path: Path) -> tuple[int, str]:
    """A new temp file next to ``path``, locked by this process (retried if swept before the lock)."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a sweeper may hold it for a moment: wait, then check
        try:
            st, now = os.fstat(fd), os.stat(tmp, follow_symlinks=False)
            if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                return fd, tmp
        except FileNotFoundError:
            pass
        os.close(fd)  # swept between mkstemp and flock: take another name


def file_mode() -> int:
    """The mode a new file gets under this process's umask (``0o666 & ~umask``), for files that
    are created private first (temp files) and must end up as shareable as any other output."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            umask = next((int(line.split()[1], 8) for line in f if line.startswith("Umask:")), None)
    except (OSError, ValueError, IndexError):
        umask = None
    if umask is None:  # no procfs: read the umask by setting it (and putting it straight back)
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def named_os_error(e: OSError, path: str | Path) -> OSError:
    """``e`` with the file it concerns, so every OS error (a full disk) names the file."""
    if e.filename is not None:
        return e
    named = type(e)(e.errno, e.strerror or str(e), str(path))
    named.__cause__ = e
    return named


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a locked temp file in the same folder, fsync and rename.

    Stale temp files of killed writers in that folder are removed first (see
    :func:`sweep_stale_temps`); this writer's own temp file stays locked until it is renamed. The
    file gets the umask's mode (:func:`file_mode`), not the temp file's private 0600; an OS error
    (a full disk) names ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_temps(path.parent)
        fd, tmp = _locked_temp(path)
    except OSError as e:
        raise named_os_error(e, path) from None
    try:
        with os.fdopen(fd, "wb") as f:  # closing it (after the rename) releases the lock
            os.fchmod(f.fileno(), file_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise named_os_error(e, path) from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def append_lines_durably(path: str | Path, lines: list[str]) -> None:
    """Append complete lines (given without their newlines) in one ``write`` under a lock, then fsync.

    One ``write`` on an ``O_APPEND`` descriptor: a process killed around it leaves either none or
    all of the lines (a regular-file write is not interrupted half-way by a signal), so a group of
    records that belong together (one job cell's rows) lands as a whole. Every writer holds an
    exclusive ``flock`` on the file while it appends, so concurrent writers (two `robustmm eval`
    into one file) keep every record; under that lock an unterminated last line (a power loss)
    is cut first, so appended lines start clean. An OS error (a full disk) names the file.
    """
    if not lines:
        return
    path = Path(path)
    data = "".join(line.rstrip("\n") + "\n" for line in lines).encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)  # the umask applies
    except OSError as e:
        raise named_os_error(e, path) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by close, or by the kernel if this process dies
        _cut_torn_tail(fd, path)
        view = memoryview(data)[os.write(fd, data):]  # one write of the bytes themselves ...
        while view:  # ... and a short one (full disk, huge buffer) continues where it stopped
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as e:
        raise named_os_error(e, path) from None
    finally:
        os.close(fd)


def _cut_torn_tail(fd: int, path: Path) -> None:
    """Truncate an unterminated last line (left by a crash) of the locked file ``fd``."""
    import logging

    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    start = max(0, size - (1 << 20))
    while True:  # the last newline, read backwards in 1 MiB pieces
        chunk = os.pread(fd, size - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0 or start == 0:
            keep = start + cut + 1 if cut >= 0 else 0
            break
        start = max(0, start - (1 << 20))
    logging.getLogger(__name__).warning("%s: removing a torn last line of %d bytes before appending", path, size - keep)
    os.ftruncate(fd, keep)


def save_weights(path: str | Path, tensors: dict[str, Any], config: dict[str, Any]) -> tuple[Path, Path]:
    """Save ``tensors`` as ``PATH.safetensors`` and ``config`` as ``PATH.json``, each atomically.

    ``path`` may end in ``.safetensors`` or have no suffix. Two renames cannot be one, so a kill
    between them leaves the new weights beside the previous sidecar: the sidecar therefore records
    the SHA-256 of the weights bytes it describes (``weights_sha256``), and :func:`load_weights`
    refuses a pair whose hashes differ instead of labelling weights with another run's config.
    """
    from safetensors.torch import save

    wpath, cpath = weight_paths(path)
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    atomic_write_bytes(wpath, data)
    atomic_write_text(cpath, json.dumps({**config, HASH_KEY: hashlib.sha256(data).hexdigest()}, indent=2) + "\n")
    return wpath, cpath


def weight_paths(path: str | Path) -> tuple[Path, Path]:
    """(``.safetensors``, ``.json``) paths of a weights file given with or without its suffix."""
    path = Path(path)
    if path.suffix == ".safetensors":  # keep a dotted stem whole: a.b.safetensors -> a.b.json
        return path, path.with_suffix(".json")
    return path.with_suffix(".safetensors"), path.with_suffix(".json")


def load_weights(path: str | Path, what: str = "weights") -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, config) saved by :func:`save_weights`; one-line errors for every way it fails.

    A sidecar with ``weights_sha256`` must match the weights bytes (else :class:`CheckpointError`:
    an interrupted save or a file of another run); the key is not part of the returned config.
    Sidecars written before the key existed have none and load as before, unchecked.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    wpath, cpath = weight_paths(path)
    for p in (wpath, cpath):
        if p.is_dir():
            raise CheckpointError(f"{p}: a directory, not a {what} file")
        if not p.exists():
            raise MissingWeightsError(f"{what} not found: {p}")
    try:
        config = json.loads(cpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cpath}: not valid JSON ({e})") from None
    except OSError as e:
        raise CheckpointError(f"{cpath}: cannot be read ({e.strerror or e})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{cpath}: {what} config must be a JSON object")
    try:
        data = wpath.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{wpath}: cannot be read ({e.strerror or e})") from None
    try:
        tensors = load(data)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{wpath}: corrupted or truncated safetensors file ({first})") from None
    want = config.pop(HASH_KEY, None)
    if want is not None and want != hashlib.sha256(data).hexdigest():
        raise CheckpointError(f"{cpath} does not describe {wpath} (its {HASH_KEY} is not the weights file's): "
                              "an interrupted save or files of two runs; save the weights again")
    return tensors, config
