"""SynthScenes: a seeded procedural multimodal dataset (the embedded default's data).

A scene holds 1-3 objects, each with a shape, a colour, a size and a position in the square
[-1, 1] x [-1, 1] (x to the right, y up). Object 0 is the *main* object: it is "small" or
"large" and drawn on top, while the distractors are "tiny", so the main object is always the
most salient thing in every modality. One scene is rendered into six aligned modalities, all
float32 tensors in the raw domain of :mod:`robustmm.modalities`:

========== ================ ===================================================================
modality   shape            content
========== ================ ===================================================================
image      (3, 64, 64)      coloured silhouettes over a dark, textured, noisy background
video      (4, 3, 32, 32)   the same objects moving along seeded straight lines
audio      (4000,)          8 kHz, 0.5 s sonification: pitch <- colour, timbre <- shape,
                            loudness <- size, onset time <- x position
depth      (1, 64, 64)      0 = far background; raised silhouettes, nearer when larger
                            (carries no colour information)
thermal    (1, 64, 64)      silhouettes at a per-colour temperature over a cool background
pointcloud (256, 6)         x, y, z, r, g, b points on the objects plus floor points
========== ================ ===================================================================

Each scene also has five paraphrased captions (the main object is always named first, with its
size, colour and shape) and ground-truth attributes. Zero-shot tasks score every modality on
what its content can tell: colour + shape of the main object (48 classes) everywhere except
depth, which cannot see colour and is scored on size + shape (12 classes).

Reproducibility: scene ``i`` of seed ``s`` is drawn from its own generator
``numpy.random.default_rng([s, i])`` and rendered with noise streams derived from a per-scene
``noise_seed``, and rendering uses only element-wise arithmetic (no batch-size dependent
reductions or transcendental functions on batched data), so the same seed gives bit-identical
tensors and any prefix of a larger split equals the smaller split.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import EmptyDatasetError, UnknownNameError
from .base import MultimodalDataset, ZeroShotTask
from .registry import register_dataset

logger = logging.getLogger(__name__)

__all__ = [
    "SHAPES",
    "COLORS",
    "SIZES",
    "MAIN_SIZES",
    "ALL_MODALITIES",
    "SPLIT_SEEDS",
    "SPLIT_SIZES",
    "GENERATOR_VERSION",
    "generate_scenes",
    "render",
    "scene_attributes",
    "zeroshot_tasks",
    "synthscenes",
    "load_synthscenes",
]

GENERATOR_VERSION = 1

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")
COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "white")
SIZES: tuple[str, ...] = ("tiny", "small", "large")
MAIN_SIZES: tuple[str, ...] = ("small", "large")  # the main object's sizes (distractors are tiny)
ALL_MODALITIES: tuple[str, ...] = ("image", "video", "audio", "depth", "thermal", "pointcloud")

SPLIT_SEEDS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
SPLIT_SIZES: dict[str, int] = {"train": 10000, "val": 1000, "test": 1000}

# -- geometry ---------------------------------------------------------------------------------
IMAGE_RES = 64
VIDEO_RES = 32
VIDEO_FRAMES = 4
N_POINTS = 256
N_FLOOR_POINTS = 48
N_DISTRACTOR_POINTS = 32
_PC_CANDIDATES = 512  # rejection-sampling candidates per object (enough for the thinnest shape)
_MAX_OBJECTS = 3

#: object radius in scene units (the scene's half-extent is 1)
RADIUS: dict[str, float] = {"tiny": 0.12, "small": 0.22, "large": 0.34}
_EXTENT = 1.16  # the farthest a silhouette reaches from its centre, in radii (star, triangle)
_MARGIN = 0.02

# -- appearance -------------------------------------------------------------------------------
RGB: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.12, 0.10),
    "orange": (1.00, 0.55, 0.05),
    "yellow": (0.98, 0.92, 0.12),
    "green": (0.15, 0.78, 0.20),
    "cyan": (0.10, 0.85, 0.95),
    "blue": (0.15, 0.30, 1.00),
    "purple": (0.62, 0.20, 0.90),
    "white": (0.96, 0.96, 0.96),
}
#: thermal intensity of each colour: eight levels 0.3 .. 1.0, 0.1 apart
TEMPERATURE: dict[str, float] = {
    "red": 1.0, "orange": 0.9, "yellow": 0.8, "white": 0.7,
    "purple": 0.6, "green": 0.5, "cyan": 0.4, "blue": 0.3,
}
#: depth (nearness) of an object's rim by size; the centre is up to 0.08 nearer
DEPTH_LEVEL: dict[str, float] = {"tiny": 0.35, "small": 0.55, "large": 0.75}

# -- sound ------------------------------------------------------------------------------------
SAMPLE_RATE = 8000
AUDIO_SAMPLES = 4000  # 0.5 s
#: fundamental of each colour: 200 Hz .. ~1131 Hz, 2.5 octaves in equal steps (~4.3 semitones)
PITCH_HZ: dict[str, float] = {c: float(200.0 * 2.0 ** (i * 2.5 / 7)) for i, c in enumerate(COLORS)}
#: timbre of each shape: (frequency ratio, amplitude) partials; the fundamental is the strongest
TIMBRE: dict[str, tuple[tuple[float, float], ...]] = {
    "circle": ((1.0, 1.0),),  # pure sine
    "square": tuple((float(n), 1.0 / n) for n in (1, 3, 5, 7, 9)),  # odd harmonics (hollow)
    "triangle": ((1.0, 1.0), (2.0, 0.55), (4.0, 0.3), (8.0, 0.15)),  # octave partials (organ-like)
    "star": ((1.0, 1.0),) + tuple((float(n), 0.75) for n in range(2, 11)),  # bright pulse / buzz
    "cross": tuple((float(n), 1.0 / n) for n in range(1, 11)),  # sawtooth (all harmonics)
    "ring": ((1.0, 1.0), (2.76, 0.6), (5.40, 0.4), (8.93, 0.25)),  # inharmonic bell
}
LOUDNESS: dict[str, float] = {"tiny": 0.15, "small": 0.34, "large": 0.5}  # peak amplitude
_TONE_SECONDS = (0.28, 0.12)  # main, distractor
_ONSET_RANGE = (0.02, 0.20)  # onset time (s) for x = -1 .. +1
_AUDIO_NOISE = 0.003

_SHAPE_INDEX = {s: i for i, s in enumerate(SHAPES)}
_COLOR_INDEX = {c: i for i, c in enumerate(COLORS)}
_SIZE_INDEX = {s: i for i, s in enumerate(SIZES)}
_RGB = np.array([RGB[c] for c in COLORS], dtype=np.float32)
_TEMP = np.array([TEMPERATURE[c] for c in COLORS], dtype=np.float32)
_RADIUS = np.array([RADIUS[s] for s in SIZES], dtype=np.float32)
_DEPTH = np.array([DEPTH_LEVEL[s] for s in SIZES], dtype=np.float32)
_LOUD = np.array([LOUDNESS[s] for s in SIZES], dtype=np.float32)
_MODALITY_STREAM = {m: k for k, m in enumerate(ALL_MODALITIES)}  # noise sub-stream per modality
_CHUNK = 256  # scenes rendered at once (bounds the temporary memory)


# =============================================================================================
# Scene parameters and captions
# =============================================================================================
def _bound(radius: float) -> float:
    """Largest |x| or |y| of a centre that keeps a silhouette of this radius inside the frame."""
    return 1.0 - _EXTENT * radius - _MARGIN


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
                np.hypot(x - o["x"], y - o["y"]) > _EXTENT * (radius + RADIUS[o["size"]]) + 0.05
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
    scene["captions"] = _captions(scene, rng)
    return scene


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


def _captions(scene: dict[str, Any], rng: np.random.Generator, k: int = 5) -> list[str]:
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


# =============================================================================================
# Shapes as signed distance functions (local units: the object radius is 1; y points up)
# =============================================================================================
def _sd_box(px: np.ndarray, py: np.ndarray, bx: float, by: float) -> np.ndarray:
    qx, qy = np.abs(px) - bx, np.abs(py) - by
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _sd_circle(px: np.ndarray, py: np.ndarray) -> np.ndarray:
    return np.sqrt(px * px + py * py) - 0.92


def _sd_square(px: np.ndarray, py: np.ndarray) -> np.ndarray:
    return _sd_box(px, py, 0.8, 0.8)


def _sd_triangle(px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Upward equilateral triangle, 2.0 wide, vertically centred on its bounding box."""
    r, k = np.float32(1.0), np.float32(np.sqrt(3.0))
    qx = np.abs(px) - r
    qy = (py + np.float32(0.289)) + r / k
    flip = qx + k * qy > 0
    nx = np.where(flip, (qx - k * qy) * np.float32(0.5), qx)
    ny = np.where(flip, (-k * qx - qy) * np.float32(0.5), qy)
    nx = nx - np.clip(nx, -2 * r, 0)
    return -np.sqrt(nx * nx + ny * ny) * np.sign(ny)


