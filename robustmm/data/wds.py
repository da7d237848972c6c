"""webdataset tar shards, the format of open_clip's training data and CLIP_benchmark's test sets.

A shard is a plain tar whose members are ``KEY.EXT``: the files of one sample share their key
(``000042.jpg``, ``000042.txt``, ``000042.cls``). Read with the standard :mod:`tarfile` module
(the ``wds`` extra needs nothing more): the shards are indexed once, each member's offset kept,
and a sample's media bytes are read from its shard only when its batch is decoded.

``--data wds:DIR`` (every ``*.tar`` in DIR, in name order; or ``DIR/SPLIT/*.tar`` when such a
folder exists) or ``wds:SHARD.tar``. Fields: the media member by ``media=EXT`` (default: the
first of jpg, jpeg, png, webp, wav, flac, mp4, npy, ply present), captions from ``txt`` (one per
line; option ``caption=EXT``), the label from ``cls`` (an integer; option ``label=EXT``). Class
names and templates follow CLIP_benchmark: ``classnames.txt`` and
``zeroshot_classification_templates.txt`` next to the shards, or ``classes=`` / ``templates=``.
"""
from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, EmptyDatasetError, RobustMMError
from .base import MultimodalDataset
from .decode import LazySource
from .files import MissingDataError
from .manifest import guess_modality
from .options import fill_captions, read_classes
from .registry import register_dataset
from .stream import as_bool, build_dataset, decode_options, read_templates

__all__ = ["TarMember", "index_shards", "load_wds"]

_MEDIA = ("jpg", "jpeg", "png", "webp", "wav", "flac", "mp4", "npy", "ply")


class TarMember(LazySource):
    """One member of a tar shard, read by offset when decoded."""

    def __init__(self, shard: str, offset: int, size: int, name: str):
        self.shard, self.offset, self.size, self.name = shard, int(offset), int(size), name

    def read(self) -> bytes:
        with open(self.shard, "rb") as f:
            f.seek(self.offset)
            return f.read(self.size)


def index_shards(shards: list[Path]) -> list[dict[str, TarMember]]:
    """Samples of the shards in order: ``{extension: member}`` per key (keys split at the first
    dot of the member's base name, as webdataset does)."""
    samples: dict[tuple[str, str], dict[str, TarMember]] = {}
    for shard in shards:
        try:
            with tarfile.open(shard, "r:") as tar:
                for m in tar:
                    if not m.isfile():
                        continue
                    folder, _, base = m.name.rpartition("/")
                    key, dot, ext = base.partition(".")
                    if dot:
                        samples.setdefault((str(shard), f"{folder}/{key}"), {})[ext.lower()] = TarMember(
                            str(shard), m.offset_data, m.size, f"{shard}:{m.name}")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise CheckpointError(f"wds: cannot read tar shard {shard}: {e}") from None
    return list(samples.values())


def _shards(root: Path, split: str) -> tuple[list[Path], Path]:
    if root.is_file():
        return [root], root.parent
    if not root.is_dir():
        raise MissingDataError(f"wds: no such file or folder: {root}")
    folder = root / split if (root / split).is_dir() else root
    shards = sorted(folder.glob("*.tar"))
    if not shards:
        raise EmptyDatasetError(f"wds: no *.tar shards in {folder}")
    return shards, folder


def _with_media(samples: list[dict[str, TarMember]], ext: str, skip: bool) -> tuple[list[dict[str, TarMember]], int]:
    """The samples that hold a ``.ext`` media member, and how many did not: one without it is a
    one-line error naming it, or with ``skip`` dropped and counted."""
    if all(ext in s for s in samples):
        return samples, 0
    bad = next(s for s in samples if ext not in s)
    if not skip:
        raise CheckpointError(f"wds: sample {next(iter(bad.values())).name} has no .{ext} member")
    return [s for s in samples if ext in s], sum(ext not in s for s in samples)


def _wds_labels(samples: list[dict[str, TarMember]], label: str, classes: Any) -> tuple[list[int], list[str]]:
    """The ``.label`` members as class indices and the class names (``classes``, else the numbers)."""
    try:
        labels = [int(s[label].read().decode().strip()) for s in samples]
    except (ValueError, UnicodeError):
        raise CheckpointError(f"wds: a .{label} member is not an integer class index") from None
    classnames = read_classes(classes) if classes else [str(i) for i in range(max(labels) + 1)]
    if any(not 0 <= y < len(classnames) for y in labels):
        raise CheckpointError(f"wds: a .{label} index is outside the {len(classnames)} class names")
    return labels, classnames


def load_wds(*, split: str = "test", n: int | None = None, seed: int | None = None, root: str | None = None,
             modality: str | None = None, media: str | None = None, caption: str = "txt", label: str = "cls",
             classes: Any = None, templates: Any = None, skip_bad: Any = False, workers: Any = None, size: Any = 224,
             sample_rate: Any = 16000, seconds: Any = None, frames: Any = 8, points: Any = 1024) -> MultimodalDataset:
    """webdataset shards (see the module docstring)."""
    if root is None:
        raise RobustMMError("wds needs shards: wds:DIR or wds:SHARD.tar as --data or [run] dataset")
    skip = as_bool(skip_bad, "skip_bad")
    shards, folder = _shards(Path(root).expanduser(), split)
    samples = index_shards(shards)
    if not samples:
        raise EmptyDatasetError(f"wds: no samples in {', '.join(map(str, shards))}")
    ext = media or next((e for e in _MEDIA if e in samples[0]), None)
    if ext is None:
        raise CheckpointError(f"wds: sample {next(iter(samples[0].values())).name} has no media member "
                              f"({', '.join(_MEDIA)}; or media=EXT)")
    samples, skipped = _with_media(samples, ext, skip)
    modality = modality or guess_modality(f"x.{ext}")
    if classes is None and (folder / "classnames.txt").is_file():
        classes = folder / "classnames.txt"
    if templates is None and (folder / "zeroshot_classification_templates.txt").is_file():
        templates = folder / "zeroshot_classification_templates.txt"
    labels, classnames = _wds_labels(samples, label, classes) if all(label in s for s in samples) else (None, None)
    first = read_templates(templates, modality)[0]
    raw = [[c.strip() for c in s[caption].read().decode("utf-8", "replace").splitlines() if c.strip()] if caption in s else []
           for s in samples]
    captions = fill_captions(raw, labels, classnames, first,
                             lambda i: f"wds: sample {samples[i][ext].name} has no .{caption} caption and no .{label} label")
    return build_dataset(name="wds", split=split, modality=modality, sources=[s[ext] for s in samples], captions=captions,
                         labels=labels, classnames=classnames, templates=templates,
                         opts=decode_options(size, sample_rate, seconds, frames, points), n=n, seed=seed, skip_bad=skip,
                         workers=workers, what=f"wds {folder}", skipped=skipped,
                         meta={"root": str(folder), "shards": len(shards)})


register_dataset("wds", "webdataset tar shards: KEY.jpg/.wav/... with .txt captions and .cls labels (wds:DIR)",
                 needs_root=True)(load_wds)
