"""FARE-style baseline: adversarially fine-tune one modality tower (Schlarmann et al., 2024).

Unsupervised: the tuned tower's embedding of an adversarial input is pulled (L2) to the *frozen
original* tower's embedding of the clean input; the adversarial inputs are made against the tower
being tuned (PGD, label-free embedding loss). Unlike calibration heads this changes the encoder,
costs a PGD run per training step, and is the comparison point for robustness and training time.
"""
from __future__ import annotations

import copy
import logging
import time
from typing import Any

import torch

from ..attacks.base import Attack, build_attack
from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from ..errors import RobustMMError
from ..modalities import get_modality
from ..progress import tqdm

log = logging.getLogger(__name__)


def fare_finetune(
    encoder: Encoder,
    dataset: MultimodalDataset,
    *,
    modality: str,
    attack: Attack | None = None,
    epochs: int = 2,
    lr: float = 1e-5,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> tuple[Encoder, dict[str, Any]]:
    """Return a fine-tuned *copy* of ``encoder`` (the original is untouched) and a report.

    Only the parameters of ``encoder.tower(modality)`` are trained; batch-norm statistics stay
    frozen (eval mode) so the clean behaviour drifts only through the weights.
    """
    dataset.check_modality(modality)
    dataset.check_nonempty()
    if epochs <= 0:
        raise RobustMMError(f"epochs must be positive, got {epochs}")
    spec = get_modality(modality)
    attack = attack or build_attack("pgd", eps=spec.middle_eps, steps=10, loss="embedding")
    tuned = copy.deepcopy(encoder)
    tuned.eval()
    tower = tuned.tower(modality)
    params = [p for p in tower.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    from ..evaluation import iter_batches

    task = dataset.tasks.get(modality)
    prompts = task.prompts() if task is not None else None
    t0 = time.perf_counter()
    n = len(dataset)
    steps = 0
    for _epoch in tqdm(range(epochs), desc=f"fare/{modality}", disable=not progress, leave=False):
        perm = torch.randperm(n, generator=gen)
        shuffled = dataset.subset(perm)
        for batch in iter_batches(shuffled, modality, batch_size, prompts):
            x = batch.x.to(tuned.device)
            with torch.no_grad():
                target = encoder.encode(modality, x)
            for p in params:  # the attack must not see trainable params (it restores flags itself)
                p.requires_grad_(False)
            xa = attack(tuned, batch.replace(x=x)).x
            for p in params:
                p.requires_grad_(True)
            loss = (tuned.encode(modality, xa, validate=False) - target).square().sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    for p in tuned.parameters():
        p.requires_grad_(False)
    tuned.eval()
    report = {
        "name": "fare",
        "modality": modality,
        "epochs": epochs,
        "steps": steps,
        "lr": lr,
        "attack": attack.describe(),
        "train_s": round(time.perf_counter() - t0, 2),
        "trainable_params": sum(p.numel() for p in params),
        "final_loss": round(float(loss.detach()), 4),
    }
    log.info("FARE %s/%s: %d steps in %.1fs", encoder.name, modality, steps, report["train_s"])
    return tuned, report