_K1 = (np.float32(0.809016994375), np.float32(-0.587785252292))


def _sd_star(px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Upright five-pointed star, outer radius 1.12, inner/outer ratio 0.45 (Quilez' sdStar5)."""
    r, rf = np.float32(1.12), np.float32(0.45)
    k1x, k1y = _K1
    px = np.abs(px)
    d = np.maximum(k1x * px + k1y * py, 0) * 2
    px, py = px - d * k1x, py - d * k1y
    d = np.maximum(-k1x * px + k1y * py, 0) * 2
    px, py = px + d * k1x, py - d * k1y
    px = np.abs(px)
    py = py - r
    bax, bay = rf * (-k1y), rf * k1x - np.float32(1.0)
    h = np.clip((px * bax + py * bay) / (bax * bax + bay * bay), 0, r)
    ex, ey = px - bax * h, py - bay * h
    return np.sqrt(ex * ex + ey * ey) * np.sign(py * bax - px * bay)


def _sd_cross(px: np.ndarray, py: np.ndarray) -> np.ndarray:
    return np.minimum(_sd_box(px, py, 1.0, 0.32), _sd_box(px, py, 0.32, 1.0))


def _sd_ring(px: np.ndarray, py: np.ndarray) -> np.ndarray:
    return np.abs(np.sqrt(px * px + py * py) - np.float32(0.72)) - np.float32(0.25)


_SDF: tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], ...] = (
    _sd_circle, _sd_square, _sd_triangle, _sd_star, _sd_cross, _sd_ring,
)
assert len(_SDF) == len(SHAPES)


