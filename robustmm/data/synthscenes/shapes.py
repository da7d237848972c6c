"""The six shapes as signed distance functions (local units: the object radius is 1; y points up)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .vocab import SHAPES


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


SDF: tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], ...] = (
    _sd_circle, _sd_square, _sd_triangle, _sd_star, _sd_cross, _sd_ring,
)
assert len(SDF) == len(SHAPES)
