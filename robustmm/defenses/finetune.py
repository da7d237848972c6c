"""Adversarial fine-tuning of one modality tower: the loop FARE and TeCoA share.

Both train a copy of the encoder's tower on ``min_theta E max_{||delta|| <= eps} L(f_theta(x + delta))``
with a PGD inner maximisation of the same loss; they differ only in the loss (a
:class:`FinetuneObjective`): FARE pulls the adversarial embedding towards the frozen original's
clean embedding (unsupervised), TeCoA minimises the zero-shot cross-entropy against the class
prompt embeddings (supervised). :func:`adversarial_finetune` is the loop: a deep copy, the
tower's parameters (or only LoRA adapters on its Linear layers, ``lora_rank=r``) trained with
AdamW, BatchNorm statistics frozen, the training report in ``training_info``.

The inner attack runs in the modality's own threat model (``norm`` and ``eps`` of
:mod:`robustmm.modalities`; the default training budget is the middle eps of the modality's grid),
so the same loop works on every tower: pixels, waveforms and point clouds.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import torch

from ..attacks.base import Attack
from ..batch import Batch
from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from ..encoders.lora import add_lora, check_rank, lora_layers, merge_lora
from ..errors import BudgetError, RobustMMError
from ..evaluation import iter_batches
from ..modalities import get_modality, parse_budget
from ..progress import tqdm
from ..seeding import seeded

log = logging.getLogger(__name__)


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """``delta`` projected onto the ``norm`` ball of radius ``eps`` (per item)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    flat = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    return delta * (eps / flat).clamp(max=1.0).view(-1, *[1] * (delta.dim() - 1))


def pgd_maximise(tuned: Encoder, modality: str, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], *,
                 eps: float, steps: int = 10, step_size: float | None = None, norm: str | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """The inner maximisation of adversarial fine-tuning: PGD on ``loss_fn(tuned.encode(x + delta))``.

    ``loss_fn`` maps the (N, D) embeddings to a scalar (a sum over items, so each item's gradient
    is its own). Random start; step eps/4 (L-inf, sign steps) or 2.5*eps/steps (L2, normalised
    gradient steps); every iterate clamped to the modality's domain. Returns ``x + delta``
    detached. The tuned encoder's ``requires_grad`` flags are left as they were.
    """
    spec = get_modality(modality)
    norm = str(norm or spec.norm)
    if norm not in ("linf", "l2"):
        raise BudgetError(f"the fine-tuning inner attack supports linf and l2, not {norm!r}")
    if eps < 0 or steps < 0:
        raise BudgetError(f"eps and steps must be >= 0, got eps={eps}, steps={steps}")
    if steps == 0 or eps == 0:
        return x.detach()
    step = step_size if step_size is not None else (eps / 4 if norm == "linf" else 2.5 * eps / steps)
    lo, hi = spec.domain
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device) * 2 - 1
    delta = project(noise * eps, eps, norm)
    delta = ((x + delta).clamp(lo, hi) - x).detach()
    params = [p for p in tuned.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = loss_fn(tuned.encode(modality, x + delta, validate=False))
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                if norm == "linf":
                    delta = delta + step * grad.sign()
                else:
                    g = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))
                    delta = delta + step * grad / g
                delta = ((x + project(delta, eps, norm)).clamp(lo, hi) - x).detach()
    finally:
        for p in params:
            p.requires_grad_(True)
    return (x + delta).detach()


class FinetuneObjective(Protocol):
    """What distinguishes one adversarial fine-tuning method from another (FARE, TeCoA)."""

    name: str
    #: the inner attack's name and loss, for the training report
    attack_name: str
    attack_loss: str

    def reference(self, original: Encoder, batch: Batch, x: torch.Tensor) -> Any:
        """What the loss compares against, computed once per batch without gradients (FARE: the
        frozen original's clean embeddings; TeCoA: the class embeddings and labels)."""
        ...

    def loss(self, emb: torch.Tensor, ref: Any) -> torch.Tensor:
        """The per-item loss (N,) of the tuned tower's embeddings ``emb``; training minimises its mean."""
        ...

    def inner(self, tuned: Encoder, modality: str, x: torch.Tensor, ref: Any, budget: dict[str, Any],
              generator: torch.Generator) -> torch.Tensor:
        """Adversarial inputs maximising :meth:`loss` inside the budget (``x + delta``, detached)."""
        ...


