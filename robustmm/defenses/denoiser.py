"""Training the denoiser of denoised smoothing (Salman et al., NeurIPS 2020).

:func:`train_denoiser` fits a :class:`~robustmm.encoders.denoiser.ConvDenoiser` with MSE on
Gaussian-noised training inputs (target: the clean input) and returns the frozen encoder behind it
(a :class:`~robustmm.encoders.denoiser.DenoisedEncoder`).
"""
from __future__ import annotations

import logging
import time

import torch

from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from ..encoders.denoiser import IMAGE_LIKE, ConvDenoiser, DenoisedEncoder
from ..encoders.smoothing_stats import check_smoothing_args
from ..errors import RobustMMError
from ..modalities import get_modality
from ..seeding import seeded

log = logging.getLogger(__name__)


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
    t0 = time.perf_counter()
    with seeded(seed):
        gen = torch.Generator().manual_seed(seed)
        x_all = dataset.get(modality, torch.arange(len(dataset)))
        den = ConvDenoiser(x_all.shape[-3], width, depth, spec.domain)
        _fit(den, x_all, sigma, spec.domain, epochs, lr, batch_size, gen, modality)
    den.zero_grad(set_to_none=True)  # frozen, without training gradients
    den.eval().requires_grad_(False)
    log.info("trained denoiser for %s in %.1fs", modality, time.perf_counter() - t0)
    return DenoisedEncoder(encoder, modality, den.to(encoder.device))


def _fit(den: ConvDenoiser, x_all: torch.Tensor, sigma: float, domain: tuple[float, float], epochs: int, lr: float,
         batch_size: int, gen: torch.Generator, modality: str) -> None:
    """MSE training of ``den`` on noisy copies of ``x_all`` (in place)."""
    opt = torch.optim.Adam(den.parameters(), lr=lr)
    for epoch in range(epochs):
        perm = torch.randperm(len(x_all), generator=gen)
        total = 0.0
        for s in range(0, len(x_all), batch_size):
            x = x_all[perm[s : s + batch_size]]
            xn = (x + sigma * torch.randn(x.shape, generator=gen)).clamp(*domain)
            loss = (den(xn) - x).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(x)
        log.info("denoiser %s sigma=%g epoch %d: mse %.5f", modality, sigma, epoch, total / len(x_all))
