"""Differentiable image preprocessing shared by the real-model adapters (open_clip, HF CLIP).

Attacks work on raw images in [0, 1] of any size, so the encoder itself must resize, crop and
normalise -- in torch, so that gradients flow back to the raw pixels. :class:`ImagePreprocessor`
reproduces the eval transforms of open_clip and of ``CLIPImageProcessor`` on tensors:

* ``shortest``: scale the shorter side to ``resize_size`` (default: the crop size), keep the
  aspect ratio, center-crop to ``size`` (torchvision ``Resize(int)`` + ``CenterCrop``).
* ``longest``: scale the longer side to fit ``size``, center-pad with ``fill`` (open_clip).
* ``squash``: resize straight to ``size``, ignoring the aspect ratio.

then ``(x - mean) / std``. Resizing uses ``torch.nn.functional.interpolate`` with antialiasing
(differentiable), bicubic results are clamped to [0, 1] as the 8-bit PIL pipeline does. An input
already at the output size is not resampled at all.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputShapeError, RobustMMError

RESIZE_MODES = ("shortest", "longest", "squash")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) == 1:
        return (size[0], size[0])
    if len(size) != 2:
        raise RobustMMError(f"image size must be an int or (height, width), got {size!r}")
    return size  # type: ignore[return-value]


class ImagePreprocessor(nn.Module):
    """Raw images (N, 3, H, W) in [0, 1] -> normalised model input (N, 3, *size).

    Args:
        size: the model's input size, int or (height, width).
        mean, std: per-channel normalisation constants (3 floats each).
        interpolation: ``bicubic`` (CLIP's default), ``bilinear`` or ``nearest``.
        resize_mode: ``shortest`` (resize + center crop), ``longest`` (resize + pad) or ``squash``.
        resize_size: for ``shortest``, the length the shorter side is scaled to before the crop
            (HF ``size["shortest_edge"]``); default: the crop size.
        fill: padding value (raw domain) for ``longest``.
        antialias: antialias when downsampling (matches PIL; differentiable either way).
    """

    def __init__(
        self,
        size: int | Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        *,
        interpolation: str = "bicubic",
        resize_mode: str = "shortest",
        resize_size: int | None = None,
        fill: float = 0.0,
        antialias: bool = True,
    ):
        super().__init__()
        if resize_mode not in RESIZE_MODES:
            raise RobustMMError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        if interpolation not in INTERPOLATIONS:
            raise RobustMMError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise RobustMMError(f"mean/std must be 3 values each (std > 0), got mean={mean}, std={std}")
        self.size = _pair(size)
        self.mean, self.std = mean, std
        self.interpolation = interpolation
        self.resize_mode = resize_mode
        self.resize_size = None if resize_size is None else int(resize_size)
        self.fill = float(fill)
        self.antialias = bool(antialias)
        self.register_buffer("_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    # -- geometry --------------------------------------------------------------------------
    def resized_shape(self, h: int, w: int) -> tuple[int, int]:
        """The (height, width) an (h, w) image is resampled to before the crop/pad."""
        th, tw = self.size
        if self.resize_mode == "squash":
            return th, tw
        if self.resize_mode == "longest":
            ratio = max(h / th, w / tw)
            return max(1, round(h / ratio)), max(1, round(w / ratio))
        # shortest: torchvision Resize(int) semantics when square / resize_size is given
        if self.resize_size is not None or th == tw:
            short = self.resize_size if self.resize_size is not None else th
            if h <= w:
                return short, int(short * w / h)
            return int(short * h / w), short
        ratio = min(h / th, w / tw)  # open_clip ResizeKeepRatio for non-square targets
        return max(1, round(h / ratio)), max(1, round(w / ratio))

    def _resample(self, x: torch.Tensor, out: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == out:
            return x
        if self.interpolation == "nearest":
            return F.interpolate(x, size=out, mode="nearest")
        y = F.interpolate(x, size=out, mode=self.interpolation, align_corners=False, antialias=self.antialias)
        if self.interpolation == "bicubic":
            y = y.clamp(0.0, 1.0)  # bicubic overshoots; the uint8 PIL pipeline clips
        return y

    def _center_crop_or_pad(self, x: torch.Tensor) -> torch.Tensor:
        th, tw = self.size
        h, w = x.shape[-2:]
        if th > h or tw > w:
            pad_h, pad_w = max(th - h, 0), max(tw - w, 0)
            x = F.pad(x, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2), value=self.fill)
            h, w = x.shape[-2:]
        top = int(round((h - th) / 2.0))
        left = int(round((w - tw) / 2.0))
        return x[..., top : top + th, left : left + tw]

    def resize_and_crop(self, x: torch.Tensor) -> torch.Tensor:
        """The geometric part only: raw (N, 3, H, W) -> raw (N, 3, *size), still in [0, 1]."""
        if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
            raise InputShapeError(f"image: expected a floating-point tensor, got {getattr(x, 'dtype', type(x))}")
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[0] == 0:
            raise InputShapeError(f"image: expected shape (N, 3, H, W) with N > 0, got {tuple(x.shape)}")
        h, w = int(x.shape[-2]), int(x.shape[-1])
        x = self._resample(x, self.resized_shape(h, w))
        return self._center_crop_or_pad(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw images in [0, 1] -> normalised model input (same dtype as ``x``)."""
        x = self.resize_and_crop(x)
        return (x - self._mean.to(x.dtype)) / self._std.to(x.dtype)

    def info(self) -> dict[str, Any]:
        """What is done to the raw image (recorded in results)."""
        out: dict[str, Any] = {
            "image_size": list(self.size),
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
            "antialias": self.antialias,
        }
        if self.resize_size is not None:
            out["resize_size"] = self.resize_size
        if self.resize_mode == "longest":
            out["fill"] = self.fill
        return out

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.info().items())

