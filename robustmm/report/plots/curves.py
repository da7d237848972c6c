"""Robustness curves: metric vs budget eps, one panel per (modality, attack, norm)."""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...records import Result
from .fields import (
    _RETRIEVAL_KEYS,
    _as_results,
    _attack_key,
    _colour_key,
    _colour_map,
    _defense_label,
    _eps,
    _first_key,
    _mean,
    _metric,
    _model_name,
    _series_label,
    _variant_labels,
)
from .style import _eps_formatter, _figure, _metric_label, _modality_order, _palette, _save, _wrap

log = logging.getLogger(__name__)

#: attacks whose results form robustness curves over a budget eps (norm-bounded, iterative)
CURVE_ATTACKS: frozenset[str] = frozenset({"pgd", "torchattacks", "sga", "fgsm", "apgd", "autoattack"})

_THREAT_STYLE = {  # linestyle, marker
    "white-box": ("-", "o"), "clean": ("-", "o"), "transfer": ("--", "D"),
    "head-unaware": ("--", "s"), "adaptive": (":", "^"),
}


def _is_curve(r: Result) -> bool:
    a = r.attack
    return isinstance(a, dict) and a.get("name") in CURVE_ATTACKS and _eps(r) is not None and r.threat != "clean"


#: the curve figures: file stem -> (metric keys tried in order, what they measure, a note under the title)
CURVE_FIGURES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "robustness_top1": (("zeroshot_top1",), "zero-shot top-1 accuracy", ""),
    "robustness_r1": (tuple(_RETRIEVAL_KEYS), "retrieval R@1 (MRR where R@1 is absent)",
                      "R@1 under an attack on the zero-shot loss is a side effect, and a nested sweep keeps each item's"
                      " first successful example, so such curves can stay flat; SGA and caption-loss PGD attack"
                      " retrieval itself"),
}
#: ``plot_curves(metric=...)`` names of the figures
CURVE_METRICS: dict[str, str] = {"top1": "robustness_top1", "r1": "robustness_r1"}


def plot_curves(results: Result | Sequence[Result] | Sequence[Sequence[Result]], *, metric: str = "top1") -> Any:
    """A matplotlib :class:`~matplotlib.figure.Figure` of robustness curves (metric vs budget eps).

    ``results`` are norm-bounded attack results, e.g. what ``robustmm.curve`` returns (several
    curves, or lists of them, share the figure: one line per model, defense and threat model).
    ``metric`` is ``"top1"`` (zero-shot top-1) or ``"r1"`` (retrieval R@1). One panel per
    (modality, attack, norm), budgets evenly spaced, eps = 0 the clean score. Nothing is written:
    ``fig.savefig(path)`` saves it.
    """
    from ...errors import RobustMMError, UnknownNameError

    if metric not in CURVE_METRICS:
        raise UnknownNameError("curve metric", metric, CURVE_METRICS)
    flat: list[Any] = []
    for r in [results] if isinstance(results, Result) else results:
        flat.extend(r if isinstance(r, (list, tuple)) else [r])
    rs = _as_results(flat)
    curve = [r for r in rs if _is_curve(r)]
    if not curve:
        raise RobustMMError("plot_curves: no results of a norm-bounded attack with a budget eps; pass what "
                            "robustmm.curve(...) returns")
    keys, what, note = CURVE_FIGURES[CURVE_METRICS[metric]]
    fig = _curve_figure(curve, [r for r in rs if r.threat == "clean"], keys, what, _colour_map(rs), note)
    if fig is None:
        raise RobustMMError(f"plot_curves: the results have no {what}; try metric='top1' or 'r1'")
    return fig


