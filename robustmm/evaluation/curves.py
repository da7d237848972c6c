"""Robustness curves: robust accuracy over a grid of budgets, with nested eps-balls.

An adversarial example inside the eps_k-ball is inside every larger ball, so a sample broken at
eps_k is broken at every eps > eps_k. :func:`robustness_curve` therefore attacks, at each budget
(ascending), only the samples that are still robust at the previous one -- the AutoAttack /
RobustBench trick -- and keeps the earlier adversarial example of every broken sample. Robust
accuracy is non-increasing in eps by construction, and the work drops from ``len(grid) * N``
attacked samples (:func:`naive_curve`) to ``sum_k robust_{k-1}``.

"Still robust" is zero-shot top-1 correctness on the *target* encoder when the dataset has a
zero-shot task for the modality, else X->text R@1 or text->X R@1 of any of its captions (the
headline of retrieval-only data: an item that only the captions still find is attacked too).

Caveat: retrieval metrics of a nested curve come from the same per-eps embeddings -- samples that
were never robust keep their clean (or smaller-ball) embedding -- so they understate the retrieval
damage a full attack at that eps would do. Use :func:`naive_curve` when retrieval numbers matter.

Example::

    >>> enc = robustmm.load_encoder("tinybind")
    >>> data = robustmm.load_dataset("synthscenes", split="test", n=500)
    >>> curve = robustness_curve(enc, data, modality="audio", attack=PGD(steps=10))
    >>> [(r.attack["eps"], r.attacked("zeroshot_top1"), r.extra["n_attacked"]) for r in curve]
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import distributed as dist_utils
from ..attacks.base import Attack
from ..attacks.ops import check_eps
from ..batch import Batch
from ..cost import PassCount, count_passes, summed_passes
from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from ..errors import BudgetError, RobustMMError
from ..metrics import attack_success_rate, caption_owner, t2x_ranks, x2t_ranks, zeroshot_correct
from ..modalities import get_modality
from ..progress import tqdm
from ..records import Result
from ..seeding import seeded
from .runner import (
    Embeddings,
    adv_embedding,
    embedding_metrics,
    evaluate,
    iter_batches,
    make_batch,
    model_block,
    prepare,
)

log = logging.getLogger(__name__)

__all__ = ["naive_curve", "robustness_curve"]


def _grid(eps_grid: Sequence[float] | None, modality: str) -> list[float]:
    grid = get_modality(modality).eps_grid if eps_grid is None else eps_grid
    out = sorted({check_eps(e) for e in grid})
    if not out:
        raise BudgetError("eps_grid is empty")
    return out


def _at_eps(attack: Attack, eps: float, modality: str) -> Attack:
    """``attack`` at budget ``eps`` with modality defaults resolved (so results record real values)."""
    return attack.with_eps(eps).resolve(modality)


def _check_attack(attack: Attack) -> None:
    if not isinstance(attack, Attack):
        raise RobustMMError(f"robustness curves need an Attack, got {type(attack).__name__}")
    if tuple(attack.perturbs) != ("x",):
        raise RobustMMError(
            f"attack {attack.name!r} perturbs {attack.perturbs}; nested robustness curves need an attack on the inputs only"
        )


def _subset_batches(dataset: MultimodalDataset, modality: str, index: torch.Tensor, batch_size: int,
                    prompts: list[list[str]] | None) -> Iterator[Batch]:
    """Batches of the items ``index`` (dataset positions), loaded on demand."""
    for s in range(0, len(index), batch_size):
        yield make_batch(dataset, modality, index[s : s + batch_size], prompts)


def robustness_curve(
    target: Encoder,
    dataset: MultimodalDataset,
    *,
    modality: str,
    attack: Attack,
    eps_grid: Sequence[float] | None = None,
    source: Encoder | None = None,
    n: int | None = None,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
    threat: str | None = None,
    defense: dict[str, Any] | None = None,
) -> list[Result]:
    """Nested-ball robustness curve: one :class:`~robustmm.report.Result` per eps, ascending.

    Args:
        target: the encoder whose metrics are reported.
        dataset: items with captions (and ideally a zero-shot task for ``modality``).
        modality: the attacked modality.
        attack: an input attack with ``with_eps`` (typically :class:`~robustmm.attacks.pgd.PGD`).
        eps_grid: budgets in the modality's unit (default ``ModalitySpec.eps_grid``); sorted
            ascending, duplicates dropped.
        source: the encoder the attack differentiates (default ``target``: white-box).
        n: use the first ``n`` items only.
        batch_size: items per attack batch.
        seed: seeds torch's global generators during the sweep (the attack's own seed drives its random
            start); the caller's random state is restored after.
        threat, defense: recorded in the results (as in :func:`robustmm.evaluate`).
    Returns:
        ``len(eps_grid)`` results in the robustmm.result/1 schema (robustmm.records). ``attack`` holds the budget and
        ``"nested": True``; ``extra`` holds ``n_attacked`` (samples attacked at this eps),
        ``n_naive`` (what the naive sweep attacks: every sample), ``n_robust`` (still robust after
        this eps), ``criterion`` and ``retrieval: "nested"`` (retrieval metrics understate the
        damage; see the module docstring). ``timing_s`` of the first result includes the clean pass, so
        the timings sum to the sweep's wall time. ``cost`` is the model passes spent at that eps
        only (on the ``n_attacked`` items, summed over ranks), per item of the dataset: it does not
        include what earlier budgets spent on the items they broke, which are reused for free, so
        the costs of the points sum to the sweep's cost.
    """
    dataset, source, threat = prepare(target, dataset, modality, attack, source, n, threat)
    _check_attack(attack)
    grid = _grid(eps_grid, modality)

    t0 = time.perf_counter()
    task = dataset.tasks.get(modality)
    prompts = task.prompts() if task is not None else None
    labels = task.labels if task is not None else None
    class_emb = target.class_embeddings(prompts).cpu() if prompts is not None else None
    texts, owner = caption_owner(dataset.captions)
    with seeded(seed):
        clean = _clean_pass(target, dataset, modality, batch_size, prompts, texts, owner)
        state = _NestedState(clean, class_emb, labels)
        elapsed = time.perf_counter() - t0
        log.info("%s/%s clean %s: %.3f (%.1fs)", target.name, modality, state.criterion,
                 state.clean_correct.float().mean().item(), elapsed)
        sweep = _Sweep(target, source, dataset, modality, batch_size, prompts, seed, threat, defense)
        return sweep.run(attack, grid, state, elapsed=elapsed, progress=progress)


def _clean_pass(target: Encoder, dataset: MultimodalDataset, modality: str, batch_size: int,
                prompts: list[list[str]] | None, texts: list[str], owner: torch.Tensor) -> Embeddings:
    """Clean item and caption embeddings of every item (multi-process: each rank embeds its whole
    batches and the embeddings are gathered in item order)."""
    clean_items = []
    for batch in iter_batches(dataset, modality, batch_size, prompts, dist_utils.shard(len(dataset), align=batch_size)):
        x = batch.x.to(target.device)
        with torch.no_grad():  # encode() validates x
            clean_items.append(target.encode(modality, x).cpu())
    with torch.no_grad():
        text_emb = target.encode_text(texts).cpu()
    return Embeddings(dist_utils.gather_cat(clean_items), text_emb, owner)


@dataclass
class _NestedState:
    """What a nested sweep carries from one budget to the next: the clean pass and its verdicts,
    each item's current adversarial embedding, and which items are still robust."""

    clean: Embeddings
    class_emb: torch.Tensor | None
    labels: torch.Tensor | None
    criterion: str = field(init=False)
    clean_correct: torch.Tensor = field(init=False)
    clean_metrics: dict[str, float] = field(init=False)
    clean_x2t: torch.Tensor = field(init=False)
    clean_t2x: torch.Tensor = field(init=False)
    adv_items: torch.Tensor = field(init=False)  # smaller-ball (or clean) embedding of every item
    robust: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        clean = self.clean
        self.criterion = "zeroshot_top1" if self.class_emb is not None else "x2t_R@1|t2x_R@1"
        self.clean_correct = self.correct(clean.items)
        self.clean_metrics = embedding_metrics(clean, self.class_emb, self.labels)
        self.clean_x2t = x2t_ranks(clean.items, clean.texts, clean.owner) <= 1
        self.clean_t2x = t2x_ranks(clean.items, clean.texts, clean.owner) <= 1
        self.adv_items = clean.items.clone()
        self.robust = self.clean_correct.clone()

    def correct(self, items: torch.Tensor) -> torch.Tensor:
        """Per item, whether it is still unbroken: zero-shot top-1 with a task, else X->text R@1 or
        text->X R@1 of any of its captions (t2x R@1, the headline, too: an item whose captions still
        find it must be attacked at the next eps)."""
        if self.class_emb is not None:
            return zeroshot_correct(items, self.class_emb, self.labels)
        texts, owner = self.clean.texts, self.clean.owner
        hits = torch.zeros(len(items)).index_add_(0, owner, (t2x_ranks(items, texts, owner) <= 1).float())
        return (x2t_ranks(items, texts, owner) <= 1) | (hits > 0)

    def metrics(self) -> dict[str, Any]:
        """The metrics block of the current budget (the clean pass beside the current adversarial embeddings)."""
        text_emb, owner = self.clean.texts, self.clean.owner
        attacked = Embeddings(self.adv_items.clone(), text_emb, owner)
        clean_metrics = self.clean_metrics
        metrics: dict[str, Any] = {"clean": clean_metrics, "attacked": embedding_metrics(attacked, self.class_emb, self.labels)}
        metrics["delta"] = {k: metrics["attacked"][k] - v for k, v in clean_metrics.items() if k in metrics["attacked"]}
        asr: dict[str, float | None] = {}
        if self.class_emb is not None:
            asr["zeroshot_top1"] = attack_success_rate(self.clean_correct, self.robust)
        asr["x2t_R@1"] = attack_success_rate(self.clean_x2t, x2t_ranks(attacked.items, text_emb, owner) <= 1)
        asr["t2x_R@1"] = attack_success_rate(self.clean_t2x, t2x_ranks(attacked.items, text_emb, owner) <= 1)
        metrics["asr"] = asr.get("zeroshot_top1", asr.get("x2t_R@1"))
        metrics["asr_detail"] = asr
        return metrics


