"""Noise calibration: calibration heads trained on embeddings of Gaussian-noised inputs.

Randomized smoothing certifies the base classifier's behaviour *under noise*, so the head that
helps is one trained for noise, not for adversarial examples (the calibration paper's idea
retargeted to a guarantee). :func:`noise_calibrate` embeds ``draws`` noisy copies of every
training item once (clamped to the domain, seeded per item and draw), then reuses
:func:`robustmm.defenses.calibrate` unchanged through its ``embeddings=`` cache: the training set
is the dataset repeated ``draws`` times, each copy paired with the clean embedding of its item.
The heads are ordinary :class:`~robustmm.encoders.heads.ResidualHead` s, saved and loaded with
``save_heads``/``load_heads``.
"""
from __future__ import annotations

from typing import Any

import torch

from ..attacks.base import Attack
from ..batch import Batch
from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from ..encoders.heads import Calibration
from ..encoders.smoothed import item_seed
from ..encoders.smoothing_stats import check_smoothing_args
from ..errors import RobustMMError
from ..evaluation import iter_batches
from ..modalities import get_modality
from ..progress import tqdm
from .calibrate import calibrate

PHASE_TRAIN = 7  # noise stream of training draws, distinct from the certification phases


class GaussianNoise(Attack):
    """Not an attack: Gaussian noise of std ``sigma`` in the raw domain, clamped, seeded per item.

    ``draw`` selects the noise stream (one per training copy). Usable wherever an Attack is
    (for example as ``calibrate(..., attack=GaussianNoise(0.12))`` for a one-draw noise head).
    """

    name = "gaussian-noise"

    def __init__(self, sigma: float, seed: int = 0, draw: int = 0):
        check_smoothing_args(sigma=sigma)
        self.sigma, self.seed, self.draw = float(sigma), int(seed), int(draw)

    def settings(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "seed": self.seed, "draw": self.draw}

    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        lo, hi = get_modality(batch.modality).domain
        index = range(len(batch)) if batch.index is None else [int(i) for i in batch.index]
        noise = torch.stack([
            torch.randn(batch.x.shape[1:], generator=torch.Generator().manual_seed(
                item_seed(self.seed, i, PHASE_TRAIN + 16 * self.draw)), dtype=batch.x.dtype)
            for i in index]).to(batch.x.device)
        return batch.replace(x=(batch.x.detach() + self.sigma * noise).clamp(lo, hi))


@torch.no_grad()
def noisy_embeddings(encoder: Encoder, dataset: MultimodalDataset, *, modality: str, sigma: float, draws: int = 4,
                     seed: int = 0, batch_size: int = 256, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, noisy) embeddings, each (draws * N, D): row ``k * N + i`` is item i's draw k."""
    check_smoothing_args(sigma=sigma, n=draws)
    clean, noisy = [], [[] for _ in range(draws)]
    n_batches = (len(dataset) + batch_size - 1) // batch_size
    for batch in tqdm(iter_batches(dataset, modality, batch_size, None), total=n_batches,
                      desc=f"noise-calibrate/{modality}: embeddings", disable=not progress, leave=False):
        batch = batch.replace(x=batch.x.to(encoder.device))
        clean.append(encoder.encode(modality, batch.x).cpu())
        for k in range(draws):
            xn = GaussianNoise(sigma, seed, k)(encoder, batch).x
            noisy[k].append(encoder.encode(modality, xn, validate=False).cpu())
    c = torch.cat(clean)
    return c.repeat(draws, 1), torch.cat([torch.cat(parts) for parts in noisy])


def _repeated(dataset: MultimodalDataset, modality: str, draws: int) -> MultimodalDataset:
    """The dataset repeated ``draws`` times for calibrate's cache: captions and labels only, the
    raw tensors stay lazy (calibrate never reads them when given embeddings)."""
    n = len(dataset)
    task = dataset.tasks.get(modality)
    tasks = {} if task is None else {modality: task.subset(torch.arange(n).repeat(draws))}
    return MultimodalDataset(name=dataset.name, split=dataset.split, captions=list(dataset.captions) * draws,
                             loaders={modality: lambda idx: dataset.get(modality, idx % n)}, tasks=tasks,
                             seed=dataset.seed, meta=dict(dataset.meta))


def noise_calibrate(encoder: Encoder, dataset: MultimodalDataset, *, modality: str, sigma: float, draws: int = 4,
                    objective: str = "ce", seed: int = 0, batch_size: int = 256, progress: bool = True,
                    **calibrate_kwargs: Any) -> Calibration:
    """Train a calibration head for ``modality`` on embeddings of Gaussian-noised training inputs.

    Args:
        encoder: the frozen encoder; dataset: the training split (with a zero-shot task for ``ce``).
        sigma: noise std in the modality's raw unit (use the sigma you will certify at).
        draws: noisy copies per training item (k noise draws per item).
        objective: any :func:`~robustmm.defenses.calibrate` objective (``ce`` is what certifies).
        calibrate_kwargs: passed on (``epochs``, ``lr``, ``hidden``, ``consistency_weight``, ...).
    Returns:
        A :class:`~robustmm.defenses.Calibration` whose ``meta["noise"]`` records sigma and draws.
    """
    check_smoothing_args(sigma=sigma, n=draws)
    if "attack" in calibrate_kwargs or "embeddings" in calibrate_kwargs:
        raise RobustMMError("noise_calibrate makes its own noisy embeddings; do not pass attack= or embeddings=")
    dataset.check_modality(modality)
    dataset.check_nonempty()
    encoder.check_modality(modality)
    clean, noisy = noisy_embeddings(encoder, dataset, modality=modality, sigma=sigma, draws=draws, seed=seed,
                                    batch_size=batch_size, progress=progress)
    repeated = _repeated(dataset, modality, draws)
    cal = calibrate(encoder, repeated, modality=modality, objective=objective, attack=GaussianNoise(sigma, seed),
                    embeddings=(clean, noisy), seed=seed, batch_size=batch_size, progress=progress, **calibrate_kwargs)
    cal.meta["noise"] = {"sigma": float(sigma), "draws": draws}
    cal.meta["n_train"] = len(dataset)
    return cal
