"""Scene parameters: the seeded sampler (scene ``i`` of seed ``s`` from its own generator) and
the ground-truth attributes of a scene."""
from __future__ import annotations

from typing import Any

import numpy as np

from .captions import scene_captions
from .vocab import COLORS, EXTENT, MAIN_SIZES, MARGIN, RADIUS, SHAPES


def _bound(radius: float) -> float:
    """Largest |x| or |y| of a centre that keeps a silhouette of this radius inside the frame."""
    return 1.0 - EXTENT * radius - MARGIN


def _sample_scene(seed: int, index: int) -> dict[str, Any]:
    """Scene ``index`` of ``seed``: drawn from its own generator so prefixes are stable."""
    rng = np.random.default_rng([seed, index])
    n_obj = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    main_color = int(rng.integers(len(COLORS)))
    main_shape = int(rng.integers(len(SHAPES)))
    main_size = MAIN_SIZES[int(rng.integers(len(MAIN_SIZES)))]
    objects: list[dict[str, Any]] = []

    def place(radius: float) -> tuple[float, float] | None:
        b = _bound(radius)
        for _ in range(50):
            x, y = rng.uniform(-b, b, size=2)
            if all(
                np.hypot(x - o["x"], y - o["y"]) > EXTENT * (radius + RADIUS[o["size"]]) + 0.05
                for o in objects
            ):
                return float(x), float(y)
        return None

    def velocity() -> tuple[float, float]:
        speed, angle = rng.uniform(0.04, 0.10), rng.uniform(0.0, 2.0 * np.pi)
        return float(speed * np.cos(angle)), float(speed * np.sin(angle))

    x, y = place(RADIUS[main_size])  # type: ignore[misc]  # always succeeds for the first object
    vx, vy = velocity()
    objects.append({"shape": SHAPES[main_shape], "color": COLORS[main_color], "size": main_size,
                    "x": x, "y": y, "vx": vx, "vy": vy})
    for _ in range(n_obj - 1):
        # distractors prefer a colour and a shape different from the main object's; they share
        # one of them only rarely and are never a (tiny) copy of the main object
        share_color = rng.random() < 0.1
        share_shape = (not share_color) and rng.random() < 0.1
        color = main_color if share_color else int(rng.choice([c for c in range(len(COLORS)) if c != main_color]))
        shape = main_shape if share_shape else int(rng.choice([s for s in range(len(SHAPES)) if s != main_shape]))
        pos = place(RADIUS["tiny"])
        vx, vy = velocity()
        if pos is None:  # no free spot: the scene keeps fewer objects
            continue
        objects.append({"shape": SHAPES[shape], "color": COLORS[color], "size": "tiny",
                        "x": pos[0], "y": pos[1], "vx": vx, "vy": vy})
    scene: dict[str, Any] = {
        "objects": objects,
        "main": 0,
        "background": float(rng.uniform(0.04, 0.16)),
        "noise_seed": int(rng.integers(0, 2**62)),
    }
    scene["captions"] = scene_captions(scene, rng)
    return scene


def generate_scenes(n: int, seed: int) -> list[dict[str, Any]]:
    """Parameters of scenes ``0 .. n-1`` of ``seed`` (plain dicts, JSON-serialisable).

    Each scene is ``{"objects": [{"shape", "color", "size", "x", "y", "vx", "vy"}, ...],
    "main": 0, "background": gray, "noise_seed": int, "captions": [str, ...]}``; object 0 is the
    main object. Scene ``i`` depends only on ``(seed, i)``. Edit a scene's objects and pass it to
    :func:`render` to get controlled variations (the captions are not regenerated).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return [_sample_scene(int(seed), i) for i in range(int(n))]


def scene_attributes(scene: dict[str, Any]) -> dict[str, Any]:
    """The ground-truth attributes of a scene: ``{"objects": [{shape, color, size, x, y}], "main": 0}``."""
    return {
        "objects": [{k: o[k] for k in ("shape", "color", "size", "x", "y")} for o in scene["objects"]],
        "main": scene.get("main", 0),
    }
