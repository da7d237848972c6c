"""Modality specifications: the raw input domain and the default threat model of each modality.

Attacks always work in the raw domain given here; encoders own every further preprocessing step.
Budgets are expressed in each modality's own unit, chosen so that the grid spans "imperceptible"
to "clearly visible/audible" for that signal:

* image, video, depth, thermal -- 8-bit sensors, so L-inf budgets in k/255 of the value range,
  the convention of the robust-CLIP literature (1/255 .. 16/255; 4/255 is the middle budget).
* audio -- waveforms in [-1, 1] (full scale = 1). L-inf as a fraction of full scale;
  0.001 is -60 dBFS (inaudible under the signal), 0.016 is -36 dBFS (an audible hiss).
  SynthScenes audio peaks near 0.5 FS, so the grid spans SNRs of roughly 54 dB down to 30 dB.
* pointcloud -- points are (x, y, z, r, g, b) with every channel in [-1, 1]; the budget is the
  per-point L-inf displacement in coordinate units (scene extent is 2), from 0.005 (sub-voxel
  jitter) to 0.08 (4% of the scene: visible distortion). Colours move by the same amount.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch

from .errors import BudgetError, InputShapeError, InputValueError, UnknownNameError

#: a budget written as a number or a fraction of two numbers: ``4/255``, ``0.5 / 255``, ``0.01``
_FRACTION = re.compile(r"^\s*([0-9.eE+-]+)\s*/\s*([0-9.eE+-]+)\s*$")


def parse_budget(value: Any, what: str = "eps") -> float:
    """A budget as people write it: a number (``0.0157``) or a fraction string (``"4/255"``),
    finite and >= 0. One parser for the CLI, job files and the Python API, so ``4/255`` means
    the same everywhere; anything else is a one-line :class:`BudgetError` naming ``what``."""
    if isinstance(value, bool):
        raise BudgetError(f"{what} must be a number or a fraction like 4/255, got {value!r}")
    if isinstance(value, str):
        frac = _FRACTION.match(value)
        try:
            v = float(frac.group(1)) / float(frac.group(2)) if frac else float(value)
        except (ValueError, ZeroDivisionError):
            raise BudgetError(f"{what} must be a number or a fraction like 4/255, got {value!r}") from None
    else:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise BudgetError(f"{what} must be a number or a fraction like 4/255, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise BudgetError(f"{what} must be >= 0 and finite, got {value!r}")
    return v


class Norm(StrEnum):
    """Threat norms of continuous attacks. Members are ``str`` (``Norm.LINF == "linf"``), so
    result records and configs keep writing the plain strings."""

    LINF = "linf"
    L2 = "l2"

    def __repr__(self) -> str:  # reads as the string it equals, so an attack's repr rebuilds it
        return repr(self.value)


@dataclass(frozen=True)
class ModalitySpec:
    """What a modality's raw tensors look like and how it is attacked by default.

    ``shape`` is the per-sample shape; ``None`` marks a free dimension (image size, number of
    points), a number is checked exactly. ``domain`` is the closed range of valid values.
    """

    name: str
    shape: tuple[int | None, ...]
    domain: tuple[float, float]
    norm: Norm | str  # a Norm for continuous modalities; "discrete" for text
    eps_grid: tuple[float, ...]
    eps_unit: str
    eps_scale: float = 1.0  # multiply eps by this for display in ``eps_unit`` (255 for k/255)
    description: str = field(default="", compare=False)

    @property
    def middle_eps(self) -> float:
        """The middle budget of the default grid (used for single-budget tables)."""
        return self.eps_grid[len(self.eps_grid) // 2]

    @property
    def image_like(self) -> bool:
        """Whether every sample ends in (channels, height, width): image, depth, thermal -- and
        video, whose (T, C, H, W) samples are image-like frame by frame (a patch is pasted on every
        frame, SGA resizes each frame). Audio, point clouds and text are not. Attacks and towers
        that resize or paste pixels use this instead of lists of modality names."""
        return len(self.shape) >= 3 and isinstance(self.shape[-3], int) and self.shape[-2:] == (None, None)

    def format_eps(self, eps: float) -> str:
        """Human-readable budget, e.g. ``4/255`` or ``0.01``."""
        v = eps * self.eps_scale
        if self.eps_scale != 1.0:
            return f"{v:g}/{self.eps_scale:g}"
        return f"{v:g}"

    def check_budget(self, eps: float, norm: str | None = None, what: str = "eps") -> float:
        """``eps`` if it fits this modality's domain, else a one-line :class:`BudgetError`.

        An L-inf budget wider than the domain (``--eps 4`` on pixels in [0, 1]) moves every value
        anywhere in the domain: a destroyed input, not a perturbation, and almost always a budget
        written in the display unit (4 meaning 4/255). L2 budgets sum over coordinates and may
        exceed the width, so only L-inf (the default norm) is bounded.
        """
        lo, hi = self.domain
        if str(norm or self.norm) != Norm.LINF or hi <= lo or eps <= hi - lo:
            return eps
        hint = f"; did you mean {eps:g}/{self.eps_scale:g}?" if self.eps_scale != 1.0 else ""
        raise BudgetError(f"{what} {eps:g} exceeds the {self.name} domain [{lo:g}, {hi:g}] (an L-inf budget "
                          f"wider than {hi - lo:g} destroys every input){hint}")

    def validate(self, x: torch.Tensor, *, batched: bool = True, check_domain: bool = True) -> None:
        """Raise a specific error if ``x`` is not a valid (batch of) raw input(s)."""
        if not isinstance(x, torch.Tensor):
            raise InputShapeError(f"{self.name}: expected a torch.Tensor, got {type(x).__name__}")
        if not torch.is_floating_point(x):
            raise InputShapeError(f"{self.name}: expected a floating-point tensor, got dtype {x.dtype}")
        sample_shape = tuple(x.shape[1:]) if batched else tuple(x.shape)
        if batched and x.dim() == 0:
            raise InputShapeError(f"{self.name}: expected a batch, got a scalar")
        if len(sample_shape) != len(self.shape) or any(
            want is not None and want != got for want, got in zip(self.shape, sample_shape)
        ):
            want = "(N, " + ", ".join("*" if s is None else str(s) for s in self.shape) + ")"
            raise InputShapeError(f"{self.name}: expected shape {want}, got {tuple(x.shape)}")
        if batched and x.shape[0] == 0:
            raise InputShapeError(f"{self.name}: empty batch")
        if x.numel() == 0:
            raise InputShapeError(f"{self.name}: empty input, shape {tuple(x.shape)}")
        x = x.detach()  # checking values needs no graph (and must not warn on inputs that require grad)
        if not torch.isfinite(x).all():
            raise InputValueError(f"{self.name}: input contains NaN or Inf")
        if check_domain:
            lo, hi = self.domain
            xmin, xmax = float(x.min()), float(x.max())
            if xmin < lo - 1e-6 or xmax > hi + 1e-6:
                raise InputValueError(
                    f"{self.name}: values must lie in [{lo:g}, {hi:g}], got range [{xmin:.4g}, {xmax:.4g}]"
                )


_PIXEL_GRID = (1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255)
_PIXEL_UNIT = "L-inf, /255 of the value range"

MODALITIES: dict[str, ModalitySpec] = {
    "image": ModalitySpec(
        "image", (3, None, None), (0.0, 1.0), Norm.LINF, _PIXEL_GRID, _PIXEL_UNIT, 255.0,
        "RGB image, channels first, values in [0, 1].",
    ),
    "video": ModalitySpec(
        "video", (None, 3, None, None), (0.0, 1.0), Norm.LINF, _PIXEL_GRID, _PIXEL_UNIT, 255.0,
        "RGB frames (T, 3, H, W), values in [0, 1].",
    ),
    "depth": ModalitySpec(
        "depth", (1, None, None), (0.0, 1.0), Norm.LINF, _PIXEL_GRID, _PIXEL_UNIT, 255.0,
        "Depth map (1, H, W): 0 = far plane, 1 = near plane.",
    ),
    "thermal": ModalitySpec(
        "thermal", (1, None, None), (0.0, 1.0), Norm.LINF, _PIXEL_GRID, _PIXEL_UNIT, 255.0,
        "Thermal image (1, H, W): normalised temperature in [0, 1].",
    ),
    "audio": ModalitySpec(
        "audio", (None,), (-1.0, 1.0), Norm.LINF, (0.001, 0.002, 0.004, 0.008, 0.016),
        "L-inf, fraction of full scale", 1.0,
        "Mono waveform in [-1, 1] (full scale = 1), 8 kHz in SynthScenes.",
    ),
    "pointcloud": ModalitySpec(
        "pointcloud", (None, 6), (-1.0, 1.0), Norm.LINF, (0.005, 0.01, 0.02, 0.04, 0.08),
        "L-inf per-point displacement, coordinate units (scene extent 2)", 1.0,
        "Points (P, 6): x, y, z, r, g, b, every channel in [-1, 1].",
    ),
    "text": ModalitySpec(
        "text", (), (0.0, 0.0), "discrete", (1.0,), "words changed", 1.0,
        "Captions (strings); attacked by discrete word edits.",
    ),
}

CONTINUOUS_MODALITIES: tuple[str, ...] = ("image", "video", "audio", "depth", "thermal", "pointcloud")


def get_modality(name: str) -> ModalitySpec:
    """Look up a ModalitySpec by name (``UnknownNameError`` with a suggestion otherwise)."""
    try:
        return MODALITIES[name]
    except KeyError:
        raise UnknownNameError("modality", name, MODALITIES) from None


def list_modalities() -> list[str]:
    return list(MODALITIES)
