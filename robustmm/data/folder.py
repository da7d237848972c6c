"""Class folders of any continuous modality, in torchvision's ImageFolder layout::

    ROOT/CLASS_A/001.png         ROOT/test/CLASS_A/001.png     (a split folder per split:
    ROOT/CLASS_B/xyz.jpg    or   ROOT/train/CLASS_A/...         train, val, test, ...)

Loaders ``imagefolder`` (.png .jpg), ``audiofolder`` (.wav .flac, resampled to ``sample_rate``),
``videofolder`` (a folder of frames per video, or .mp4 through the ``bind`` extra),
``depthfolder`` and ``thermalfolder`` (16-bit or 8-bit PNG), ``pointcloudfolder`` (.npy .ply .off
.txt), and ``folder`` with ``modality=``. Class folders directly under ROOT are the ``test`` split.

Options (keywords, or ``,KEY=VALUE`` in the dataset spec ``imagefolder:ROOT,classes=names.txt``):
``classes`` (a file: one class name per line in sorted folder order, or ``FOLDER: name`` /
``FOLDER<TAB>name`` lines),
``templates`` (a file of prompt templates with ``{}``; default one per modality), ``skip_bad``,
``workers`` (decoding processes), ``size``, ``sample_rate``, ``seconds``, ``frames``, ``points``
(``native`` keeps each item's own size / rate / count; mixed ones are then refused).
"""
from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

from ..errors import EmptyDatasetError, RobustMMError
from .base import MultimodalDataset
from .decode import EXTENSIONS
from .files import MissingDataError
from .registry import register_dataset
from .stream import as_bool, build_dataset, decode_options, read_lines

__all__ = ["load_folder", "scan_classes", "split_folder", "class_names"]

log = logging.getLogger(__name__)

_SPLIT_NAMES = ("train", "val", "validation", "test")


def split_folder(root: str | Path, split: str, what: str) -> Path:
    """The folder of ``split``: ``ROOT/SPLIT`` if it exists, else ROOT itself for ``test`` when
    ROOT has no split folders (class folders directly under it)."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise MissingDataError(f"{what}: no such folder: {base}")
    if (base / split).is_dir():
        return base / split
    splits = [d.name for d in base.iterdir() if d.is_dir() and d.name in _SPLIT_NAMES]
    if splits:
        raise MissingDataError(f"{what}: no split folder {base / split} (found {', '.join(sorted(splits))})")
    if split != "test":
        raise MissingDataError(f"{what}: no split folder {base / split}; class folders directly under {base} are split 'test'")
    return base


def _is_item(path: Path, modality: str) -> bool:
    if path.name.startswith("."):
        return False
    if modality == "video" and path.is_dir():
        return True
    return path.is_file() and path.suffix.lower() in EXTENSIONS[modality]


def scan_classes(folder: Path, modality: str, *, skip_bad: bool, what: str) -> tuple[list[str], list[str], list[int]]:
    """(class folder names, item paths, labels) of a class-folder split; an empty folder or an
    empty class is a one-line error (an empty class is kept without items under ``skip_bad``)."""
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise EmptyDatasetError(f"{what}: {folder} has no class folders (layout: {folder}/CLASS/FILE)")
    paths: list[str] = []
    labels: list[int] = []
    for c, name in enumerate(classes):
        items = sorted(p for p in (folder / name).iterdir() if _is_item(p, modality))
        if not items:
            msg = f"{what}: class folder {folder / name} has no {modality} files ({' '.join(EXTENSIONS[modality])})"
            if not skip_bad:
                raise EmptyDatasetError(msg)
            log.warning("%s: kept as a class without items", msg)
        paths += [str(p) for p in items]
        labels += [c] * len(items)
    return classes, paths, labels


def class_names(folders: list[str], classes: Any, what: str) -> list[str]:
    """Display names of class folders: from a file (one per folder in sorted order, or ``FOLDER:
    name`` / ``FOLDER<TAB>name`` lines), else the folder names with ``_`` as spaces."""
    if classes is None:
        return [f.replace("_", " ") for f in folders]
    lines = read_lines(classes, "classes") if isinstance(classes, (str, Path)) else [str(c) for c in classes]
    pairs = {}
    for ln in lines:
        folder, sep, rest = ln.partition("\t") if "\t" in ln else ln.partition(":")
        if sep and rest.strip():
            pairs[folder.strip()] = rest
    if pairs and all(f in pairs for f in folders):
        return [pairs[f].strip() for f in folders]
    if len(lines) != len(folders):
        raise RobustMMError(f"{what}: the classes file has {len(lines)} names for {len(folders)} class folders "
                            "(one name per folder in sorted order, or 'FOLDER: name' lines)")
    return lines


def load_folder(*, split: str = "test", n: int | None = None, seed: int | None = None, root: str | None = None,
                modality: str = "image", classes: Any = None, templates: Any = None, skip_bad: Any = False,
                workers: Any = None, size: Any = 224, sample_rate: Any = 16000, seconds: Any = None, frames: Any = 8,
                points: Any = 1024, name: str | None = None) -> MultimodalDataset:
    """A class-folder dataset of one modality (see the module docstring)."""
    if modality not in EXTENSIONS:
        raise RobustMMError(f"folder: modality {modality!r} is not one of {', '.join(EXTENSIONS)}")
    name = name or f"{modality}folder"
    if root is None:
        raise RobustMMError(f"{name} needs a folder: {name}:DIR as --data or [run] dataset (or --root DIR)")
    skip = as_bool(skip_bad, "skip_bad")
    folder = split_folder(root, split, name)
    folders, paths, labels = scan_classes(folder, modality, skip_bad=skip, what=name)
    names = class_names(folders, classes, name)
    from .stream import read_templates

    first = read_templates(templates, modality)[0]
    return build_dataset(name=name, split=split, modality=modality, sources=paths,
                         captions=[[first.format(names[y])] for y in labels], labels=labels, classnames=names,
                         templates=templates, opts=decode_options(size, sample_rate, seconds, frames, points), n=n,
                         seed=seed, skip_bad=skip, workers=workers, what=f"{name} {folder}",
                         meta={"root": str(Path(root).expanduser()), "classes": len(names)})


def _register(modality: str) -> None:
    name = f"{modality}folder"

    @register_dataset(name, f"class folders of {modality} files, ImageFolder layout ({name}:DIR or --root DIR)",
                      needs_root=True)
    def loader(**kw: Any) -> MultimodalDataset:
        if "modality" in kw:
            raise RobustMMError(f"{name} reads {modality}: drop modality= (or use the loader 'folder')")
        return load_folder(modality=modality, name=name, **kw)

    loader.__name__ = f"load_{name}"
    sig = inspect.signature(load_folder)  # the options it takes, for the registry's check of spec options
    loader.__signature__ = sig.replace(parameters=[p for k, p in sig.parameters.items() if k not in ("modality", "name")])


for _m in EXTENSIONS:
    _register(_m)

register_dataset("folder", "class folders of any modality (folder:DIR,modality=audio)", needs_root=True)(load_folder)
