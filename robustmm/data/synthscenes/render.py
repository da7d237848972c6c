"""Render scene parameters into the six modality tensors, chunk by chunk."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ...errors import UnknownNameError
from .raster import SceneArrays, silhouettes
from .render_audio import render_audio
from .render_image import render_depth, render_image, render_thermal, render_video
from .render_pointcloud import render_pointcloud
from .vocab import ALL_MODALITIES, AUDIO_SAMPLES, IMAGE_RES, N_POINTS, VIDEO_FRAMES, VIDEO_RES

RENDER_CHUNK = 256  # scenes rendered at once (bounds the temporary memory)

_SHAPES_OUT: dict[str, tuple[int, ...]] = {
    "image": (3, IMAGE_RES, IMAGE_RES),
    "video": (VIDEO_FRAMES, 3, VIDEO_RES, VIDEO_RES),
    "audio": (AUDIO_SAMPLES,),
    "depth": (1, IMAGE_RES, IMAGE_RES),
    "thermal": (1, IMAGE_RES, IMAGE_RES),
    "pointcloud": (N_POINTS, 6),
}


def check_modalities(modalities: Sequence[str] | str | None) -> tuple[str, ...]:
    """The requested SynthScenes modalities as a de-duplicated tuple (all of them for None); an unknown name is an error."""
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
    mods = check_modalities(modalities)
    n = len(scenes)
    out = {m: np.empty((n, *_SHAPES_OUT[m]), np.float32) for m in mods}
    for lo in range(0, n, RENDER_CHUNK):
        bt = SceneArrays(scenes[lo:lo + RENDER_CHUNK])
        hi = lo + bt.n
        sil = None
        if any(m in mods for m in ("image", "depth", "thermal")):
            sil = silhouettes(bt.shape, bt.present, bt.x, bt.y, bt.radius, IMAGE_RES)
        for m in mods:
            if m == "image":
                out[m][lo:hi] = render_image(bt, sil)
            elif m == "video":
                out[m][lo:hi] = render_video(bt)
            elif m == "depth":
                out[m][lo:hi] = render_depth(bt, sil)
            elif m == "thermal":
                out[m][lo:hi] = render_thermal(bt, sil)
            elif m == "audio":
                out[m][lo:hi] = render_audio(bt)
            elif m == "pointcloud":
                out[m][lo:hi] = render_pointcloud(bt)
    return {m: torch.from_numpy(a) for m, a in out.items()}
