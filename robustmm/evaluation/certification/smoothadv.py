"""SmoothAdv (Salman et al., NeurIPS 2019): the adaptive L2 attack on a *smoothed* classifier.

Each PGD step maximises ``-log(mean_k softmax(s * logits(clamp(x' + d_k)))_y)`` over ``m`` fresh
noise draws ``d_k`` (an expectation-over-transformation gradient of the smoothed soft classifier),
with normalised L2 steps, projection onto the L2 ball of radius r around x and onto the domain.
The attacked input is then classified by the smoothed classifier's PREDICT (fresh draws).

This is the empirical check beside every certificate: at radius r, an item that CERTIFY
certified as correct at radius >= r must not be predicted as another class after the attack
(abstentions are counted separately). :func:`smoothadv_accuracy` reports the empirical robust
accuracy per radius and counts such violations; with a correct certificate there are none except
with probability about alpha per item.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ... import distributed as dist_utils
from ...cost import PassCount, count_passes, summed_passes
from ...data.base import MultimodalDataset
from ...encoders.smoothed import PHASE_ATTACK, PHASE_PREDICT, SmoothedClassifier, item_seed, predict_from_counts
from ...encoders.smoothing_stats import check_smoothing_args
from ...errors import RobustMMError
from ..runner import iter_batches


def smoothadv_attack(sm: SmoothedClassifier, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, radius: float,
                     *, steps: int = 10, m: int = 8, logit_scale: float = 50.0, step_size: float | None = None) -> torch.Tensor:
    """SmoothAdv L2 PGD: adversarial inputs within ``radius`` (modality unit) of ``x`` for the smoothed classifier.

    Args:
        sm: the smoothed classifier (its base model is differentiated; its weights are not changed).
        x, y, index: raw inputs (N, *shape), labels (N,), dataset positions (noise seeds).
        steps, m: PGD steps and noise draws per step; ``step_size`` defaults to ``2 * radius / steps``.
        logit_scale: the softmax temperature of the soft base classifier being attacked.
    """
    if radius < 0 or not math.isfinite(radius):
        raise RobustMMError(f"radius must be a finite number >= 0, got {radius}")
    check_smoothing_args(n=steps)
    check_smoothing_args(n=m)
    x = x.to(sm.device)
    if radius == 0:
        return x.clone()
    lo, hi = sm.spec.domain
    y = y.to(sm.device)
    step = 2.0 * radius / steps if step_size is None else step_size
    gens = [torch.Generator(device=sm.device).manual_seed(item_seed(sm.seed, int(i), PHASE_ATTACK)) for i in index]
    flat = (len(x), -1)
    delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        noise = torch.stack([torch.randn((m, *x.shape[1:]), generator=g, device=sm.device) for g in gens])
        xn = ((x + delta).unsqueeze(1) + sm.sigma * noise).clamp(lo, hi).flatten(0, 1)
        logp = torch.log_softmax(logit_scale * sm.logits(xn), dim=1).view(len(x), m, -1)
        logp_y = logp.gather(2, y.view(-1, 1, 1).expand(-1, m, 1)).squeeze(2)
        loss = -(torch.logsumexp(logp_y, dim=1) - math.log(m)).sum()
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            g = grad.reshape(flat)
            g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
            d = delta.detach().reshape(flat) + step * g
            d = d * (radius / d.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
            delta = ((x + d.view_as(x)).clamp(lo, hi) - x).detach()  # clamping only shrinks |delta|
    return (x + delta).detach()


def smoothadv_accuracy(sm: SmoothedClassifier, dataset: MultimodalDataset, *, radii: Sequence[float], steps: int = 10,
                       m: int = 8, n: int = 256, alpha: float = 0.001, n_items: int | None = None, batch_size: int = 32,
                       logit_scale: float = 50.0, certified_pred: torch.Tensor | None = None,
                       certified_radius: torch.Tensor | None = None) -> dict[str, Any]:
    """Empirical robust top-1 of the smoothed classifier under SmoothAdv at each radius (and 0 = clean).

    Each attacked input gets ``n`` fresh draws: ``top1`` is the accuracy of the smoothed classifier
    itself (the majority class of the draws, the Monte Carlo estimate of ``g(x')``), ``top1_predict``
    that of Cohen et al.'s PREDICT (abstain at ``alpha`` counts as wrong) and ``abstain`` its abstain
    rate. With ``certified_pred``/``certified_radius`` (per item, from CERTIFY on the same dataset
    order) it also counts ``violations``: items certified correct at radius >= r whose smoothed
    prediction the attack changed. Only the first ``n_items`` items are attacked (default all).
    Shards like :func:`~.certify.certify_dataset` under ``torch.distributed``. ``cost`` holds the
    attack's model passes per item, summed over the radii (the prediction draws are not counted).
    """
    check_smoothing_args(n=n, alpha=alpha)
    task = dataset.tasks.get(sm.modality)
    if task is None:
        raise RobustMMError(f"dataset {dataset.name!r} has no zero-shot task for {sm.modality!r}")
    if n_items is not None:
        dataset = dataset.head(n_items)
    radii = [0.0, *sorted({float(r) for r in radii} - {0.0})]
    items = dist_utils.shard(len(dataset), align=batch_size)
    rows = []
    passes = PassCount()
    for batch in iter_batches(dataset, sm.modality, batch_size, None, items):
        cols = []
        for r in radii:
            with count_passes() as spent:
                xa = smoothadv_attack(sm, batch.x, batch.labels, batch.index, r, steps=steps, m=m,
                                      logit_scale=logit_scale)
            passes.add(spent)
            counts = sm.sample_counts(xa, n, batch.index, PHASE_PREDICT)
            cols += [predict_from_counts(counts, alpha), counts.argmax(1)]
        rows.append(torch.stack(cols, 1))
    local = torch.cat(rows) if rows else None
    preds = dist_utils.all_gather_tensor(local) if dist_utils.is_distributed() else local
    cost = summed_passes(passes).as_dict(len(dataset))
    labels = task.labels[: len(dataset)]
    out: dict[str, Any] = {
        "attack": {"name": "smoothadv", "steps": steps, "m": m, "n": n, "alpha": alpha, "logit_scale": logit_scale},
        "n_items": len(dataset), "top1": {}, "top1_predict": {}, "abstain": {}, "violations": {}, "cost": cost,
    }
    for j, r in enumerate(radii):
        key, pred, major = f"{r:g}", preds[:, 2 * j], preds[:, 2 * j + 1]
        out["top1"][key] = float((major == labels).double().mean())
        out["top1_predict"][key] = float((pred == labels).double().mean())
        out["abstain"][key] = float((pred < 0).double().mean())
        if certified_pred is not None and certified_radius is not None:
            cert_ok = (certified_pred[: len(dataset)] == labels) & (certified_radius[: len(dataset)] >= r)
            out["violations"][key] = int((cert_ok & (major != labels)).sum())
    return out
