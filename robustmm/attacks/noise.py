"""Random noise inside the eps-ball: the control every gradient attack must beat.

If random noise of the same budget hurts a model as much as PGD does, the gradients the attack
follows carry no information -- a classic sign of gradient masking (Athalye et al., 2018).

Arguments:
    eps (float | None): budget in the modality's unit; None = the modality's middle eps.
    norm ("linf" | "l2" | None): None = the modality's default norm. L2 noise lies on the sphere
        of radius eps (a uniform direction at the full budget), then is clamped to the domain.
    seed (int): per-item seeds, so an item gets the same noise whatever batch it is in.

Example::

    >>> noise = build_attack("noise", eps=8 / 255)
    >>> robustmm.evaluate(enc, data, modality="image", attack=noise)
"""
from __future__ import annotations

from typing import Any

import torch

from ..batch import Batch
from ..modalities import get_modality
from .base import Attack, register_attack
from .ops import check_eps, project, random_delta, resolve_norm


@register_attack("noise")
class RandomNoise(Attack):
    """Uniform random perturbation in the L-inf ball (or on the L2 sphere of radius eps), clamped to the domain."""

    def __init__(self, eps: float | None = None, norm: str | None = None, seed: int = 0):
        self.eps = None if eps is None else check_eps(eps)
        self.norm = None if norm is None else resolve_norm(norm)
        self.seed = int(seed)

    def settings(self) -> dict[str, Any]:
        return {"eps": self.eps, "norm": self.norm, "seed": self.seed}

    def resolve(self, modality: str) -> "RandomNoise":
        """A copy with the modality's middle eps and default norm filled in."""
        spec = get_modality(modality)
        return self.replace(eps=spec.middle_eps if self.eps is None else self.eps, norm=resolve_norm(self.norm, spec))

    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        spec = get_modality(batch.modality)
        eps = spec.middle_eps if self.eps is None else self.eps
        norm = resolve_norm(self.norm, spec)
        x = batch.x
        if eps == 0:
            return batch.replace(x=x.clone())
        index = batch.index if batch.index is not None else torch.arange(len(x))
        delta = random_delta(x, eps, norm, seed=self.seed, index=index.cpu(), sphere=True).to(x.device, x.dtype)
        return batch.replace(x=project(x + delta, x, eps, norm, spec.domain).detach())
