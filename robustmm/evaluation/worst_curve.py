"""Worst-case robustness curves: per item and per budget, the strongest of several attacks.

:func:`worst_case_curve` walks a modality's eps grid from the smallest budget up. At each eps the
candidates for every item are its clean input, its example of a nested PGD sweep
(:class:`SweepRecorder` records one while :func:`~robustmm.evaluation.robustness_curve` runs),
the examples of further attacks (APGD-CE and APGD-T by default) and its breaking example of any
smaller budget (it lies inside this ball too). Attacks cascade as in AutoAttack: each attack runs
only on the items every earlier candidate left robust, with early stopping, so an item broken at
a small budget costs nothing at the larger ones. The per-item worst case over the candidates is
scored by :func:`robustmm.evaluation.worst_case.worst_case` (so it is a Result like any other,
``threat="worst-case"``) and the curve cannot rise with eps.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..attacks.base import Attack, AttackWrapper
from ..attacks.ensemble import runs_on
from ..batch import Batch
from ..cost import PassCount, combined
from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from ..errors import RobustMMError
from ..metrics import caption_owner, x2t_ranks, zeroshot_correct
from ..modalities import get_modality
from ..records import Result
from .runner import evaluate
from .worst_case import RecordingAttack, worst_case

log = logging.getLogger(__name__)


class SweepRecorder(AttackWrapper):
    """Runs ``inner`` unchanged and keeps every attacked item's example per budget (by dataset
    index), in one store shared by the copies a curve makes per eps (``with_eps``/``resolve``)."""

    def __init__(self, inner: Attack, store: dict[float, dict[int, torch.Tensor]] | None = None):
        super().__init__(inner)
        self.store: dict[float, dict[int, torch.Tensor]] = {} if store is None else store

    def wrap(self, inner: Attack) -> "SweepRecorder":
        return SweepRecorder(inner, self.store)

    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        if batch.index is None:
            raise RobustMMError("a SweepRecorder needs batches with item indices")
        out = self.inner(encoder, batch)
        slot = self.store.setdefault(float(self.inner.eps), {})
        for i, xi in zip(batch.index.tolist(), out.x.detach().cpu()):
            slot[int(i)] = xi
        return out


def nested_examples(store: Mapping[float, Mapping[int, torch.Tensor]], grid: Sequence[float],
                    clean_x: torch.Tensor) -> dict[float, torch.Tensor]:
    """Per eps of ``grid`` (ascending), each item's example in a nested sweep: the one made at the
    largest budget <= eps at which it was attacked (an item broken earlier keeps its breaking
    example), else its clean input."""
    cur, out = clean_x.clone(), {}
    for eps in grid:
        for i, xi in store.get(float(eps), {}).items():
            cur[i] = xi
        out[float(eps)] = cur.clone()
    return out


class ItemJudge:
    """Whether each item is still handled correctly on given inputs: zero-shot top-1 when the
    dataset has a task for the modality, else X->text R@1 (what the worst case ranks first)."""

    def __init__(self, encoder: Encoder, dataset: MultimodalDataset, modality: str, batch_size: int):
        self.encoder, self.modality, self.batch_size = encoder, modality, batch_size
        task = dataset.tasks.get(modality)
        self.class_emb = self.labels = self.text_emb = self.owner = None
        with torch.no_grad():
            if task is not None:
                self.class_emb, self.labels = encoder.class_embeddings(task.prompts()).cpu(), task.labels
            else:
                texts, self.owner = caption_owner(dataset.captions)
                self.text_emb = encoder.encode_text(texts).cpu()

    @torch.no_grad()
    def correct(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) bool: each item handled correctly on its row of ``x`` (every item of the dataset)."""
        emb = torch.cat([self.encoder.encode(self.modality, x[s : s + self.batch_size].to(self.encoder.device)).cpu()
                         for s in range(0, len(x), self.batch_size)])
        if self.class_emb is not None:
            return zeroshot_correct(emb, self.class_emb, self.labels)
        return x2t_ranks(emb, self.text_emb, self.owner) <= 1


def _run_on(encoder: Encoder, dataset: MultimodalDataset, modality: str, attack: Attack, idx: torch.Tensor,
            filler: torch.Tensor, kw: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any] | None]:
    """``filler`` with the rows ``idx`` replaced by ``attack``'s examples of those items, and the
    attack's cost on them (None when there was nothing to attack)."""
    out = filler.clone()
    if len(idx) == 0:
        return out, None
    rec = RecordingAttack(attack)
    res = evaluate(encoder, dataset.subset(idx), modality=modality, attack=rec, **kw)
    out[idx] = rec.stacked(len(idx))
    return out, res.cost


