"""Hugging Face ``datasets`` tables on disk: a dataset saved with ``save_to_disk``, or local
parquet / arrow files (optional extra ``hf``: ``pip install 'robustmm[hf]'``). Nothing is downloaded.

``--data hf:DIR`` where DIR is a ``save_to_disk`` folder (a ``DatasetDict``'s split is chosen by
``--split``), a folder of ``*.parquet`` or ``*.arrow`` files, or one such file. Columns by option:
``media=COL`` (default: the first of image, img, jpg, png, audio, video, points, pointcloud),
``text=COL`` (captions: a string or a list of strings; default text, caption, captions,
sentences), ``label=COL`` (default label; a ``ClassLabel`` gives the class names, string labels
are sorted, ``classes=FILE`` names integer labels). Image and audio cells are read as their
stored bytes and decoded by robustmm (:mod:`robustmm.data.decode`), row by row as batches are
asked for.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError, EmptyDatasetError, RobustMMError
from .base import MultimodalDataset
from .decode import LazySource
from .files import MissingDataError
from .options import fill_captions, read_classes
from .registry import register_dataset
from .stream import as_bool, build_dataset, decode_options, read_templates

__all__ = ["TableCell", "load_hf", "open_table"]

_MEDIA = ("image", "img", "jpg", "png", "audio", "video", "points", "pointcloud")
_TEXT = ("text", "caption", "captions", "sentences", "txt")
_MODALITY = {"image": "image", "img": "image", "jpg": "image", "png": "image", "audio": "audio", "video": "video",
             "points": "pointcloud", "pointcloud": "pointcloud"}


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise RobustMMError("the hf loader needs the datasets package: pip install 'robustmm[hf]'") from None
    return datasets


def open_table(root: Path, split: str) -> Any:
    """The ``datasets.Dataset`` at ``root`` (see the module docstring)."""
    ds_mod = _datasets()
    if not root.exists():
        raise MissingDataError(f"hf: no such file or folder: {root}")
    try:
        if root.is_dir() and ((root / "dataset_info.json").is_file() or (root / "dataset_dict.json").is_file()):
            ds = ds_mod.load_from_disk(str(root))
            if isinstance(ds, ds_mod.DatasetDict):
                if split not in ds:
                    raise MissingDataError(f"hf: {root} has no split {split!r} (splits: {', '.join(ds)})")
                ds = ds[split]
            return ds
        files = [root] if root.is_file() else sorted(root.glob("*.parquet")) or sorted(root.glob("*.arrow"))
        if not files:
            raise EmptyDatasetError(f"hf: {root} is no save_to_disk folder and holds no *.parquet or *.arrow files")
        if files[0].suffix == ".parquet":
            return ds_mod.Dataset.from_parquet([str(f) for f in files], keep_in_memory=False)
        return ds_mod.concatenate_datasets([ds_mod.Dataset.from_file(str(f)) for f in files])
    except RobustMMError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets and pyarrow raise many kinds
        raise CheckpointError(f"hf: cannot read {root}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None


class TableCell(LazySource):
    """One media cell of a table, read (undecoded bytes, or a list of numbers as .npy) on demand."""

    def __init__(self, table: Any, row: int, column: str, ext: str):
        self.table, self.row, self.column = table, int(row), column
        self.name = f"{column}[{row}]{ext}"

    def read(self) -> bytes:
        value = self.table[self.row][self.column]
        if isinstance(value, dict):
            if value.get("bytes"):
                return bytes(value["bytes"])
            if value.get("path") and Path(value["path"]).is_file():
                return Path(value["path"]).read_bytes()
            return b""
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        buf = io.BytesIO()
        np.save(buf, np.asarray(value, dtype=np.float32))
        return buf.getvalue()


def _ext(ds: Any, column: str, modality: str) -> str:
    """The extension that tells the decoder a cell's format (from its stored path, else a default)."""
    first = ds[0][column]
    if isinstance(first, dict) and first.get("path"):
        suffix = Path(first["path"]).suffix.lower()
        if suffix:
            return suffix
    if isinstance(first, dict) and first.get("bytes"):
        head = bytes(first["bytes"][:12])
        return ".png" if head.startswith(b"\x89PNG") else ".wav" if head.startswith(b"RIFF") else \
            ".flac" if head.startswith(b"fLaC") else ".mp4" if head[4:8] == b"ftyp" else ".jpg"
    return {"pointcloud": ".npy", "audio": ".wav", "video": ".mp4"}.get(modality, ".png")


