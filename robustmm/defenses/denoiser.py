"""Training the denoiser of denoised smoothing (Salman et al., NeurIPS 2020), for every continuous modality.

:func:`train_denoiser` fits a denoiser (an architecture of :mod:`robustmm.encoders.denoiser_archs`,
by default the one that fits the modality's shape) on Gaussian-noised training inputs, with one of
two objectives, and returns the frozen encoder behind it (a
:class:`~robustmm.encoders.denoiser.DenoisedEncoder`):

* ``mse`` -- ``|D(clamp(x + d)) - x|^2``: reconstruct the clean input. Needs no labels and no
  gradient through the encoder (cheap), but spends capacity on details the encoder ignores.
* ``consistency`` -- Salman et al.'s classification-consistency objective: cross-entropy between
  the frozen zero-shot classifier's prediction on the clean input (its argmax over the class-prompt
  embeddings, a pseudo-label: no true labels are read) and its scores on ``D(clamp(x + d))``. The
  gradient flows through the frozen encoder into the denoiser only; the encoder's weights, modes
  and ``requires_grad`` flags are left as they were.
"""
from __future__ import annotations

import copy
import logging
import math
import time

import torch

from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from ..encoders.denoiser import DenoisedEncoder
from ..encoders.denoiser_archs import ResidualDenoiser, build_denoiser
from ..encoders.smoothing_stats import check_smoothing_args
from ..errors import RobustMMError
from ..modalities import get_modality
from ..seeding import seeded

log = logging.getLogger(__name__)

OBJECTIVES = ("mse", "consistency")


