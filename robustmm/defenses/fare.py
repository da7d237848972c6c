"""FARE baseline: adversarially fine-tune one modality tower (Schlarmann et al., 2024).

Unsupervised: ``min_theta E_x max_{||delta|| <= eps} ||f_theta(x + delta) - f_orig(x)||^2``. Both
the inner maximisation (:func:`fare_inner_attack`, a PGD written for this loss) and the outer
loss use the embedding of the clean input by the *frozen original* tower ``f_orig``, never the
tuned tower's own clean embedding (which drifts as it trains). Unlike calibration heads this
changes the encoder and costs a PGD run per training step; it is the comparison point for
robustness and training time. The defaults (4 epochs of batch 32, lr 3e-4, inner PGD-10) are the
budget of the README's comparison (``benchmarks/calibration_vs_fare.py``); the learning rate was
chosen on val by ``experiments/select_fare.py`` (grid 3e-6 ... 3e-3 on 512 training scenes: 3e-4 is the
best robust top-1 among the rates that keep clean top-1 within 5 points; 1e-3 already loses 28).
"""
from __future__ import annotations

from typing import Any

import torch

from ..attacks.base import Attack
from ..batch import Batch
from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from .finetune import adversarial_finetune, pgd_maximise


def fare_inner_attack(tuned: Encoder, modality: str, x: torch.Tensor, target: torch.Tensor, *, eps: float,
                      steps: int = 10, step_size: float | None = None, norm: str | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """FARE's inner maximisation: PGD on ``||tuned(x + delta) - target||^2`` inside the eps-ball.

    ``target`` is the frozen original tower's embedding of the clean ``x`` (what the outer loss
    pulls towards). Random start; step eps/4 (L-inf, sign steps) or 2.5*eps/steps (L2, normalised
    gradient steps); every iterate clamped to the modality's domain. Returns ``x + delta``
    detached. The tuned tower's ``requires_grad`` flags are left as they were.
    """
    return pgd_maximise(tuned, modality, x, lambda emb: (emb - target).square().sum(-1).sum(), eps=eps,
                        steps=steps, step_size=step_size, norm=norm, generator=generator)


class FareObjective:
    """FARE's loss: the squared distance of the tuned embedding to the frozen original's clean one."""

    name = "fare"
    attack_name = "fare-pgd"
    attack_loss = "l2-to-frozen-clean"

    def reference(self, original: Encoder, batch: Batch, x: torch.Tensor) -> torch.Tensor:
        """The frozen original's clean embeddings (never the tuned tower's own, which drift)."""
        return original.encode(batch.modality, x)

    def loss(self, emb: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Per item ``||emb - ref||^2``."""
        return (emb - ref).square().sum(-1)

    def inner(self, tuned: Encoder, modality: str, x: torch.Tensor, ref: torch.Tensor, budget: dict[str, Any],
              generator: torch.Generator) -> torch.Tensor:
        """:func:`fare_inner_attack` at ``budget``."""
        return fare_inner_attack(tuned, modality, x, ref, generator=generator, **budget)


def fare_finetune(
    encoder: Encoder,
    dataset: MultimodalDataset,
    *,
    modality: str,
    attack: Attack | None = None,
    epochs: int = 4,
    lr: float = 3e-4,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    eps: float | str | None = None,
    steps: int = 10,
    lora_rank: int | None = None,
    lora_alpha: float | None = None,
    lora_merge: bool = True,
) -> Encoder:
    """Return a FARE-tuned *copy* of ``encoder`` (the original is untouched).

    Only the parameters of ``encoder.tower(modality)`` are trained (or, with ``lora_rank=r``, only
    rank-``r`` adapters on its Linear layers); batch-norm statistics stay frozen (eval mode) so the
    clean behaviour drifts only through the weights. The copy's ``training_info`` attribute is the
    training report (epochs, steps, lr, the inner attack's budget, time, parameter counts, passes,
    losses). The loop is :func:`~robustmm.defenses.finetune.adversarial_finetune`, shared with TeCoA.

    Args:
        attack: optional; only its budget is used (``eps``, ``steps``, ``step_size``, ``norm``
            settings), since FARE's inner loss is fixed (:func:`fare_inner_attack`).
        eps: the inner attack's budget (default: the modality's middle eps); ``steps`` its steps.
        lora_rank, lora_alpha, lora_merge: low-rank adapters instead of the whole tower.
        seed: seeds the batch order and the inner attack's random starts, inside a fork of the
            global RNG (the caller's random state is left as it was).
    """
    return adversarial_finetune(encoder, dataset, FareObjective(), modality=modality, attack=attack, epochs=epochs,
                                lr=lr, batch_size=batch_size, seed=seed, progress=progress, eps=eps, steps=steps,
                                lora_rank=lora_rank, lora_alpha=lora_alpha, lora_merge=lora_merge)
