"""Square attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): score-based random search,
no gradients -- the control that catches gradient masking.

Every query changes one window of the current best perturbation and keeps the change if the score
drops. L-inf: the window is set to ``x +- eps`` (one random sign per channel) starting from
random vertical stripes; L2: mass is moved from a second window into the first, which gets a
two-lobed pseudo-Gaussian pattern, so the perturbation's norm stays ``eps``. The window covers a
fraction ``p`` of the positions; ``p`` starts at ``p_init`` and is halved after 10, 50, 200, 500,
1000, 2000, 4000, 6000 and 8000 of 10,000 queries (rescaled to ``n_queries``).

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

import math
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

__all__ = ["LOSS_NAMES", "Square", "p_schedule"]

LOSS_NAMES = ("margin", "ce", "caption", "embedding")
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_CHUNK = 128  # iterations of random numbers drawn per item at a time


def p_schedule(it: int, n_queries: int, p_init: float) -> float:
    """The window fraction at iteration ``it``: ``p_init`` halved at the paper's breakpoints."""
    t = int(it / n_queries * 10000)
    return p_init / 2 ** sum(t > b for b in _HALVINGS)


def _view(x: torch.Tensor, modality: str) -> torch.Tensor:
    """(n, channels, H, W): images as they are, video frames x RGB as channels, audio (n, 1, 1, L),
    points (n, 6, 1, P)."""
    if modality == "video":
        return x.flatten(1, 2)
    if modality == "audio":
        return x[:, None, None, :]
    if modality == "pointcloud":
        return x.transpose(1, 2)[:, :, None, :]
    return x