def _check_settings(objective: str, lr: float, batch_size: int, logit_scale: float, n_train: int | None) -> None:
    """One-line errors for settings no training can use."""
    if objective not in OBJECTIVES:
        raise RobustMMError(f"denoiser objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise RobustMMError(f"denoiser lr must be a finite number > 0, got {lr!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise RobustMMError(f"denoiser batch_size must be an integer >= 1, got {batch_size!r}")
    if not isinstance(logit_scale, (int, float)) or not math.isfinite(logit_scale) or logit_scale <= 0:
        raise RobustMMError(f"denoiser logit_scale must be a finite number > 0, got {logit_scale!r}")
    if n_train is not None and (isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 1):
        raise RobustMMError(f"denoiser n_train must be an integer >= 1 (or None for the whole split), got {n_train!r}")


def train_denoiser(encoder: Encoder, dataset: MultimodalDataset, *, modality: str, sigma: float, epochs: int = 5,
                   lr: float = 2e-3, batch_size: int = 64, width: int = 32, depth: int = 4, seed: int = 0,
                   architecture: str | None = None, objective: str = "mse", logit_scale: float = 50.0,
                   n_train: int | None = None, init: DenoisedEncoder | None = None) -> DenoisedEncoder:
    """Train a denoiser for ``modality`` on ``clamp(x + N(0, sigma^2))`` and put it in front of ``encoder``.

    Args:
        encoder: the frozen encoder (only read: with ``mse`` it is not used in training at all).
        dataset: the training split (with a zero-shot task for ``modality`` when ``objective="consistency"``).
        sigma: the noise std in the modality's raw unit (train at the sigma you will certify at).
        epochs, lr, batch_size: Adam training; ``n_train`` uses only the first ``n_train`` items.
        width, depth: the architecture's hidden width and number of layers.
        architecture: a name of :func:`~robustmm.encoders.denoiser_archs.list_denoisers`
            (default: the one that fits the modality's shape).
        objective: ``"mse"`` (reconstruct the clean input) or ``"consistency"`` (keep the frozen
            zero-shot classifier's clean prediction; Salman et al. 2020).
        logit_scale: softmax temperature of the zero-shot scores in the consistency loss.
        init: a trained :class:`DenoisedEncoder` of the same modality whose denoiser is copied and
            trained further (Salman et al.'s best recipe: MSE first, then consistency); its
            architecture, width and depth are kept.
    Returns:
        The frozen :class:`DenoisedEncoder`; its ``training_info`` records the settings, the final
        loss, the wall time and the cost in passes (items x epochs).
    """
    check_smoothing_args(sigma=sigma)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise RobustMMError(f"denoiser epochs must be an integer >= 1, got {epochs!r}")
    _check_settings(objective, lr, batch_size, logit_scale, n_train)
    encoder.check_modality(modality)
    dataset.check_modality(modality)
    if init is not None and (not isinstance(init, DenoisedEncoder) or init.denoised_modality != modality):
        raise RobustMMError(f"init= must be a DenoisedEncoder of {modality!r} (from train_denoiser), "
                            f"got {type(init).__name__}")
    with seeded(seed):  # the fresh weights come from the run's seed, never from the caller's RNG
        den = _initial_denoiser(modality, architecture, width, depth, init)
    if n_train is not None:
        dataset = dataset.head(min(n_train, len(dataset)))
    dataset.check_nonempty()
    centers = None
    if objective == "consistency":
        task = dataset.tasks.get(modality)
        if task is None:
            raise RobustMMError(f"objective='consistency' needs a zero-shot task for {modality!r} in dataset "
                                f"{dataset.name!r} (class prompts); use objective='mse'")
        centers = encoder.class_embeddings(task.prompts()).detach()
    spec = get_modality(modality)
    t0 = time.perf_counter()
    with seeded(seed):
        gen = torch.Generator().manual_seed(seed)
        x_all = dataset.get(modality, torch.arange(len(dataset)))
        den = den.to(encoder.device)
        loss = _fit(den, encoder, centers, x_all, sigma=sigma, domain=spec.domain, epochs=epochs, lr=lr,
                    batch_size=batch_size, gen=gen, logit_scale=float(logit_scale))
    den.zero_grad(set_to_none=True)  # frozen, without training gradients
    den.eval().requires_grad_(False)
    seconds = time.perf_counter() - t0
    log.info("trained %s denoiser (%s) for %s in %.1fs", den.architecture, objective, modality, seconds)
    out = DenoisedEncoder(encoder, modality, den)
    before = {} if init is None else (init.training_info or {})
    width, depth = den.width, den.depth
    passes = len(x_all) * epochs + int(before.get("passes", 0))
    out.training_info = {"defense": "denoiser", "modality": modality, "architecture": den.architecture,
                         "objective": objective, "init": None if init is None else before.get("objective", "given"),
                         "sigma": float(sigma), "epochs": epochs, "lr": float(lr),
                         "width": width, "depth": depth, "n_train": len(x_all), "passes": passes,
                         "final_loss": loss, "seconds": round(seconds, 2)}
    return out


def _initial_denoiser(modality: str, architecture: str | None, width: int, depth: int,
                      init: DenoisedEncoder | None) -> ResidualDenoiser:
    """A fresh denoiser, or a trainable copy of ``init``'s (its architecture, width and depth kept)."""
    if init is None:
        return build_denoiser(modality, architecture, width=width, depth=depth)
    return copy.deepcopy(init.denoiser).requires_grad_(True)


def _fit(den: ResidualDenoiser, encoder: Encoder, centers: torch.Tensor | None, x_all: torch.Tensor, *, sigma: float,
         domain: tuple[float, float], epochs: int, lr: float, batch_size: int, gen: torch.Generator,
         logit_scale: float) -> float:
    """Train ``den`` in place (MSE when ``centers`` is None, else consistency); the last epoch's mean loss."""
    device = encoder.device
    targets = None
    if centers is not None:
        targets = _pseudo_labels(encoder, den.modality, x_all, centers, batch_size)
    flags = [p.requires_grad for p in encoder.parameters()]
    modes = [m.training for m in encoder.modules()]
    opt = torch.optim.Adam(den.parameters(), lr=lr)
    den.train()
    mean = float("nan")
    try:
        encoder.requires_grad_(False)  # the gradient reaches the denoiser only
        for epoch in range(epochs):
            perm = torch.randperm(len(x_all), generator=gen)
            total = 0.0
            for s in range(0, len(x_all), batch_size):
                pick = perm[s : s + batch_size]
                x = x_all[pick]
                xn = (x + sigma * torch.randn(x.shape, generator=gen)).clamp(*domain).to(device)
                if targets is None:
                    loss = (den(xn) - x.to(device)).square().mean()
                else:
                    z = encoder.encode(den.modality, den(xn), validate=False)
                    loss = torch.nn.functional.cross_entropy(logit_scale * z @ centers.T, targets[pick].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(x)
            mean = total / len(x_all)
            log.info("denoiser %s epoch %d: %s loss %.5f", den.modality, epoch, "mse" if targets is None else "ce", mean)
    finally:
        for p, f in zip(encoder.parameters(), flags):
            p.requires_grad_(f)
            p.grad = None
        for m, t in zip(encoder.modules(), modes):
            m.train(t)
    return mean


@torch.no_grad()
def _pseudo_labels(encoder: Encoder, modality: str, x_all: torch.Tensor, centers: torch.Tensor,
                   batch_size: int) -> torch.Tensor:
    """The frozen zero-shot classifier's predictions on the clean training inputs (the consistency targets)."""
    out = [(encoder.encode(modality, x_all[s : s + batch_size].to(encoder.device)) @ centers.T).argmax(1).cpu()
           for s in range(0, len(x_all), batch_size)]
    return torch.cat(out)

