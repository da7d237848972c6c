"""LLVIP thermal (infrared) zero-shot classification: person vs background, the Bind papers' task.

ImageBind and LanguageBind score LLVIP as a two-class problem on crops of the infrared images:
pedestrian boxes against background regions. Two on-disk layouts:

1. the official release (bupt-ai-cz.github.io/LLVIP)::

       root/infrared/{train,test}/NAME.jpg     1280 x 1024 infrared frames (gray stored as RGB)
       root/Annotations/NAME.xml               Pascal-VOC boxes, <object><name>person</name><bndbox>...

   Every person box of at least ``min_box`` pixels is one ``people`` item; for each, one
   ``background`` item is a box of the same size at a seeded random place that overlaps no
   person (skipped if 50 draws all overlap). Crops are read lazily.

2. class folders (LanguageBind's reformatted release)::

       root/{split}/background/*.jpg    root/{split}/person/*.jpg    (split ``test`` falls back to ``val``)

Items are (1, S, S) gray crops in [0, 1] (``image_size``, shorter side resized, center crop).
Class names follow LanguageBind ("background", "people") with its thermal templates
("a thermal infrared photo of a {}.", ...); captions "a thermal infrared photo of {class}.".
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, EmptyDatasetError, RobustMMError, UnknownNameError
from .base import MultimodalDataset, ZeroShotTask
from .files import MissingDataError, choose_subset
from .media import load_gray, open_image, resize_crop
from .registry import register_dataset

logger = logging.getLogger(__name__)

__all__ = ["LLVIP_CLASSES", "THERMAL_TEMPLATES", "CropLoader", "load_llvip", "read_voc_boxes", "LLVIP_SPLITS"]

#: Side of the square frames/maps when ``image_size`` is not given (what the Bind towers take).
DEFAULT_IMAGE_SIZE = 224

LLVIP_CLASSES: tuple[str, ...] = ("background", "people")
THERMAL_TEMPLATES: tuple[str, ...] = ("a thermal infrared photo of a {}.", "a thermal infrared photo of the {}.",
                                      "a thermal infrared photo of many {}.",
                                      "a low resolution thermal infrared photo of the {}.")
Box = tuple[int, int, int, int]


def read_voc_boxes(path: Path, name: str = "person") -> list[Box]:
    """(xmin, ymin, xmax, ymax) of the ``name`` objects of a Pascal-VOC XML file."""
    try:
        tree = ET.parse(path)
        boxes = []
        for obj in tree.getroot().iter("object"):
            if (obj.findtext("name") or "").strip() != name:
                continue
            bb = obj.find("bndbox")
            boxes.append(tuple(int(float(bb.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax")))  # type: ignore[union-attr,arg-type]
    except FileNotFoundError:
        raise MissingDataError(f"llvip: annotation not found: {path}") from None
    except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
        raise CheckpointError(f"llvip: {path} is not a Pascal-VOC annotation ({e})") from None
    return boxes  # type: ignore[return-value]


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


class CropLoader:
    """Lazy loader: index -> (len, 1, size, size) gray crops (box None = the whole image)."""

    def __init__(self, items: list[tuple[str, Box | None]], size: int):
        self.items, self.size = list(items), int(size)

    def load_one(self, path: str, box: Box | None) -> torch.Tensor:
        if box is None:
            return load_gray(path, self.size)
        with open_image(path) as im:
            arr = np.asarray(im.convert("L").crop(box), dtype=np.float32) / 255.0
        return resize_crop(torch.from_numpy(arr.copy())[None], self.size)

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(index, dtype=torch.long).reshape(-1).tolist()
        if not idx:
            return torch.zeros(0, 1, self.size, self.size)
        return torch.stack([self.load_one(*self.items[i]) for i in idx])


def _release_items(root: Path, split: str, min_box: int, seed: int) -> list[tuple[str, Box | None, int]]:
    folder = root / "infrared" / split
    if not folder.is_dir():
        raise MissingDataError(f"llvip: infrared folder not found: {folder}")
    rng = np.random.default_rng(seed)
    out: list[tuple[str, Box | None, int]] = []
    for img in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        boxes = [b for b in read_voc_boxes(root / "Annotations" / f"{img.stem}.xml")
                 if b[2] - b[0] >= min_box and b[3] - b[1] >= min_box]
        if not boxes:
            continue
        with open_image(img) as im:
            w, h = im.size
        for b in boxes:
            out.append((str(img), b, 1))
            bw, bh = b[2] - b[0], b[3] - b[1]
            for _ in range(50):
                x, y = int(rng.integers(0, max(w - bw, 0) + 1)), int(rng.integers(0, max(h - bh, 0) + 1))
                cand = (x, y, x + bw, y + bh)
                if not any(_overlaps(cand, p) for p in boxes):
                    out.append((str(img), cand, 0))
                    break
    return out


def _folder_items(root: Path, split: str) -> list[tuple[str, Box | None, int]]:
    for s in [split] + (["val"] if split == "test" else []):
        base = root / s
        if (base / "person").is_dir() or (base / "background").is_dir():
            return [(str(p), None, c) for c, sub in ((0, "background"), (1, "person"))
                    for p in sorted((base / sub).glob("*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    raise MissingDataError(f"llvip: neither infrared/{split}/ + Annotations/ nor {split}/{{person,background}}/ under {root}")


#: split names; the item counts depend on the boxes (or crops) on disk, so they are known at load only
LLVIP_SPLITS: dict[str, int | None] = {"train": None, "test": None, "val": None}


@register_dataset("llvip", "LLVIP thermal zero-shot person vs background (infrared/ + Annotations/ of the release, under root=)",
                  needs_root=True, splits=LLVIP_SPLITS)
def load_llvip(
    *,
    split: str = "test",
    n: int | None = None,
    seed: int | None = None,
    root: str | Path | None = None,
    image_size: int | None = None,
    min_box: int = 16,
    templates: tuple[str, ...] = THERMAL_TEMPLATES,
    **_: Any,
) -> MultimodalDataset:
    """LLVIP person/background crops (see the module docstring for the two layouts)."""
    image_size = DEFAULT_IMAGE_SIZE if image_size is None else int(image_size)
    if split not in LLVIP_SPLITS:
        raise UnknownNameError("llvip split", split, LLVIP_SPLITS)
    if root is None:
        raise RobustMMError("llvip needs root=DIR holding infrared/{train,test}/ and Annotations/ (the LLVIP release)")
    root = Path(root).expanduser()
    release = (root / "infrared").is_dir()
    items = _release_items(root, split, min_box, 0) if release else _folder_items(root, split)
    if not items:
        raise EmptyDatasetError(f"llvip: no person boxes / crops for split {split!r} under {root}")
    index, seed = choose_subset(len(items), n, seed, f"llvip/{split}")
    items = [items[i] for i in index.tolist()]
    labels = torch.tensor([c for *_, c in items], dtype=torch.long)
    captions = [[f"a thermal infrared photo of {LLVIP_CLASSES[c]}."] for *_, c in items]
    logger.info("loaded llvip/%s: %d crops (%d people) from %s", split, len(items), int(labels.sum()), root)
    return MultimodalDataset(
        name="llvip", split=split, captions=captions,
        loaders={"thermal": CropLoader([(p, b) for p, b, _ in items], image_size)},
        tasks={"thermal": ZeroShotTask(labels, LLVIP_CLASSES, tuple(templates), "LLVIP person vs background")},
        seed=seed, meta={"image_size": int(image_size), "layout": "release" if release else "class folders"},
    )