def inner_budget(modality: str, attack: Attack | None, eps: Any, steps: int) -> dict[str, Any]:
    """The inner attack's ``eps``/``steps``/``step_size``/``norm``: ``attack``'s settings over the keywords.

    ``eps`` may be a number or a fraction string (``"4/255"``); None is the modality's middle eps.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise RobustMMError(f"steps (the inner attack's PGD steps) must be an integer >= 0, got {steps!r}")
    budget: dict[str, Any] = {"eps": eps, "steps": steps, "step_size": None, "norm": None}
    if attack is not None:
        given = attack.resolve(modality).settings()
        budget |= {k: given[k] for k in budget if given.get(k) is not None}
    spec = get_modality(modality)
    budget["eps"] = spec.middle_eps if budget["eps"] is None else parse_budget(budget["eps"], "eps")
    spec.check_budget(budget["eps"], budget["norm"])
    return budget


def _check_settings(epochs: Any, lr: Any, batch_size: Any) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
        raise RobustMMError(f"epochs must be positive, got {epochs!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise RobustMMError(f"lr must be a positive number (e.g. lr=1e-4), got {lr!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise RobustMMError(f"batch_size must be a positive integer, got {batch_size!r}")


def adversarial_finetune(
    encoder: Encoder,
    dataset: MultimodalDataset,
    objective: FinetuneObjective,
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
    weight_decay: float = 1e-4,
) -> Encoder:
    """Return an adversarially fine-tuned *copy* of ``encoder`` (the original is untouched).

    Only ``encoder.tower(modality)`` is trained -- all of its parameters, or with ``lora_rank=r``
    only low-rank adapters on its Linear layers (:mod:`robustmm.encoders.lora`; base weights
    frozen). BatchNorm statistics stay frozen (eval mode), so the clean behaviour drifts only
    through the weights. The copy's ``training_info`` is the training report.

    Args:
        objective: the method's loss and inner attack (:class:`FinetuneObjective`).
        attack: optional; only its budget is used (``eps``, ``steps``, ``step_size``, ``norm``).
        eps: the inner attack's budget (default: the modality's middle eps); ``steps`` its PGD steps.
        lora_rank, lora_alpha: train rank-``r`` adapters scaled by ``alpha / r`` (default alpha = r)
            instead of the whole tower; ``lora_merge`` folds them into the weights afterwards, so the
            result has the base architecture (and saves/loads like it).
        seed: seeds the batch order, the adapters' initialisation and the inner attack's random
            starts, inside a fork of the global RNG (the caller's random state is left as it was).
    """
    dataset.check_modality(modality)
    dataset.check_nonempty()
    encoder.check_modality(modality)
    _check_settings(epochs, lr, batch_size)
    if lora_rank is not None:
        check_rank(lora_rank)
    elif lora_alpha is not None:
        raise RobustMMError("lora_alpha is set but lora_rank is not: pass lora_rank=r to train adapters")
    budget = inner_budget(modality, attack, eps, steps)
    tuned = copy.deepcopy(encoder)
    tuned.eval()
    tower = tuned.tower(modality)
    tower_params = sum(p.numel() for p in tower.parameters())
    t0 = time.perf_counter()
    with seeded(seed):
        gen = torch.Generator().manual_seed(seed)
        if lora_rank is None:
            params = list(tower.parameters())
            for p in params:
                p.requires_grad_(True)
        else:
            params = add_lora(tower, lora_rank, lora_alpha, generator=gen)
        n_trainable = sum(p.numel() for p in params)
        n_adapted = len(lora_layers(tower))
        losses = _train(encoder, tuned, params, dataset, modality, objective, budget, epochs, lr, batch_size,
                        weight_decay, gen, progress)
    merged = bool(lora_rank is not None and lora_merge)
    if merged:
        merge_lora(tower)
    tuned.zero_grad(set_to_none=True)  # the tuned copy is frozen and carries no training gradients
    for p in tuned.parameters():
        p.requires_grad_(False)
    tuned.eval()
    report = {
        "name": objective.name,
        "modality": modality,
        "epochs": epochs,
        "steps": len(losses),
        "lr": lr,
        "batch_size": batch_size,
        "weight_decay": weight_decay,
        "seed": seed,
        "n_train": len(dataset),
        "attack": {"name": objective.attack_name, "loss": objective.attack_loss, **budget},
        "train_s": round(time.perf_counter() - t0, 2),
        "trainable_params": n_trainable,
        "tower_params": tower_params,
        "total_params": sum(p.numel() for p in encoder.parameters()),
        "trainable_share": round(n_trainable / max(tower_params, 1), 6),
        # forward+backward passes of the tower during training: per item and epoch, the inner
        # attack's steps plus the outer update (the frozen reference's forward pass not counted)
        "training_passes": len(dataset) * epochs * (budget["steps"] + 1),
        "lora": None if lora_rank is None else {"rank": lora_rank, "alpha": float(lora_alpha or lora_rank),
                                                 "layers": n_adapted, "merged": merged},
        "first_loss": round(losses[0], 4),
        "final_loss": round(losses[-1], 4),
    }
    log.info("%s %s/%s: %d steps in %.1fs (%d trainable parameters)", objective.name, encoder.name, modality,
             len(losses), report["train_s"], n_trainable)
    tuned.training_info = report
    return tuned


def _train(encoder: Encoder, tuned: Encoder, params: list[torch.nn.Parameter], dataset: MultimodalDataset,
           modality: str, objective: FinetuneObjective, budget: dict[str, Any], epochs: int, lr: float,
           batch_size: int, weight_decay: float, gen: torch.Generator, progress: bool) -> list[float]:
    """The outer loop over ``epochs`` shuffled passes; the loss of every step."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    task = dataset.tasks.get(modality)
    prompts = task.prompts() if task is not None else None
    losses: list[float] = []
    for _epoch in tqdm(range(epochs), desc=f"{objective.name}/{modality}", disable=not progress, leave=False):
        shuffled = dataset.subset(torch.randperm(len(dataset), generator=gen))
        for batch in iter_batches(shuffled, modality, batch_size, prompts):
            x = batch.x.to(tuned.device)
            with torch.no_grad():
                ref = objective.reference(encoder, batch, x)
            xa = objective.inner(tuned, modality, x, ref, budget, gen)
            loss = objective.loss(tuned.encode(modality, xa, validate=False), ref).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    if not losses or not all(math.isfinite(v) for v in losses):
        raise RobustMMError(f"{objective.name} training diverged (loss {losses[-1:]}): lower lr (now {lr:g})")
    return losses