# =============================================================================================
# Rendering helpers (element-wise only, so results do not depend on the batch)
# =============================================================================================
class _Batch:
    """Scene parameters of one chunk as (B, 3) arrays; absent object slots have ``present`` False."""

    def __init__(self, scenes: Sequence[dict[str, Any]]):
        b = len(scenes)
        shape = (b, _MAX_OBJECTS)
        self.n = b
        self.present = np.zeros(shape, bool)
        self.shape = np.zeros(shape, np.int64)
        self.color = np.zeros(shape, np.int64)
        self.size = np.zeros(shape, np.int64)
        self.x, self.y, self.vx, self.vy = (np.zeros(shape, np.float32) for _ in range(4))
        self.background = np.zeros(b, np.float32)
        self.noise_seed = [int(s["noise_seed"]) for s in scenes]
        for i, s in enumerate(scenes):
            objs = s["objects"]
            if not 1 <= len(objs) <= _MAX_OBJECTS:
                raise ValueError(f"a SynthScenes scene has 1-{_MAX_OBJECTS} objects, got {len(objs)}")
            self.background[i] = s.get("background", 0.1)
            for k, o in enumerate(objs):
                self.present[i, k] = True
                self.shape[i, k] = _SHAPE_INDEX[o["shape"]]
                self.color[i, k] = _COLOR_INDEX[o["color"]]
                self.size[i, k] = _SIZE_INDEX[o["size"]]
                self.x[i, k], self.y[i, k] = o["x"], o["y"]
                self.vx[i, k], self.vy[i, k] = o.get("vx", 0.0), o.get("vy", 0.0)
        self.radius = _RADIUS[self.size]

    def rngs(self, modality: str) -> list[np.random.Generator]:
        """One independent noise generator per scene for ``modality``."""
        k = _MODALITY_STREAM[modality]
        return [np.random.default_rng([s, k]) for s in self.noise_seed]


