"""TeCoA: supervised adversarial fine-tuning of one modality tower (Mao et al., ICLR 2023).

``min_theta E_(x, y) max_{||delta|| <= eps} CE(s * f_theta(x + delta) @ T^T, y)``: the zero-shot
cross-entropy of the tuned tower's embedding against the class prompt embeddings ``T`` (the text
tower's, frozen), with the adversarial examples made by PGD on that same loss. Unlike FARE it needs
labels (the training split's zero-shot task) and optimises exactly what the zero-shot attack
attacks, at the price of drifting further from the original embedding space. The loop is shared
with FARE (:func:`~robustmm.defenses.finetune.adversarial_finetune`); ``lora_rank=r`` trains only
low-rank adapters.

Registered as the defense family ``tecoa``: ``robustmm.defend(enc, "tecoa", data=train,
modality="audio", epochs=2, lr=1e-4, lora_rank=8)``.
"""
from __future__ import annotations

from typing import Any

import torch

from ..attacks.base import Attack
from ..attacks.losses import DEFAULT_SCALE, zeroshot_ce
from ..batch import Batch
from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from ..errors import RobustMMError
from .finetune import adversarial_finetune, pgd_maximise
from .registry import register_defense_family


class TecoaObjective:
    """TeCoA's loss: zero-shot cross-entropy of ``scale * emb @ class_emb.T`` against the labels."""

    name = "tecoa"
    attack_name = "tecoa-pgd"
    attack_loss = "zero-shot-ce"

    def __init__(self, scale: float = DEFAULT_SCALE):
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale <= 0:
            raise RobustMMError(f"scale (the logit scale) must be a positive number, got {scale!r}")
        self.scale = float(scale)

    def reference(self, original: Encoder, batch: Batch, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The class prompt embeddings (frozen text tower) and the batch's labels."""
        if batch.labels is None or batch.prompts is None:
            raise RobustMMError(f"TeCoA needs labels: the training data has no zero-shot task for {batch.modality!r} "
                                "(use FARE, which is unsupervised)")
        return original.class_embeddings(batch.prompts).to(x.device), batch.labels.to(x.device)

    def loss(self, emb: torch.Tensor, ref: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Per-item zero-shot cross-entropy."""
        class_emb, labels = ref
        return zeroshot_ce(emb, class_emb, labels, self.scale)

    def inner(self, tuned: Encoder, modality: str, x: torch.Tensor, ref: tuple[torch.Tensor, torch.Tensor],
              budget: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        """PGD on the same cross-entropy inside ``budget``."""
        return pgd_maximise(tuned, modality, x, lambda emb: self.loss(emb, ref).sum(), generator=generator, **budget)


def tecoa_finetune(
    encoder: Encoder,
    dataset: MultimodalDataset,
    *,
    modality: str,
    attack: Attack | None = None,
    epochs: int = 2,
    lr: float = 1e-4,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    eps: float | str | None = None,
    steps: int = 10,
    scale: float = DEFAULT_SCALE,
    lora_rank: int | None = None,
    lora_alpha: float | None = None,
    lora_merge: bool = True,
) -> Encoder:
    """Return a TeCoA-tuned *copy* of ``encoder``: ``modality``'s tower trained on the zero-shot
    cross-entropy of PGD examples (the original is untouched).

    Args:
        dataset: the training split; it needs ``modality``'s zero-shot task (labels, prompts).
        attack: optional; only its budget is used (``eps``, ``steps``, ``step_size``, ``norm``).
        eps: the training budget (default: the modality's middle eps); ``steps`` the PGD steps.
        scale: the logit scale of the cross-entropy (CLIP's 100, as the zero-shot attacks use).
        lora_rank, lora_alpha, lora_merge: low-rank adapters on the tower's Linear layers instead
            of the whole tower (:mod:`robustmm.encoders.lora`).
        seed: batch order, adapter initialisation and random starts, in a fork of the global RNG.

    The copy's ``training_info`` is the report (parameter counts and share, passes, losses).
    """
    dataset.check_modality(modality)
    if dataset.tasks.get(modality) is None:
        raise RobustMMError(f"TeCoA needs labels: the training data has no zero-shot task for {modality!r} "
                            "(use FARE, which is unsupervised)")
    return adversarial_finetune(encoder, dataset, TecoaObjective(scale), modality=modality, attack=attack,
                                epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, progress=progress, eps=eps,
                                steps=steps, lora_rank=lora_rank, lora_alpha=lora_alpha, lora_merge=lora_merge)


@register_defense_family("tecoa", "fine-tuning",
                         "TeCoA: the modality tower fine-tuned on adversarial zero-shot cross-entropy (supervised)",
                         trained=True)
def tecoa(encoder: Encoder, data: MultimodalDataset, *, modality: str | None = None, **settings: Any) -> Encoder:
    """:func:`tecoa_finetune`: a tuned copy of the encoder (``lora_rank=r`` for adapters only)."""
    if modality is None:
        raise RobustMMError("defense 'tecoa' needs modality=... (the modality it defends)")
    return tecoa_finetune(encoder, data, modality=modality, **settings)
