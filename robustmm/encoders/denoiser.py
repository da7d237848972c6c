"""Denoised smoothing (Salman et al., NeurIPS 2020): a small denoiser in front of the frozen encoder.

The base classifier becomes ``f(D(clamp(x + d)))``; the denoiser ``D`` is trained on Gaussian-noised
training inputs with the MSE objective (target: the clean input), so the frozen encoder sees
inputs closer to its training distribution. A deterministic ``D`` is part of the base classifier,
so the smoothing guarantee is unchanged. The denoiser architectures for every continuous
modality (conv nets for images and frames, a 1-D conv net for waveforms, a point-wise MLP for
point clouds) are in :mod:`robustmm.encoders.denoiser_archs`; :class:`ConvDenoiser` is the
original image-like one.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import Encoder, WrapperEncoder

IMAGE_LIKE = ("image", "depth", "thermal", "video")


class ConvDenoiser(nn.Module):
    """``x -> clamp(x + net(x))`` with ``net`` a stack of 3x3 convolutions (last layer zero-init,
    so a fresh denoiser is the identity). Video inputs (N, T, C, H, W) are denoised frame by frame."""

    def __init__(self, channels: int, width: int = 32, depth: int = 4, domain: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        last = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)
        self.channels, self.width, self.depth, self.domain = channels, width, depth, domain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, *shape[-3:])
        return (x2 + self.net(x2)).clamp(*self.domain).reshape(shape)


class DenoisedEncoder(WrapperEncoder):
    """An encoder whose ``modality`` inputs pass through a denoiser first (other modalities untouched)."""

    def __init__(self, base: Encoder, modality: str, denoiser: nn.Module):
        super().__init__(base)
        self.denoised_modality, self.denoiser = modality, denoiser
        self.eval()  # a wrapper of frozen parts is frozen too (nn.Module starts in training mode)

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        if modality == self.denoised_modality:
            x = self.denoiser(x)
        return self.base.encode(modality, x, validate=False)

    def info(self) -> dict[str, Any]:
        d = self.denoiser
        return self.base.info() | {"denoiser": {"modality": self.denoised_modality,
                                                "architecture": getattr(d, "architecture", "conv2d"),
                                                "width": getattr(d, "width", None), "depth": getattr(d, "depth", None)}}
