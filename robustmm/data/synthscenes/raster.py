"""Rendering helpers (element-wise only, so results do not depend on the batch): the scene
parameters of a chunk as arrays, pixel grids, anti-aliased silhouettes, textures and compositing."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .shapes import SDF
from .vocab import COLOR_INDEX, COLOR_RGB, MAX_OBJECTS, MODALITY_STREAM, SHAPE_INDEX, SIZE_INDEX, SIZE_RADIUS


class SceneArrays:
    """Scene parameters of one chunk as (B, 3) arrays; absent object slots have ``present`` False."""

    def __init__(self, scenes: Sequence[dict[str, Any]]):
        b = len(scenes)
        shape = (b, MAX_OBJECTS)
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
            if not 1 <= len(objs) <= MAX_OBJECTS:
                raise ValueError(f"a SynthScenes scene has 1-{MAX_OBJECTS} objects, got {len(objs)}")
            self.background[i] = s.get("background", 0.1)
            for k, o in enumerate(objs):
                self.present[i, k] = True
                self.shape[i, k] = SHAPE_INDEX[o["shape"]]
                self.color[i, k] = COLOR_INDEX[o["color"]]
                self.size[i, k] = SIZE_INDEX[o["size"]]
                self.x[i, k], self.y[i, k] = o["x"], o["y"]
                self.vx[i, k], self.vy[i, k] = o.get("vx", 0.0), o.get("vy", 0.0)
        self.radius = SIZE_RADIUS[self.size]

    def rngs(self, modality: str) -> list[np.random.Generator]:
        """One independent noise generator per scene for ``modality``."""
        k = MODALITY_STREAM[modality]
        return [np.random.default_rng([s, k]) for s in self.noise_seed]


def pixel_grid(res: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates: X (res,) left to right, Y (res,) top (+1) to bottom (-1)."""
    c = ((np.arange(res, dtype=np.float32) + 0.5) * (2.0 / res) - 1.0).astype(np.float32)
    return c, c[::-1].copy()


def silhouettes(
    shape: np.ndarray, present: np.ndarray, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray, res: int
) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased coverage and squared local radius of every object slot.

    Arguments are (M, S) arrays (M images, S slots). Returns ``alpha`` and ``rho2``, both
    (S, M, res, res) float32; ``alpha`` is 0 for absent slots.
    """
    m, s = shape.shape
    X, Y = pixel_grid(res)
    alpha = np.zeros((s, m, res, res), np.float32)
    rho2 = np.full((s, m, res, res), 4.0, np.float32)
    pix = np.float32(2.0 / res)
    for k in range(s):
        for si, sdf in enumerate(SDF):
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


def dome_profile(rho2: np.ndarray) -> np.ndarray:
    """1 at an object's centre falling to 0 at its radius (used for shading)."""
    return np.clip(np.float32(1.0) - rho2, 0, 1)


def upsample(tex: np.ndarray, res: int) -> np.ndarray:
    """Bilinear upsampling of (B, g, g) to (B, res, res) by explicit weighted sums."""
    g = tex.shape[-1]
    s = (np.arange(res, dtype=np.float32) + 0.5) / res * (g - 1)
    i0 = np.floor(s).astype(np.int64)
    i1 = np.minimum(i0 + 1, g - 1)
    w = (s - i0).astype(np.float32)
    rows = tex[:, i0, :] * (1 - w)[None, :, None] + tex[:, i1, :] * w[None, :, None]
    return rows[:, :, i0] * (1 - w)[None, None, :] + rows[:, :, i1] * w[None, None, :]


def u8_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform noise in [-1, 1] with 256 levels (fast: drawn as bytes)."""
    n = int(np.prod(shape))
    u = np.frombuffer(rng.bytes(n), dtype=np.uint8).reshape(shape)
    return u.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)


def background_texture(bt: SceneArrays, rngs: list[np.random.Generator], res: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Dark textured RGB background (B, 3, res, res) and per-frame sensor noise (B, frames, 3, res, res)."""
    b = bt.n
    params = np.empty((b, 5), np.float32)  # gradient (2), tint (3)
    tex = np.empty((b, 5, 5), np.float32)
    noise = np.empty((b, frames, 3, res, res), np.float32)
    for i, rng in enumerate(rngs):
        params[i] = rng.random(5) * 2 - 1
        tex[i] = rng.random((5, 5))
        noise[i] = u8_noise(rng, (frames, 3, res, res))
    X, Y = pixel_grid(res)
    grad = params[:, 0, None, None] * X[None, None, :] + params[:, 1, None, None] * Y[None, :, None]
    base = (bt.background[:, None, None] + np.float32(0.035) * grad
            + np.float32(0.07) * (upsample(tex, res) - np.float32(0.5)))
    bg = base[:, None] + np.float32(0.015) * params[:, 2:5, None, None]
    return bg, noise


def paint_rgb(color: np.ndarray, bg: np.ndarray, alpha: np.ndarray, rho2: np.ndarray, jitter: np.ndarray) -> np.ndarray:
    """Composite the coloured objects over ``bg``; distractors first, the main object on top.

    ``color`` is (M, S) colour indices, ``jitter`` (M, S, 3) in [-1, 1] (slight colour variation).
    """
    img = bg
    for k in range(MAX_OBJECTS - 1, -1, -1):
        col = COLOR_RGB[color[:, k]] + np.float32(0.03) * jitter[:, k]  # (M, 3)
        shade = np.float32(0.8) + np.float32(0.2) * dome_profile(rho2[k])  # (M, H, W)
        a = alpha[k][:, None]
        img = img * (1 - a) + a * (col[:, :, None, None] * shade[:, None])
    return img


def blur3(x: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur over the last two axes with edge replication."""
    p = np.pad(x, ((0, 0), (1, 1), (0, 0)), mode="edge")
    x = (p[:, :-2] + p[:, 1:-1] * 2 + p[:, 2:]) * np.float32(0.25)
    p = np.pad(x, ((0, 0), (0, 0), (1, 1)), mode="edge")
    return (p[:, :, :-2] + p[:, :, 1:-1] * 2 + p[:, :, 2:]) * np.float32(0.25)
