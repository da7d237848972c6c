"""Paraphrased captions of a scene; each names the main object first (size, colour, shape)."""
from __future__ import annotations

from typing import Any

import numpy as np

_SIZE_WORDS = {"large": ("large", "big"), "small": ("small", "little"), "tiny": ("tiny",)}


def _region(x: float, y: float) -> str:
    """Coarse location words for a position ("in the top left", "on the right", ...)."""
    h = "left" if x < -0.33 else "right" if x > 0.33 else ""
    v = "top" if y > 0.33 else "bottom" if y < -0.33 else ""
    if h and v:
        return f"in the {v} {h}"
    if h or v:
        return f"on the {h or v}" if h else f"at the {v}"
    return "in the center"


def _relation(main: dict[str, Any], other: dict[str, Any]) -> str:
    """Where the main object is relative to ``other``."""
    dx, dy = main["x"] - other["x"], main["y"] - other["y"]
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy > 0 else "below"


_SINGLE_TEMPLATES = (
    "{M}.",
    "a scene with {M}.",
    "there is {M} {where}.",
    "{M} {where}.",
    "{M} on a dark background.",
    "here is {M}.",
    "a single {m}.",
    "we see {M} {where}.",
    "a scene showing {M}.",
    "just {M}, nothing else.",
)
_MULTI_TEMPLATES = (
    "{MD}.",
    "{M} next to {D}.",
    "{M} beside {D}.",
    "{M} near {D}.",
    "a scene with {MD}.",
    "{M} {rel} {D}.",
    "there is {M} {rel} {D}.",
    "{M} with {D} nearby.",
    "{count} shapes: {MD}.",
    "{M} {where}, with {D}.",
    "{M}, plus {D}.",
    "we see {MD}.",
)


def scene_captions(scene: dict[str, Any], rng: np.random.Generator, k: int = 5) -> list[str]:
    """``k`` distinct paraphrases; each names the main object first (size, colour, shape)."""
    main, others = scene["objects"][0], scene["objects"][1:]
    templates = _MULTI_TEMPLATES if others else _SINGLE_TEMPLATES
    order = rng.permutation(len(templates))[:k]
    out: list[str] = []
    for t in order:
        size = _SIZE_WORDS[main["size"]][int(rng.integers(len(_SIZE_WORDS[main["size"]])))]
        m = f"{size} {main['color']} {main['shape']}"
        det = "one" if rng.random() < 0.2 else "a"
        ds = [f"a tiny {o['color']} {o['shape']}" for o in others]
        if len(ds) > 1 and rng.random() < 0.5:
            ds = ds[::-1]
        md = f"{det} {m} and {ds[0]}" if len(ds) == 1 else f"{det} {m}, " + " and ".join(ds)
        text = templates[t].format(
            M=f"{det} {m}", m=m, D=" and ".join(ds), MD=md if ds else "", where=_region(main["x"], main["y"]),
            rel=_relation(main, others[0]) if others else "", count=("one", "two", "three")[len(others)],
        )
        out.append(text)
    return out
