"""Denoiser architectures for denoised smoothing: one per shape of raw input, chosen by the modality's shape.

Every denoiser is residual and clamped, ``x -> clamp(x + r(x), domain)``, with the last layer of
``r`` zero-initialised: a fresh denoiser is the identity, and its output always lies in the
modality's domain (so the frozen encoder never sees an invalid input). The architectures:

* ``conv2d`` -- image-like samples (C, H, W): image, depth, thermal. 3x3 convolutions.
* ``frame-conv2d`` -- frame sequences (T, C, H, W): video, denoised frame by frame.
* ``conv1d`` -- waveforms (L,): audio. 1-D convolutions of width 9 along time.
* ``point-mlp`` -- point sets (P, F): point clouds. A per-point MLP that also reads a pooled
  summary of the whole set (the neighbourhood a point alone cannot see), so the result does not
  depend on the order of the points.

:func:`default_denoiser` picks the first registered architecture whose ``fits`` accepts the
modality's :class:`~robustmm.modalities.ModalitySpec`. A new architecture is one class with
``__init__(spec, width, depth)`` and ``residual(x)``, decorated with :func:`register_denoiser`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import RobustMMError, UnknownNameError
from ..modalities import ModalitySpec, get_modality


@dataclass(frozen=True)
class DenoiserArchitecture:
    """One registered architecture: its class, what it is, and which modality shapes it accepts."""

    name: str
    summary: str
    fits: Callable[[ModalitySpec], bool]
    cls: type[ResidualDenoiser]


_ARCHITECTURES: dict[str, DenoiserArchitecture] = {}


def register_denoiser(name: str, summary: str, fits: Callable[[ModalitySpec], bool]
                      ) -> Callable[[type[ResidualDenoiser]], type[ResidualDenoiser]]:
    """Class decorator: register a :class:`ResidualDenoiser` subclass as architecture ``name``
    for the modalities whose spec ``fits`` accepts (earlier registrations win as defaults)."""

    def deco(cls: type[ResidualDenoiser]) -> type[ResidualDenoiser]:
        cls.architecture = name
        _ARCHITECTURES[name] = DenoiserArchitecture(name, summary, fits, cls)
        return cls

    return deco


def unregister_denoiser(name: str) -> None:
    """Remove architecture ``name`` (a plugin's or a test's) from the registry; unknown names are ignored."""
    _ARCHITECTURES.pop(name, None)


def list_denoisers() -> dict[str, str]:
    """Every denoiser architecture and its one-line summary."""
    return {n: a.summary for n, a in _ARCHITECTURES.items()}


def default_denoiser(modality: str) -> str:
    """The architecture used for ``modality`` when none is named: the first one that fits its shape."""
    spec = get_modality(modality)
    for arch in _ARCHITECTURES.values():
        if arch.fits(spec):
            return arch.name
    raise RobustMMError(f"no denoiser architecture fits {modality!r} inputs of shape {spec.shape}; "
                        "register one with robustmm.encoders.denoiser_archs.register_denoiser")


def build_denoiser(modality: str, architecture: str | None = None, *, width: int = 32, depth: int = 4
                   ) -> ResidualDenoiser:
    """A fresh (identity) denoiser for ``modality``: ``architecture`` (default: chosen by the
    modality's shape) with ``width`` hidden channels and ``depth`` layers."""
    spec = get_modality(modality)
    name = default_denoiser(modality) if architecture is None else architecture
    if name not in _ARCHITECTURES:
        raise UnknownNameError("denoiser architecture", name, _ARCHITECTURES)
    arch = _ARCHITECTURES[name]
    if not arch.fits(spec):
        fitting = [a.name for a in _ARCHITECTURES.values() if a.fits(spec)] or ["none"]
        raise RobustMMError(f"denoiser architecture {name!r} does not fit {modality!r} inputs of shape {spec.shape}; "
                            f"use {' or '.join(fitting)}")
    for what, v, least in (("width", width, 1), ("depth", depth, 2)):
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise RobustMMError(f"denoiser {what} must be an integer >= {least}, got {v!r}")
    return arch.cls(spec, width, depth)


class ResidualDenoiser(nn.Module):
    """Base of every architecture: ``forward(x) = clamp(x + residual(x))`` over the modality's domain."""

    architecture = "residual"

    def __init__(self, spec: ModalitySpec, width: int, depth: int):
        super().__init__()
        self.modality, self.domain, self.width, self.depth = spec.name, spec.domain, width, depth

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The correction added to ``x`` (same shape as ``x``)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.residual(x)).clamp(*self.domain)


