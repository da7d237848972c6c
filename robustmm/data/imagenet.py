"""ImageNet-1k zero-shot classification, from the usual class-folder layout::

    ROOT/val/n01440764/ILSVRC2012_val_00000293.JPEG       (after the usual valprep.sh)
    ROOT/train/n01440764/...                              (optional)
    ROOT/LOC_synset_mapping.txt                           (optional: "n01440764 tench, ..." lines)

Splits ``test`` and ``val`` are the 50,000 validation images (``ROOT/val``, or ROOT itself when
the synset folders are directly under it); ``train`` is ``ROOT/train``. Class ``i`` is the
``i``-th synset in sorted order -- the standard index -- so either all 1000 synset folders are
present, or a mapping file (``LOC_synset_mapping.txt`` in ROOT, or ``classes=FILE`` with one
wnid per line, first word) gives the order.

Class names and prompt templates are those the installed open_clip ships
(``open_clip.zero_shot_metadata``: ``IMAGENET_CLASSNAMES`` and the 80 ``OPENAI_IMAGENET_TEMPLATES``,
or ``templates=simple`` for its 7 ``SIMPLE_IMAGENET_TEMPLATES``, or a file), looked up at run time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CheckpointError, MissingWeightsError, RobustMMError
from .base import MultimodalDataset
from .files import MissingDataError
from .folder import scan_classes
from .registry import register_dataset
from .stream import as_bool, build_dataset, decode_options, read_lines, read_templates

__all__ = ["imagenet_metadata", "load_imagenet"]

_SPLIT_DIRS = {"test": "val", "val": "val", "train": "train"}


def imagenet_metadata(templates: str = "openai") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the 1000 class names, the prompt templates) of the installed open_clip; ``templates``:
    ``openai`` (80) or ``simple`` (7). Templates are open_clip's functions applied to ``{}``."""
    try:
        from open_clip import zero_shot_metadata as meta
    except ImportError:
        raise MissingWeightsError("imagenet class names come from open_clip: pip install open_clip_torch") from None
    table = {"openai": "OPENAI_IMAGENET_TEMPLATES", "simple": "SIMPLE_IMAGENET_TEMPLATES"}
    if templates not in table:
        raise RobustMMError(f"imagenet: templates={templates!r}: openai, simple, or a file of templates with {{}}")
    fns = getattr(meta, table[templates])
    return tuple(meta.IMAGENET_CLASSNAMES), tuple(f("{}") if callable(f) else str(f) for f in fns)


def _split_dir(root: Path, split: str) -> Path:
    if split not in _SPLIT_DIRS:
        raise RobustMMError(f"imagenet: split {split!r} is not one of {', '.join(_SPLIT_DIRS)}")
    if not root.is_dir():
        raise MissingDataError(f"imagenet: no such folder: {root}")
    folder = root / _SPLIT_DIRS[split]
    if folder.is_dir():
        return folder
    if split != "train" and any(d.is_dir() and d.name.startswith("n") and d.name[1:].isdigit() for d in root.iterdir()):
        return root
    raise MissingDataError(f"imagenet: no {folder} (the validation images sorted into synset folders, e.g. by valprep.sh)")


def _wnid_order(root: Path, classes: Any, folders: list[str]) -> list[str]:
    mapping = Path(classes).expanduser() if classes else root / "LOC_synset_mapping.txt"
    if classes or mapping.is_file():
        wnids = [ln.split()[0] for ln in read_lines(mapping, "imagenet synset mapping")]
        if len(wnids) != 1000:
            raise CheckpointError(f"imagenet: {mapping} lists {len(wnids)} synsets, not 1000")
        return wnids
    if len(folders) != 1000:
        raise MissingDataError(f"imagenet: {len(folders)} synset folders, not 1000; add LOC_synset_mapping.txt "
                               "(or classes=FILE, one wnid per line in class order) to index a subset")
    return folders


def load_imagenet(*, split: str = "test", n: int | None = None, seed: int | None = None, root: str | None = None,
                  templates: Any = "openai", classes: Any = None, skip_bad: Any = False, workers: Any = None,
                  size: Any = 224) -> MultimodalDataset:
    """ImageNet-1k validation (or train) images with open_clip's class names and templates."""
    if root is None:
        raise RobustMMError("imagenet needs its folder: imagenet:DIR as --data or [run] dataset (holding val/n01440764/...)")
    base = Path(root).expanduser()
    skip = as_bool(skip_bad, "skip_bad")
    folder = _split_dir(base, split)
    folders, paths, local = scan_classes(folder, "image", skip_bad=skip, what="imagenet")
    order = _wnid_order(base, classes, folders)
    index = {w: i for i, w in enumerate(order)}
    unknown = [f for f in folders if f not in index]
    if unknown:
        raise CheckpointError(f"imagenet: folder {folder / unknown[0]} is not an ImageNet-1k synset of the class order")
    names, openclip_templates = imagenet_metadata(templates if templates in ("openai", "simple") else "openai")
    temps = openclip_templates if templates in ("openai", "simple") else read_templates(templates, "image")
    labels = [index[folders[c]] for c in local]
    return build_dataset(name="imagenet", split=split, modality="image", sources=paths,
                         captions=[[f"a photo of a {names[y]}."] for y in labels], labels=labels, classnames=names,
                         templates=temps, opts=decode_options(size=size), n=n, seed=seed, skip_bad=skip, workers=workers,
                         what=f"imagenet {folder}", meta={"root": str(base), "classes": 1000, "templates": len(temps)})


register_dataset("imagenet", "ImageNet-1k zero-shot, val/SYNSET/*.JPEG, open_clip's class names and templates (imagenet:DIR)",
                 needs_root=True, splits={"test": 50_000, "val": 50_000, "train": 1_281_167})(load_imagenet)
