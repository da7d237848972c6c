"""A manifest of media files with captions and optional labels (JSONL or CSV), any modality.

JSONL, one object per line; CSV with a header row::

    {"path": "media/dog1.jpg", "captions": ["a dog on grass.", "a brown dog."], "label": "dog"}
    path,caption,label
    media/dog1.jpg,a dog on grass.,dog
    media/dog1.jpg,a brown dog.,dog          <- rows of one path are one item with two captions

Columns: ``path`` (also ``file``, ``filename``, ``media``; option ``path=COL``), ``captions`` (a
list) or ``caption`` / ``text`` (option ``caption=COL``), ``label`` (optional; a class name or an
index into ``classes=FILE``; option ``label=COL``). Relative paths are relative to the
manifest's folder. Every item is scored for retrieval against its captions, and, with labels,
zero-shot over the sorted label names (or the ``classes`` file). ``modality`` defaults to the
one the first file's extension says. A row whose file does not exist is a one-line error naming
the manifest line (``skip_bad`` skips it and counts it).

``--data manifest:FILE`` (a ``.jsonl`` or ``.csv``), or ``manifest:DIR`` holding
``manifest.jsonl`` or ``manifest.csv``.
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, EmptyDatasetError, RobustMMError
from .base import MultimodalDataset
from .decode import EXTENSIONS
from .files import MissingDataError
from .options import fill_captions, read_classes
from .registry import register_dataset
from .stream import as_bool, build_dataset, decode_options, read_templates

__all__ = ["load_manifest", "read_manifest", "guess_modality"]

log = logging.getLogger(__name__)

_PATH_COLS = ("path", "file", "filename", "media", "image", "audio", "video")
_CAPTION_COLS = ("captions", "caption", "text", "txt")


def guess_modality(path: str) -> str:
    """The modality a file extension (or a folder of frames) says."""
    p = Path(path)
    if p.is_dir():
        return "video"
    ext = p.suffix.lower()
    for m in ("image", "audio", "video", "pointcloud"):
        if ext in EXTENSIONS[m]:
            return m
    raise RobustMMError(f"cannot tell the modality of {path} from its extension: pass modality=")


def _manifest_file(root: str | Path) -> Path:
    p = Path(root).expanduser()
    if p.is_dir():
        for name in ("manifest.jsonl", "manifest.csv"):
            if (p / name).is_file():
                return p / name
        raise MissingDataError(f"manifest: no manifest.jsonl or manifest.csv in {p} (or name the file: manifest:FILE)")
    if not p.is_file():
        raise MissingDataError(f"manifest: no such file: {p}")
    return p


def read_manifest(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) of a JSONL or CSV manifest; malformed lines are one-line errors."""
    rows: list[tuple[int, dict[str, Any]]] = []
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        for i, row in enumerate(csv.DictReader(text.splitlines()), start=2):
            rows.append((i, dict(row)))
    else:
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CheckpointError(f"manifest {path} line {i}: not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise CheckpointError(f"manifest {path} line {i}: expected an object, got {type(row).__name__}")
            rows.append((i, row))
    if not rows:
        raise EmptyDatasetError(f"manifest {path} has no rows")
    return rows


def _column(row: dict[str, Any], chosen: str | None, choices: tuple[str, ...]) -> str | None:
    if chosen:
        return chosen
    return next((c for c in choices if c in row), None)


def _group_rows(file: Path, rows: list[tuple[int, dict[str, Any]]], pcol: str, ccol: str | None, lcol: str | None,
                skip: bool) -> tuple[list[str], dict[str, dict[str, Any]], int]:
    """The manifest's items in first-seen order: rows naming one file are one item with all their
    captions (and the last label given). A row whose file does not exist is a one-line error naming
    the line, or with ``skip`` a logged, counted skip. Returns (paths, items by path, skipped)."""
    order: list[str] = []
    items: dict[str, dict[str, Any]] = {}
    skipped = 0
    for line, row in rows:
        media = str(row.get(pcol) or "").strip()
        full = (file.parent / media) if media and not Path(media).is_absolute() else Path(media)
        if not media or not full.exists():
            msg = f"manifest {file} line {line}: {'no ' + pcol if not media else f'{media} points nowhere ({full} not found)'}"
            if not skip:
                raise MissingDataError(msg)
            log.warning("skipped: %s", msg)
            skipped += 1
            continue
        key = str(full)
        item = items.setdefault(key, {"captions": [], "label": None, "line": line})
        if key not in order:
            order.append(key)
        caps = row.get(ccol) if ccol else None
        caps = caps if isinstance(caps, list) else [caps] if caps not in (None, "") else []
        item["captions"] += [str(c).strip() for c in caps if str(c).strip()]
        if lcol and row.get(lcol) not in (None, ""):
            item["label"] = str(row[lcol]).strip()
    return order, items, skipped


def _manifest_labels(file: Path, labelled: list[str], classes: Any) -> tuple[list[int], list[str]]:
    """Label values as class indices and the class names: the sorted values, or the ``classes``
    file or list (a value is a class name there, or else a digit string indexing it)."""
    if classes is not None:
        classnames = read_classes(classes)
        index = {c: i for i, c in enumerate(classnames)}
        try:
            labels = [int(v) if v.isdigit() and v not in index else index[v] for v in labelled]
        except KeyError as e:
            raise CheckpointError(f"manifest {file}: label {e.args[0]!r} is not in the classes file") from None
    else:
        classnames = sorted(set(labelled))
        labels = [classnames.index(v) for v in labelled]
    if any(not 0 <= y < len(classnames) for y in labels):
        raise CheckpointError(f"manifest {file}: a label index is outside the {len(classnames)} classes")
    return labels, classnames


def load_manifest(*, split: str = "test", n: int | None = None, seed: int | None = None, root: str | None = None,
                  modality: str | None = None, path: str | None = None, caption: str | None = None,
                  label: str | None = None, classes: Any = None, templates: Any = None, skip_bad: Any = False,
                  workers: Any = None, size: Any = 224, sample_rate: Any = 16000, seconds: Any = None, frames: Any = 8,
                  points: Any = 1024) -> MultimodalDataset:
    """A manifest dataset (see the module docstring)."""
    if root is None:
        raise RobustMMError("manifest needs a file: manifest:FILE.jsonl as --data or [run] dataset "
                            "(or --root DIR holding manifest.jsonl)")
    skip = as_bool(skip_bad, "skip_bad")
    file = _manifest_file(root)
    rows = read_manifest(file)
    pcol = _column(rows[0][1], path, _PATH_COLS)
    ccol = _column(rows[0][1], caption, _CAPTION_COLS)
    lcol = label or ("label" if "label" in rows[0][1] else None)
    if pcol is None or pcol not in rows[0][1]:
        raise CheckpointError(f"manifest {file}: no path column ({', '.join(_PATH_COLS)}; or path=COLUMN)")
    order, items, skipped = _group_rows(file, rows, pcol, ccol, lcol, skip)
    if not order:
        raise EmptyDatasetError(f"manifest {file}: no rows with an existing file ({skipped} skipped)")
    modality = modality or guess_modality(order[0])
    labelled = [items[k]["label"] for k in order]
    labels = classnames = None
    if any(v is not None for v in labelled):
        missing = [items[k]["line"] for k in order if items[k]["label"] is None]
        if missing:
            raise CheckpointError(f"manifest {file} line {missing[0]}: no {lcol} (label every row, or none)")
        labels, classnames = _manifest_labels(file, labelled, classes)
    first = read_templates(templates, modality)[0]
    captions = fill_captions([items[k]["captions"] for k in order], labels, classnames, first,
                             lambda i: f"manifest {file} line {items[order[i]]['line']}: no caption and no label for {order[i]}")
    return build_dataset(name="manifest", split=split, modality=modality, sources=order, captions=captions, labels=labels,
                         classnames=classnames, templates=templates,
                         opts=decode_options(size, sample_rate, seconds, frames, points),
                         n=n, seed=seed, skip_bad=skip, workers=workers, what=f"manifest {file}", skipped=skipped,
                         meta={"root": str(file), **({"classes": len(classnames)} if classnames else {})})


register_dataset("manifest", "a JSONL/CSV list of media files with captions and optional labels (manifest:FILE)",
                 needs_root=True)(load_manifest)
