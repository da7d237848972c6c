"""Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML 2020) on any continuous modality of any encoder.

APGD is PGD without a step size to tune: it starts at step ``2 * eps``, moves with momentum
``MOMENTUM`` = 0.75 (``z = P(x_k + eta * dir(grad))``, ``x_{k+1} = P(x_k + 0.75 (z - x_k) + 0.25 (x_k - x_{k-1}))``),
and at checkpoints (fractions 0, 0.22, then gaps shrinking by 0.03 down to 0.06 of ``steps``)
halves the step of every item whose loss rose in at most ``rho`` of the steps since the last
checkpoint, or whose step and best loss both stayed put since the previous checkpoint (never at
the first one, as in the reference); a halved item restarts from its best (highest-loss) point
(:func:`halve_step`). ``n_restarts`` runs from fresh random starts on the items still robust.

Losses (``loss``):

=================== ================================================================ =========
``ce``              zero-shot cross-entropy on ``logit_scale * cos`` logits            labels
``dlr``             Difference of Logits Ratio (scale-invariant)                      labels
``dlr-targeted``    targeted DLR toward each of the ``n_target_classes`` classes with  labels
                    the highest clean logits after the top one (APGD-T)
``caption``         away from the item's own captions (losses.py)                     captions
``embedding``       away from the clean embedding (losses.py)                         nothing
=================== ================================================================ =========

Without labels ``ce``/``dlr`` fall back to ``caption`` and ``dlr-targeted`` to ``caption-targeted``
toward each of the ``n_target_classes`` captions of other items closest to the clean embedding.

With a zero-shot task an item is *broken* when its true class is no longer the strict top-1:
items broken at the clean input are returned unchanged (AutoAttack's practice), restarts and
targets run only on items still robust, and each item gets its most damaging iterate -- a broken
one if any, else its highest-loss one. Label-free losses have no notion of broken: every run
attacks every item and the highest-loss iterate is kept.

``early_stop=True`` (zero-shot losses only; AutoAttack's practice, and :mod:`~robustmm.attacks.pgd`'s
option): an item leaves its run at the first iterate that breaks it and returns that iterate, so
the remaining steps are spent only on the items still robust. Verdicts are the same as the full
run's up to rounding -- an item broken at any iterate is returned broken either way -- and can only
get harsher; the returned example is the first breaking iterate instead of the highest-loss broken
one. The default (False) runs every step on every item, for exact reproduction. On a randomized
model a verdict holds for the draws it was judged on only: leave it off there (or judge on many
draws with ``eot_samples``).

``eot_samples=k`` (what :class:`~robustmm.attacks.eot.EOT` sets) evaluates every iterate on ``k``
draws of a randomized encoder: the loss and gradient are the draws' means (``eot_reduction="softmin"``:
``-log mean_t exp(-loss_t)``, :mod:`~robustmm.attacks.eot_reduction`), and an iterate's broken verdict
is the share of draws that break it (items broken in every draw at the clean input are left alone;
iterates rank by that share, then by loss; early stopping needs every draw broken), so the step-size
decisions and the best iterate are made once per item, not per draw.

Conventions as :mod:`robustmm.attacks.pgd`: eps/norm in the modality's unit (None: its middle eps
and default norm), per-item random starts seeded by ``(seed, run, batch.index)``, deterministic,
input never mutated, encoder weights/modes/``requires_grad`` restored (``frozen``).

Example::

    >>> apgd = build_attack("apgd", steps=100)                          # APGD-CE at the middle eps
    >>> apgdt = build_attack("apgd", loss="dlr-targeted", n_target_classes=9)
    >>> res = robustmm.evaluate(enc, data, modality="audio", attack=apgd)
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from ..batch import Batch
from ..errors import BudgetError, UnknownNameError
from ..modalities import get_modality
from .base import Attack, register_attack
from .eot_reduction import DrawFold, check_reduction
from .losses import DEFAULT_SCALE, make_objective
from .margin_losses import Scorer, dlr, dlr_targeted
from .ops import ascent_step, check_eps, checked_input, frozen, item_seed, per_sample, project, random_delta, resolve_norm

log = logging.getLogger(__name__)

__all__ = ["APGD", "LOSS_NAMES", "checkpoints", "halve_step"]

LOSS_NAMES = ("ce", "dlr", "dlr-targeted", "caption", "embedding")
#: weight of the new step against the previous one (AutoAttack's alpha); ``rho`` is another number,
#: the share of rising steps at or below which a checkpoint halves an item's step size
MOMENTUM = 0.75
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def checkpoints(steps: int) -> list[tuple[int, int]]:
    """(iteration, steps since the previous checkpoint) pairs: the first gap is 0.22 * steps,
    each next one 0.03 * steps shorter, never below 0.06 * steps (integer parts, at least 1)."""
    gap, low, dec = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    out, t = [], gap
    while t <= steps:
        out.append((t, gap))
        gap = max(gap - dec, low)
        t += gap
    return out


def halve_step(rises: torch.Tensor, gap: int, rho: float, halved_last: torch.Tensor, best_last: torch.Tensor,
               best_now: torch.Tensor) -> torch.Tensor:
    """(n,) bool: which items halve their step at a checkpoint ``gap`` steps after the previous one.

    As the reference APGD: an item halves when its loss rose in at most ``rho * gap`` of those
    steps, or when its step was not halved at the previous checkpoint and its best loss has not
    improved since. Pass ``halved_last`` all True at the first checkpoint: there the reference
    counts every item as just halved, so only the first rule applies.
    """
    return (rises <= rho * gap) | (~halved_last & (best_last >= best_now))


def _int(v: Any, what: str, low: int) -> int:
    if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())) or v < low:
        raise BudgetError(f"{what} must be an integer >= {low}, got {v!r}")
    return int(v)


@register_attack("apgd")
class APGD(Attack):
    """Auto-PGD (L-inf / L2; CE, DLR, targeted DLR = APGD-T, caption, embedding losses).

    See the module docstring for the algorithm, losses, conventions and an example.
    """

    perturbs = ("x",)

    def __init__(self, eps: float | None = None, norm: str | None = None, steps: int = 100, n_restarts: int = 1,
                 loss: str = "ce", n_target_classes: int = 9, rho: float = 0.75, random_start: bool = True,
                 seed: int = 0, logit_scale: float = DEFAULT_SCALE, early_stop: bool = False, eot_samples: int = 1,
                 eot_reduction: str = "mean"):
        self.eps = None if eps is None else check_eps(eps)  # type: ignore[assignment]
        self.norm = None if norm is None else resolve_norm(norm)
        self.steps = _int(steps, "steps", 0)
        self.n_restarts = _int(n_restarts, "n_restarts", 1)
        if loss not in LOSS_NAMES:
            raise UnknownNameError("APGD loss", str(loss), LOSS_NAMES)
        self.loss = loss
        self.n_target_classes = _int(n_target_classes, "n_target_classes", 1)
        self.rho = float(rho)
        if not 0 < self.rho <= 1:
            raise BudgetError(f"rho must lie in (0, 1], got {rho!r}")
        self.random_start = bool(random_start)
        self.seed = int(seed)
        self.logit_scale = float(logit_scale)
        self.early_stop = bool(early_stop)
        self.eot_samples = _int(eot_samples, "EOT samples", 1)
        self.eot_reduction = check_reduction(eot_reduction)

    def settings(self) -> dict[str, Any]:
        return {"eps": self.eps, "norm": self.norm, "steps": self.steps, "n_restarts": self.n_restarts,
                "loss": self.loss, "n_target_classes": self.n_target_classes, "rho": self.rho,
                "random_start": self.random_start, "seed": self.seed, "logit_scale": self.logit_scale,
                "early_stop": self.early_stop, "eot_samples": self.eot_samples,
                "eot_reduction": self.eot_reduction}

    def resolve(self, modality: str) -> "APGD":
        """A copy with the modality's middle eps and default norm filled in."""
        spec = get_modality(modality)
        norm = resolve_norm(self.norm, spec)  # a budget beyond the domain (eps=4 on pixels) is refused
        return self.replace(eps=spec.middle_eps if self.eps is None else spec.check_budget(self.eps, norm), norm=norm)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.loss != "dlr-targeted":
            out.pop("n_target_classes")
        if not self.early_stop:  # records without the key ran the full batch
            out.pop("early_stop")
        if self.eot_samples == 1:  # records without the key saw one draw per step
            out.pop("eot_samples")
        if self.eot_reduction == "mean":  # records without the key averaged the draws
            out.pop("eot_reduction")
        return out

    # -- binding the losses -------------------------------------------------------------------
    def _runs(self, encoder: Any, batch: Batch, x: torch.Tensor, clean: torch.Tensor,
              scorer: Scorer) -> list[tuple[str, LossFn]]:
        """(effective loss name, loss_fn(emb, rows)) per target; one entry for untargeted losses."""
        name, dev = self.loss, x.device
        if not scorer.zero_shot and name in ("ce", "dlr"):
            name = "caption"
        if name in ("ce", "caption", "embedding"):
            return [(name, make_objective(name, encoder, batch, x=x, scale=self.logit_scale))]
        if name == "dlr":
            return [(name, lambda e, r: dlr(scorer.logits(e), scorer.labels[r]))]
        if scorer.zero_shot:  # APGD-T: the classes ranked 2..k+1 on the clean input
            k = min(self.n_target_classes, scorer.class_emb.shape[0] - 1)
            order = scorer.logits(clean).argsort(dim=1, descending=True)
            return [("dlr-targeted", lambda e, r, t=order[:, j].to(dev): dlr_targeted(scorer.logits(e), scorer.labels[r], t[r]))
                    for j in range(1, k + 1)]
        targets = scorer.other_captions(clean, self.n_target_classes)
        return [("caption-targeted", make_objective("caption-targeted", encoder, batch, x=x, target=t)) for t in targets]

    # -- the attack -------------------------------------------------------------------------
    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        """Return a perturbed copy of ``batch`` (``x`` changed, everything else shared)."""
        return self.attack_from(encoder, batch, None)

    def attack_from(self, encoder: Any, batch: Batch, start: torch.Tensor | None) -> Batch:
        """As a call, but the first run starts at ``start`` (projected into the ball around
        ``batch.x``; None: the usual random or clean start): a run that goes on from where another
        attack left each item (the budgeted ensemble's adaptive initialisation)."""
        modality = batch.modality
        spec = checked_input("APGD", encoder, batch)
        r = self.resolve(modality)
        eps, norm = float(r.eps), str(r.norm)
        x = batch.x.detach()
        if eps == 0:
            return batch.replace(x=x.clone())
        n = len(batch)
        index = torch.as_tensor(batch.index) if batch.index is not None and len(batch.index) == n else torch.arange(n)
        with frozen(encoder), torch.enable_grad():
            scorer = Scorer.of(encoder, batch, self.logit_scale, x.device)
            with torch.no_grad():
                clean = encoder.encode(modality, x, validate=False)
            zero_shot = scorer.zero_shot and self.loss in ("ce", "dlr", "dlr-targeted")
            all_rows = torch.arange(n, device=x.device)
            best_x = x.clone()
            best_loss = torch.full((n,), float("-inf"), device=x.device)
            # per item, the share of draws in which its best example is broken (one draw: 0 or 1)
            best_frac = self._broken_share(encoder, modality, x, clean, scorer, all_rows) if zero_shot else \
                torch.zeros(n, device=x.device)
            runs = self._runs(encoder, batch, x, clean, scorer)
            for t, (name, loss_fn) in enumerate(runs):
                for restart in range(self.n_restarts):
                    rows = all_rows[best_frac < 1] if zero_shot else all_rows
                    if len(rows) == 0:
                        break
                    seed = item_seed(self.seed, t * self.n_restarts + restart)
                    first = None if start is None or restart else start.detach()[rows]  # every target from it
                    xs, ls, fs = self._run(encoder, modality, x[rows], rows, index[rows.cpu()], loss_fn,
                                           scorer if zero_shot else None, eps, norm, spec.domain, seed, first)
                    better = (fs > best_frac[rows]) | (fs == best_frac[rows]) & (ls > best_loss[rows])
                    won = rows[better]
                    best_x[won], best_loss[won], best_frac[won] = xs[better], ls[better], fs[better]
                    log.debug("apgd %s %s run %d.%d: %d items, %d broken so far", modality, name, t, restart,
                              len(rows), int((best_frac >= 1).sum()))
        return batch.replace(x=best_x.detach())

    def _broken_share(self, encoder: Any, modality: str, x: torch.Tensor, clean: torch.Tensor, scorer: Scorer,
                      rows: torch.Tensor) -> torch.Tensor:
        """(n,) share of ``eot_samples`` draws in which the clean input is broken; ``clean`` is the
        first draw's embedding. An item is left alone only when it is broken in every draw."""
        share = (~scorer.robust(clean, rows)).float()
        with torch.no_grad():
            for _ in range(self.eot_samples - 1):
                share += (~scorer.robust(encoder.encode(modality, x, validate=False), rows)).float()
        return share / self.eot_samples

    def _run(self, encoder: Any, modality: str, x0: torch.Tensor, rows: torch.Tensor, index: torch.Tensor,
             loss_fn: LossFn, scorer: Scorer | None, eps: float, norm: str, domain: tuple[float, float],
             seed: int, start: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One APGD run on ``rows``: each item's most damaging iterate (the largest broken share, then
        the highest loss), its loss and its broken share.

        With ``early_stop`` (and a zero-shot goal) an item leaves the run at its first broken
        iterate, which it returns; the others' state is compacted to the items still robust."""

        def probe(z: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """(loss, gradient, broken share) at ``z`` over ``eot_samples`` draws (``eot_reduction``)."""
            fold, share = DrawFold(self.eot_reduction), None  # one running gradient, not k
            for _ in range(self.eot_samples):
                zz = z.detach().requires_grad_(True)
                emb = encoder.encode(modality, zz, validate=False)
                l_d = loss_fn(emb, r)
                (g,) = torch.autograd.grad(l_d.sum(), zz)
                hit = (~scorer.robust(emb, r) if scorer is not None else torch.zeros_like(l_d, dtype=torch.bool)).float()
                fold.add(l_d.detach().float(), g)
                share = hit if share is None else share + hit
            loss, grad = fold.result()
            return loss, grad, share if self.eot_samples == 1 else share / self.eot_samples

        stop = self.early_stop and scorer is not None
        xk = x0.clone()
        if start is not None:
            xk = project(start.to(x0.dtype).clone(), x0, eps, norm, domain)
        elif self.random_start:
            xk = project(x0 + random_delta(x0, eps, norm, seed=seed, index=index), x0, eps, norm, domain)
        loss, grad, share = probe(xk, rows)
        best_x, best_l, best_f = xk.clone(), loss.clone(), share.clone()  # what is returned
        pos = torch.arange(len(rows), device=x0.device)  # the positions (in rows) still in the run
        # per still-running item: x_max/g_max/l_max is where a halved step restarts
        st = {"x0": x0, "rows": rows, "xk": xk, "x_prev": xk, "grad": grad, "x_max": xk.clone(), "g_max": grad.clone(),
              "l_max": loss.clone(), "l_prev": loss, "rises": torch.zeros_like(loss),
              "eta": torch.full((len(rows),), 2.0 * eps, device=x0.device, dtype=x0.dtype),
              "l_chk": loss.clone(), "h_chk": torch.ones_like(share, dtype=torch.bool)}
        if stop and bool((share >= 1).any()):
            pos, st = pos[share < 1], {k: v[share < 1] for k, v in st.items()}
        marks = dict(checkpoints(self.steps))
        for k in range(self.steps):
            if len(pos) == 0:
                break
            xk, x_prev, grad, ref = st["xk"], st["x_prev"], st["grad"], st["x0"]
            with torch.no_grad():
                z = project(xk + ascent_step(grad, norm, st["eta"]), ref, eps, norm, domain)  # grad is not used again
                a = 1.0 if k == 0 else MOMENTUM
                x_new = project(xk + a * (z - xk) + (1 - a) * (xk - x_prev), ref, eps, norm, domain)
            st["x_prev"], xk = xk, x_new
            loss, grad, share = probe(xk, st["rows"])
            with torch.no_grad():
                st["rises"] += (loss > st["l_prev"]).to(loss.dtype)
                st["l_prev"] = loss
                up = loss > st["l_max"]
                st["x_max"][up], st["g_max"][up], st["l_max"][up] = xk[up], grad[up], loss[up]
                better = (share > best_f[pos]) | (share == best_f[pos]) & (loss > best_l[pos])
                at = pos[better]
                best_x[at], best_l[at], best_f[at] = xk[better], loss[better], share[better]
                if k + 1 in marks:
                    halve = halve_step(st["rises"], marks[k + 1], self.rho, st["h_chk"], st["l_chk"], st["l_max"])
                    st["h_chk"], st["l_chk"] = halve, st["l_max"].clone()
                    st["eta"][halve] /= 2
                    xk = torch.where(per_sample(halve, xk), st["x_max"], xk)
                    grad = torch.where(per_sample(halve, grad), st["g_max"], grad)
                    st["rises"].zero_()
            st["xk"], st["grad"] = xk, grad
            if stop and bool((share >= 1).any()):  # broken items keep their breaking iterate and leave
                keep = share < 1
                pos, st = pos[keep], {k_: v[keep] for k_, v in st.items()}
        return best_x, best_l, best_f
