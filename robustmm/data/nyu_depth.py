"""NYU-Depth v2 scene classification from depth maps (10 classes, the Bind papers' depth task).

Two on-disk layouts, both with 16-bit PNG depth maps in millimetres (``value / 1000`` metres,
0 = no reading), the form of the nicr-scene-analysis-datasets extraction LanguageBind cites:

1. class folders (LanguageBind's reformatted release, ImageNet style)::

       root/{split}/{scene}/*.png       or root/data/{split}/{scene}/*.png
                                         scene folders such as bathroom, dining_room, others

2. the nicr extraction: one label file per depth map::

       root/{split}/depth/NAME.png
       root/{split}/scene/NAME.txt      the NYU scene type, e.g. "living_room", "study"

Splits ``train``, ``test`` and ``val`` name the folders; ``test`` reads the ``test`` folder, or
``val`` where only that exists (LanguageBind names its evaluation set ``val``). Scene types are
mapped to the 10 classes of the Bind evaluations (:data:`NYU_CLASSES`); any type outside the first
nine is ``others``. Depth becomes robustmm's depth domain -- 1 = near, 0 = ``far_m`` (10 m) or
farther: ``1 - min(d, 10 m) / 10 m`` -- so that LanguageBind's ``DepthNorm(max_depth=10)`` is
recovered exactly by its encoder. Prompts follow LanguageBind's depth templates ("a depth photo of
a {}.", ...).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..errors import EmptyDatasetError, RobustMMError, UnknownNameError
from .base import MultimodalDataset, ZeroShotTask
from .files import MissingDataError, choose_subset
from .media import load_depth_png
from .registry import register_dataset

logger = logging.getLogger(__name__)

__all__ = ["NYU_CLASSES", "DEPTH_TEMPLATES", "DepthLoader", "load_nyu_depth", "scene_class", "NYU_SPLITS"]

#: Side of the square frames/maps when ``image_size`` is not given (what the Bind towers take).
DEFAULT_IMAGE_SIZE = 224

NYU_CLASSES: tuple[str, ...] = ("bathroom", "bedroom", "bookstore", "classroom", "dining room",
                                "home office", "kitchen", "living room", "office", "others")
DEPTH_TEMPLATES: tuple[str, ...] = ("a depth photo of a {}.", "a depth photo of the {}.", "a bad depth photo of a {}.",
                                    "a good depth photo of the {}.", "a close-up depth photo of a {}.")


def scene_class(name: str) -> int:
    """Index in :data:`NYU_CLASSES` of a scene type (``dining_room`` -> 4; unknown -> others)."""
    key = name.strip().lower().replace("_", " ")
    return NYU_CLASSES.index(key) if key in NYU_CLASSES else len(NYU_CLASSES) - 1


class DepthLoader:
    """Lazy loader: index -> (len, 1, size, size) raw depth (1 = near)."""

    def __init__(self, paths: list[str], size: int, scale: float, far_m: float):
        self.paths, self.size, self.scale, self.far_m = list(paths), int(size), float(scale), float(far_m)

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(index, dtype=torch.long).reshape(-1).tolist()
        if not idx:
            return torch.zeros(0, 1, self.size, self.size)
        return torch.stack([load_depth_png(self.paths[i], self.size, self.scale, self.far_m) for i in idx])


#: split names (folders); the item counts depend on the PNGs on disk, so they are known at load only
NYU_SPLITS: dict[str, int | None] = {"train": None, "test": None, "val": None}


def _split_dir(root: Path, split: str) -> Path:
    names = [split] + (["val"] if split == "test" else [])
    for base in (root, root / "data"):
        for s in names:
            if (base / s).is_dir():
                return base / s
    raise MissingDataError(f"nyu_depth_v2: no {' or '.join(names)} folder under {root} (or {root / 'data'})")


def _items(folder: Path) -> list[tuple[Path, int]]:
    if (folder / "depth").is_dir() and (folder / "scene").is_dir():  # nicr layout
        items = []
        for png in sorted((folder / "depth").glob("*.png")):
            label = folder / "scene" / f"{png.stem}.txt"
            if not label.is_file():
                raise MissingDataError(f"nyu_depth_v2: no scene label {label} for {png.name}")
            items.append((png, scene_class(label.read_text(encoding="utf-8"))))
        return items
    return [(png, scene_class(d.name)) for d in sorted(p for p in folder.iterdir() if p.is_dir())
            for png in sorted(d.glob("*.png"))]


@register_dataset("nyu_depth_v2", "NYU-Depth v2 depth scene classification, 10 classes (16-bit depth PNGs under root=)",
                  needs_root=True, splits=NYU_SPLITS)
def load_nyu_depth(
    *,
    split: str = "test",
    n: int | None = None,
    seed: int | None = None,
    root: str | Path | None = None,
    image_size: int | None = None,
    depth_scale: float = 1000.0,
    far_m: float = 10.0,
    templates: tuple[str, ...] = DEPTH_TEMPLATES,
    **_: Any,
) -> MultimodalDataset:
    """NYU-Depth v2 scenes from depth PNGs (see the module docstring for the two layouts)."""
    image_size = DEFAULT_IMAGE_SIZE if image_size is None else int(image_size)
    if split not in NYU_SPLITS:
        raise UnknownNameError("nyu_depth_v2 split", split, NYU_SPLITS)
    if root is None:
        raise RobustMMError("nyu_depth_v2 needs root=DIR holding {split}/{scene}/*.png or {split}/depth + {split}/scene")
    folder = _split_dir(Path(root).expanduser(), split)
    items = _items(folder)
    if not items:
        raise EmptyDatasetError(f"nyu_depth_v2: no depth PNGs in {folder}")
    index, seed = choose_subset(len(items), n, seed, f"nyu_depth_v2/{split}")
    items = [items[i] for i in index.tolist()]
    labels = torch.tensor([c for _, c in items], dtype=torch.long)
    captions = [[f"a depth photo of a {NYU_CLASSES[c]}."] for _, c in items]
    logger.info("loaded nyu_depth_v2/%s: %d depth maps from %s", split, len(items), folder)
    return MultimodalDataset(
        name="nyu_depth_v2", split=split, captions=captions,
        loaders={"depth": DepthLoader([str(p) for p, _ in items], image_size, depth_scale, far_m)},
        tasks={"depth": ZeroShotTask(labels, NYU_CLASSES, tuple(templates), "NYU-Depth v2 scene (10 classes)")},
        seed=seed, meta={"image_size": int(image_size), "far_m": float(far_m), "folder": str(folder)},
    )