def plot_robustness_curves(results: Sequence[Result], out_dir: str | Path, which: Sequence[str] | None = None
                           ) -> list[Path]:
    """Robustness curves (metric vs eps) from the norm-bounded attack results in ``results``, written to files.

    Writes ``robustness_top1`` (zero-shot top-1) and ``robustness_r1`` (text->X R@1, else X->text
    R@1, else text->X MRR), each ``.png`` + ``.svg`` (the figures of :func:`plot_curves`). One
    panel per (modality, attack, norm) with the modality's own budget unit on x (budgets evenly
    spaced, eps = 0 is the clean score, taken from a ``threat="clean"`` record of the same
    model/modality/defense when there is one, else from the attacked records' own clean metrics);
    one line per (model, defense, threat). ``which`` draws only the figures of those names.
    """
    rs = _as_results(results)
    curve = [r for r in rs if _is_curve(r)]
    if not curve:
        log.info("plot_robustness_curves: no PGD-like results with a budget eps; nothing to plot")
        return []
    cleans = [r for r in rs if r.threat == "clean"]
    colours = _colour_map(rs)
    out_dir = Path(out_dir)
    written: list[Path] = []
    for fname, (keys, what, note) in CURVE_FIGURES.items():
        if which is not None and fname not in which:
            continue
        fig = _curve_figure(curve, cleans, keys, what, colours, note)
        if fig is None:
            log.info("plot_robustness_curves: no %s in the results; skipping %s", what, fname)
            continue
        written += _save(fig, out_dir / fname)
    return written


def _curve_figure(curve: list[Result], cleans: list[Result], keys: Sequence[str], what: str,
                  colours: dict[str, Any], note: str = "") -> Any:
    panels: dict[tuple[str, str], list[Result]] = defaultdict(list)
    attack_labels: dict[str, str] = {}
    for r in curve:
        akey, alabel = _attack_key(r)
        attack_labels[akey] = alabel
        panels[(r.modality, akey)].append(r)
    order = sorted(panels, key=lambda k: (_modality_order(k[0]), k[1]))
    drawn = [(pk, key) for pk in order if (key := _first_key(panels[pk], keys)) is not None]
    if not drawn:
        return None
    ncols = min(3, len(drawn))
    nrows = math.ceil(len(drawn) / ncols)
    fig = _figure(4.6 * ncols, 3.6 * nrows + 1.3)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    legend: dict[str, Any] = {}
    style_of: dict[str, tuple[Any, str, str]] = {}  # label -> (colour, linestyle, marker), figure-wide
    spare = iter([c for c in _palette(10) if c not in colours.values()] + _palette(20)[1::2])
    for ax in axes.flat[len(drawn):]:
        ax.set_visible(False)
    for ax, ((modality, akey), key) in zip(axes.flat, drawn):
        recs = panels[(modality, akey)]
        series, meta, own_clean = _panel_series(recs, modality, key)
        eps_all = sorted({0.0, *(e for s in series.values() for e in s)})
        pos = {e: i for i, e in enumerate(eps_all)}
        for label in sorted(series):
            r0 = meta[label]
            pts = _series_points(series[label], own_clean[label], cleans, r0, modality, key)
            if label not in style_of:
                ls, marker = _THREAT_STYLE.get(r0.threat, ("-.", "v"))
                style = (colours.get(_colour_key(r0), "k"), ls, marker)
                if style in style_of.values():  # an attack variant of an existing series: new colour
                    style = (next(spare, "k"), ls, marker)
                style_of[label] = style
            legend.setdefault(label, _draw_series(ax, [pos[e] for e, _ in pts], [v for _, v in pts], *style_of[label]))
        norm = (recs[0].attack or {}).get("norm")
        _label_panel(ax, eps_all, modality, norm, key, f"{modality} — {attack_labels[akey]}")
    fig.suptitle(f"Robustness curves: {what} vs attack budget ε\n"
                 "(budgets evenly spaced on the x-axis, not to scale; “clean” = no attack on the same items)"
                 + (f"\n{_wrap(note, 120)}" if note else ""), fontsize=11)
    labels = sorted(legend)
    fig.legend([legend[k] for k in labels], labels, loc="outside lower center", ncols=min(3, len(labels)),
               fontsize=8.5, frameon=False, title="model + defense (threat model)", title_fontsize=8.5)
    return fig