def _zero_init(layer: nn.Conv1d | nn.Conv2d | nn.Linear) -> nn.Module:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _conv_stack(conv: type[nn.Conv1d] | type[nn.Conv2d], channels: int, width: int, depth: int, kernel: int
                ) -> nn.Sequential:
    pad = kernel // 2
    layers: list[nn.Module] = [conv(channels, width, kernel, padding=pad), nn.ReLU()]
    for _ in range(depth - 2):
        layers += [conv(width, width, kernel, padding=pad), nn.ReLU()]
    return nn.Sequential(*layers, _zero_init(conv(width, channels, kernel, padding=pad)))


def _is_image(spec: ModalitySpec) -> bool:
    return spec.image_like and len(spec.shape) == 3


def _is_frames(spec: ModalitySpec) -> bool:
    return spec.image_like and len(spec.shape) == 4


def _is_waveform(spec: ModalitySpec) -> bool:
    return spec.shape == (None,)


def _is_point_set(spec: ModalitySpec) -> bool:
    return len(spec.shape) == 2 and spec.shape[0] is None and isinstance(spec.shape[1], int)


@register_denoiser("conv2d", "residual 3x3 conv net over (C, H, W) samples (image, depth, thermal)", _is_image)
class Conv2dDenoiser(ResidualDenoiser):
    """3x3 convolutions over each (C, H, W) sample."""

    def __init__(self, spec: ModalitySpec, width: int, depth: int):
        super().__init__(spec, width, depth)
        self.net = _conv_stack(nn.Conv2d, int(spec.shape[-3]), width, depth, 3)  # type: ignore[arg-type]

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_denoiser("frame-conv2d", "residual 3x3 conv net applied to each frame of (T, C, H, W) samples (video)",
                   _is_frames)
class FrameDenoiser(Conv2dDenoiser):
    """The ``conv2d`` net applied to every frame independently (frames folded into the batch)."""

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, *x.shape[-3:])).reshape(x.shape)


@register_denoiser("conv1d", "residual 1-D conv net (kernel 9) along (L,) waveforms (audio)", _is_waveform)
class Conv1dDenoiser(ResidualDenoiser):
    """1-D convolutions of kernel 9 along time over a single channel."""

    def __init__(self, spec: ModalitySpec, width: int, depth: int):
        super().__init__(spec, width, depth)
        self.net = _conv_stack(nn.Conv1d, 1, width, depth, 9)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unsqueeze(1)).squeeze(1)


@register_denoiser("point-mlp", "per-point MLP with a pooled set summary over (P, F) point sets (point clouds)",
                   _is_point_set)
class PointDenoiser(ResidualDenoiser):
    """Per-point MLP; after the first layer every point also reads the mean feature of its set
    (order-invariant context: the set's shape and colours, which one noisy point cannot show)."""

    def __init__(self, spec: ModalitySpec, width: int, depth: int):
        super().__init__(spec, width, depth)
        feats = int(spec.shape[-1])  # type: ignore[arg-type]
        self.first = nn.Sequential(nn.Linear(feats, width), nn.ReLU())
        layers: list[nn.Module] = [nn.Linear(2 * width, width), nn.ReLU()]
        for _ in range(depth - 3):
            layers += [nn.Linear(width, width), nn.ReLU()]
        self.rest = nn.Sequential(*layers, _zero_init(nn.Linear(width, feats)))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(x)
        context = h.mean(dim=-2, keepdim=True).expand_as(h)
        return self.rest(torch.cat([h, context], dim=-1))
