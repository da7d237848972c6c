"""Crash-safe writes: every file robustmm writes goes through a temp file, fsync and rename.

A reader (or a resumed run) therefore sees either the previous file or the complete new one,
never a torn write. The weights + JSON sidecar pair used by TinyBind, calibration heads and the
patch is written here too, so all three get the same atomicity and the same load errors.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import CheckpointError, MissingWeightsError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def append_lines_durably(path: str | Path, lines: list[str]) -> None:
    """Append complete lines (given without their newlines) in one ``write``, then fsync.

    One ``write`` on an ``O_APPEND`` descriptor: a process killed around it leaves either none or
    all of the lines (a regular-file write is not interrupted half-way by a signal), so a group of
    records that belong together (one job cell's rows) lands as a whole. Only a power loss can
    leave a torn tail, which :func:`robustmm.records.read_jsonl` reports.
    """
    if not lines:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line.rstrip("\n") + "\n" for line in lines).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:  # a short write (full disk, huge buffer) continues where it stopped
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def save_weights(path: str | Path, tensors: dict[str, Any], config: dict[str, Any]) -> tuple[Path, Path]:
    """Save ``tensors`` as ``PATH.safetensors`` and ``config`` as ``PATH.json``, each atomically.

    ``path`` may end in ``.safetensors`` or have no suffix. The JSON is written last, so a crash
    between the two leaves no sidecar that points at missing weights.
    """
    from safetensors.torch import save

    wpath, cpath = weight_paths(path)
    atomic_write_bytes(wpath, save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}))
    atomic_write_text(cpath, json.dumps(config, indent=2) + "\n")
    return wpath, cpath


def weight_paths(path: str | Path) -> tuple[Path, Path]:
    """(``.safetensors``, ``.json``) paths of a weights file given with or without its suffix."""
    path = Path(path)
    base = path.with_suffix("") if path.suffix == ".safetensors" else path
    return base.with_suffix(".safetensors"), base.with_suffix(".json")


def load_weights(path: str | Path, what: str = "weights") -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, config) saved by :func:`save_weights`; one-line errors for every way it fails."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

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
    if not isinstance(config, dict):
        raise CheckpointError(f"{cpath}: {what} config must be a JSON object")
    try:
        tensors = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{wpath}: corrupted or truncated safetensors file ({first})") from None
    return tensors, config
