"""Targeted FAB, FAB-T (Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive
boundary attack", ICML 2020), L-inf and L2, on any continuous modality of any encoder.

FAB is a minimum-norm attack: it looks for the adversarial example *closest* to the input. For
each target class (the ``n_target_classes`` classes with the highest clean zero-shot logits after
the top one) and each restart it iterates, from the input (later restarts: a random start at half
the budget):

1. linearise the decision boundary between the true class ``y`` and the target ``t`` at the
   iterate ``x_k``: ``f(x) = z_t - z_y ~ f(x_k) + g . (x - x_k)``, with ``z`` the zero-shot logits
   (scaled cosine similarities to the class embeddings) and ``g`` the gradient of ``f``;
2. project both ``x_k`` and the input ``x_0`` onto that hyperplane intersected with the domain box
   in the attack's norm (:func:`project_hyperplane_box`; when the hyperplane misses the box, the
   box point that gets closest to it): ``d_k``, ``d_0``;
3. step to ``(1 - a) (x_k + eta d_k) + a (x_0 + eta d_0)`` with the bias ``a = min(|d_k| / (|d_k| + |d_0|),
   alpha_max)`` toward the input (extrapolated by ``eta`` to cross the boundary), clamped to the domain;
4. whenever the step is adversarial (true class no longer the strict top-1), keep it if its norm
   is the smallest so far, and pull the iterate back toward the input: ``x_0 + beta (x_k - x_0)``.

An item counts as broken only when the smallest adversarial found lies within ``eps`` (the
budget's norm); such items get that example, and the others are returned unchanged (AutoAttack's
practice). As in AutoAttack, targets and restarts run only on the items not yet broken within
``eps``, and items misclassified at the clean input are returned unchanged. ``early_stop=True``
(what the ensemble sets) lets an item leave its run at the first adversarial within ``eps``: the
verdicts are the same, the example is not the smallest found.

Defaults are AutoAttack's ``standard`` FAB-T: ``steps=100`` (AutoAttack's ``n_iter``), 9 target
classes, 1 restart (no random start), ``alpha_max=0.1``, ``eta=1.05``, ``beta=0.9``. Without
labels the "classes" are the batch's captions: the target is the ``k``-th most similar caption of
another item, the true logit the item's best own caption.

Example::

    >>> fab = build_attack("fab", eps=4 / 255)                         # FAB-T, L-inf
    >>> res = robustmm.evaluate(enc, data, modality="image", attack=fab)
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from ..batch import Batch
from ..errors import BudgetError
from ..modalities import get_modality
from .base import Attack, register_attack
from .losses import DEFAULT_SCALE
from .margin_losses import Scorer
from .ops import check_eps, checked_input, frozen, item_seed, per_sample, random_delta, resolve_norm

log = logging.getLogger(__name__)

__all__ = ["FAB", "project_hyperplane_box"]

#: f(emb, rows) -> (n,) ``z_t - z_y``: > 0 past the target's boundary
BoundaryFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _water_level(s: torch.Tensor, k: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the smallest ``tau >= 0`` with ``sum_i s_i min(tau, k_i) >= c`` (s, k >= 0, c > 0),
    and whether one exists (else ``tau`` is +inf: every coordinate at its cap)."""
    ks, order = k.sort(dim=1)
    ss = s.gather(1, order)
    below = (ss * ks).cumsum(1) - ss * ks  # sum_{j < m} s_j k_j
    tail = ss.flip(1).cumsum(1).flip(1)  # sum_{j >= m} s_j
    reach = below + ks * tail  # the sum at tau = k_m
    ok = reach >= c[:, None]
    feasible = ok.any(1)
    m = ok.float().argmax(1).clamp(max=k.shape[1] - 1)  # the first breakpoint that reaches c
    b_m, t_m = below.gather(1, m[:, None])[:, 0], tail.gather(1, m[:, None])[:, 0]
    tau = (c - b_m) / t_m.clamp_min(1e-30)
    return torch.where(feasible, tau.clamp_min(0), torch.full_like(tau, float("inf"))), feasible


def project_hyperplane_box(p: torch.Tensor, w: torch.Tensor, b: torch.Tensor, norm: str,
                           domain: tuple[float, float]) -> torch.Tensor:
    """The smallest step ``d`` (rows of ``p``, flattened (n, D)) in ``norm`` with ``w . (p + d) = b``
    and ``p + d`` in the box ``domain``: FAB's projection onto the linearised boundary.

    Both norms are solved exactly by one water-filling search over the sorted breakpoints. Take
    ``c = b - w . p > 0`` (else flip ``w``); coordinate ``i`` can move by at most ``r_i`` (to the box
    bound in the direction of ``sign(w_i)``). L-inf: ``d_i = sign(w_i) min(t, r_i)`` for the
    smallest ``t`` reaching ``c``; L2 (KKT): ``d_i = sign(w_i) min(lam |w_i|, r_i)`` for the smallest
    ``lam``. If the hyperplane misses the box, every coordinate goes to its bound: the box point
    closest to the hyperplane. A point already on it gets ``d = 0``.
    """
    lo, hi = domain
    c = b - (w * p).sum(1)
    sgn = torch.where(c < 0, -1.0, 1.0).to(w.dtype)
    w = w * sgn[:, None]  # now w . d = |c|
    c = c.abs()
    room = torch.where(w > 0, hi - p, p - lo).clamp_min(0)
    aw = w.abs()
    if norm == "linf":
        tau, _ = _water_level(aw, room, c)
        mag = torch.minimum(tau[:, None].expand_as(room), room)
    else:
        caps = torch.where(aw > 0, room / aw.clamp_min(1e-30), torch.zeros_like(room))
        tau, _ = _water_level(aw * aw, caps, c)
        mag = torch.minimum(tau[:, None] * aw, room)
    d = torch.sign(w) * mag  # w is the flipped one: w . d = |c|, so the original w . d = c
    return torch.where((c > 0)[:, None], d, torch.zeros_like(d))