def _grid(res: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates: X (res,) left to right, Y (res,) top (+1) to bottom (-1)."""
    c = ((np.arange(res, dtype=np.float32) + 0.5) * (2.0 / res) - 1.0).astype(np.float32)
    return c, c[::-1].copy()


def _silhouettes(
    shape: np.ndarray, present: np.ndarray, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray, res: int
) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased coverage and squared local radius of every object slot.

    Arguments are (M, S) arrays (M images, S slots). Returns ``alpha`` and ``rho2``, both
    (S, M, res, res) float32; ``alpha`` is 0 for absent slots.
    """
    m, s = shape.shape
    X, Y = _grid(res)
    alpha = np.zeros((s, m, res, res), np.float32)
    rho2 = np.full((s, m, res, res), 4.0, np.float32)
    pix = np.float32(2.0 / res)
    for k in range(s):
        for si, sdf in enumerate(_SDF):
            idx = np.nonzero(present[:, k] & (shape[:, k] == si))[0]
            if idx.size == 0:
                continue
            r = radius[idx, k][:, None, None]
            px = (X[None, None, :] - cx[idx, k][:, None, None]) / r
            py = (Y[None, :, None] - cy[idx, k][:, None, None]) / r
            d = sdf(px, py) * (r / pix)  # signed distance in pixels
            alpha[k, idx] = np.clip(np.float32(0.5) - d, 0, 1)
            rho2[k, idx] = px * px + py * py
    return alpha, rho2


def _dome(rho2: np.ndarray) -> np.ndarray:
    """1 at an object's centre falling to 0 at its radius (used for shading)."""
    return np.clip(np.float32(1.0) - rho2, 0, 1)


def _upsample(tex: np.ndarray, res: int) -> np.ndarray:
    """Bilinear upsampling of (B, g, g) to (B, res, res) by explicit weighted sums."""
    g = tex.shape[-1]
    s = (np.arange(res, dtype=np.float32) + 0.5) / res * (g - 1)
    i0 = np.floor(s).astype(np.int64)
    i1 = np.minimum(i0 + 1, g - 1)
    w = (s - i0).astype(np.float32)
    rows = tex[:, i0, :] * (1 - w)[None, :, None] + tex[:, i1, :] * w[None, :, None]
    return rows[:, :, i0] * (1 - w)[None, None, :] + rows[:, :, i1] * w[None, None, :]


def _u8_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform noise in [-1, 1] with 256 levels (fast: drawn as bytes)."""
    n = int(np.prod(shape))
    u = np.frombuffer(rng.bytes(n), dtype=np.uint8).reshape(shape)
    return u.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)


def _background(bt: _Batch, rngs: list[np.random.Generator], res: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Dark textured RGB background (B, 3, res, res) and per-frame sensor noise (B, frames, 3, res, res)."""
    b = bt.n
    params = np.empty((b, 5), np.float32)  # gradient (2), tint (3)
    tex = np.empty((b, 5, 5), np.float32)
    noise = np.empty((b, frames, 3, res, res), np.float32)
    for i, rng in enumerate(rngs):
        params[i] = rng.random(5) * 2 - 1
        tex[i] = rng.random((5, 5))
        noise[i] = _u8_noise(rng, (frames, 3, res, res))
    X, Y = _grid(res)
    grad = params[:, 0, None, None] * X[None, None, :] + params[:, 1, None, None] * Y[None, :, None]
    base = (bt.background[:, None, None] + np.float32(0.035) * grad
            + np.float32(0.07) * (_upsample(tex, res) - np.float32(0.5)))
    bg = base[:, None] + np.float32(0.015) * params[:, 2:5, None, None]
    return bg, noise


def _paint_rgb(color: np.ndarray, bg: np.ndarray, alpha: np.ndarray, rho2: np.ndarray, jitter: np.ndarray) -> np.ndarray:
    """Composite the coloured objects over ``bg``; distractors first, the main object on top.

    ``color`` is (M, S) colour indices, ``jitter`` (M, S, 3) in [-1, 1] (slight colour variation).
    """
    img = bg
    for k in range(_MAX_OBJECTS - 1, -1, -1):
        col = _RGB[color[:, k]] + np.float32(0.03) * jitter[:, k]  # (M, 3)
        shade = np.float32(0.8) + np.float32(0.2) * _dome(rho2[k])  # (M, H, W)
        a = alpha[k][:, None]
        img = img * (1 - a) + a * (col[:, :, None, None] * shade[:, None])
    return img


# =============================================================================================
# Per-modality renderers, each for one chunk
# =============================================================================================
def _render_image(bt: _Batch, sil: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    rngs = bt.rngs("image")
    bg, noise = _background(bt, rngs, IMAGE_RES, 1)
    jitter = np.stack([rng.random((_MAX_OBJECTS, 3), dtype=np.float32) * 2 - 1 for rng in rngs])
    img = _paint_rgb(bt.color, bg, *sil, jitter) + np.float32(0.02) * noise[:, 0]
    return np.clip(img, 0, 1)


def _render_video(bt: _Batch) -> np.ndarray:
    b, t = bt.n, VIDEO_FRAMES
    rngs = bt.rngs("video")
    bg, noise = _background(bt, rngs, VIDEO_RES, t)
    jitter = np.stack([rng.random((_MAX_OBJECTS, 3), dtype=np.float32) * 2 - 1 for rng in rngs])
    steps = np.arange(t, dtype=np.float32) - np.float32((t - 1) / 2)  # positions centred on (x, y)
    bound = (np.float32(1.0 - _MARGIN) - np.float32(_EXTENT) * bt.radius)[:, None]
    cx = np.clip(bt.x[:, None] + bt.vx[:, None] * steps[None, :, None], -bound, bound)
    cy = np.clip(bt.y[:, None] + bt.vy[:, None] * steps[None, :, None], -bound, bound)

    def rep(a: np.ndarray) -> np.ndarray:  # (B, S) -> (B*T, S)
        return np.repeat(a, t, axis=0)

    alpha, rho2 = _silhouettes(rep(bt.shape), rep(bt.present), cx.reshape(b * t, -1), cy.reshape(b * t, -1),
                               rep(bt.radius), VIDEO_RES)
    vid = _paint_rgb(rep(bt.color), rep(bg), alpha, rho2, rep(jitter))
    vid = vid.reshape(b, t, 3, VIDEO_RES, VIDEO_RES) + np.float32(0.02) * noise
    return np.clip(vid, 0, 1)


def _render_depth(bt: _Batch, sil: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    alpha, rho2 = sil
    rngs = bt.rngs("depth")
    noise = np.stack([_u8_noise(rng, (IMAGE_RES, IMAGE_RES)) for rng in rngs])
    depth = np.float32(0.012) * (noise + 1)  # far background: 0 .. 0.024
    for k in range(_MAX_OBJECTS - 1, -1, -1):
        surf = _DEPTH[bt.size[:, k]][:, None, None] + np.float32(0.08) * _dome(rho2[k])
        depth = depth * (1 - alpha[k]) + alpha[k] * surf
    depth = depth + np.float32(0.004) * noise
    return np.clip(depth, 0, 1)[:, None]


def _blur3(x: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur over the last two axes with edge replication."""
    p = np.pad(x, ((0, 0), (1, 1), (0, 0)), mode="edge")
    x = (p[:, :-2] + p[:, 1:-1] * 2 + p[:, 2:]) * np.float32(0.25)
    p = np.pad(x, ((0, 0), (0, 0), (1, 1)), mode="edge")
    return (p[:, :, :-2] + p[:, :, 1:-1] * 2 + p[:, :, 2:]) * np.float32(0.25)


def _render_thermal(bt: _Batch, sil: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    alpha, rho2 = sil
    rngs = bt.rngs("thermal")
    params = np.stack([rng.random(3, dtype=np.float32) for rng in rngs])
    tex = np.stack([rng.random((5, 5), dtype=np.float32) for rng in rngs])
    noise = np.stack([_u8_noise(rng, (IMAGE_RES, IMAGE_RES)) for rng in rngs])
    X, Y = _grid(IMAGE_RES)
    grad = (params[:, 1, None, None] - 0.5) * X[None, None, :] + (params[:, 2, None, None] - 0.5) * Y[None, :, None]
    heat = (np.float32(0.08) + np.float32(0.06) * params[:, 0, None, None] + np.float32(0.04) * grad
            + np.float32(0.04) * (_upsample(tex, IMAGE_RES) - np.float32(0.5)))
    for k in range(_MAX_OBJECTS - 1, -1, -1):
        temp = _TEMP[bt.color[:, k]][:, None, None] * (np.float32(0.94) + np.float32(0.06) * _dome(rho2[k]))
        heat = heat * (1 - alpha[k]) + alpha[k] * temp
    heat = _blur3(heat) + np.float32(0.02) * noise
    return np.clip(heat, 0, 1)[:, None]


@functools.lru_cache(maxsize=1)
def _tone_table() -> np.ndarray:
    """Enveloped, peak-normalised tone of every (colour, shape, role): (8 * 6 * 2, AUDIO_SAMPLES).

    Role 0 is the main object (long tone), role 1 a distractor (short tone). Built once, so
    batched rendering only gathers and scales (no transcendental functions on batched data).
    """
    t = np.arange(AUDIO_SAMPLES, dtype=np.float64) / SAMPLE_RATE
    table = np.zeros((len(COLORS), len(SHAPES), 2, AUDIO_SAMPLES), np.float64)
    nyquist_guard = 0.95 * SAMPLE_RATE / 2
    for ci, c in enumerate(COLORS):
        f0 = PITCH_HZ[c]
        for si, s in enumerate(SHAPES):
            partials = [(r, a) for r, a in TIMBRE[s] if f0 * r < nyquist_guard]
            n = len(partials)
            wave = np.zeros_like(t)
            for j, (ratio, amp) in enumerate(partials):
                phase = np.pi * j * j / n  # Schroeder phases: a low crest factor for rich timbres
                wave += amp * np.sin(2 * np.pi * f0 * ratio * t + phase)
            wave /= np.abs(wave).max()
            for role, dur in enumerate(_TONE_SECONDS):
                env = (np.clip(t / 0.01, 0, 1) * np.clip((dur - t) / 0.04, 0, 1)
                       * np.exp(-1.2 * t / dur))
                table[ci, si, role] = wave * env
    return table.reshape(-1, AUDIO_SAMPLES).astype(np.float32)


def _render_audio(bt: _Batch) -> np.ndarray:
    table = _tone_table()
    rngs = bt.rngs("audio")
    noise = np.stack([_u8_noise(rng, (AUDIO_SAMPLES,)) for rng in rngs])
    lo, hi = _ONSET_RANGE
    onset = np.rint(SAMPLE_RATE * (lo + (hi - lo) * (bt.x.astype(np.float64) + 1) / 2)).astype(np.int64)
    role = np.zeros_like(bt.shape)
    role[:, 1:] = 1
    row = (bt.color * len(SHAPES) + bt.shape) * 2 + role  # (B, S)
    t = np.arange(AUDIO_SAMPLES)
    wave = np.float32(_AUDIO_NOISE) * noise
    for k in range(_MAX_OBJECTS):
        rel = t[None, :] - onset[:, k, None]  # (B, N)
        tone = table[row[:, k, None], np.clip(rel, 0, AUDIO_SAMPLES - 1)]
        gain = (_LOUD[bt.size[:, k]] * bt.present[:, k])[:, None].astype(np.float32)
        wave = wave + tone * (gain * (rel >= 0))
    return np.clip(wave, -1, 1)


def _render_pointcloud(bt: _Batch) -> np.ndarray:
    b, s, kc = bt.n, _MAX_OBJECTS, _PC_CANDIDATES
    rngs = bt.rngs("pointcloud")
    cand = np.empty((b, s, kc, 2), np.float32)
    floor = np.empty((b, N_FLOOR_POINTS, 3), np.float32)
    jitter = np.empty((b, s, 3), np.float32)
    keys = np.empty((b, N_POINTS), np.float32)
    for i, rng in enumerate(rngs):
        cand[i] = rng.random((s, kc, 2), dtype=np.float32) * np.float32(2 * 1.2) - np.float32(1.2)
        floor[i] = rng.random((N_FLOOR_POINTS, 3), dtype=np.float32)
        jitter[i] = rng.random((s, 3), dtype=np.float32) * 2 - 1
        keys[i] = rng.random(N_POINTS, dtype=np.float32)
    # which candidates fall inside each object's silhouette
    inside = np.zeros((b, s, kc), bool)
    for k in range(s):
        for si, sdf in enumerate(_SDF):
            idx = np.nonzero(bt.present[:, k] & (bt.shape[:, k] == si))[0]
            if idx.size:
                inside[idx, k] = sdf(cand[idx, k, :, 0], cand[idx, k, :, 1]) < 0
    count = np.maximum(inside.sum(-1), 1)  # (B, S)
    order = np.argsort(~inside, axis=-1, kind="stable")  # inside candidates first, in draw order
    # point budget: floor 48, each distractor 32, the main object the rest
    alloc = np.where(bt.present, N_DISTRACTOR_POINTS, 0)
    alloc[:, 0] = N_POINTS - N_FLOOR_POINTS - N_DISTRACTOR_POINTS * bt.present[:, 1:].sum(1)
    start = np.concatenate([np.zeros((b, 1), np.int64), np.cumsum(alloc, 1)], 1)  # (B, S+1)
    j = np.arange(N_POINTS)[None, :]
    slot = (j >= start[:, 1:2]).astype(np.int64) + (j >= start[:, 2:3]) + (j >= start[:, 3:4])  # 3 = floor
    obj = np.minimum(slot, s - 1)
    rank = j - np.take_along_axis(start, obj, 1)
    bi = np.arange(b)[:, None]
    pick = order[bi, obj, rank % count[bi, obj]]
    u = cand[bi, obj, pick]  # (B, P, 2) local coordinates
    r = bt.radius[bi, obj]
    x = bt.x[bi, obj] + r * u[..., 0]
    y = bt.y[bi, obj] + r * u[..., 1]
    dome = _dome(u[..., 0] * u[..., 0] + u[..., 1] * u[..., 1])
    z = np.float32(2) * (_DEPTH[bt.size[bi, obj]] + np.float32(0.08) * dome) - np.float32(1)
    shade = np.float32(0.8) + np.float32(0.2) * dome
    rgb = (_RGB[bt.color[bi, obj]] + np.float32(0.03) * jitter[bi, obj]) * shade[..., None]
    is_floor = slot == s
    fj = np.maximum(j - start[:, s:s + 1], 0)  # index among the floor points
    fl = floor[bi, np.minimum(fj, N_FLOOR_POINTS - 1)]
    x = np.where(is_floor, fl[..., 0] * 2 - 1, x)
    y = np.where(is_floor, fl[..., 1] * 2 - 1, y)
    z = np.where(is_floor, np.float32(-1) + np.float32(0.02) * fl[..., 2], z)
    rgb = np.where(is_floor[..., None], bt.background[:, None, None] + np.float32(0.02) * fl[..., 2:3], rgb)
    pts = np.concatenate([x[..., None], y[..., None], z[..., None], np.float32(2) * rgb - np.float32(1)], -1)
    perm = np.argsort(keys, axis=1, kind="stable")
    pts = np.take_along_axis(pts, perm[..., None], 1)
    return np.clip(pts, -1, 1).astype(np.float32)


_SHAPES_OUT: dict[str, tuple[int, ...]] = {
    "image": (3, IMAGE_RES, IMAGE_RES),
    "video": (VIDEO_FRAMES, 3, VIDEO_RES, VIDEO_RES),
    "audio": (AUDIO_SAMPLES,),
    "depth": (1, IMAGE_RES, IMAGE_RES),
    "thermal": (1, IMAGE_RES, IMAGE_RES),
    "pointcloud": (N_POINTS, 6),
}


def _check_modalities(modalities: Sequence[str] | str | None) -> tuple[str, ...]:
    if modalities is None:
        return ALL_MODALITIES
    if isinstance(modalities, str):
        modalities = (modalities,)
    out = tuple(dict.fromkeys(modalities))
    for m in out:
        if m not in ALL_MODALITIES:
            raise UnknownNameError("SynthScenes modality", m, ALL_MODALITIES)
    return out


def render(scenes: Sequence[dict[str, Any]], modalities: Sequence[str] | str | None = ALL_MODALITIES) -> dict[str, torch.Tensor]:
    """Render scene parameters into raw modality tensors, ``{modality: (N, *shape) float32}``.

    Rendering is chunked (bounded temporary memory) and element-wise, so a scene's tensors do
    not depend on which other scenes are rendered with it or on the requested modalities.
    """
    mods = _check_modalities(modalities)
    n = len(scenes)
    out = {m: np.empty((n, *_SHAPES_OUT[m]), np.float32) for m in mods}
    for lo in range(0, n, _CHUNK):
        bt = _Batch(scenes[lo:lo + _CHUNK])
        hi = lo + bt.n
        sil = None
        if any(m in mods for m in ("image", "depth", "thermal")):
            sil = _silhouettes(bt.shape, bt.present, bt.x, bt.y, bt.radius, IMAGE_RES)
        for m in mods:
            if m == "image":
                out[m][lo:hi] = _render_image(bt, sil)
            elif m == "video":
                out[m][lo:hi] = _render_video(bt)
            elif m == "depth":
                out[m][lo:hi] = _render_depth(bt, sil)
            elif m == "thermal":
                out[m][lo:hi] = _render_thermal(bt, sil)
            elif m == "audio":
                out[m][lo:hi] = _render_audio(bt)
            elif m == "pointcloud":
                out[m][lo:hi] = _render_pointcloud(bt)
    return {m: torch.from_numpy(a) for m, a in out.items()}


# =============================================================================================
# Zero-shot tasks and the dataset
# =============================================================================================
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
    cs = torch.tensor([_COLOR_INDEX[o["color"]] * len(SHAPES) + _SHAPE_INDEX[o["shape"]] for o in mains],
                      dtype=torch.int64)
    zs = torch.tensor([MAIN_SIZES.index(o["size"]) * len(SHAPES) + _SHAPE_INDEX[o["shape"]] for o in mains],
                      dtype=torch.int64)
    tasks = {}
    for m in modalities:
        if m == "depth":
            tasks[m] = ZeroShotTask(zs, SIZE_SHAPE_CLASSES, TEMPLATES[m], "size and shape of the main object")
        else:
            tasks[m] = ZeroShotTask(cs.clone(), COLOR_SHAPE_CLASSES, TEMPLATES[m], "colour and shape of the main object")
    return tasks


def synthscenes(
    n: int = 1000,
    seed: int = 2,
    split: str = "test",
    modalities: Sequence[str] | str | None = ALL_MODALITIES,
    *,
    lazy: bool = False,
) -> MultimodalDataset:
    """Generate and render ``n`` SynthScenes scenes of ``seed`` as a :class:`MultimodalDataset`.

    ``lazy=True`` keeps only the scene parameters and renders batches on demand (for large
    training splits); the tensors are identical either way. ``split`` is only recorded.
    """
    if n < 1:
        raise EmptyDatasetError(f"synthscenes: n must be >= 1, got {n}")
    mods = _check_modalities(modalities)
    t0 = time.perf_counter()
    scenes = generate_scenes(n, seed)
    tensors: dict[str, torch.Tensor] = {}
    loaders: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    if lazy:
        for m in mods:
            loaders[m] = functools.partial(_render_indexed, scenes, m)
    else:
        tensors = render(scenes, mods)
    logger.debug("synthscenes: %d scenes (seed %d, %s) in %.2fs", n, seed, ",".join(mods), time.perf_counter() - t0)
    return MultimodalDataset(
        name="synthscenes",
        split=split,
        captions=[list(s["captions"]) for s in scenes],
        tensors=tensors,
        loaders=loaders,
        tasks=zeroshot_tasks(scenes, mods),
        attributes=[scene_attributes(s) for s in scenes],
        seed=int(seed),
        meta={"generator_version": GENERATOR_VERSION, "sample_rate": SAMPLE_RATE},
    )


def _render_indexed(scenes: Sequence[dict[str, Any]], modality: str, index: torch.Tensor) -> torch.Tensor:
    return render([scenes[i] for i in index.tolist()], (modality,))[modality]


@register_dataset("synthscenes", "SynthScenes: seeded procedural scenes in 6 aligned modalities + captions (offline)")
def load_synthscenes(
    *,
    split: str = "test",
    n: int | None = None,
    seed: int | None = None,
    root: str | None = None,
    modalities: Sequence[str] | str | None = None,
    lazy: bool = False,
) -> MultimodalDataset:
    """Registry entry: split ``train``/``val``/``test`` (seeds 0/1/2, sizes 10000/1000/1000).

    ``n`` and ``seed`` override the split's defaults; ``root`` is ignored (nothing on disk).
    """
    if split not in SPLIT_SEEDS:
        raise UnknownNameError("SynthScenes split", split, SPLIT_SEEDS)
    return synthscenes(
        n=SPLIT_SIZES[split] if n is None else int(n),
        seed=SPLIT_SEEDS[split] if seed is None else int(seed),
        split=split,
        modalities=modalities,
        lazy=lazy,
    )
