"""A budgeted worst-case ensemble: the standard ensemble's strength for a fraction of its passes.

The standard ensemble (:mod:`~robustmm.attacks.ensemble`) spends most of its model passes on the
items it cannot break: every survivor of APGD-CE gets 9 targeted runs of 100 steps and 5000 Square
queries. Following the ideas of Adaptive Auto Attack (Liu et al., "Practical Evaluation of
Adversarial Robustness via Adaptive Auto Attack", CVPR 2022), this ensemble stops spending on
items it cannot break and spends on those near the decision boundary:

1. **APGD-CE**, ``steps`` iterations with early stopping: most items break within a few steps
   and leave at once.
2. **Online statistics.** For each survivor, the zero-shot margin at its most damaging iterate is
   compared with its clean margin: ``progress = 1 - margin_adv / margin_clean``. An item the first
   run moved no closer to the boundary than ``hopeless`` (default 0: its margin grew) is judged
   hopeless and gets ``hopeless_targets`` targeted runs instead of ``n_target_classes`` (A3's
   discarding of hopeless restarts, made per item).
3. **APGD-T from the first run's point** (adaptive initialisation: the targeted runs start where
   APGD-CE left the item, not at a fresh random point), ``target_steps`` each, the best targets
   first; an item leaves at its first break.
4. **Square** with ``n_queries`` queries (gradient-free, the control for masked gradients) on the
   items still robust whose margin is within ``near`` of the boundary (``progress >= 1 - near``) --
   and on every survivor when the first run made no progress on any item at all, the signature of a
   masked gradient.

Budgets are per item; ``describe()`` reports, after a run, how many items each stage attacked and
broke and how many were judged hopeless. Deterministic with the same ``seed`` (per-item seeded parts).
Label-free batches (no zero-shot task) have no margin to judge: every survivor goes through every
stage, as in the standard ensemble.

Example::

    >>> budget = build_attack("ensemble-budget", eps=4 / 255)
    >>> res = robustmm.evaluate(enc, data, modality="image", attack=budget)
    >>> res.cost["forward"], res.attack["ran"]
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from ..batch import Batch
from ..errors import BudgetError
from ..modalities import get_modality
from .apgd import APGD
from .base import Attack, register_attack
from .losses import DEFAULT_SCALE
from .margin_losses import Scorer
from .ops import check_eps, checked_input, frozen, resolve_norm
from .square import Square

log = logging.getLogger(__name__)

__all__ = ["BudgetedEnsemble"]


def _fraction(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
        raise BudgetError(f"{what} must be a number in [0, 1], got {v!r}")
    return float(v)


def _count(v: Any, what: str, low: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise BudgetError(f"{what} must be an integer >= {low}, got {v!r}")
    return v


@register_attack("ensemble-budget")
class BudgetedEnsemble(Attack):
    """APGD-CE, then targeted APGD and Square only where they can still pay off (a pass budget).

    See the module docstring for the stages, the hopeless rule and an example.
    """

    perturbs = ("x",)

    def __init__(self, eps: float | None = None, norm: str | None = None, seed: int = 0, steps: int = 25,
                 target_steps: int = 25, n_target_classes: int = 9, n_queries: int = 300, hopeless: float = 0.0,
                 hopeless_targets: int = 2, near: float = 0.5, logit_scale: float = DEFAULT_SCALE):
        self.eps = None if eps is None else check_eps(eps)  # type: ignore[assignment]
        self.norm = None if norm is None else resolve_norm(norm)
        self.seed = int(seed)
        self.steps = _count(steps, "steps", 1)
        self.target_steps = _count(target_steps, "target_steps")
        self.n_target_classes = _count(n_target_classes, "n_target_classes", 1)
        self.n_queries = _count(n_queries, "n_queries")
        self.hopeless = _fraction(hopeless, "hopeless")
        self.hopeless_targets = _count(hopeless_targets, "hopeless_targets")
        self.near = _fraction(near, "near")
        self.logit_scale = float(logit_scale)
        self._ran: dict[str, list[int]] = {}

    def settings(self) -> dict[str, Any]:
        return {"eps": self.eps, "norm": self.norm, "seed": self.seed, "steps": self.steps,
                "target_steps": self.target_steps, "n_target_classes": self.n_target_classes,
                "n_queries": self.n_queries, "hopeless": self.hopeless,
                "hopeless_targets": self.hopeless_targets, "near": self.near,
                "logit_scale": self.logit_scale}

    def resolve(self, modality: str) -> "BudgetedEnsemble":
        """A copy with the modality's middle eps and default norm filled in."""
        spec = get_modality(modality)
        return self.replace(eps=spec.middle_eps if self.eps is None else self.eps, norm=resolve_norm(self.norm, spec))

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self._ran:
            out["ran"] = [{"part": k, "attacked": a, "broken": b} for k, (a, b) in self._ran.items()]
        return out

    def _note(self, stage: str, attacked: int, broken: int) -> None:
        a, b = self._ran.get(stage, [0, 0])
        self._ran[stage] = [a + attacked, b + broken]

    def _stage(self, encoder: Any, batch: Batch, x: torch.Tensor, adv: torch.Tensor, rows: torch.Tensor,
               attack: Attack, scorer: Scorer, label: str) -> torch.Tensor:
        """Run ``attack`` on ``rows`` from ``adv`` within the ball around ``x``; write the examples that
        break an item into ``adv``; return the items' margins after the stage."""
        sub = batch.replace(x=x).take(rows)
        out = attack.attack_from(encoder, sub, adv[rows]).x if isinstance(attack, APGD) else attack(encoder, sub).x
        with frozen(encoder), torch.no_grad():
            score = scorer.score(encoder.encode(batch.modality, out.detach(), validate=False), rows)
        adv[rows] = out.detach().to(adv.dtype)
        self._note(label, len(rows), int((score <= 0).sum()))
        return score

    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        """Return a perturbed copy of ``batch``: per item, the first stage's example that broke it."""
        checked_input("ensemble-budget", encoder, batch)
        r = self.resolve(batch.modality)
        eps, norm = float(r.eps), str(r.norm)
        x = batch.x.detach()
        if eps == 0:
            return batch.replace(x=x.clone())
        rows = torch.arange(len(batch), device=x.device)
        with frozen(encoder), torch.no_grad():
            scorer = Scorer.of(encoder, batch, self.logit_scale, x.device)
            clean = scorer.score(encoder.encode(batch.modality, x, validate=False), rows)
        adv = x.clone()
        common = {"eps": eps, "norm": norm, "seed": self.seed, "logit_scale": self.logit_scale, "early_stop": True}
        todo = rows[clean > 0]
        if len(todo) == 0:
            return batch.replace(x=adv)
        score = clean.clone()
        score[todo] = self._stage(encoder, batch, x, adv, todo, APGD(steps=self.steps, loss="ce", **common),
                                  scorer, "apgd-ce")
        live = todo[score[todo] > 0]
        progress = self._progress(clean, score, live, scorer)
        self._note("hopeless", int((progress < self.hopeless).sum()), 0)
        if self.target_steps and scorer.zero_shot:
            for group, targets, label in ((live[progress >= self.hopeless], self.n_target_classes, "apgd-t"),
                                          (live[progress < self.hopeless], self.hopeless_targets, "apgd-t-hopeless")):
                if len(group) and targets:
                    targeted = APGD(steps=self.target_steps, loss="dlr-targeted", n_target_classes=targets,
                                    random_start=False, **common)
                    score[group] = self._stage(encoder, batch, x, adv, group, targeted, scorer, label)
        live = live[score[live] > 0]
        near = self._near(clean, score, live, progress, scorer, todo)
        if len(near) and self.n_queries:
            square = Square(eps=eps, norm=norm, n_queries=self.n_queries, seed=self.seed, logit_scale=self.logit_scale)
            score[near] = self._stage(encoder, batch, x, adv, near, square, scorer, "square")
        log.debug("ensemble-budget %s: %s", batch.modality, self._ran)
        return batch.replace(x=adv)

    def _progress(self, clean: torch.Tensor, score: torch.Tensor, live: torch.Tensor, scorer: Scorer) -> torch.Tensor:
        """(len(live),) how far the first run moved each survivor toward the boundary (1: at it)."""
        if not scorer.zero_shot:
            return torch.ones(len(live), device=clean.device)
        return 1 - score[live] / clean[live].clamp_min(1e-12)

    def _near(self, clean: torch.Tensor, score: torch.Tensor, live: torch.Tensor, first: torch.Tensor,
              scorer: Scorer, todo: torch.Tensor) -> torch.Tensor:
        """The survivors Square attacks: those within ``near`` of the boundary; all of them when the
        gradient runs moved no item at all (a masked gradient) or the batch has no zero-shot task."""
        if not scorer.zero_shot or len(live) == 0:
            return live
        moved = 1 - score[todo] / clean[todo].clamp_min(1e-12)
        if bool((moved <= 0).all()):
            return live
        return live[1 - score[live] / clean[live].clamp_min(1e-12) >= 1 - self.near]
