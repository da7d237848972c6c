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

import copy
import logging
import time
from typing import Any

import torch

from ..attacks.base import Attack
from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from ..errors import BudgetError, RobustMMError
from ..evaluation import iter_batches
from ..modalities import get_modality
from ..progress import tqdm
from ..seeding import seeded

log = logging.getLogger(__name__)


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    flat = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    return delta * (eps / flat).clamp(max=1.0).view(-1, *[1] * (delta.dim() - 1))


def fare_inner_attack(tuned: Encoder, modality: str, x: torch.Tensor, target: torch.Tensor, *, eps: float,
                      steps: int = 10, step_size: float | None = None, norm: str | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """FARE's inner maximisation: PGD on ``||tuned(x + delta) - target||^2`` inside the eps-ball.

    ``target`` is the frozen original tower's embedding of the clean ``x`` (what the outer loss
    pulls towards). Random start; step eps/4 (L-inf, sign steps) or 2.5*eps/steps (L2, normalised
    gradient steps); every iterate clamped to the modality's domain. Returns ``x + delta``
    detached. The tuned tower's ``requires_grad`` flags are left as they were.
    """
    spec = get_modality(modality)
    norm = str(norm or spec.norm)
    if norm not in ("linf", "l2"):
        raise BudgetError(f"FARE's inner attack supports linf and l2, not {norm!r}")
    if eps < 0 or steps < 0:
        raise BudgetError(f"eps and steps must be >= 0, got eps={eps}, steps={steps}")
    if steps == 0 or eps == 0:
        return x.detach()
    step = step_size if step_size is not None else (eps / 4 if norm == "linf" else 2.5 * eps / steps)
    lo, hi = spec.domain
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device) * 2 - 1
    delta = _project(noise * eps, eps, norm)
    delta = ((x + delta).clamp(lo, hi) - x).detach()
    params = [p for p in tuned.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = (tuned.encode(modality, x + delta, validate=False) - target).square().sum(-1).sum()
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                if norm == "linf":
                    delta = delta + step * grad.sign()
                else:
                    g = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))
                    delta = delta + step * grad / g
                delta = ((x + _project(delta, eps, norm)).clamp(lo, hi) - x).detach()
    finally:
        for p in params:
            p.requires_grad_(True)
    return (x + delta).detach()


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
    eps: float | None = None,
    steps: int = 10,
) -> Encoder:
    """Return a FARE-tuned *copy* of ``encoder`` (the original is untouched).

    Only the parameters of ``encoder.tower(modality)`` are trained; batch-norm statistics stay
    frozen (eval mode) so the clean behaviour drifts only through the weights. The copy's
    ``training_info`` attribute is the training report (epochs, steps, lr, the inner attack's
    budget, time, losses).

    Args:
        attack: optional; only its budget is used (``eps``, ``steps``, ``step_size``, ``norm``
            settings), since FARE's inner loss is fixed (:func:`fare_inner_attack`).
        eps: the inner attack's budget (default: the modality's middle eps); ``steps`` its steps.
        seed: seeds the batch order and the inner attack's random starts, inside a fork of the
            global RNG (the caller's random state is left as it was).
    """
    dataset.check_modality(modality)
    dataset.check_nonempty()
    if epochs <= 0:
        raise RobustMMError(f"epochs must be positive, got {epochs}")
    budget = _inner_budget(modality, attack, eps, steps)
    tuned = copy.deepcopy(encoder)
    tuned.eval()
    params = list(tuned.tower(modality).parameters())
    for p in params:
        p.requires_grad_(True)
    t0 = time.perf_counter()
    with seeded(seed):
        gen = torch.Generator().manual_seed(seed)
        losses = _train_tower(encoder, tuned, params, dataset, modality, budget, epochs, lr, batch_size, gen, progress)
    tuned.zero_grad(set_to_none=True)  # the tuned copy is frozen and carries no training gradients
    for p in tuned.parameters():
        p.requires_grad_(False)
    tuned.eval()
    report = {
        "name": "fare",
        "modality": modality,
        "epochs": epochs,
        "steps": len(losses),
        "lr": lr,
        "batch_size": batch_size,
        "n_train": len(dataset),
        "attack": {"name": "fare-pgd", "loss": "l2-to-frozen-clean", **budget},
        "train_s": round(time.perf_counter() - t0, 2),
        "trainable_params": sum(p.numel() for p in params),
        "first_loss": round(losses[0], 4),
        "final_loss": round(losses[-1], 4),
    }
    log.info("FARE %s/%s: %d steps in %.1fs", encoder.name, modality, len(losses), report["train_s"])
    tuned.training_info = report
    return tuned


def _inner_budget(modality: str, attack: Attack | None, eps: float | None, steps: int) -> dict[str, Any]:
    """The inner attack's ``eps``/``steps``/``step_size``/``norm``: ``attack``'s settings over the keywords."""
    budget: dict[str, Any] = {"eps": eps, "steps": steps, "step_size": None, "norm": None}
    if attack is not None:
        given = attack.resolve(modality).settings()
        budget |= {k: given[k] for k in budget if given.get(k) is not None}
    budget["eps"] = get_modality(modality).middle_eps if budget["eps"] is None else float(budget["eps"])
    return budget


def _train_tower(encoder: Encoder, tuned: Encoder, params: list[torch.nn.Parameter], dataset: MultimodalDataset,
                 modality: str, budget: dict[str, Any], epochs: int, lr: float, batch_size: int,
                 gen: torch.Generator, progress: bool) -> list[float]:
    """FARE's outer loop over ``epochs`` shuffled passes; the loss of every step."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    task = dataset.tasks.get(modality)
    prompts = task.prompts() if task is not None else None
    losses: list[float] = []
    for _epoch in tqdm(range(epochs), desc=f"fare/{modality}", disable=not progress, leave=False):
        shuffled = dataset.subset(torch.randperm(len(dataset), generator=gen))
        for batch in iter_batches(shuffled, modality, batch_size, prompts):
            x = batch.x.to(tuned.device)
            with torch.no_grad():
                target = encoder.encode(modality, x)  # the frozen original's clean embedding
            xa = fare_inner_attack(tuned, modality, x, target, generator=gen, **budget)
            loss = (tuned.encode(modality, xa, validate=False) - target).square().sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return losses
