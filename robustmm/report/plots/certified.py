"""Certified accuracy against radius (randomized smoothing), one panel per modality.

Reads ``threat="certified"`` records (``metrics.certified.top1``: radius -> certified top-1, the
radius in the modality's raw L2 unit); one solid line per (base model, sigma), and SmoothAdv's
empirical accuracy (``metrics.empirical.top1``) at the same radii as a dashed line of the same
colour: the empirical curve must stay above the certified one.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from ...records import Result
from .record_values import as_results
from .style import modality_order, new_figure, palette, save_figure

log = logging.getLogger(__name__)


def _base(r: Result) -> str:
    heads = (r.defense or {}).get("heads")
    return "bare" if not heads else f"{heads.get('objective') or '?'} head" + (" (noise)" if heads.get("noise") else "")


def _series(r: Result) -> str:
    sigma = (r.defense or {}).get("sigma")
    return f"{_base(r)}, σ = {sigma:g}" if isinstance(sigma, (int, float)) else _base(r)


def _curve(values: dict[str, float] | None) -> tuple[list[float], list[float]]:
    pts = sorted((float(k), float(v)) for k, v in (values or {}).items() if v is not None)
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_certified(results: Sequence[Result], out_dir: str | Path) -> list[Path]:
    """``certified.png``/``.svg``: certified (solid) and empirical SmoothAdv (dashed) top-1 against
    the L2 radius, one panel per modality; ``[]`` when there are no certified records."""
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
    fig = new_figure(4.2 * cols, 3.4 * rows + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, m in zip(axes, mods):
        sigmas = sorted({(r.defense or {}).get("sigma") or 0 for r in by[m]})
        for r in sorted(by[m], key=_series):
            colour, marker = colours[_base(r)], "osD^v"[sigmas.index((r.defense or {}).get("sigma") or 0) % 5]
            x, y = _curve(r.metrics["certified"].get("top1"))
            ax.plot(x, y, "-", marker=marker, color=colour, markersize=3.5, linewidth=1.5, label=f"{_series(r)}: certified")
            ex, ey = _curve((r.metrics.get("empirical") or {}).get("top1"))
            if ex:
                ax.plot(ex, ey, "--", color=colour, marker=marker, markerfacecolor="none", markersize=4, linewidth=1,
                        label=f"{_series(r)}: SmoothAdv")
        ax.legend(fontsize=6, loc="upper right", frameon=False)
        ax.set_title(m, fontsize=10, fontweight="bold")
        ax.set_xlabel("L2 radius (raw units of the whole input)", fontsize=8)
        ax.set_ylabel("top-1", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in axes[len(mods):]:
        ax.set_visible(False)
    fig.suptitle("Randomized smoothing: certified top-1 (solid) and empirical under SmoothAdv (dashed) vs radius",
                 fontsize=10)
    return save_figure(fig, Path(out_dir) / "certified")
