"""COCO and Flickr30k image-text retrieval from Karpathy-split JSON files.

Annotation format (``dataset_coco.json`` / ``dataset_flickr30k.json`` of the Karpathy splits)::

    {"images": [{"filepath": "val2014",          # COCO only
                 "filename": "COCO_val2014_000000391895.jpg",
                 "split": "test" | "val" | "train" | "restval",
                 "sentences": [{"raw": "A man riding a bike."}, ...]}, ...]}

Images live under an image folder: ``image_root=`` if given, else ``root/images`` if it exists,
else ``root``; an item's file is ``image_root/filepath/filename`` (or ``image_root/filename``).
They are read lazily with PIL through ``MultimodalDataset.loaders["image"]``: shorter side
resized to ``image_size`` (bicubic, antialiased), center-cropped, float32 in [0, 1]. The item's
captions are its raw sentences (5 per image in the real data). Retrieval only: no zero-shot task.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, EmptyDatasetError, RobustMMError, UnknownNameError
from .base import MultimodalDataset
from .files import MissingDataError, choose_subset
from .registry import register_dataset

logger = logging.getLogger(__name__)

__all__ = ["ImageFileLoader", "load_karpathy", "load_coco", "load_flickr30k", "KARPATHY_SPLITS", "KARPATHY_SPLIT_SIZES"]

#: Split names; ``train`` is Karpathy's train + restval, as in the usual 113k COCO training set.
KARPATHY_SPLITS: dict[str, tuple[str, ...]] = {
    "test": ("test",),
    "val": ("val",),
    "train": ("train", "restval"),
    "restval": ("restval",),
}
_ANN_FILES = {"coco": "dataset_coco.json", "flickr30k": "dataset_flickr30k.json"}
#: images per split of each Karpathy JSON (fixed files; Flickr30k's has no restval images)
KARPATHY_SPLIT_SIZES: dict[str, dict[str, int | None]] = {
    "coco": {"test": 5000, "val": 5000, "train": 113_287, "restval": 30_504},
    "flickr30k": {"test": 1000, "val": 1014, "train": 29_000},
}


class ImageFileLoader:
    """Lazy image loader: index tensor -> (len, 3, size, size) float32 in [0, 1].

    A plain class (not a closure) so datasets can be pickled to DataLoader workers.
    """

    def __init__(self, paths: list[str], size: int):
        self.paths = list(paths)
        self.size = int(size)

    def load_one(self, path: str) -> torch.Tensor:
        from PIL import Image

        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                w, h = im.size  # torchvision Resize(int) + CenterCrop arithmetic
                s = self.size
                nw, nh = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
                if (nw, nh) != (w, h):
                    im = im.resize((nw, nh), Image.Resampling.BICUBIC)
                left, top = int(round((nw - s) / 2.0)), int(round((nh - s) / 2.0))
                im = im.crop((left, top, left + s, top + s))
                arr = np.asarray(im, dtype=np.uint8)
        except FileNotFoundError:
            raise MissingDataError(f"image file not found: {path}") from None
        except OSError as e:
            raise CheckpointError(f"cannot decode image {path}: {e}") from None
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(index, dtype=torch.long).reshape(-1).tolist()
        if not idx:
            return torch.zeros(0, 3, self.size, self.size)
        return torch.stack([self.load_one(self.paths[i]) for i in idx])

    def __len__(self) -> int:
        return len(self.paths)


def _resolve_image(image_root: Path, entry: dict[str, Any]) -> Path:
    name = entry["filename"]
    if entry.get("filepath"):
        nested = image_root / entry["filepath"] / name
        if nested.is_file() or not (image_root / name).is_file():
            return nested
    return image_root / name


def _locate(name: str, root: str | Path | None, ann_file: str | Path | None,
            image_root: str | Path | None) -> tuple[Path, Path]:
    """The annotation JSON and the image folder: given ones, else found under ``root`` (images in
    ``root/images`` when it exists, else ``root``); either missing is a one-line error."""
    if ann_file is None:
        if root is None:
            raise RobustMMError(
                f"{name} needs root=DIR containing {_ANN_FILES[name]} and the images (or ann_file= and image_root=)"
            )
        ann_file = Path(root).expanduser() / _ANN_FILES[name]
    ann_file = Path(ann_file).expanduser()
    if image_root is None:
        base = Path(root).expanduser() if root is not None else ann_file.parent
        image_root = base / "images" if (base / "images").is_dir() else base
    image_root = Path(image_root).expanduser()
    if not ann_file.is_file():
        raise MissingDataError(f"{name}: annotation file not found: {ann_file} (the Karpathy-split {_ANN_FILES[name]})")
    if not image_root.is_dir():
        raise MissingDataError(f"{name}: image folder not found: {image_root}")
    return ann_file, image_root


def _split_entries(name: str, ann_file: Path, split: str) -> list[dict[str, Any]]:
    """The JSON's image entries of ``split`` (``train`` includes ``restval``); a malformed file or
    an empty split is a one-line error."""
    try:
        with open(ann_file, encoding="utf-8") as f:
            ann = json.load(f)
        entries = [e for e in ann["images"] if e.get("split") in KARPATHY_SPLITS[split]]
        for e in entries:
            e["filename"]  # noqa: B018 - presence check
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{name}: {ann_file} is not a Karpathy-split JSON ({type(e).__name__}: {e})") from None
    if not entries:
        raise EmptyDatasetError(f"{name}: no images with split {split!r} in {ann_file}")
    return entries


def load_karpathy(
    name: str,
    *,
    split: str = "test",
    n: int | None = None,
    seed: int | None = None,
    root: str | Path | None = None,
    ann_file: str | Path | None = None,
    image_root: str | Path | None = None,
    image_size: int = 224,
    check_files: bool = True,
) -> MultimodalDataset:
    """A Karpathy-split retrieval dataset (``coco`` or ``flickr30k``).

    Args:
        split: ``test`` / ``val`` / ``train`` (train + restval) / ``restval`` (COCO only).
        n, seed: a seeded random subset of ``n`` items (default: the whole split).
        root: folder holding the JSON (``dataset_coco.json`` / ``dataset_flickr30k.json``) and images.
        ann_file: the JSON path, overriding ``root/<default name>``.
        image_root: the image folder, overriding ``root/images`` (or ``root``).
        image_size: output side length of the lazily loaded square images.
        check_files: verify every selected image exists up front (one ``stat`` each).
    """
    if name not in _ANN_FILES:
        raise UnknownNameError("Karpathy-split dataset", name, _ANN_FILES)
    if split not in KARPATHY_SPLIT_SIZES[name]:
        raise UnknownNameError(f"{name} split", split, KARPATHY_SPLIT_SIZES[name])
    if image_size <= 0:
        raise RobustMMError(f"image_size must be positive, got {image_size}")
    ann_file, image_root = _locate(name, root, ann_file, image_root)
    entries = _split_entries(name, ann_file, split)
    index, seed = choose_subset(len(entries), n, seed, f"{name}/{split}")
    entries = [entries[i] for i in index.tolist()]
    paths = [_resolve_image(image_root, e) for e in entries]
    if check_files:
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise MissingDataError(
                f"{name}: {len(missing)} of {len(paths)} images not found, e.g. {missing[0]} (image_root={image_root})"
            )
    captions = [[s["raw"].strip() for s in e.get("sentences", []) if str(s.get("raw", "")).strip()] for e in entries]
    logger.info("loaded %s/%s: %d images, %d captions from %s", name, split, len(entries), sum(map(len, captions)), ann_file)
    return MultimodalDataset(
        name=name,
        split=split,
        captions=captions,
        loaders={"image": ImageFileLoader([str(p) for p in paths], image_size)},
        seed=seed,
        meta={"image_size": int(image_size), "captions": int(sum(map(len, captions)))},
    )


@register_dataset("coco", "COCO Karpathy-split image-text retrieval (dataset_coco.json + images under root=)", needs_root=True,
                  splits=KARPATHY_SPLIT_SIZES["coco"])
def load_coco(
    *, split: str = "test", n: int | None = None, seed: int | None = None, root: str | None = None, **kw: Any
) -> MultimodalDataset:
    """COCO retrieval (Karpathy test split: 5000 images, 25k captions)."""
    return load_karpathy("coco", split=split, n=n, seed=seed, root=root, **kw)


@register_dataset("flickr30k", "Flickr30k Karpathy-split image-text retrieval (dataset_flickr30k.json + images under root=)",
                  needs_root=True, splits=KARPATHY_SPLIT_SIZES["flickr30k"])
def load_flickr30k(
    *, split: str = "test", n: int | None = None, seed: int | None = None, root: str | None = None, **kw: Any
) -> MultimodalDataset:
    """Flickr30k retrieval (Karpathy test split: 1000 images, 5000 captions)."""
    return load_karpathy("flickr30k", split=split, n=n, seed=seed, root=root, **kw)
