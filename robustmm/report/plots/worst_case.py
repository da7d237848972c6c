"""Worst-case robustness curves: per modality, single attacks (dashed) against their per-item worst case (solid).

A curve from one attack is an upper bound on robust accuracy; the per-item worst case over several
attacks (``threat="worst-case"`` records, :func:`robustmm.evaluation.worst_case.worst_case`) is a
tighter one. Drawing both on one panel shows how far the single attack is from converged.
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...records import Result
from .record_values import as_number, as_results, metric_value, record_eps
from .style import eps_formatter, metric_label, modality_order, new_figure, palette, save_figure, wrap_text

log = logging.getLogger(__name__)

__all__ = ["attack_series_label", "plot_worst_case_curves", "worst_case_figure"]

WORST_LABEL = "per-item worst case"
_LOSS_TEXT = {"ce": "CE", "dlr": "DLR", "dlr-targeted": "targeted DLR", "caption": "caption loss"}


def attack_series_label(r: Result) -> str:
    """A legend label for one attack's curve, from its ``attack`` block: ``PGD-10 (CE, nested)``,
    ``APGD-50 (targeted DLR, 3 targets)``; worst-case records are ``per-item worst case``. An
    explicit ``extra["series"]`` wins (callers that know a better name)."""
    if isinstance((r.extra or {}).get("series"), str):
        return r.extra["series"]
    if r.threat == "worst-case":
        return WORST_LABEL
    a = r.attack if isinstance(r.attack, dict) else {}
    name = str(a.get("name", "?"))
    label = name.upper() if name in ("pgd", "apgd", "fgsm") else name
    if as_number(a.get("steps")) is not None:
        label += f"-{a['steps']}"
    bits = [_LOSS_TEXT.get(str(a["loss"]), str(a["loss"]))] if a.get("loss") else []
    if a.get("loss") == "dlr-targeted" and as_number(a.get("n_target_classes")) is not None:
        bits.append(f"{a['n_target_classes']} targets")
    if a.get("nested"):
        bits.append("nested")
    return label + (f" ({', '.join(bits)})" if bits else "")


def worst_case_figure(results: Sequence[Result], key: str = "zeroshot_top1", title: str = "") -> Any:
    """The figure (or None when no record has ``key``): one panel per modality, x = the modality's
    budgets in its own unit (evenly spaced, "clean" first), one line per series
    (:func:`attack_series_label`); worst-case records (whatever their label) solid with circles,
    single attacks dashed."""
    rs = [r for r in as_results(results) if record_eps(r) is not None and metric_value(r, "attacked", key) is not None]
    if not rs:
        return None
    panels: dict[str, dict[str, dict[float, float]]] = defaultdict(lambda: defaultdict(dict))
    clean: dict[str, float] = {}
    norms: dict[str, Any] = {}
    worst_labels: set[str] = set()
    for r in rs:
        label = attack_series_label(r)
        panels[r.modality][label][record_eps(r)] = metric_value(r, "attacked", key)  # type: ignore[index]
        if r.threat == "worst-case":
            worst_labels.add(label)
        if (c := metric_value(r, "clean", key)) is not None:
            clean.setdefault(r.modality, c)
        norms.setdefault(r.modality, (r.attack or {}).get("norm"))
    labels = sorted({s for p in panels.values() for s in p}, key=lambda s: (s in worst_labels, s))
    colours = dict(zip(labels, palette(len(labels))))
    order = sorted(panels, key=modality_order)
    ncols = min(3, len(order))
    nrows = math.ceil(len(order) / ncols)
    fig = new_figure(4.4 * ncols, 3.4 * nrows + 1.2)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[len(order):]:
        ax.set_visible(False)
    for ax, modality in zip(axes.flat, order):
        fmt, xlabel = eps_formatter(modality, norms[modality])
        eps_all = sorted({0.0, *(e for s in panels[modality].values() for e in s)})
        pos = {e: i for i, e in enumerate(eps_all)}
        for label in labels:
            pts = dict(panels[modality].get(label, {}))
            if not pts:
                continue
            if modality in clean and 0.0 not in pts:
                pts[0.0] = clean[modality]
            xs = sorted(pts)
            worst = label in worst_labels
            ax.plot([pos[e] for e in xs], [pts[e] for e in xs], linestyle="-" if worst else "--",
                    marker="o" if worst else "s", color=colours[label], linewidth=2.0 if worst else 1.5,
                    markersize=5 if worst else 4, label=label)
        ax.set_xticks(range(len(eps_all)))
        ax.set_xticklabels(["clean" if e == 0 else fmt(e) for e in eps_all], fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(wrap_text(xlabel, 44), fontsize=8.5)
        ax.set_ylabel(metric_label(key, modality), fontsize=9)
        ax.set_title(modality, fontsize=10, fontweight="bold")
        ax.grid(True, alpha=0.3)
        ax.tick_params(axis="y", labelsize=8)
    legend: dict[str, Any] = {}
    for ax in axes.flat[:len(order)]:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(name, handle)
    names = [s for s in labels if s in legend]
    fig.legend([legend[s] for s in names], names, loc="outside lower center", ncols=min(3, len(names)), fontsize=8.5,
               frameon=False)
    fig.suptitle(title or "Robust accuracy vs budget ε: single attack (dashed) and per-item worst case (solid)\n"
                 "(budgets evenly spaced on the x-axis, not to scale; “clean” = no attack on the same items)",
                 fontsize=11)
    return fig


def plot_worst_case_curves(results: Sequence[Result], out_stem: str | Path, key: str = "zeroshot_top1",
                           title: str = "") -> list[Path]:
    """Write :func:`worst_case_figure` as ``out_stem.png`` and ``.svg`` (atomically); ``[]`` when
    there is nothing to draw."""
    fig = worst_case_figure(results, key, title)
    if fig is None:
        log.info("plot_worst_case_curves: no records with a budget and attacked %s; nothing to plot", key)
        return []
    return save_figure(fig, out_stem)
