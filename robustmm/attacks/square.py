"""Square attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): score-based random search,
no gradients -- the control that catches gradient masking.

Every query changes one window of the current best perturbation and keeps the change if the score
drops. L-inf: the window is set to ``x +- eps`` (one random sign per channel) starting from
random vertical stripes; L2: mass is moved from a second window into the first, which gets a
two-lobed pseudo-Gaussian pattern, so the perturbation's norm stays ``eps``. The window covers a
fraction ``p`` of the positions; ``p`` starts at ``p_init`` and is halved after query 10, 50, 200,
500, 1000, 2000, 4000, 6000 and 8000, whatever ``n_queries`` is (AutoAttack's ``standard``
schedule); ``rescale_schedule=True`` scales those points to ``n_queries`` instead (e.g. after 1, 5,
20, ... of 1000 queries), so a small budget still reaches the small windows.

Windows per modality (the tensor is viewed as channels x positions):

============ ========================= ===========================================================
modality     channels                  window
============ ========================= ===========================================================
image        3                         an s x s square over (H, W), s = sqrt(p * H * W)
depth/therm. 1                         the same
video        T * 3 (frames x RGB)      the same square in every frame, a sign per frame and colour
audio        1                         a run of s = p * L consecutive samples
pointcloud   6 (x, y, z, r, g, b)      the s = p * P points nearest (in the clean xyz) to a random
                                       point: the local patch that plays the square's role
============ ========================= ===========================================================

Score (``loss``, minimised): ``margin`` -- zero-shot ``z_y - max_{i != y} z_i``; ``ce`` -- minus the
zero-shot cross-entropy; ``caption`` -- the X->text R@1 margin within the batch (own best caption
minus best other caption; the fallback of both when the batch has no labels); ``embedding`` --
cosine to the clean embedding. An item stops once its margin is <= 0 (items broken at the clean
input are returned unchanged); ``embedding`` has no such notion and spends every query.

Randomness comes from one generator per item seeded by ``(seed, batch.index)``: an item gets the
same windows in any batch, and the attack is deterministic. It runs under ``torch.no_grad`` and
never calls backward. ``n_queries`` counts the forward passes an item may use (the clean input's
not included).

Example::

    >>> sq = build_attack("square", n_queries=5000)           # middle eps, modality's norm
    >>> res = robustmm.evaluate(enc, data, modality="pointcloud", attack=sq)
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..batch import Batch
from ..errors import BudgetError, UnknownNameError
from ..modalities import get_modality
from .base import Attack, register_attack
from .losses import DEFAULT_SCALE
from .margin_losses import Scorer
from .ops import check_eps, checked_input, frozen, item_seed, project, resolve_norm
from .square_windows import p_schedule, unview, view, window

__all__ = ["LOSS_NAMES", "Square", "p_schedule"]

LOSS_NAMES = ("margin", "ce", "caption", "embedding")
_CHUNK = 128  # iterations of random numbers drawn per item at a time


@register_attack("square")
class Square(Attack):
    """Square attack: gradient-free random search with window updates (L-inf / L2), a query budget.

    See the module docstring for the windows per modality, the scores and an example.
    """

    perturbs = ("x",)

    def __init__(self, eps: float | None = None, norm: str | None = None, n_queries: int = 5000,
                 p_init: float = 0.8, loss: str = "margin", seed: int = 0, logit_scale: float = DEFAULT_SCALE,
                 rescale_schedule: bool = False):
        self.eps = None if eps is None else check_eps(eps)  # type: ignore[assignment]
        self.norm = None if norm is None else resolve_norm(norm)
        if isinstance(n_queries, bool) or not isinstance(n_queries, int) or n_queries <= 0:
            raise BudgetError(f"the query budget n_queries must be an integer >= 1, got {n_queries!r}")
        self.n_queries = n_queries
        self.p_init = float(p_init)
        if not 0 < self.p_init <= 1:
            raise BudgetError(f"p_init must lie in (0, 1], got {p_init!r}")
        if loss not in LOSS_NAMES:
            raise UnknownNameError("Square loss", str(loss), LOSS_NAMES)
        self.loss = loss
        self.seed = int(seed)
        self.logit_scale = float(logit_scale)
        self.rescale_schedule = bool(rescale_schedule)

    def settings(self) -> dict[str, Any]:
        return {"eps": self.eps, "norm": self.norm, "n_queries": self.n_queries, "p_init": self.p_init,
                "loss": self.loss, "seed": self.seed, "logit_scale": self.logit_scale,
                "rescale_schedule": self.rescale_schedule}

    def resolve(self, modality: str) -> "Square":
        """A copy with the modality's middle eps and default norm filled in."""
        spec = get_modality(modality)
        norm = resolve_norm(self.norm, spec)  # a budget beyond the domain (eps=4 on pixels) is refused
        return self.replace(eps=spec.middle_eps if self.eps is None else spec.check_budget(self.eps, norm), norm=norm)

    # -- the attack -------------------------------------------------------------------------
    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        """Return a perturbed copy of ``batch``; only forward passes, under ``torch.no_grad``."""
        modality = batch.modality
        spec = checked_input("Square", encoder, batch)
        r = self.resolve(modality)
        eps, norm = float(r.eps), str(r.norm)
        x = batch.x.detach()
        if eps == 0:
            return batch.replace(x=x.clone())
        with frozen(encoder), torch.no_grad():
            return batch.replace(x=self._search(encoder, batch, x, eps, norm, spec.domain))

    def _search(self, encoder: Any, batch: Batch, x: torch.Tensor, eps: float, norm: str,
                domain: tuple[float, float]) -> torch.Tensor:
        modality, n, dev = batch.modality, len(batch), x.device
        scored = batch.replace(labels=None, prompts=None) if self.loss == "caption" else batch
        scorer = Scorer.of(encoder, scored, self.logit_scale, dev)
        shape = tuple(x.shape[1:])
        clean = encoder.encode(modality, x, validate=False) if self.loss == "embedding" else None

        def score(v: torch.Tensor, idx: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            """(loss, broken) of the viewed inputs ``v`` for the rows ``idx`` (None: every row)."""
            emb = encoder.encode(modality, unview(v, modality, shape), validate=False)
            if clean is not None:
                c = clean if idx is None else clean[idx]
                return (emb * c).sum(-1).float(), torch.zeros(len(emb), dtype=torch.bool, device=dev)
            rows = torch.arange(n, device=dev) if idx is None else idx
            m = scorer.score(emb, rows).float()
            loss = m if self.loss != "ce" or not scorer.zero_shot else -F.cross_entropy(
                scorer.logits(emb), scorer.labels[rows], reduction="none").float()
            return loss, m <= 0

        x0 = view(x, modality)
        gens = self._gens(batch)
        best = self._start(x0, gens, eps, norm, domain)
        if clean is None:  # items broken at the clean input are returned unchanged
            done = score(x0, None)[1]
            best = torch.where(done.view(-1, 1, 1, 1), x0, best)
        else:
            done = torch.zeros(n, dtype=torch.bool, device=dev)
        self._queries(score, x0, best, done, gens, eps, norm, domain, modality)
        return unview(best, modality, shape)

    def _gens(self, batch: Batch) -> list[torch.Generator]:
        """One generator per item, seeded by ``(seed, dataset index)``."""
        n = len(batch)
        index = batch.index.tolist() if batch.index is not None and len(batch.index) == n else list(range(n))
        return [torch.Generator().manual_seed(item_seed(self.seed, i)) for i in index]

    @staticmethod
    def _start(x0: torch.Tensor, gens: list[torch.Generator], eps: float, norm: str,
               domain: tuple[float, float]) -> torch.Tensor:
        """The paper's start: random vertical stripes of +-eps (L2: scaled to norm eps), the first
        draws of each item's stream."""
        chans, width = x0.shape[1], x0.shape[3]
        stripes = torch.stack([torch.rand(chans, 1, width, generator=g) for g in gens]).to(x0.device, x0.dtype)
        stripes = torch.where(stripes < 0.5, -1.0, 1.0).expand_as(x0)
        if norm == "l2":
            stripes = stripes * (eps / stripes.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
        else:
            stripes = stripes * eps
        return project(x0 + stripes, x0, eps, norm, domain)

    def _queries(self, score: Any, x0: torch.Tensor, best: torch.Tensor, done: torch.Tensor,
                 gens: list[torch.Generator], eps: float, norm: str, domain: tuple[float, float], modality: str) -> None:
        """The random search, updating ``best`` in place: one query per still-robust item per
        iteration, kept where it lowers the item's score. The search works on compact copies of
        the still-robust rows, shrunk only when an item breaks (no gathers per query)."""
        n, dev, dt, chans = len(x0), x0.device, x0.dtype, x0.shape[1]
        ids = torch.arange(n, device=dev)[~done]
        if len(ids) == 0:
            return
        loss_w, hit = score(best[ids], ids)  # the start is the first query
        ids, loss_w = ids[~hit], loss_w[~hit]
        work = {"best": best[ids], "x0": x0[ids]}
        if norm == "linf":  # inside a window every coordinate goes to x +- eps (then the domain)
            work["hi"], work["lo"] = (work["x0"] + eps).clamp_(*domain), (work["x0"] - eps).clamp_(*domain)
        if modality == "pointcloud":
            work["xyz"] = work["x0"][:, :3, 0, :]
        for it in range(self.n_queries - 1):
            if len(ids) == 0:
                break
            if it % _CHUNK == 0:  # each item's own stream, consumed one row per iteration
                draws = torch.stack([torch.rand(_CHUNK, 5 + chans, generator=gens[i]) for i in ids.tolist()]).to(dev, dt)
            u, cur = draws[:, it % _CHUNK], work["best"]
            p = p_schedule(it, self.n_queries, self.p_init, rescale=self.rescale_schedule)
            if norm == "linf":
                mask, _ = window(cur, modality, p, u[:, 0:2], work.get("xyz"), pattern=False)
                cand = torch.where(mask, torch.where((u[:, 5:] < 0.5)[:, :, None, None], work["lo"], work["hi"]), cur)
            else:
                cand = self._l2_candidate(cur, work["x0"], u, p, work.get("xyz"), eps, domain, modality)
            loss, hit = score(cand, ids)
            better = loss < loss_w
            cur[better] = cand[better]
            loss_w = torch.where(better, loss, loss_w)
            broke = better & hit
            if bool(broke.any()):  # broken items leave the search with their breaking iterate
                best[ids[broke]] = cur[broke]
                keep = ~broke
                ids, loss_w, draws = ids[keep], loss_w[keep], draws[keep]
                work = {k: t[keep] for k, t in work.items()}
        best[ids] = work["best"]

    def _l2_candidate(self, base: torch.Tensor, ref: torch.Tensor, u: torch.Tensor, p: float,
                      xyz: torch.Tensor | None, eps: float, domain: tuple[float, float], modality: str) -> torch.Tensor:
        """The L2 proposal: the mass of ``base - ref`` in two windows moves into the first, which
        gets the two-lobed pattern with a random sign per channel; the norm stays eps."""
        sign = torch.where(u[:, 5:] < 0.5, -1.0, 1.0).to(base.dtype)[:, :, None, None]
        mask, pat = window(ref, modality, p, u[:, 0:2], xyz, u[:, 4] < 0.5)
        mask2 = window(ref, modality, p, u[:, 2:4], xyz, pattern=False)[0].to(base.dtype)
        delta = base - ref
        union = torch.maximum(mask, mask2)
        old = delta * mask
        old = old / old.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        new = pat * sign
        new = old + new / new.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        room = (eps**2 - delta.flatten(1).square().sum(1)).clamp_min(0) + (delta * union).flatten(1).square().sum(1)
        new = new * (room.sqrt() / new.flatten(1).norm(dim=1).clamp_min(1e-12)).view(-1, 1, 1, 1)
        return project(ref + delta * (1 - union) + new, ref, eps, "l2", domain)
