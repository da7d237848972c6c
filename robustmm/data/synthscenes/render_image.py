"""Per-chunk renderers of the raster modalities: image, video, depth and thermal."""
from __future__ import annotations

import numpy as np

from .raster import SceneArrays, background_texture, blur3, dome_profile, paint_rgb, pixel_grid, silhouettes, u8_noise, upsample
from .vocab import COLOR_TEMPERATURE, EXTENT, IMAGE_RES, MARGIN, MAX_OBJECTS, SIZE_DEPTH, VIDEO_FRAMES, VIDEO_RES


def render_image(bt: SceneArrays, sil: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The (B, 3, H, W) RGB images of a chunk from its silhouettes, in [0, 1]."""
    rngs = bt.rngs("image")
    bg, noise = background_texture(bt, rngs, IMAGE_RES, 1)
    jitter = np.stack([rng.random((MAX_OBJECTS, 3), dtype=np.float32) * 2 - 1 for rng in rngs])
    img = paint_rgb(bt.color, bg, *sil, jitter) + np.float32(0.02) * noise[:, 0]
    return np.clip(img, 0, 1)


def render_video(bt: SceneArrays) -> np.ndarray:
    """The (B, T, 3, H, W) videos of a chunk: objects move by (vx, vy) per frame, kept inside the frame."""
    b, t = bt.n, VIDEO_FRAMES
    rngs = bt.rngs("video")
    bg, noise = background_texture(bt, rngs, VIDEO_RES, t)
    jitter = np.stack([rng.random((MAX_OBJECTS, 3), dtype=np.float32) * 2 - 1 for rng in rngs])
    steps = np.arange(t, dtype=np.float32) - np.float32((t - 1) / 2)  # positions centred on (x, y)
    bound = (np.float32(1.0 - MARGIN) - np.float32(EXTENT) * bt.radius)[:, None]
    cx = np.clip(bt.x[:, None] + bt.vx[:, None] * steps[None, :, None], -bound, bound)
    cy = np.clip(bt.y[:, None] + bt.vy[:, None] * steps[None, :, None], -bound, bound)

    def rep(a: np.ndarray) -> np.ndarray:  # (B, S) -> (B*T, S)
        return np.repeat(a, t, axis=0)

    alpha, rho2 = silhouettes(rep(bt.shape), rep(bt.present), cx.reshape(b * t, -1), cy.reshape(b * t, -1),
                               rep(bt.radius), VIDEO_RES)
    vid = paint_rgb(rep(bt.color), rep(bg), alpha, rho2, rep(jitter))
    vid = vid.reshape(b, t, 3, VIDEO_RES, VIDEO_RES) + np.float32(0.02) * noise
    return np.clip(vid, 0, 1)


def render_depth(bt: SceneArrays, sil: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The (B, 1, H, W) depth maps of a chunk: each object at the depth level of its size, over a noisy far background."""
    alpha, rho2 = sil
    rngs = bt.rngs("depth")
    noise = np.stack([u8_noise(rng, (IMAGE_RES, IMAGE_RES)) for rng in rngs])
    depth = np.float32(0.012) * (noise + 1)  # far background: 0 .. 0.024
    for k in range(MAX_OBJECTS - 1, -1, -1):
        surf = SIZE_DEPTH[bt.size[:, k]][:, None, None] + np.float32(0.08) * dome_profile(rho2[k])
        depth = depth * (1 - alpha[k]) + alpha[k] * surf
    depth = depth + np.float32(0.004) * noise
    return np.clip(depth, 0, 1)[:, None]


def render_thermal(bt: SceneArrays, sil: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The (B, 1, H, W) thermal images of a chunk: each colour has its temperature, over a textured background."""
    alpha, rho2 = sil
    rngs = bt.rngs("thermal")
    params = np.stack([rng.random(3, dtype=np.float32) for rng in rngs])
    tex = np.stack([rng.random((5, 5), dtype=np.float32) for rng in rngs])
    noise = np.stack([u8_noise(rng, (IMAGE_RES, IMAGE_RES)) for rng in rngs])
    X, Y = pixel_grid(IMAGE_RES)
    grad = (params[:, 1, None, None] - 0.5) * X[None, None, :] + (params[:, 2, None, None] - 0.5) * Y[None, :, None]
    heat = (np.float32(0.08) + np.float32(0.06) * params[:, 0, None, None] + np.float32(0.04) * grad
            + np.float32(0.04) * (upsample(tex, IMAGE_RES) - np.float32(0.5)))
    for k in range(MAX_OBJECTS - 1, -1, -1):
        temp = COLOR_TEMPERATURE[bt.color[:, k]][:, None, None] * (np.float32(0.94) + np.float32(0.06) * dome_profile(rho2[k]))
        heat = heat * (1 - alpha[k]) + alpha[k] * temp
    heat = blur3(heat) + np.float32(0.02) * noise
    return np.clip(heat, 0, 1)[:, None]
