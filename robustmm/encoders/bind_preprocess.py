"""Differentiable raw-domain -> tower-input transforms of the Bind models' visual modalities.

LanguageBind's processors run torchvision on float tensors (``ToTensor`` first, then
``Resize(224, bicubic)`` + ``CenterCrop(224)`` + ``Normalize``), so :class:`ResizeCropNormalize`
resizes without clipping the bicubic overshoot; ImageBind's image path resizes 8-bit PIL images,
which clips -- it uses :class:`~robustmm.encoders.preprocess.ImagePreprocessor` instead.

* :class:`VideoFrames` -- LanguageBind's decord/opencv recipe: ``num_frames`` frames at
  ``linspace(0, T - 1, num_frames)`` (truncated to integers), each resized, cropped, normalised.
* :class:`GrayToRGB` -- one-channel depth/thermal repeated to three channels ("assume image").
* :class:`DepthToLanguageBind` -- robustmm's depth domain (1 = near, 0 = far, linear in metres
  over ``depth_range_m``) back to metres, then LanguageBind's ``DepthNorm``: clip to
  [0.01 m, max_depth] and divide by ``max_depth`` (or by the map's maximum when max_depth = 0).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputShapeError

__all__ = ["ResizeCropNormalize", "VideoFrames", "GrayToRGB", "DepthToLanguageBind", "frame_indices",
           "OPENAI_MEAN", "OPENAI_STD"]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ResizeCropNormalize(nn.Module):
    """torchvision ``Resize(short side)`` + ``CenterCrop(size)`` + ``Normalize`` on float tensors.

    ``size`` is (height, width) of the crop; the shorter side is scaled to ``min(size)``.
    Bicubic with antialiasing, no clipping -- torchvision's float-tensor semantics.
    """

    def __init__(self, size: Sequence[int], mean: Sequence[float] = OPENAI_MEAN, std: Sequence[float] = OPENAI_STD,
                 interpolation: str = "bicubic"):
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.mean, self.std, self.interpolation = tuple(mean), tuple(std), interpolation
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        short = min(self.size)
        out = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
        if out != (h, w):
            x = F.interpolate(x, size=out, mode=self.interpolation, align_corners=False, antialias=True)
        th, tw = self.size
        h, w = out
        if th > h or tw > w:
            raise InputShapeError(f"cannot center-crop {out} to {self.size}")
        top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
        x = x[..., top: top + th, left: left + tw]
        return (x - self._mean.to(x.dtype)) / self._std.to(x.dtype)

    def info(self) -> dict[str, Any]:
        """What is done (recorded in results)."""
        return {"size": list(self.size), "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "clip_overshoot": False}


def frame_indices(total: int, num: int) -> list[int]:
    """``np.linspace(0, total - 1, num, dtype=int)``: LanguageBind's frame sampling."""
    return np.linspace(0, total - 1, num, dtype=int).tolist()


class VideoFrames(nn.Module):
    """Raw video (N, T, 3, H, W) in [0, 1] -> (N, num_frames, 3, *size) normalised frames."""

    def __init__(self, num_frames: int, frame: nn.Module):
        super().__init__()
        self.num_frames = int(num_frames)
        self.frame = frame

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = frame_indices(int(x.shape[1]), self.num_frames)
        x = x[:, idx]
        n, t = x.shape[:2]
        y = self.frame(x.flatten(0, 1))
        return y.reshape(n, t, *y.shape[1:])

    def info(self) -> dict[str, Any]:
        """What is done (recorded in results)."""
        inner = self.frame.info() if hasattr(self.frame, "info") else {}
        return {"frames": self.num_frames, "sampling": "linspace(0, T-1)", **inner}


class GrayToRGB(nn.Module):
    """(N, 1, H, W) -> (N, 3, H, W) by repetition, then ``inner``."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.expand(-1, 3, -1, -1))

    def info(self) -> dict[str, Any]:
        """What is done (recorded in results)."""
        return {"channels": "1 -> 3 (repeat)", **(self.inner.info() if hasattr(self.inner, "info") else {})}


class DepthToLanguageBind(nn.Module):
    """robustmm depth (1 = near) -> LanguageBind ``DepthNorm`` output, one channel.

    ``depth_range_m``: the metres that raw 0 stands for (the dataset's far plane, 10 m for the
    NYU-Depth v2 loader). ``max_depth``: the checkpoint's ``vision_config.max_depth``.
    """

    def __init__(self, max_depth: float = 10.0, depth_range_m: float = 10.0, min_depth: float = 0.01):
        super().__init__()
        self.max_depth, self.depth_range_m, self.min_depth = float(max_depth), float(depth_range_m), float(min_depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        metres = (1.0 - x) * self.depth_range_m
        d = metres.clamp(min=self.min_depth)
        if self.max_depth > 0:
            return d.clamp(max=self.max_depth) / self.max_depth
        return d / d.amax(dim=(-2, -1), keepdim=True)

    def info(self) -> dict[str, Any]:
        """What is done (recorded in results)."""
        return {"depth": "raw 1=near -> metres -> clip [min_depth, max_depth] / max_depth",
                "max_depth": self.max_depth, "depth_range_m": self.depth_range_m, "min_depth": self.min_depth}