def _norm(d: torch.Tensor, norm: str) -> torch.Tensor:
    """(n,) per-row L-inf or L2 norm of ``d`` (any shape, rows first)."""
    f = d.flatten(1)
    return f.abs().amax(1) if norm == "linf" else f.norm(dim=1)


def _int(v: Any, what: str, low: int) -> int:
    if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())) or v < low:
        raise BudgetError(f"{what} must be an integer >= {low}, got {v!r}")
    return int(v)


@register_attack("fab")
class FAB(Attack):
    """FAB-T: targeted fast adaptive boundary attack, a minimum-norm attack (L-inf / L2).

    See the module docstring for the algorithm, the conventions and an example.
    """

    perturbs = ("x",)

    def __init__(self, eps: float | None = None, norm: str | None = None, steps: int = 100, n_restarts: int = 1,
                 n_target_classes: int = 9, alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9,
                 seed: int = 0, logit_scale: float = DEFAULT_SCALE, early_stop: bool = False):
        self.eps = None if eps is None else check_eps(eps)  # type: ignore[assignment]
        self.norm = None if norm is None else resolve_norm(norm)
        self.steps = _int(steps, "steps", 0)
        self.n_restarts = _int(n_restarts, "n_restarts", 1)
        self.n_target_classes = _int(n_target_classes, "n_target_classes", 1)
        self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)
        if not 0 <= self.alpha_max <= 1:
            raise BudgetError(f"alpha_max must lie in [0, 1], got {alpha_max!r}")
        if self.eta < 1:
            raise BudgetError(f"eta (the overshoot past the boundary) must be >= 1, got {eta!r}")
        if not 0 < self.beta <= 1:
            raise BudgetError(f"beta (the pull back toward the input) must lie in (0, 1], got {beta!r}")
        self.seed = int(seed)
        self.logit_scale = float(logit_scale)
        self.early_stop = bool(early_stop)

    def settings(self) -> dict[str, Any]:
        return {"eps": self.eps, "norm": self.norm, "steps": self.steps, "n_restarts": self.n_restarts,
                "n_target_classes": self.n_target_classes, "alpha_max": self.alpha_max, "eta": self.eta,
                "beta": self.beta, "seed": self.seed, "logit_scale": self.logit_scale, "early_stop": self.early_stop}

    def resolve(self, modality: str) -> "FAB":
        """A copy with the modality's middle eps and default norm filled in."""
        spec = get_modality(modality)
        norm = resolve_norm(self.norm, spec)
        return self.replace(eps=spec.middle_eps if self.eps is None else spec.check_budget(self.eps, norm), norm=norm)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if not self.early_stop:
            out.pop("early_stop")
        return out

    # -- targets --------------------------------------------------------------------------------
    def _targets(self, scorer: Scorer, clean: torch.Tensor) -> list[BoundaryFn]:
        """One boundary function ``z_t - z_y`` per target rank 1..k (fewer if the task has fewer)."""
        if scorer.zero_shot:
            k = min(self.n_target_classes, scorer.class_emb.shape[0] - 1)
            order = scorer.logits(clean).argsort(dim=1, descending=True)

            def zero_shot(j: int) -> BoundaryFn:
                tgt = order[:, j]

                def f(emb: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
                    z = scorer.logits(emb)
                    return z.gather(1, tgt[r, None])[:, 0] - z.gather(1, scorer.labels[r, None])[:, 0]
                return f
            return [zero_shot(j) for j in range(1, k + 1)]
        cap = scorer.caption_emb.to(clean.dtype)
        rows = torch.arange(clean.shape[0], device=clean.device)
        own = scorer.owner[None, :] == scorer.ids[rows][:, None]
        sims = (clean @ cap.T).masked_fill(own, float("-inf"))
        k = min(self.n_target_classes, int((sims > float("-inf")).sum(1).min()))
        order = sims.argsort(dim=1, descending=True)

        def caption(j: int) -> BoundaryFn:
            tgt = order[:, j]

            def f(emb: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
                s = self.logit_scale * emb @ cap.to(emb.dtype).T
                return s.gather(1, tgt[r, None])[:, 0] - s.masked_fill(~own[r], float("-inf")).amax(1)
            return f
        return [caption(j) for j in range(k)]

    # -- the attack -----------------------------------------------------------------------------
    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        """Return a perturbed copy of ``batch``: per item, the smallest adversarial found if it lies
        within ``eps``, else the item unchanged."""
        modality = batch.modality
        spec = checked_input("FAB", encoder, batch)
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
            all_rows = torch.arange(n, device=x.device)
            todo = scorer.robust(clean, all_rows)  # robust and not yet broken within eps
            adv, dist = x.clone(), torch.full((n,), float("inf"), device=x.device)
            for t, f in enumerate(self._targets(scorer, clean)):
                for restart in range(self.n_restarts):
                    rows = all_rows[todo]
                    if len(rows) == 0:
                        break
                    seed = item_seed(self.seed, t * self.n_restarts + restart)
                    xs, ds = self._run(encoder, modality, x[rows], rows, index[rows.cpu()], f, scorer, eps, norm,
                                       spec.domain, seed if restart > 0 else None)
                    won = ds <= eps
                    adv[rows[won]], dist[rows[won]] = xs[won], ds[won]
                    todo[rows[won]] = False
                    log.debug("fab %s target %d restart %d: %d items, %d broken within eps so far", modality, t + 1,
                              restart, len(rows), int((dist <= eps).sum()))
        return batch.replace(x=adv.detach())

    def _run(self, encoder: Any, modality: str, x0: torch.Tensor, rows: torch.Tensor, index: torch.Tensor,
             f: BoundaryFn, scorer: Scorer, eps: float, norm: str, domain: tuple[float, float],
             seed: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One FAB-T run toward one target: per item the smallest adversarial found and its norm
        (inf and the input where none was found). ``seed`` None: start at the input."""

        def boundary(z: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """(f, grad f, broken) at ``z``: one forward and one backward pass."""
            zz = z.detach().requires_grad_(True)
            emb = encoder.encode(modality, zz, validate=False)
            fv = f(emb, r)
            (g,) = torch.autograd.grad(fv.sum(), zz)
            return fv.detach(), g, ~scorer.robust(emb, r)

        lo, hi = domain
        m = len(rows)
        best = x0.clone()
        best_d = torch.full((m,), float("inf"), device=x0.device)
        x1 = x0.clone()
        if seed is not None:  # AutoAttack's random start: half the budget, in a random direction
            u = random_delta(x0, 1.0, norm, seed=seed, index=index)
            u = u / per_sample(_norm(u, norm).clamp_min(1e-12), u)
            x1 = (x0 + 0.5 * eps * u).clamp(lo, hi)
        pos = torch.arange(m, device=x0.device)  # positions (in rows) still in the run
        fv, g, _ = boundary(x1, rows)
        for it in range(self.steps):
            with torch.no_grad():
                x1 = self._step(x1, x0[pos], fv, g, norm, domain)
            fv, g, hit = boundary(x1, rows[pos])
            if not bool(hit.any()):
                continue
            with torch.no_grad():  # keep the smallest adversarial, pull the iterate back toward the input
                dd = _norm(x1 - x0[pos], norm)
                new = hit & (dd < best_d[pos])
                at = pos[new]
                best[at], best_d[at] = x1[new], dd[new]
                x1 = torch.where(per_sample(hit, x1), x0[pos] + (x1 - x0[pos]) * self.beta, x1)
                if self.early_stop:
                    keep = best_d[pos] > eps
                    pos, x1, fv, g, hit = pos[keep], x1[keep], fv[keep], g[keep], hit[keep]
                    if len(pos) == 0:
                        break
            if it + 1 < self.steps and bool(hit.any()):  # the pulled-back iterates need their own linearisation
                hr = hit.nonzero()[:, 0]
                fv[hr], g[hr], _ = boundary(x1[hr], rows[pos[hr]])
        return best, best_d

    def _step(self, x1: torch.Tensor, x0: torch.Tensor, fv: torch.Tensor, g: torch.Tensor, norm: str,
              domain: tuple[float, float]) -> torch.Tensor:
        """One FAB step: project ``x1`` and ``x0`` onto the linearised boundary ``f(x1) + g . (x - x1) = 0``
        (within the box), move to their biased, extrapolated mix."""
        k = len(x1)
        w = g.flatten(1)
        b = (w * x1.flatten(1)).sum(1) - fv
        d = project_hyperplane_box(torch.cat((x1.flatten(1), x0.flatten(1))), torch.cat((w, w)), torch.cat((b, b)),
                                   norm, domain)
        a = _norm(d, norm).clamp_min(1e-8)
        a1, a0 = a[:k], a[k:]
        alpha = (a1 / (a1 + a0)).clamp(0, self.alpha_max)
        d1, d0 = d[:k].view_as(x1), d[k:].view_as(x1)
        alpha = per_sample(alpha, x1)
        return ((x1 + self.eta * d1) * (1 - alpha) + (x0 + self.eta * d0) * alpha).clamp(*domain)
