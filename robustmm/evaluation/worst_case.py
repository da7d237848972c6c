"""Per-item worst case over the threats run against one defended model, and the weaker-beats-stronger flags.

A defended model's robust score is only as good as the strongest attacker. :func:`worst_case`
takes the adversarial examples every threat actually produced (recorded by
:class:`RecordingAttack` while :func:`robustmm.evaluation.evaluate` scored them), re-scores each
one through the *calibrated* encoder (forward passes only) and, for every item, keeps the example
that hurts it most: an item counts as robust only if it survives every threat's example, and the
clean input itself (the zero perturbation is inside every budget). The composite set of examples
is then scored with the same metrics as :func:`evaluate`, so the result is a Result like any other,
with ``threat="worst-case"``.

:func:`threat_flags` compares the threats of one cell: a weaker threat (a head-unaware transfer,
of the scoring attack or of a stronger one) scoring *below* a stronger one (adaptive, stronger
adaptive attacks, the worst case) means the stronger attack has not converged; the report shows
those rows.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .. import distributed as dist_utils
from ..attacks.base import Attack, AttackWrapper
from ..batch import Batch
from ..cost import combined
from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from ..errors import RobustMMError
from ..metrics import attack_success_rate, caption_owner, retrieval_metrics, x2t_ranks, zeroshot_correct, zeroshot_metrics
from ..records import Result, Threat, headline_score
from .runner import iter_batches

log = logging.getLogger(__name__)

#: how strong each threat of a defended cell is (higher: the attacker knows more)
STRENGTH: dict[str, int] = {Threat.HEAD_UNAWARE.value: 0, Threat.ADAPTIVE.value: 1, "stronger": 2,
                            Threat.WORST_CASE.value: 3}


class RecordingAttack(AttackWrapper):
    """Runs ``inner`` unchanged and keeps each item's adversarial input, by dataset index.

    ``inner`` must already be resolved for the modality (``evaluate`` resolves again; a resolve
    that would change it is an error rather than a silent loss of the record).
    """

    def __init__(self, inner: Attack):
        super().__init__(inner)
        if "captions" in inner.perturbs:
            raise RobustMMError(f"the worst case over threats covers input attacks only; {inner.name!r} edits captions")
        self.x: dict[int, torch.Tensor] = {}

    def wrap(self, inner: Attack) -> "AttackWrapper":
        raise RobustMMError("a RecordingAttack cannot be re-wrapped (its record would be lost)")

    def resolve(self, modality: str) -> "Attack":
        resolved = self.inner.resolve(modality)
        if resolved is not self.inner and resolved.settings() != self.inner.settings():
            raise RobustMMError(f"record an attack resolved for {modality!r}: {self.inner!r} is not")
        return self

    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        if batch.index is None:
            raise RobustMMError("the worst case over threats needs batches with item indices")
        out = self.inner(encoder, batch)
        for i, xi in zip(batch.index.tolist(), out.x.detach().cpu()):
            self.x[int(i)] = xi
        return out

    def stacked(self, n: int) -> torch.Tensor:
        """(n, ...) adversarial inputs of items 0..n-1, in order."""
        missing = [i for i in range(n) if i not in self.x]
        if missing:
            raise RobustMMError(f"no recorded adversarial example for {len(missing)} of {n} items (first: {missing[0]})")
        return torch.stack([self.x[i] for i in range(n)])


@torch.no_grad()
def _embed(encoder: Encoder, dataset: MultimodalDataset, modality: str, x: torch.Tensor | None,
           batch_size: int) -> torch.Tensor:
    """Embeddings of ``x`` (or the clean items when None), in the batches ``evaluate`` uses."""
    if x is None:
        chunks = (b.x for b in iter_batches(dataset, modality, batch_size, None))
    else:
        chunks = (x[s : s + batch_size] for s in range(0, len(x), batch_size))
    return torch.cat([encoder.encode(modality, xb.to(encoder.device)).cpu() for xb in chunks])


def _badness(emb: torch.Tensor, class_emb: torch.Tensor | None, labels: torch.Tensor | None,
             text_emb: torch.Tensor, owner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(key, correct) per item: lower key = worse for the model; every wrong item sorts below every
    correct one. Zero-shot top-1 (by margin of the true class) when there is a task, else X->text R@1."""
    if class_emb is not None and labels is not None:
        logits = emb @ class_emb.T
        true = logits.gather(1, labels[:, None]).squeeze(1)
        others = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
        correct = zeroshot_correct(emb, class_emb, labels)
        return correct.float() * 10.0 + (true - others), correct
    ranks = x2t_ranks(emb, text_emb, owner)
    return -ranks.float(), ranks <= 1


