"""The Square attack's windows: how each modality's tensor is viewed as channels x positions,
which positions one query changes, and the L2 pattern placed on them (see
:mod:`robustmm.attacks.square` for the table per modality), plus the window-size schedule."""
from __future__ import annotations

import functools
import math

import torch

__all__ = ["bump", "p_schedule", "unview", "view", "window"]

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(it: int, n_queries: int, p_init: float, *, rescale: bool = False) -> float:
    """The window fraction at iteration ``it``: ``p_init`` halved after iterations 10, 50, 200,
    500, 1000, 2000, 4000, 6000 and 8000, as the reference's schedule for a 10,000-query budget
    (what AutoAttack's ``standard`` runs at 5000 queries, so later halvings never come). With
    ``rescale`` the halving points are scaled to ``n_queries`` (``it / n_queries * 10000``), so
    a small budget still walks the whole schedule."""
    t = int(it / n_queries * 10000) if rescale else int(it)
    return p_init / 2 ** sum(t > b for b in _HALVINGS)


def view(x: torch.Tensor, modality: str) -> torch.Tensor:
    """(n, channels, H, W): images as they are, video frames x RGB as channels, audio (n, 1, 1, L),
    points (n, 6, 1, P)."""
    if modality == "video":
        return x.flatten(1, 2)
    if modality == "audio":
        return x[:, None, None, :]
    if modality == "pointcloud":
        return x.transpose(1, 2)[:, :, None, :]
    return x


def unview(v: torch.Tensor, modality: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The inverse of :func:`view` (``shape``: the per-item shape)."""
    if modality == "pointcloud":
        return v[:, :, 0, :].transpose(1, 2).contiguous()
    return v.reshape(v.shape[0], *shape)


@functools.lru_cache(maxsize=64)
def bump(h: int, w: int) -> torch.Tensor:
    """(h, w) unit-norm two-lobed pattern: two halves along w with opposite signs, each a stack of
    concentric rectangles weighted sum_{j >= ring} 1 / (j + 1)^2 (the paper's pseudo-Gaussian).
    Memoised (the window size changes only at the halvings): callers must not modify it."""

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


def window(v: torch.Tensor, modality: str, p: float, u: torch.Tensor, xyz: torch.Tensor | None,
            flip: torch.Tensor | None = None, pattern: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(mask, pattern), each (n, 1, H, W): the window of fraction ``p`` placed by uniforms
    ``u`` (n, 2), and the L2 pattern on it (transposed where ``flip``). Without ``pattern`` (L-inf
    needs none): a bool mask and None."""
    n, _, h, w = v.shape
    dev, dt = v.device, v.dtype
    cols = torch.arange(w, device=dev)
    if modality == "pointcloud":
        s = min(max(round(p * w), 1), w - 1) if w > 1 else 1
        centre = (u[:, 0] * w).long().clamp(max=w - 1)
        d = (xyz - xyz.gather(2, centre[:, None, None].expand(-1, 3, 1))).square().sum(1)
        near = d.topk(s, dim=1, largest=False).indices  # nearest first
        mask = torch.zeros(n, w, device=dev, dtype=dt).scatter_(1, near, 1.0)[:, None, None, :]
        if not pattern:
            return mask.bool(), None
        pat = torch.zeros(n, w, device=dev, dtype=dt).scatter_(1, near, bump(1, s)[0].to(dev, dt).expand(n, -1))
        return mask, pat[:, None, None, :]
    if h == 1:  # audio: a run of samples
        s = min(max(round(p * w), 1), max(w - 1, 1))
        start = (u[:, 0] * (w - s + 1)).long().clamp(max=w - s)
        rel = cols[None, :] - start[:, None]
        inside = (rel >= 0) & (rel < s)
        if not pattern:
            return inside[:, None, None, :], None
        pat = bump(1, s)[0].to(dev, dt)[rel.clamp(0, s - 1)] * inside
        return inside.to(dt)[:, None, None, :], pat[:, None, None, :]
    s = min(max(round(math.sqrt(p * h * w)), 1), max(min(h, w) - 1, 1))
    r0 = (u[:, 0] * (h - s + 1)).long().clamp(max=h - s)
    c0 = (u[:, 1] * (w - s + 1)).long().clamp(max=w - s)
    rr = torch.arange(h, device=dev)[None, :] - r0[:, None]
    cc = cols[None, :] - c0[:, None]
    inside = ((rr >= 0) & (rr < s))[:, :, None] & ((cc >= 0) & (cc < s))[:, None, :]
    if not pattern:
        return inside[:, None], None
    table = bump(s, s).to(dev, dt)
    tables = table.expand(n, s, s) if flip is None else torch.where(flip[:, None, None], table.T, table)
    ri, ci = rr.clamp(0, s - 1), cc.clamp(0, s - 1)
    pat = tables[torch.arange(n, device=dev)[:, None, None], ri[:, :, None], ci[:, None, :]] * inside
    return inside.to(dt)[:, None], pat[:, None]
