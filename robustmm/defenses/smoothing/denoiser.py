"""Denoised smoothing (Salman et al., NeurIPS 2020): a small denoiser in front of the frozen encoder.

The base classifier becomes ``f(D(clamp(x + d)))``; the denoiser ``D`` is trained on Gaussian-noised
training inputs with the MSE objective (target: the clean input), so the frozen encoder sees
inputs closer to its training distribution. A deterministic ``D`` is part of the base classifier,
so the smoothing guarantee is unchanged. Implemented for the image-like modalities (image, depth,
thermal, and video frame by frame): a residual 3x3 conv net of a few layers.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ...data.base import MultimodalDataset
from ...encoders.base import Encoder
from ...errors import RobustMMError
from ...modalities import get_modality
from .stats import check_smoothing_args

log = logging.getLogger(__name__)

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


class DenoisedEncoder(Encoder):
    """An encoder whose ``modality`` inputs pass through a denoiser first (other modalities untouched)."""

    def __init__(self, base: Encoder, modality: str, denoiser: nn.Module):
        super().__init__()
        self.base, self.denoised_modality, self.denoiser = base, modality, denoiser
        self.name, self.modalities, self.embed_dim, self.weights = base.name, base.modalities, base.embed_dim, base.weights

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        if modality == self.denoised_modality:
            x = self.denoiser(x)
        return self.base.encode(modality, x, validate=False)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return self.base.encode_text(texts)

    def class_embeddings(self, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
        return self.base.class_embeddings(prompts)

    def preprocess_info(self) -> dict[str, Any]:
        return self.base.preprocess_info()

    def info(self) -> dict[str, Any]:
        d = self.denoiser
        return self.base.info() | {"denoiser": {"modality": self.denoised_modality, "width": getattr(d, "width", None),
                                                "depth": getattr(d, "depth", None)}}


def train_denoiser(encoder: Encoder, dataset: MultimodalDataset, *, modality: str, sigma: float, epochs: int = 5,
                   lr: float = 2e-3, batch_size: int = 64, width: int = 32, depth: int = 4, seed: int = 0) -> DenoisedEncoder:
    """Train a :class:`ConvDenoiser` with MSE on ``clamp(x + N(0, sigma^2))`` -> ``x`` over ``dataset``.

    Returns the frozen ``encoder`` with the (frozen) denoiser in front of ``modality``. The encoder is
    not used in training (MSE needs no gradient through it); it is only wrapped.
    """
    check_smoothing_args(sigma=sigma, n=epochs)
    if modality not in IMAGE_LIKE:
        raise RobustMMError(f"the denoiser is implemented for {', '.join(IMAGE_LIKE)}, not {modality!r}")
    encoder.check_modality(modality)
    dataset.check_modality(modality)
    spec = get_modality(modality)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x_all = dataset.get(modality, torch.arange(len(dataset)))
    den = ConvDenoiser(x_all.shape[-3], width, depth, spec.domain)
    opt = torch.optim.Adam(den.parameters(), lr=lr)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        perm = torch.randperm(len(x_all), generator=gen)
        total = 0.0
        for s in range(0, len(x_all), batch_size):
            x = x_all[perm[s : s + batch_size]]
            xn = (x + sigma * torch.randn(x.shape, generator=gen)).clamp(*spec.domain)
            loss = (den(xn) - x).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(x)
        log.info("denoiser %s sigma=%g epoch %d: mse %.5f", modality, sigma, epoch, total / len(x_all))
    den.eval().requires_grad_(False)
    log.info("trained denoiser for %s in %.1fs", modality, time.perf_counter() - t0)
    return DenoisedEncoder(encoder, modality, den.to(encoder.device))
