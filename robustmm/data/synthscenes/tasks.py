"""Zero-shot tasks on the main object: colour + shape everywhere except depth (size + shape)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..base import ZeroShotTask
from .vocab import ALL_MODALITIES, COLOR_INDEX, COLORS, MAIN_SIZES, SHAPE_INDEX, SHAPES

COLOR_SHAPE_CLASSES: tuple[str, ...] = tuple(f"{c} {s}" for c in COLORS for s in SHAPES)
SIZE_SHAPE_CLASSES: tuple[str, ...] = tuple(f"{z} {s}" for z in MAIN_SIZES for s in SHAPES)

TEMPLATES: dict[str, tuple[str, ...]] = {
    "image": ("a photo of a {}.", "a {}.", "a picture of a {}.", "a rendering of a {}."),
    "video": ("a video of a {}.", "a {}.", "a moving {}.", "a clip of a {}."),
    "audio": ("the sound of a {}.", "a {}.", "a sonification of a {}.", "a recording of a {}."),
    "depth": ("a depth map of a {}.", "a {}.", "a depth image of a {}.", "the 3d shape of a {}."),
    "thermal": ("a thermal image of a {}.", "a {}.", "a heat map of a {}.", "an infrared photo of a {}."),
    "pointcloud": ("a point cloud of a {}.", "a {}.", "a 3d scan of a {}.", "a 3d model of a {}."),
}


def zeroshot_tasks(scenes: Sequence[dict[str, Any]], modalities: Sequence[str] = ALL_MODALITIES) -> dict[str, ZeroShotTask]:
    """Per-modality zero-shot tasks on the main object.

    Colour + shape (48 classes, colour-major: ``COLOR_SHAPE_CLASSES``) for every modality that
    sees colour; size + shape (12 classes, size-major: ``SIZE_SHAPE_CLASSES``) for depth.
    """
    mains = [s["objects"][s.get("main", 0)] for s in scenes]
    cs = torch.tensor([COLOR_INDEX[o["color"]] * len(SHAPES) + SHAPE_INDEX[o["shape"]] for o in mains],
                      dtype=torch.int64)
    zs = torch.tensor([MAIN_SIZES.index(o["size"]) * len(SHAPES) + SHAPE_INDEX[o["shape"]] for o in mains],
                      dtype=torch.int64)
    tasks = {}
    for m in modalities:
        if m == "depth":
            tasks[m] = ZeroShotTask(zs, SIZE_SHAPE_CLASSES, TEMPLATES[m], "size and shape of the main object")
        else:
            tasks[m] = ZeroShotTask(cs.clone(), COLOR_SHAPE_CLASSES, TEMPLATES[m], "colour and shape of the main object")
    return tasks