def worst_case(
    calibrated: Encoder,
    dataset: MultimodalDataset,
    *,
    modality: str,
    examples: Mapping[str, torch.Tensor],
    results: Mapping[str, Result],
    batch_size: int = 128,
    defense: dict[str, Any] | None = None,
) -> Result:
    """The per-item worst case over ``examples`` (threat name -> (N, ...) adversarial inputs).

    ``dataset`` is the evaluated dataset (already cut to ``n``); ``results`` are the threats' own
    Results, whose robust scores the re-scored examples must reproduce (a mismatch is logged).
    Returns a Result with ``threat="worst-case"``, ``extra["worst_case_of"]`` (the candidates, the
    clean input included) and ``extra["broken_by"]`` (items each candidate was the worst for).
    Its ``cost`` is the sum of the threats' own costs (``results``), per item: the re-scoring
    here is forward passes of scoring, not of attacking, and is not counted.
    """
    if dist_utils.is_distributed():
        raise RobustMMError("the worst case over threats runs in one process (each rank only holds its shard)")
    if not examples:
        raise RobustMMError("the worst case needs at least one threat's examples")
    task = dataset.tasks.get(modality)
    class_emb = calibrated.class_embeddings(task.prompts()).cpu() if task is not None else None
    labels = task.labels if task is not None else None
    texts, owner = caption_owner(dataset.captions)
    with torch.no_grad():
        text_emb = calibrated.encode_text(texts).cpu()
    names = ["clean", *examples]
    embs = [_embed(calibrated, dataset, modality, None, batch_size)]
    embs += [_embed(calibrated, dataset, modality, x, batch_size) for x in examples.values()]
    keys, corrects = zip(*(_badness(e, class_emb, labels, text_emb, owner) for e in embs))
    for name, correct in zip(names[1:], corrects[1:]):
        own = headline_score((results[name].metrics or {}).get("attacked")) if name in results else None
        if own is not None and class_emb is not None and abs(own - float(correct.float().mean())) > 1e-6:
            log.warning("worst case: re-scored %s gives %.4f, its result says %.4f", name, float(correct.float().mean()), own)
    choice = torch.stack(keys).argmin(0)  # first candidate on ties
    rows = torch.arange(len(dataset))
    composite = torch.stack(embs)[choice, rows]
    clean_emb = embs[0]
    attacked: dict[str, float] = {}
    if class_emb is not None:
        attacked |= zeroshot_metrics(composite, class_emb, labels)
    attacked |= retrieval_metrics(composite, text_emb, owner)
    clean = (results[next(iter(results))].metrics or {}).get("clean") if results else None
    if clean is None:
        clean = (zeroshot_metrics(clean_emb, class_emb, labels) if class_emb is not None else {}) | \
            retrieval_metrics(clean_emb, text_emb, owner)
    _, clean_ok = _badness(clean_emb, class_emb, labels, text_emb, owner)
    _, worst_ok = _badness(composite, class_emb, labels, text_emb, owner)
    metrics: dict[str, Any] = {"clean": clean, "attacked": attacked,
                               "delta": {k: attacked[k] - v for k, v in clean.items() if k in attacked},
                               "asr": attack_success_rate(clean_ok, worst_ok)}
    broken_by = {name: int(((choice == i) & ~worst_ok).sum()) for i, name in enumerate(names)}
    base = next(iter(results.values()), None)
    return Result(
        model=calibrated.info() if base is None else base.model,
        dataset=dataset.info(),
        modality=modality,
        attack=None if base is None else base.attack,
        defense=defense if defense is not None else (None if base is None else base.defense),
        threat=Threat.WORST_CASE.value,
        metrics=metrics,
        n=len(dataset),
        seed=0 if base is None else base.seed,
        timing_s=round(sum(r.timing_s for r in results.values()), 3),
        cost=combined((r.cost for r in results.values()), len(dataset)),
        extra={"worst_case_of": names, "broken_by": broken_by,
               "per_threat": {n: float(c.float().mean()) for n, c in zip(names, corrects)}},
    )


@dataclass(frozen=True)
class ThreatFlag:
    """A weaker threat that scores below a stronger one in the same cell (the stronger one is not
    a worst case: its attack has not converged, or it is not the attack it claims to be)."""

    row: int              # index (in the given results) of the stronger threat's result
    weaker: str
    stronger: str
    weaker_score: float
    stronger_score: float

    def message(self) -> str:
        """One line for the report."""
        return (f"{self.weaker} ({self.weaker_score:.3f}) beats {self.stronger} ({self.stronger_score:.3f}): "
                f"{self.stronger} is not a worst case")


def threat_label(r: Result) -> str:
    """``head-unaware``, ``adaptive``, ``adaptive:<attack>`` / ``head-unaware:<attack>`` (a stronger
    attack through the heads / made on the bare encoder) or ``worst-case``."""
    stronger = (r.extra or {}).get("stronger_attack")
    return f"{r.threat}:{stronger}" if stronger else r.threat


def threat_flags(results: Sequence[Result], tolerance: float = 0.0) -> list[ThreatFlag]:
    """Every (weaker, stronger) pair of one defended cell's results where the weaker threat's robust
    score is lower than the stronger one's by more than ``tolerance``.

    Strength: head-unaware (any attack made on the bare encoder, stronger ones included) < adaptive <
    stronger adaptive attacks (``extra["stronger_attack"]``) < worst-case. Results of other threats
    (the bare white-box, clean) are ignored.
    """
    ranked = []
    for i, r in enumerate(results):
        stronger = (r.extra or {}).get("stronger_attack") and r.threat == Threat.ADAPTIVE.value
        kind = "stronger" if stronger else r.threat
        score = headline_score((r.metrics or {}).get("attacked"))
        if kind in STRENGTH and score is not None:
            ranked.append((i, STRENGTH[kind], threat_label(r), float(score)))
    flags = []
    for i, s_rank, s_name, s_score in ranked:
        for _, w_rank, w_name, w_score in ranked:
            if w_rank < s_rank and w_score + tolerance < s_score:
                flags.append(ThreatFlag(i, w_name, s_name, w_score, s_score))
    return flags