def worst_case_curve(
    encoder: Encoder,
    dataset: MultimodalDataset,
    *,
    modality: str,
    attacks: Callable[[float], Mapping[str, Attack]],
    pgd_examples: Mapping[float, torch.Tensor] | None = None,
    pgd_label: str = "pgd",
    extra_examples: Mapping[float, Mapping[str, torch.Tensor]] | None = None,
    grid: Sequence[float] | None = None,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = False,
) -> list[Result]:
    """The per-item worst-case curve of ``modality`` over ``grid`` (default: its eps grid).

    Args:
        attacks: eps -> {label: attack resolved for ``modality`` at that eps}, run in that order,
            each on the items every earlier candidate left robust.
        pgd_examples: eps -> (N, ...) the nested PGD sweep's example of every item (see
            :class:`SweepRecorder` and :func:`nested_examples`), a candidate at each eps under
            ``pgd_label``; None leaves it out.
        extra_examples: eps -> {label: (N, ...) examples} made elsewhere (another cell's attack at
            that budget; rows it did not attack hold the clean input), candidates before ``attacks``.
    Returns:
        One ``threat="worst-case"`` Result per eps (ascending): ``attack`` names the candidates
        (``{"name": "worst-case", "eps", "norm", "of"}``); ``extra`` holds ``broken_by``,
        ``per_threat`` (each candidate's own score on every item), ``n_attacked`` (items each
        attack ran on), ``robust`` (per item, 1 if it survived every candidate) and ``wall_s``;
        ``cost`` sums the passes of the attacks run at that eps (on the items they ran on), per item
        of the dataset: neither earlier budgets' spending (their breaking examples are reused for
        free) nor the examples made elsewhere (the PGD sweep's are in its own records).
    """
    spec = get_modality(modality)
    grid = sorted(float(e) for e in (spec.eps_grid if grid is None else grid))
    n = len(dataset)
    clean_x = dataset.get(modality, torch.arange(n))
    judge = ItemJudge(encoder, dataset, modality, batch_size)
    robust = judge.correct(clean_x)
    breaking = clean_x.clone()  # per item: its breaking example once broken (inside every larger ball)
    kw = {"batch_size": batch_size, "seed": seed, "progress": progress}
    task = dataset.tasks.get(modality)
    classes = len(task.classnames) if task is not None else None
    out: list[Result] = []

    def judged(x: torch.Tensor) -> None:  # items ``x`` breaks now keep it as their breaking example
        if not robust.any():
            return
        newly = robust & ~judge.correct(x)
        breaking[newly] = x[newly]
        robust[newly] = False

    for eps in grid:
        t0 = time.perf_counter()
        examples: dict[str, torch.Tensor] = {"smaller eps": breaking.clone()} if out else {}
        if pgd_examples is not None:
            if eps not in pgd_examples:
                raise RobustMMError(f"no PGD example at eps {eps:g} of {modality}'s grid")
            examples[pgd_label] = pgd_examples[eps]
            judged(pgd_examples[eps])
        for label, x in ((extra_examples or {}).get(eps) or {}).items():
            examples[label] = x
            judged(x)
        ran: dict[str, int] = {}
        costs: list[dict[str, Any] | None] = []
        norm = None
        for label, attack in attacks(eps).items():
            if not runs_on(attack, classes):
                log.warning("worst case: skipping %s on %s, the DLR loss needs at least 4 classes (this task has %d)",
                            label, modality, classes)
                continue
            idx = torch.nonzero(robust).flatten()
            ran[label] = len(idx)
            norm = norm or attack.describe().get("norm")
            if len(idx):  # nothing left to break: no candidate (the clean input is one already)
                examples[label], spent = _run_on(encoder, dataset, modality, attack, idx, clean_x, kw)
                costs.append(spent)
                judged(examples[label])
        if not examples:  # nothing attacked at the smallest budget (no item was correct): the clean inputs
            examples["smaller eps"] = breaking.clone()
        res = worst_case(encoder, dataset, modality=modality, examples=examples, results={}, batch_size=batch_size,
                         defense=None)
        res.attack = {"name": "worst-case", "eps": eps, "norm": norm or str(spec.norm), "of": list(examples)}
        res.seed = seed
        wall = time.perf_counter() - t0
        res.timing_s = round(wall, 3)
        res.cost = combined(costs, n) or PassCount().as_dict(n)  # every candidate reused: nothing spent
        res.extra |= {"n_attacked": ran, "robust": robust.int().tolist(), "wall_s": round(wall, 2)}
        log.info("worst case %s eps=%s: %.3f (attacked %s) in %.1fs", modality, spec.format_eps(eps),
                 float(robust.float().mean()), ran, wall)
        out.append(res)
    return out
