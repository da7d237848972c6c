"""Certified accuracy against radius (randomized smoothing), one panel per modality.

Reads ``threat="certified"`` records (``metrics.certified.top1``: radius -> certified top-1, the
radius in the modality's raw L2 unit); one step function per (base model, sigma) from the
per-item radii, stopped at the largest radius the record's draws can certify (a dotted vertical
line), and SmoothAdv's empirical accuracy (``metrics.empirical.top1``) at the reported radii as a
dashed line with hollow markers of the same colour where it was measured: the empirical curve
must stay above the certified one.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection, Sequence
from pathlib import Path

from ...records import Result
from .record_values import as_results
from .style import modality_order, new_figure, palette, save_figure

log = logging.getLogger(__name__)

#: absolute rounding of the per-item radii in a certified record (``extra.per_item.radius``)
RADIUS_ROUNDING = 1e-5


def _base(r: Result) -> str:
    heads = (r.defense or {}).get("heads")
    return "bare" if not heads else f"{heads.get('objective') or '?'} head" + (" (noise)" if heads.get("noise") else "")


def _series(r: Result) -> str:
    sigma = (r.defense or {}).get("sigma")
    return f"{_base(r)}, σ = {sigma:g}" if isinstance(sigma, (int, float)) else _base(r)


def _curve(values: dict[str, float | None] | None, beyond: Collection[str] = ()) -> tuple[list[float], list[float]]:
    """(radii, values) of a radius -> value table, without the radii beyond the budget's reach."""
    pts = sorted((float(k), float(v)) for k, v in (values or {}).items() if v is not None and k not in beyond)
    return [p[0] for p in pts], [p[1] for p in pts]


def certified_steps(r: Result, top: float | None) -> tuple[list[float], list[float]] | None:
    """Certified top-1 as the step function it is, from the record's per-item radii: at radius
    ``rho`` the fraction of items predicted correctly with a certified radius >= ``rho``, from 0 up
    to ``top`` (the largest certifiable radius; the last certified radius when None). None when
    the record has no per-item radii."""
    items = (r.extra or {}).get("per_item") or {}
    labels, preds, radii = items.get("label"), items.get("pred"), items.get("radius")
    if not labels or not preds or not radii or not len(labels) == len(preds) == len(radii):
        return None
    ok = sorted(float(rad) for lab, p, rad in zip(labels, preds, radii) if lab == p and p >= 0)
    n = len(labels)
    end = top if top is not None else (ok[-1] if ok else 0.0)
    xs, ys = [0.0], [len(ok) / n]
    left = len(ok)
    for rad in ok:  # the accuracy drops just after each correct item's radius
        if rad >= end - RADIUS_ROUNDING:  # certified to the budget's limit (per-item radii are rounded)
            break
        left -= 1
        xs.append(rad)
        ys.append(left / n)
    xs.append(end)
    ys.append(ys[-1])
    return xs, ys


def _title(rs: Sequence[Result], drew_empirical: bool) -> str:
    r0 = rs[0]
    model, data = (r0.model or {}).get("name", "?"), (r0.dataset or {}).get("name", "?")
    items = sorted({r.n for r in rs})
    draws = sorted({(r.defense or {}).get("n") for r in rs if (r.defense or {}).get("n")})
    alphas = sorted({(r.defense or {}).get("alpha") for r in rs if (r.defense or {}).get("alpha")})
    head = (f"{model} on {data}, n = {'/'.join(map(str, items))} items: randomized smoothing, certified top-1 vs L2 radius"
            f" ({'/'.join(map(str, draws))} Monte Carlo draws, alpha = {'/'.join(f'{a:g}' for a in alphas)})")
    tail = ("solid steps: certified, each stopped at the largest radius its draws can certify (dotted vertical line)"
            + ("; hollow markers, dashed: empirical top-1 under SmoothAdv (must stay above)" if drew_empirical else ""))
    return head + "\n" + tail


def plot_certified(results: Sequence[Result], out_dir: str | Path) -> list[Path]:
    """``certified.png``/``.svg``: certified top-1 against the L2 radius as a step function stopped
    at the largest radius the Monte Carlo budget can certify, with SmoothAdv's empirical top-1
    (dashed, hollow markers) where it was measured, one panel per modality; ``[]`` when there are
    no certified records."""
    from ..consistency import radius_reach

    rs = [r for r in as_results(results) if r.threat == "certified" and isinstance(r.metrics.get("certified"), dict)]
    if not rs:
        return []
    by: dict[str, list[Result]] = defaultdict(list)
    for r in rs:
        by[r.modality].append(r)
    mods = sorted(by, key=modality_order)
    bases = sorted({_base(r) for r in rs})  # one colour per base model, one marker per sigma of a panel
    colours = dict(zip(bases, palette(len(bases))))
    cols = min(3, len(mods))
    rows = (len(mods) + cols - 1) // cols
    fig = new_figure(4.2 * cols, 3.4 * rows + 1.1)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    drew_empirical = False
    for ax, m in zip(axes, mods):
        sigmas = sorted({(r.defense or {}).get("sigma") or 0 for r in by[m]})
        for r in sorted(by[m], key=_series):
            colour, marker = colours[_base(r)], "osD^v"[sigmas.index((r.defense or {}).get("sigma") or 0) % 5]
            top, beyond = radius_reach(r)
            x, y = _curve(r.metrics["certified"].get("top1"), beyond)
            steps = certified_steps(r, top)
            label = f"{_series(r)}: certified" + ("" if top is None else f" (max r {top:.3g})")
            if steps is not None:
                ax.plot(*steps, "-", drawstyle="steps-post", color=colour, linewidth=1.5, label=label)
                ax.plot(x, y, linestyle="none", marker=marker, color=colour, markersize=3.5)
            else:  # no per-item radii: the reported radii only, as points
                ax.plot(x, y, linestyle="none", marker=marker, color=colour, markersize=4, label=label)
            if top is not None:
                ax.axvline(top, color=colour, linewidth=0.8, linestyle=":", alpha=0.8)
            ex, ey = _curve((r.metrics.get("empirical") or {}).get("top1"))
            if ex:
                drew_empirical = True
                # a step too: between two measured radii nothing was measured, so no slope is drawn
                ax.plot(ex, ey, "--", color=colour, marker=marker, markerfacecolor="none", markersize=5, linewidth=1,
                        drawstyle="steps-post",
                        label=f"{_series(r)}: SmoothAdv ({(r.metrics.get('empirical') or {}).get('n_items', '?')} items)")
        ax.legend(fontsize=6, loc="upper right", frameon=False)
        ax.set_title(m, fontsize=10, fontweight="bold")
        ax.set_xlabel("L2 radius (raw units of the whole input)", fontsize=8)
        ax.set_ylabel("top-1", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(left=0)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in axes[len(mods):]:
        ax.set_visible(False)
    fig.suptitle(_title(rs, drew_empirical), fontsize=9)
    return save_figure(fig, Path(out_dir) / "certified")