def _unview(v: torch.Tensor, modality: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The inverse of :func:`_view` (``shape``: the per-item shape)."""
    if modality == "pointcloud":
        return v[:, :, 0, :].transpose(1, 2).contiguous()
    return v.reshape(v.shape[0], *shape)


def _bump(h: int, w: int) -> torch.Tensor:
    """(h, w) unit-norm two-lobed pattern: two halves along w with opposite signs, each a stack of
    concentric rectangles weighted sum_{j >= ring} 1 / (j + 1)^2 (the paper's pseudo-Gaussian)."""

    def lobe(hh: int, ww: int) -> torch.Tensor:
        a = (torch.arange(hh) - (hh - 1) / 2).abs().floor()
        b = (torch.arange(ww) - (ww - 1) / 2).abs().floor()
        ring = torch.maximum(a[:, None], b[None, :]).long()
        inv = 1.0 / (torch.arange(int(ring.max()) + 1, dtype=torch.float32) + 1) ** 2
        return inv.flip(0).cumsum(0).flip(0)[ring]

    half = w // 2
    parts = ([lobe(h, half)] if half else []) + [-lobe(h, w - half)]
    pat = torch.cat(parts, dim=1)
    return pat / pat.norm()


@register_attack("square")
class Square(Attack):
    """Square attack: gradient-free random search with window updates (L-inf / L2), a query budget.

    See the module docstring for the windows per modality, the scores and an example.
    """

    perturbs = ("x",)

    def __init__(self, eps: float | None = None, norm: str | None = None, n_queries: int = 5000,
                 p_init: float = 0.8, loss: str = "margin", seed: int = 0, logit_scale: float = DEFAULT_SCALE):
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

    def settings(self) -> dict[str, Any]:
        return {"eps": self.eps, "norm": self.norm, "n_queries": self.n_queries, "p_init": self.p_init,
                "loss": self.loss, "seed": self.seed, "logit_scale": self.logit_scale}

    def resolve(self, modality: str) -> "Square":
        """A copy with the modality's middle eps and default norm filled in."""
        spec = get_modality(modality)
        return self.replace(eps=spec.middle_eps if self.eps is None else self.eps, norm=resolve_norm(self.norm, spec))

    # -- windows ------------------------------------------------------------------------------
    @staticmethod
    def _window(v: torch.Tensor, modality: str, p: float, u: torch.Tensor, xyz: torch.Tensor | None,
                flip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask, pattern), each (n, 1, H, W): the window of fraction ``p`` placed by uniforms
        ``u`` (n, 2), and the L2 pattern on it (transposed where ``flip``)."""
        n, _, h, w = v.shape
        dev = v.device
        cols = torch.arange(w, device=dev)
        if modality == "pointcloud":
            s = min(max(round(p * w), 1), w - 1) if w > 1 else 1
            centre = (u[:, 0] * w).long().clamp(max=w - 1)
            d = (xyz - xyz.gather(2, centre[:, None, None].expand(-1, 3, 1))).square().sum(1)
            near = d.topk(s, dim=1, largest=False).indices  # nearest first
            mask = torch.zeros(n, w, device=dev, dtype=v.dtype).scatter_(1, near, 1.0)
            pat = torch.zeros_like(mask).scatter_(1, near, _bump(1, s)[0].to(dev, v.dtype).expand(n, -1))
            return mask[:, None, None, :], pat[:, None, None, :]
        if h == 1:  # audio: a run of samples
            s = min(max(round(p * w), 1), max(w - 1, 1))
            start = (u[:, 0] * (w - s + 1)).long().clamp(max=w - s)
            rel = cols[None, :] - start[:, None]
            inside = (rel >= 0) & (rel < s)
            pat = _bump(1, s)[0].to(dev, v.dtype)[rel.clamp(0, s - 1)] * inside
            return inside.to(v.dtype)[:, None, None, :], pat[:, None, None, :]
        s = min(max(round(math.sqrt(p * h * w)), 1), max(min(h, w) - 1, 1))
        r0 = (u[:, 0] * (h - s + 1)).long().clamp(max=h - s)
        c0 = (u[:, 1] * (w - s + 1)).long().clamp(max=w - s)
        rr = torch.arange(h, device=dev)[None, :] - r0[:, None]
        cc = cols[None, :] - c0[:, None]
        inside = ((rr >= 0) & (rr < s))[:, :, None] & ((cc >= 0) & (cc < s))[:, None, :]
        table = _bump(s, s).to(dev, v.dtype)
        tables = table.expand(n, s, s) if flip is None else torch.where(flip[:, None, None], table.T, table)
        ri, ci = rr.clamp(0, s - 1), cc.clamp(0, s - 1)
        pat = tables[torch.arange(n, device=dev)[:, None, None], ri[:, :, None], ci[:, None, :]] * inside
        return inside.to(v.dtype)[:, None], pat[:, None]

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
        clean = encoder.encode(modality, x, validate=False)
        rows = torch.arange(n, device=dev)

        def score(v: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            emb = encoder.encode(modality, _unview(v, modality, tuple(x.shape[1:])), validate=False)
            if self.loss == "embedding":
                return (emb * clean[idx]).sum(-1).float(), torch.zeros(len(idx), dtype=torch.bool, device=dev)
            m = scorer.score(emb, idx).float()
            loss = m if self.loss != "ce" or not scorer.zero_shot else -F.cross_entropy(
                scorer.logits(emb), scorer.labels[idx], reduction="none").float()
            return loss, m <= 0

        x0 = _view(x, modality)
        chans, width = x0.shape[1], x0.shape[3]
        index = batch.index.tolist() if batch.index is not None and len(batch.index) == n else list(range(n))
        gens = [torch.Generator().manual_seed(item_seed(self.seed, i)) for i in index]
        stripes = torch.stack([torch.rand(chans, 1, width, generator=g) for g in gens]).to(dev, x.dtype)
        stripes = torch.where(stripes < 0.5, -1.0, 1.0).expand_as(x0)
        if norm == "l2":
            stripes = stripes * (eps / stripes.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
        else:
            stripes = stripes * eps
        best = project(x0 + stripes, x0, eps, norm, domain)
        xyz = x0[:, :3, 0, :] if modality == "pointcloud" else None

        _, done = score(x0, rows) if self.loss != "embedding" else (None, torch.zeros(n, dtype=torch.bool, device=dev))
        best = torch.where(done.view(-1, 1, 1, 1), x0, best)
        active = rows[~done]
        loss_best = torch.full((n,), float("inf"), device=dev)
        if len(active):
            loss_best[active], hit = score(best[active], active)
            done[active] = hit
        draws = torch.empty(n, 0, 5 + chans, device=dev)
        for it in range(self.n_queries - 1):
            active = rows[~done]
            if len(active) == 0:
                break
            if it % _CHUNK == 0:  # each item's own stream, consumed one row per iteration
                fresh = torch.zeros(n, _CHUNK, 5 + chans)
                for i in active.tolist():
                    fresh[i] = torch.rand(_CHUNK, 5 + chans, generator=gens[i])
                draws = fresh.to(dev, x.dtype)
            u = draws[active, it % _CHUNK]
            p = p_schedule(it, self.n_queries, self.p_init)
            base, ref = best[active], x0[active]
            sign = torch.where(u[:, 5:] < 0.5, -1.0, 1.0).to(x.dtype)[:, :, None, None]
            sub_xyz = None if xyz is None else xyz[active]
            mask, pat = self._window(ref, modality, p, u[:, 0:2], sub_xyz, u[:, 4] < 0.5)
            if norm == "linf":
                cand = project(base + mask * (2 * eps) * sign, ref, eps, norm, domain)
            else:
                mask2, _ = self._window(ref, modality, p, u[:, 2:4], sub_xyz)
                delta = base - ref
                union = torch.maximum(mask, mask2)
                old = delta * mask
                old = old / old.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                new = pat * sign
                new = old + new / new.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                room = (eps**2 - delta.flatten(1).square().sum(1)).clamp_min(0) + (delta * union).flatten(1).square().sum(1)
                new = new * (room.sqrt() / new.flatten(1).norm(dim=1).clamp_min(1e-12)).view(-1, 1, 1, 1)
                cand = project(ref + delta * (1 - union) + new, ref, eps, norm, domain)
            loss, hit = score(cand, active)
            better = loss < loss_best[active]
            best[active[better]] = cand[better]
            loss_best[active[better]] = loss[better]
            done[active[better & hit]] = True
        return _unview(best, modality, tuple(x.shape[1:]))
