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
from .fields import _as_results
from .style import _figure, _modality_order, _palette, _save

log = logging.getLogger(__name__)


def _series(r: Result) -> str:
    d = r.defense or {}
    heads = d.get("heads")
    base = "bare" if not heads else f"{heads.get('objective') or '?'} head" + (" (noise)" if heads.get("noise") else "")
    return f"{base}, σ = {d.get('sigma', '?'):g}" if isinstance(d.get("sigma"), (int, float)) else base


def _curve(values: dict[str, float] | None) -> tuple[list[float], list[float]]:
    pts = sorted((float(k), float(v)) for k, v in (values or {}).items() if v is not None)
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_certified(results: Sequence[Result], out_dir: str | Path) -> list[Path]:
    """``certified.png``/``.svg``: certified (solid) and empirical SmoothAdv (dashed) top-1 against
    the L2 radius, one panel per modality; ``[]`` when there are no certified records."""
    rs = [r for r in _as_results(results) if r.threat == "certified" and isinstance(r.metrics.get("certified"), dict)]
    if not rs:
        return []
    by: dict[str, list[Result]] = defaultdict(list)
    for r in rs:
        by[r.modality].append(r)
    mods = sorted(by, key=_modality_order)
    labels = sorted({_series(r) for r in rs})
    colours = dict(zip(labels, _palette(len(labels))))
    cols = min(3, len(mods))
    rows = (len(mods) + cols - 1) // cols
    fig = _figure(4.2 * cols, 3.4 * rows + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, m in zip(axes, mods):
        for r in sorted(by[m], key=_series):
            label = _series(r)
            x, y = _curve(r.metrics["certified"].get("top1"))
            ax.plot(x, y, "-o", color=colours[label], markersize=3.5, linewidth=1.5, label=f"{label}: certified")
            ex, ey = _curve((r.metrics.get("empirical") or {}).get("top1"))
            if ex:
                ax.plot(ex, ey, "--", color=colours[label], marker="x", markersize=4, linewidth=1,
                        label=f"{label}: SmoothAdv")
        ax.set_title(m, fontsize=10, fontweight="bold")
        ax.set_xlabel("L2 radius (raw units of the whole input)", fontsize=8)
        ax.set_ylabel("top-1", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in axes[len(mods):]:
        ax.set_visible(False)
    handles, names = axes[0].get_legend_handles_labels()
    seen = dict(zip(names, handles))
    for ax in axes[1 : len(mods)]:
        for h, n in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(n, h)
    fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncols=2, fontsize=7, frameon=False)
    fig.suptitle("Randomized smoothing: certified top-1 (solid) and empirical under SmoothAdv (dashed) vs radius",
                 fontsize=10)
    return _save(fig, Path(out_dir) / "certified")