def _hf_labels(ds: Any, label: str, classes: Any) -> tuple[list[int], list[str]]:
    """The label column as class indices and the class names: string labels are sorted; integer
    labels are named by a ``ClassLabel`` feature, else by ``classes``, else by their number
    (``classes`` given for a ``ClassLabel`` column renames its classes)."""
    values = ds[label]
    names = getattr(ds.features[label], "names", None)
    if isinstance(values[0], str):
        classnames = sorted(set(values))
        labels = [classnames.index(v) for v in values]
    else:
        labels = [int(v) for v in values]
        classnames = list(names) if names else read_classes(classes) if isinstance(classes, (str, Path)) or classes \
            else [str(i) for i in range(max(labels) + 1)]
    if names and classes is not None:
        classnames = read_classes(classes)
    if any(not 0 <= y < len(classnames) for y in labels):
        raise CheckpointError(f"hf: a {label} value is outside the {len(classnames)} class names")
    return labels, classnames


def _hf_columns(ds: Any, root: str, media: str | None, text: str | None, label: str | None) -> tuple[str, str | None, str | None]:
    """The media, text and label columns: the ones asked for, else the first of the usual names;
    one asked for but absent is a one-line error listing the table's columns."""
    cols = list(ds.column_names)
    media = media or next((c for c in _MEDIA if c in cols), None)
    if media not in cols:
        raise CheckpointError(f"hf: no media column {media or ''} in {root} (columns: {', '.join(cols)}; pass media=COLUMN)")
    text = text or next((c for c in _TEXT if c in cols), None)
    label = label or ("label" if "label" in cols else None)
    for what, col in (("text", text), ("label", label)):
        if col is not None and col not in cols:
            raise CheckpointError(f"hf: no {what} column {col!r} in {root} (columns: {', '.join(cols)})")
    return media, text, label


def load_hf(*, split: str = "test", n: int | None = None, seed: int | None = None, root: str | None = None,
            modality: str | None = None, media: str | None = None, text: str | None = None, label: str | None = None,
            classes: Any = None, templates: Any = None, skip_bad: Any = False, workers: Any = None, size: Any = 224,
            sample_rate: Any = 16000, seconds: Any = None, frames: Any = 8, points: Any = 1024) -> MultimodalDataset:
    """A Hugging Face dataset on disk (see the module docstring)."""
    if root is None:
        raise RobustMMError("hf needs a folder: hf:DIR as --data or [run] dataset "
                            "(a save_to_disk folder, or parquet/arrow files)")
    ds_mod = _datasets()
    ds = open_table(Path(root).expanduser(), split)
    media, text, label = _hf_columns(ds, root, media, text, label)
    modality = modality or _MODALITY.get(media, "image")
    feature = ds.features[media]
    if isinstance(feature, (ds_mod.Image, ds_mod.Audio)) or type(feature).__name__ == "Video":
        ds = ds.cast_column(media, type(feature)(decode=False))
    if len(ds) == 0:
        raise EmptyDatasetError(f"hf: {root} has no rows")
    labels, classnames = _hf_labels(ds, label, classes) if label is not None else (None, None)
    first = read_templates(templates, modality)[0]
    raw = ds[text] if text is not None else [None] * len(ds)
    captions = fill_captions([[str(c).strip() for c in (t if isinstance(t, list) else [t]) if c is not None and str(c).strip()]
                              for t in raw], labels, classnames, first,
                             lambda i: f"hf: row {i} of {root} has no {text or 'text'} and no label")
    ext = _ext(ds, media, modality)
    sources = [TableCell(ds, i, media, ext) for i in range(len(ds))]
    return build_dataset(name="hf", split=split, modality=modality, sources=sources, captions=captions, labels=labels,
                         classnames=classnames, templates=templates,
                         opts=decode_options(size, sample_rate, seconds, frames, points),
                         n=n, seed=seed, skip_bad=as_bool(skip_bad, "skip_bad"), workers=workers, what=f"hf {root}",
                         meta={"root": str(Path(root).expanduser()), "media": media})


register_dataset("hf", "a Hugging Face dataset on disk: save_to_disk folder, parquet or arrow files (hf:DIR; extra hf)",
                 needs_root=True)(load_hf)
