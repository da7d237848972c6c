"""The worst-case ensemble (AutoAttack's protocol, Croce & Hein 2020) on any continuous modality.

Attacks run one after another, each only on the items still robust; an item counts as robust only
if it survives all of them, and gets the adversarial example of the first attack that broke it
(survivors: the last attack's). Robust = zero-shot top-1 correct on the attacked encoder, or, for
a batch without labels, X->text R@1 among the batch's captions (:class:`~.margin_losses.Scorer`).
Because every part is per-item seeded and deterministic, the ensemble breaks every item that any
of its parts alone breaks: it is at most the minimum of its parts, item by item.

Parts (``attacks``, default ``("apgd-ce", "apgd-t", "fab-t", "square")``: AutoAttack's ``standard``
in its order): ``apgd-ce``, ``apgd-dlr``, ``apgd-t`` (targeted DLR), ``fab-t`` (targeted FAB,
:mod:`~robustmm.attacks.fab`), ``square``, or any registered attack name, or Attack instances.
``fab=False`` leaves FAB-T out (of the default parts or of the ones given). ``version`` sets their
budgets:

=========== ================== ============================ ============================ ============
version     APGD-CE / -DLR     APGD-T                       FAB-T                        Square
=========== ================== ============================ ============================ ============
standard    100 steps          100 steps, 9 target classes  100 steps, 9 target classes  5000 queries
cheap       10 steps           10 steps, 3 target classes   10 steps, 3 target classes   200 queries
=========== ================== ============================ ============================ ============

``steps`` / ``n_queries`` override the version's iterations / queries for every part that has
them. ``early_stop`` (default True) is handed to every part that takes it (APGD, FAB, PGD): an item
leaves a part at its first breaking iterate (FAB: its first adversarial within eps), so each part
spends its steps on the items still robust; False reproduces the full-batch parts exactly (and
suits a randomized model, where one draw's verdict is not final). ``describe()`` lists the parts
and, once the attack has run, how many items each part attacked and broke (``ran``).

Example::

    >>> aa = build_attack("ensemble", version="cheap")                    # middle eps
    >>> res = robustmm.evaluate(enc, data, modality="image", attack=aa)
    >>> res.attack["ran"]    # [{'part': 'apgd-ce', 'attacked': 94, 'broken': 86}, ...]
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from ..batch import Batch
from ..cost import count_passes
from ..errors import UnknownNameError
from ..modalities import get_modality
from .base import Attack, accepts, build_attack, register_attack
from .losses import DEFAULT_SCALE
from .margin_losses import Scorer
from .ops import check_eps, frozen, resolve_norm

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_PARTS", "FAB_PART", "Ensemble", "VERSIONS"]

DEFAULT_PARTS = ("apgd-ce", "apgd-t", "fab-t", "square")
#: the part that ``fab=False`` leaves out
FAB_PART = "fab-t"
#: per version, the settings of each named part: (registered attack, keywords)
VERSIONS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "standard": {
        "apgd-ce": ("apgd", {"loss": "ce", "steps": 100}),
        "apgd-dlr": ("apgd", {"loss": "dlr", "steps": 100}),
        "apgd-t": ("apgd", {"loss": "dlr-targeted", "steps": 100, "n_target_classes": 9}),
        "fab-t": ("fab", {"steps": 100, "n_target_classes": 9}),
        "square": ("square", {"n_queries": 5000}),
    },
    "cheap": {
        "apgd-ce": ("apgd", {"loss": "ce", "steps": 10}),
        "apgd-dlr": ("apgd", {"loss": "dlr", "steps": 10}),
        "apgd-t": ("apgd", {"loss": "dlr-targeted", "steps": 10, "n_target_classes": 3}),
        "fab-t": ("fab", {"steps": 10, "n_target_classes": 3}),
        "square": ("square", {"n_queries": 200}),
    },
}


_APGD_LABELS = {"ce": "apgd-ce", "dlr": "apgd-dlr", "dlr-targeted": "apgd-t"}


def _is_fab(part: str | Attack) -> bool:
    """Whether an ensemble part is FAB (by label or by attack)."""
    return part in (FAB_PART, "fab") if isinstance(part, str) else part.name == "fab"


def runs_on(attack: Attack, classes: int | None) -> bool:
    """Whether an ensemble part can run on a zero-shot task of ``classes`` classes (None: no task):
    the DLR losses compare the third and fourth logits, so they need at least 4 classes."""
    return classes is None or classes >= 4 or not str(attack.settings().get("loss", "")).startswith("dlr")


@register_attack("ensemble")
class Ensemble(Attack):
    """Worst case over APGD-CE, APGD-T, FAB-T and Square (configurable), each on the items still robust.

    See the module docstring for the protocol, the versions and an example.
    """

    perturbs = ("x",)

    def __init__(self, attacks: Sequence[str | Attack] | None = None, version: str = "standard",
                 eps: float | None = None, norm: str | None = None, seed: int = 0,
                 logit_scale: float = DEFAULT_SCALE, steps: int | None = None, n_queries: int | None = None,
                 early_stop: bool = True, fab: bool = True):
        if version not in VERSIONS:
            raise UnknownNameError("ensemble version", str(version), VERSIONS)
        self.version = version
        self.eps = None if eps is None else check_eps(eps)  # type: ignore[assignment]
        self.norm = None if norm is None else resolve_norm(norm)
        self.seed = int(seed)
        self.logit_scale = float(logit_scale)
        self.steps, self.n_queries = steps, n_queries
        self.early_stop = bool(early_stop)
        self.fab = bool(fab)
        self.attacks = tuple(DEFAULT_PARTS if attacks is None else attacks)
        if not self.fab:
            self.attacks = tuple(a for a in self.attacks if not _is_fab(a))
        if not self.attacks:
            raise UnknownNameError("ensemble part", "(none)", VERSIONS[version])
        self.parts = [self._part(a) for a in self.attacks]
        self._ran = [[0, 0, 0, 0] for _ in self.parts]  # per part: attacked, broken, forward and backward passes

    def _part(self, spec: str | Attack) -> tuple[str, Attack]:
        """(label, attack) of one part, with the ensemble's eps, norm and seed where it takes them."""
        if isinstance(spec, Attack):
            atk, label = spec, _APGD_LABELS.get(getattr(spec, "loss", None), spec.name) if spec.name == "apgd" else spec.name
            label = FAB_PART if spec.name == "fab" else label
            common = {k: v for k, v in (("eps", self.eps), ("norm", self.norm), ("steps", self.steps),
                                        ("n_queries", self.n_queries), ("early_stop", self.early_stop)) if v is not None}
            return label, atk.replace(**{k: v for k, v in common.items() if k in atk.settings()})
        name, kw = VERSIONS[self.version].get(spec, (spec, {}))
        kw = dict(kw)
        for key, value in (("eps", self.eps), ("norm", self.norm), ("seed", self.seed), ("logit_scale", self.logit_scale),
                           ("steps", self.steps), ("n_queries", self.n_queries), ("early_stop", self.early_stop)):
            if (value is not None or key == "eps") and accepts(name, key):
                kw[key] = value
        return str(spec), build_attack(name, **kw)

    def settings(self) -> dict[str, Any]:
        return {"attacks": list(self.attacks), "version": self.version, "eps": self.eps, "norm": self.norm,
                "seed": self.seed, "logit_scale": self.logit_scale, "steps": self.steps, "n_queries": self.n_queries,
                "early_stop": self.early_stop, "fab": self.fab}

    def resolve(self, modality: str) -> "Ensemble":
        """A copy with the modality's middle eps and default norm filled in (for every part)."""
        spec = get_modality(modality)
        return self.replace(eps=spec.middle_eps if self.eps is None else self.eps, norm=resolve_norm(self.norm, spec))

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "version": self.version, "eps": self.eps, "norm": self.norm,
                               "seed": self.seed, "parts": [dict(atk.describe(), part=label) for label, atk in self.parts]}
        if self.logit_scale != DEFAULT_SCALE:
            out["logit_scale"] = self.logit_scale
        if any(ran[0] for ran in self._ran):
            out["ran"] = [{"part": label, "attacked": a, "broken": b, "forward": f, "backward": g}
                          for (label, _), (a, b, f, g) in zip(self.parts, self._ran)]
        return out

    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        """Return a perturbed copy of ``batch``: per item, the first part's example that broke it."""
        modality = batch.modality
        encoder.check_modality(modality)
        get_modality(modality).validate(batch.x)
        x = batch.x.detach()
        rows = torch.arange(len(batch), device=x.device)
        with frozen(encoder), torch.no_grad():
            scorer = Scorer.of(encoder, batch, self.logit_scale, x.device)
            robust = scorer.robust(encoder.encode(modality, x, validate=False), rows)
        adv = x.clone()
        classes = len(batch.prompts) if batch.prompts is not None and batch.labels is not None else None
        for k, (label, atk) in enumerate(self.parts):
            todo = rows[robust]
            if len(todo) == 0:
                break
            if not runs_on(atk, classes):
                log.warning("ensemble: skipping %s, the DLR loss needs at least 4 classes (this task has %d)", label, classes)
                continue
            with count_passes() as spent:  # the part's own passes, totals over the items it attacked
                out = atk(encoder, batch.replace(x=x).take(todo)).x.detach()
            self._ran[k][2] += spent.forward
            self._ran[k][3] += spent.backward
            with frozen(encoder), torch.no_grad():
                still = scorer.robust(encoder.encode(modality, out, validate=False), todo)
            adv[todo] = out.to(adv.dtype)
            robust[todo] = still
            self._ran[k][0] += len(todo)
            self._ran[k][1] += int((~still).sum())
            log.debug("ensemble %s %s: %d attacked, %d broken, %d robust left", modality, label, len(todo),
                      int((~still).sum()), int(robust.sum()))
        return batch.replace(x=adv)