def _panel_series(recs: list[Result], modality: str, key: str
                  ) -> tuple[dict[str, dict[float, list[float]]], dict[str, Result], dict[str, list[float]]]:
    """One panel's attacked values per (series label, eps), a record of each series, and the
    series' own clean values (records without the metric are skipped with a warning)."""
    series: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    own_clean: dict[str, list[float]] = defaultdict(list)
    meta: dict[str, Result] = {}
    usable = []
    for r in recs:
        if _metric(r, "attacked", key) is None:
            log.warning("plots: %s/%s result at eps=%s has no attacked %s; skipped", _model_name(r), modality, _eps(r), key)
        else:
            usable.append(r)
    slots: dict[tuple[str, float | None], list[Result]] = defaultdict(list)
    for r in usable:
        slots[(_series_label(r), _eps(r))].append(r)
    label_of = _variant_labels(slots.values())
    for r in usable:
        label = label_of[id(r)]
        meta.setdefault(label, r)
        series[label][_eps(r)].append(_metric(r, "attacked", key))  # type: ignore[index,arg-type]
        if (c := _metric(r, "clean", key)) is not None:
            own_clean[label].append(c)
    return series, meta, own_clean


def _series_points(values: dict[float, list[float]], own_clean: list[float], cleans: list[Result], r0: Result,
                   modality: str, key: str) -> list[tuple[float, float]]:
    """(eps, mean value) of one series, ascending, with the clean point at eps = 0 when known."""
    match = [c for c in cleans if c.modality == modality and _model_name(c) == _model_name(r0)
             and _defense_label(c) == _defense_label(r0) and _metric(c, "clean", key) is not None]
    from_clean = [v for c in match if (v := _metric(c, "clean", key)) is not None]
    # the clean point of the same items when the records carry it (a separate clean run may
    # use a bigger gallery, and retrieval scores fall with gallery size)
    clean_v = _mean(own_clean) if own_clean else (_mean(from_clean) if from_clean else None)
    pts = sorted((e, float(np.mean(vs))) for e, vs in values.items())
    if clean_v is not None and 0.0 not in values:
        pts = [(0.0, clean_v), *pts]
    return pts


def _draw_series(ax: Any, xs: list[int], ys: list[float], colour: Any, ls: str, marker: str) -> Any:
    """One series on ``ax``; returns its legend handle."""
    from matplotlib.lines import Line2D

    # segments that jump over budgets this series was not run at are drawn faint and thin:
    # a reader should not read values off them
    ax.plot(xs, ys, linestyle=ls, color=colour, linewidth=1.0, alpha=0.35)
    runs: list[list[int]] = [[0]]
    for i in range(1, len(xs)):
        (runs[-1].append(i) if xs[i] == xs[i - 1] + 1 else runs.append([i]))
    for run in runs:
        ax.plot([xs[i] for i in run], [ys[i] for i in run], linestyle=ls, marker=marker, color=colour,
                linewidth=1.8, markersize=5, alpha=0.9)
    return Line2D([], [], linestyle=ls, marker=marker, color=colour, linewidth=1.8)


def _label_panel(ax: Any, eps_all: list[float], modality: str, norm: str | None, key: str, title: str) -> None:
    """Ticks (budgets evenly spaced, "clean" at 0), limits, axis labels, title and grid of one panel."""
    fmt, xlabel = _eps_formatter(modality, norm)
    ax.set_xticks(range(len(eps_all)))
    ticks = ["clean" if e == 0 else fmt(e) for e in eps_all]
    rotate = len(eps_all) > 6 or max(len(t) for t in ticks) > 6
    ax.set_xticklabels(ticks, rotation=30 if rotate else 0, ha="right" if rotate else "center", fontsize=8)
    ax.set_xlim(-0.3, len(eps_all) - 0.7)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(_wrap(xlabel, 44), fontsize=8.5)
    ax.set_ylabel(_metric_label(key, modality), fontsize=9)
    ax.set_title(title, fontsize=10, fontweight="bold")
    ax.grid(True, alpha=0.3)
    ax.tick_params(axis="y", labelsize=8)
