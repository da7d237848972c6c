"""``certify_dataset``: certified zero-shot top-1 and X->text R@1 of a smoothed encoder on a dataset.

Every item is certified with :meth:`SmoothedClassifier.certify` (Cohen et al. 2019) and, on the
same draws, with the retrieval certificate of :mod:`.retrieval`. The result is a
``robustmm.result/1`` record with ``threat = "certified"``: certified accuracy at radius 0 and at
a grid of L2 radii in the modality's unit, the abstain rate, the accuracy of the smoothed
classifier, and per-item radii in ``extra``. Under ``torchrun`` every rank certifies a shard of
whole batches and the per-item results are gathered in item order; since the noise is seeded per
item, the record equals a single-process run.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ... import distributed as dist_utils
from ...cost import PassCount, count_passes, summed_passes
from ...data.base import MultimodalDataset
from ...encoders.base import Encoder
from ...encoders.smoothed import SmoothedClassifier
from ...encoders.smoothing_stats import check_smoothing_args
from ...errors import RobustMMError
from ...modalities import get_modality
from ...progress import tqdm
from ...records import Result, Threat
from ..runner import iter_batches
from .defaults import reference_radii
from .reach import is_reachable, max_certified_radius
from .retrieval import caption_gallery, own_masks

log = logging.getLogger(__name__)


def _key(r: float) -> str:
    return f"{r:g}"


def classification_task(dataset: MultimodalDataset, modality: str) -> Any:
    """The zero-shot task of ``modality``, or a one-line error: classification certificates need one."""
    dataset.check_modality(modality)
    task = dataset.tasks.get(modality)
    if task is None:
        raise RobustMMError(f"dataset {dataset.name!r} has no zero-shot task for {modality!r}: "
                            "classification certificates need labels and class prompts")
    return task


def split_heads(heads: Any) -> tuple[Mapping[str, nn.Module] | None, dict[str, Any] | None]:
    """``heads`` as (modality -> module, description): accepts None, a mapping, a
    :class:`~robustmm.defenses.Calibration`, or ``(heads, meta)`` as returned by ``load_heads``."""
    if heads is None:
        return None, None
    if hasattr(heads, "heads") and hasattr(heads, "meta"):
        return heads.heads, {"name": "calibration", **{k: heads.meta.get(k) for k in
                                                       ("objective", "attack", "epochs", "n_train", "noise") if k in heads.meta}}
    if isinstance(heads, tuple) and len(heads) == 2:
        h, meta = heads
        return h, {"name": "calibration", **{k: meta.get(k) for k in ("objective", "attack", "epochs", "noise") if k in meta}}
    return heads, {"name": "calibration"}


def certify_dataset(
    encoder: Encoder,
    dataset: MultimodalDataset,
    *,
    modality: str,
    sigma: float,
    n0: int = 100,
    n: int = 1000,
    alpha: float = 0.001,
    heads: Any = None,
    radii: Sequence[float] | None = None,
    retrieval: bool = True,
    n_items: int | None = None,
    batch_size: int = 32,
    batch_noise: int = 256,
    seed: int = 0,
    smoothadv: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> Result:
    """Certify the smoothed zero-shot classifier (and X->text R@1) of ``encoder`` on ``dataset``.

    Args:
        encoder: a frozen encoder (a denoised or calibrated one is an encoder too).
        modality: the modality to smooth; the dataset must have a zero-shot task for it.
        sigma: Gaussian noise std in the modality's raw unit.
        n0, n, alpha: selection draws, estimation draws and failure probability (Cohen et al.).
        heads: calibration heads for the modality (a mapping, a ``Calibration`` or ``load_heads``'s pair).
        radii: L2 radii (modality unit) at which certified accuracy is reported, besides 0
            (default: :data:`~.defaults.REFERENCE_RADII` of the modality).
        retrieval: also certify X->text R@1 against the dataset's caption gallery.
        n_items: certify only the first ``n_items`` items.
        batch_size: items per batch (the unit of sharding); ``batch_noise``: noisy copies per forward.
        seed: mixed into every item's noise stream.
        smoothadv: keyword arguments of :func:`~.smoothadv.smoothadv_accuracy` (e.g.
            ``{"steps": 10, "m": 8}``) to run the SmoothAdv attack at every radius and report
            empirical robust accuracy beside the certified one; None skips it.
    Returns:
        A :class:`~robustmm.records.Result` with ``threat="certified"``; ``metrics["certified"]``
        holds ``top1`` and ``x2t_R@1`` per radius (string keys; None at a radius beyond
        ``max_radius``, the largest one ``n`` draws at ``alpha`` can certify, listed in
        ``unreachable``), ``abstain``, the radii and their unit; ``metrics["clean"]`` the smoothed
        classifier's plug-in accuracy and the base classifier's clean accuracy; ``extra["per_item"]``
        labels, predictions and radii; ``cost`` the forward passes of the noise draws per item
        (``n0 + n``: CERTIFY's selection and estimation draws, summed over ranks; backward 0).
    """
    check_smoothing_args(sigma=sigma, n0=n0, n=n, alpha=alpha)
    get_modality(modality)
    encoder.check_modality(modality)
    task = classification_task(dataset, modality)
    dataset, radii = _items_and_radii(dataset, modality, n_items, radii)
    head_map, head_info = split_heads(heads)
    t0 = time.perf_counter()
    sm = SmoothedClassifier(encoder, modality, sigma, prompts=task.prompts(), heads=head_map,
                            batch_noise=batch_noise, seed=seed)
    passes = PassCount()
    table = _certify_items(sm, dataset, n0=n0, n=n, alpha=alpha, retrieval=retrieval, batch_size=batch_size,
                           progress=progress, passes=passes)
    cost = summed_passes(passes).as_dict(len(dataset))
    pred, radius, p_lo, plugin, base_pred, x2t_r, x2t_rate = table.unbind(1)
    labels = task.labels[: len(dataset)].double()
    max_radius = max_certified_radius(sigma, n, alpha)
    certified = _certified_block(modality, radii, max_radius, pred, radius, labels)
    clean = {"zeroshot_top1": float((plugin == labels).double().mean()),
             "base_zeroshot_top1": float((base_pred == labels).double().mean())}
    if retrieval:
        certified["x2t_R@1"] = {_key(r): float((x2t_r >= r).double().mean()) if is_reachable(r, max_radius) else None
                                for r in [0.0, *radii]}
        clean["x2t_R@1"] = float((x2t_rate > 0.5).double().mean())
    metrics: dict[str, Any] = {"clean": clean, "certified": certified, "attacked": None, "delta": None, "asr": None}
    defense: dict[str, Any] = {"name": "randomized-smoothing", "sigma": float(sigma), "n0": n0, "n": n, "alpha": alpha,
                               "max_radius": max_radius, "batch_noise": batch_noise, "heads": head_info}
    if smoothadv is not None:
        from .smoothadv import smoothadv_accuracy

        metrics["empirical"] = smoothadv_accuracy(sm, dataset, radii=radii, certified_pred=pred.long(),
                                                  certified_radius=radius, **dict(smoothadv))
    per_item = _per_item(labels, pred, radius, p_lo, x2t_r if retrieval else None)
    log.info("certified %s/%s sigma=%g: top1@0 %.3f", encoder.name, modality, sigma, certified["top1"]["0"])
    return Result(model=sm.base.info(), dataset=dataset.info(), modality=modality, attack=None, defense=defense,
                  threat=Threat.CERTIFIED.value, metrics=metrics, n=len(dataset), seed=seed,
                  timing_s=round(time.perf_counter() - t0, 3), extra={"per_item": per_item}, cost=cost)


def _items_and_radii(dataset: MultimodalDataset, modality: str, n_items: int | None,
                     radii: Sequence[float] | None) -> tuple[MultimodalDataset, list[float]]:
    """The items to certify (the first ``n_items``) and the sorted nonzero radii (default: the
    modality's reference radii), each checked."""
    if n_items is not None:
        if n_items < 1:
            raise RobustMMError(f"n_items must be >= 1, got {n_items}")
        dataset = dataset.head(n_items)
    dataset.check_nonempty()
    out = sorted({float(r) for r in (reference_radii(modality) if radii is None else radii)} - {0.0})
    if any(r < 0 for r in out):
        raise RobustMMError(f"radii must be >= 0, got {out}")
    return dataset, out


def _certify_items(sm: SmoothedClassifier, dataset: MultimodalDataset, *, n0: int, n: int, alpha: float,
                   retrieval: bool, batch_size: int, progress: bool, passes: PassCount) -> torch.Tensor:
    """CERTIFY over every item, in whole batches sharded over the ranks and gathered in item order:
    one row per item of (prediction, radius, p_lower, plug-in prediction, base prediction, x2t
    radius (-1 without retrieval), x2t hit rate). The noise draws' passes (this rank's) are added
    to ``passes``."""
    modality = sm.modality
    gallery, owner = caption_gallery(sm.base, dataset) if retrieval else (None, None)
    items = dist_utils.shard(len(dataset), align=batch_size)
    rows = []
    n_batches = (len(items) + batch_size - 1) // batch_size
    show = progress and dist_utils.rank() == 0
    for batch in tqdm(iter_batches(dataset, modality, batch_size, None, items), total=n_batches,
                      desc=f"certify/{modality} sigma={sm.sigma:g}", disable=not show, leave=False):
        own = own_masks(owner, batch.index) if retrieval else None
        with count_passes() as spent:
            c = sm.certify(batch.x, n0, n, alpha, index=batch.index, gallery=gallery, own=own)
        passes.add(spent)
        with torch.no_grad():
            base_pred = sm.logits(batch.x.to(sm.device)).argmax(1).cpu()
        x2t = c.x2t_radius if c.x2t_radius is not None else torch.full_like(c.radius, -1.0)
        rate = c.x2t_hit_rate if c.x2t_hit_rate is not None else torch.zeros_like(c.radius)
        rows.append(torch.stack([c.pred.double(), c.radius, c.p_lower, c.plugin.double(), base_pred.double(), x2t, rate], 1))
    local = torch.cat(rows) if rows else None
    return dist_utils.all_gather_tensor(local) if dist_utils.is_distributed() else local


def _certified_block(modality: str, radii: list[float], max_radius: float, pred: torch.Tensor, radius: torch.Tensor,
                     labels: torch.Tensor) -> dict[str, Any]:
    """``metrics.certified``: certified top-1 per radius (None beyond ``max_radius``, those radii
    listed in ``unreachable``), abstentions and the mean radius of the correct items."""
    correct = pred == labels

    def cert_acc(r: float) -> float | None:  # None: no certificate can reach r with this n
        return float((correct & (radius >= r)).double().mean()) if is_reachable(r, max_radius) else None

    spec = get_modality(modality)
    return {
        "radii": [0.0, *radii],
        "unit": f"L2 over the raw {modality} tensor ({spec.description.rstrip('.')})",
        "max_radius": max_radius,
        "unreachable": [_key(r) for r in radii if not is_reachable(r, max_radius)],
        "top1": {_key(r): cert_acc(r) for r in [0.0, *radii]},
        "abstain": float((pred < 0).double().mean()),
        "mean_radius_correct": float((radius * correct).mean()),
    }


def _per_item(labels: torch.Tensor, pred: torch.Tensor, radius: torch.Tensor, p_lo: torch.Tensor,
              x2t_radius: torch.Tensor | None) -> dict[str, list[Any]]:
    """``extra.per_item``: labels, predictions, radii and lower bounds (and x2t radii), rounded."""
    out = {"label": labels.long().tolist(), "pred": pred.long().tolist(),
           "radius": [round(float(v), 5) for v in radius], "p_lower": [round(float(v), 5) for v in p_lo]}
    if x2t_radius is not None:
        out["x2t_radius"] = [round(float(v), 5) for v in x2t_radius]
    return out