@dataclass
class _Sweep:
    """The fixed settings of one nested sweep: who is attacked, on what, and what the results record."""

    target: Encoder
    source: Encoder
    dataset: MultimodalDataset
    modality: str
    batch_size: int
    prompts: list[list[str]] | None
    seed: int
    threat: str
    defense: dict[str, Any] | None

    def run(self, attack: Attack, grid: list[float], state: _NestedState, *, elapsed: float,
            progress: bool) -> list[Result]:
        """One result per budget, ascending; ``elapsed`` (the clean pass) is counted in the first one's timing."""
        results: list[Result] = []
        progress = progress and dist_utils.rank() == 0
        desc = f"{self.target.name}/{self.modality} nested {attack.name}"
        bar = tqdm(total=None, desc=desc, disable=not progress, leave=False)
        for eps in grid:
            t1 = time.perf_counter()
            atk = _at_eps(attack, eps, self.modality)
            remaining = state.robust.nonzero().flatten()
            passes = PassCount()
            if len(remaining):
                state.adv_items[remaining] = self._attack_items(atk, remaining, bar, passes)
            # zero-shot: monotone by construction (only samples robust before can be robust now);
            # retrieval: t2x R@1 of an item depends on the others, so an item a caption finds again
            # counts again and is attacked at the next eps (an eps never skips an unbroken item)
            now = state.correct(state.adv_items)
            state.robust = now if state.class_emb is None else state.robust & now
            metrics = state.metrics()
            elapsed += time.perf_counter() - t1
            results.append(self._result(atk, eps, metrics, state, len(remaining), elapsed,
                                        summed_passes(passes).as_dict(len(self.dataset))))
            log.info("%s/%s eps=%s: robust %s %.3f (attacked %d/%d, %.1fs)", self.target.name, self.modality,
                     get_modality(self.modality).format_eps(eps), state.criterion, state.robust.float().mean().item(),
                     len(remaining), len(self.dataset), elapsed)
            elapsed = 0.0
        bar.close()
        return results

    def _attack_items(self, atk: Attack, remaining: torch.Tensor, bar: Any, passes: PassCount) -> torch.Tensor:
        """Target embeddings of the attacked ``remaining`` items, in order. Multi-process: each rank
        attacks whole batches of them (the same batches one process makes), and every rank gets all
        of them back. The attack's passes (this rank's) are added to ``passes``."""
        span = dist_utils.shard(len(remaining), align=self.batch_size)
        mine = remaining[span.start : span.stop]
        chunks = []
        for batch in _subset_batches(self.dataset, self.modality, mine, self.batch_size, self.prompts):
            with count_passes() as spent:
                adv = atk(self.source, batch.replace(x=batch.x.to(self.source.device)))
            passes.add(spent)
            chunks.append(adv_embedding(self.target, self.modality, adv))
            bar.update(len(batch))
        return dist_utils.gather_cat(chunks)

    def _result(self, atk: Attack, eps: float, metrics: dict[str, Any], state: _NestedState, n_attacked: int,
                elapsed: float, cost: dict[str, Any]) -> Result:
        n_items = len(self.dataset)
        return Result(
            model=model_block(self.target, self.source),
            dataset=self.dataset.info(),
            modality=self.modality,
            attack=atk.describe() | {"eps": eps, "nested": True},
            defense=self.defense,
            threat=self.threat,
            metrics=metrics,
            n=n_items,
            seed=self.seed,
            timing_s=round(elapsed, 3),
            extra={"n_attacked": int(n_attacked), "n_naive": n_items, "n_robust": int(state.robust.sum()),
                   "criterion": state.criterion, "retrieval": "nested"},
            cost=cost,
        )


def naive_curve(
    target: Encoder,
    dataset: MultimodalDataset,
    *,
    modality: str,
    attack: Attack,
    eps_grid: Sequence[float] | None = None,
    source: Encoder | None = None,
    n: int | None = None,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
    threat: str | None = None,
    defense: dict[str, Any] | None = None,
) -> list[Result]:
    """The baseline: one independent :func:`robustmm.evaluate` per eps, attacking every sample.

    Same arguments and result layout as :func:`robustness_curve` (``"nested": False``,
    ``extra.n_attacked`` = every sample); robust accuracy need not be monotone in eps. Each point's
    ``cost`` is its own attack's passes on every item (each eps starts afresh).
    """
    _check_attack(attack)
    grid = _grid(eps_grid, modality)
    results = []
    for eps in grid:
        atk = _at_eps(attack, eps, modality)
        res = evaluate(target, dataset, modality=modality, attack=atk, source=source, n=n, batch_size=batch_size,
                       threat=threat, defense=defense, seed=seed, progress=progress)
        res.attack = (res.attack or {}) | {"eps": eps, "nested": False}
        res.extra = res.extra | {"n_attacked": res.n, "n_naive": res.n, "retrieval": "full"}
        results.append(res)
    return results
