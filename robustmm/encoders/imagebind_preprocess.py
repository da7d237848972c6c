"""Differentiable raw-domain -> ImageBind tower inputs for video, depth and thermal.

* :class:`ImageBindVideo` -- ImageBind's ``load_and_transform_video_data``: ``clips`` (5) evenly
  spaced clips, ``UniformTemporalSubsample(2)`` in each (the first and last frame of the clip's
  window), ``ShortSideScale(224)`` (bilinear, no antialiasing), normalisation, and ``crops``
  spatial crops (the official code takes 3: start/center/end of the long side; on square frames
  they coincide, so 1 center crop is the default) -> (N, clips * crops, 3, 2, S, S). The raw
  video carries no timestamps, so clip windows are equal shares of its T frames.
* :class:`ImageBindDepth` -- ImageBind published no depth transform. This follows the recipe of
  the Omnivore/ImageBind authors' answer (GitHub: facebookresearch/omnivore#12, ImageBind#107 and #134):
  disparity = baseline * focal / depth (NYU Kinect v1: 0.075 m x 518.857901 px, depth clipped to
  [0.01, 50] m), resize + center crop, ``(x - 0.0418) / 0.0295``. Unverified against ImageBind's
  reported numbers; every constant is an option.
* :class:`ImageBindThermal` -- also unpublished: the one-channel image resized + center-cropped,
  in [0, 1], without normalisation (the common third-party usage). Unverified.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .bind_preprocess import OPENAI_MEAN, OPENAI_STD, ResizeCropNormalize

__all__ = ["ImageBindVideo", "ImageBindDepth", "ImageBindThermal", "clip_frame_indices"]


def clip_frame_indices(total: int, clips: int, per_clip: int = 2) -> list[int]:
    """Frame indices of ``clips`` equal windows of ``total`` frames, ``per_clip`` uniform ones in each."""
    out = []
    for k in range(clips):
        start = (k * total) // clips
        end = max(((k + 1) * total) // clips - 1, start)
        pick = torch.linspace(start, end, per_clip).clamp(0, total - 1).long().tolist()
        out.extend(pick)
    return out


class ImageBindVideo(nn.Module):
    """Raw video (N, T, 3, H, W) in [0, 1] -> (N, clips * crops, 3, 2, size, size)."""

    def __init__(self, size: int = 224, clips: int = 5, frames_per_clip: int = 2, crops: int = 1,
                 mean: tuple[float, ...] = OPENAI_MEAN, std: tuple[float, ...] = OPENAI_STD):
        super().__init__()
        if crops not in (1, 3):
            raise ValueError(f"crops must be 1 or 3, got {crops}")
        self.size, self.clips, self.per_clip, self.crops = int(size), int(clips), int(frames_per_clip), int(crops)
        self.register_buffer("_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def _crops(self, x: torch.Tensor) -> list[torch.Tensor]:
        """pytorchvideo ``uniform_crop``: spatial index 1 = center; 0 / 2 = start / end of the long side."""
        s, (h, w) = self.size, x.shape[-2:]
        cy, cx = math.ceil((h - s) / 2), math.ceil((w - s) / 2)
        if self.crops == 1:
            return [x[..., cy: cy + s, cx: cx + s]]
        if w >= h:
            return [x[..., cy: cy + s, o: o + s] for o in (0, cx, w - s)]
        return [x[..., o: o + s, cx: cx + s] for o in (0, cy, h - s)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[:2]
        frames = x[:, clip_frame_indices(t, self.clips, self.per_clip)].flatten(0, 1)  # (N*clips*per_clip, 3, H, W)
        h, w = frames.shape[-2:]
        out_hw = (int(math.floor(h / w * self.size)), self.size) if w < h else (self.size, int(math.floor(w / h * self.size)))
        if out_hw != (h, w):  # pytorchvideo short_side_scale: bilinear, no antialiasing
            frames = F.interpolate(frames, size=out_hw, mode="bilinear", align_corners=False)
        frames = (frames - self._mean.to(frames.dtype)) / self._std.to(frames.dtype)
        out = [c.reshape(n, self.clips, self.per_clip, 3, self.size, self.size).transpose(2, 3) for c in self._crops(frames)]
        return torch.stack(out, dim=2).flatten(1, 2)  # (N, clips * crops, 3, per_clip, S, S), crops inside each clip

    def info(self) -> dict[str, Any]:
        """What is done (recorded in results)."""
        return {"clips": self.clips, "frames_per_clip": self.per_clip, "crops": self.crops, "size": self.size,
                "resize": "short side, bilinear, no antialias"}


class ImageBindDepth(nn.Module):
    """robustmm depth (1 = near, 0 = ``depth_range_m``) -> ImageBind depth input (N, 1, S, S)."""

    def __init__(self, size: int = 224, depth_range_m: float = 10.0, baseline: float = 0.075, focal: float = 518.857901,
                 min_depth: float = 0.01, max_depth: float = 50.0, mean: float = 0.0418, std: float = 0.0295):
        super().__init__()
        self.depth_range_m, self.baseline, self.focal = float(depth_range_m), float(baseline), float(focal)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.frame = ResizeCropNormalize((size, size), (mean,), (std,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        metres = ((1.0 - x) * self.depth_range_m).clamp(self.min_depth, self.max_depth)
        return self.frame(self.baseline * self.focal / metres)

    def info(self) -> dict[str, Any]:
        """What is done (recorded in results)."""
        return {"depth": "disparity = baseline * focal / metres (unverified recipe)", "baseline": self.baseline,
                "focal": self.focal, "depth_range_m": self.depth_range_m, **self.frame.info()}


class ImageBindThermal(nn.Module):
    """Thermal (N, 1, H, W) in [0, 1] -> (N, 1, S, S), resized and cropped, not normalised (unverified)."""

    def __init__(self, size: int = 224):
        super().__init__()
        self.frame = ResizeCropNormalize((size, size), (0.0,), (1.0,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frame(x)

    def info(self) -> dict[str, Any]:
        """What is done (recorded in results)."""
        return {"thermal": "1 channel, no normalisation (unverified recipe)", **self.frame.info()}
