"""Per-chunk renderer of the point-cloud modality: points on the objects plus floor points."""
from __future__ import annotations

import numpy as np

from .raster import SceneArrays, dome_profile
from .shapes import SDF
from .vocab import COLOR_RGB, MAX_OBJECTS, N_DISTRACTOR_POINTS, N_FLOOR_POINTS, N_POINTS, PC_CANDIDATES, SIZE_DEPTH


def render_pointcloud(bt: SceneArrays) -> np.ndarray:
    """The (B, N, 6) point clouds (xyz, rgb) of a chunk: points sampled on each object's shape, on the
    floor and as distractors."""
    b, s, kc = bt.n, MAX_OBJECTS, PC_CANDIDATES
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
        for si, sdf in enumerate(SDF):
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
    dome = dome_profile(u[..., 0] * u[..., 0] + u[..., 1] * u[..., 1])
    z = np.float32(2) * (SIZE_DEPTH[bt.size[bi, obj]] + np.float32(0.08) * dome) - np.float32(1)
    shade = np.float32(0.8) + np.float32(0.2) * dome
    rgb = (COLOR_RGB[bt.color[bi, obj]] + np.float32(0.03) * jitter[bi, obj]) * shade[..., None]
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
