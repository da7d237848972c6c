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
from .record_values import (
    RETRIEVAL_KEYS,
    as_results,
    attack_key,
    colour_key,
    colour_map,
    data_text,
    defense_label,
    first_key,
    items_text,
    mean_or_none,
    metric_value,
    model_name,
    record_eps,
    series_label,
    variant_labels,
)
from .style import eps_formatter, metric_label, modality_order, new_figure, palette, save_figure, wrap_text

log = logging.getLogger(__name__)

#: attacks whose results form robustness curves over a budget eps (norm-bounded, iterative)
CURVE_ATTACKS: frozenset[str] = frozenset({"pgd", "torchattacks", "sga", "fgsm", "apgd", "autoattack"})

_THREAT_STYLE = {  # linestyle, marker
    "white-box": ("-", "o"), "clean": ("-", "o"), "transfer": ("--", "D"),
    "head-unaware": ("--", "s"), "adaptive": (":", "^"),
}


def _is_curve(r: Result) -> bool:
    a = r.attack
    return isinstance(a, dict) and a.get("name") in CURVE_ATTACKS and record_eps(r) is not None and r.threat != "clean"


#: the curve figures: file stem -> (metric keys tried in order, what they measure, a note under the title)
CURVE_FIGURES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "robustness_top1": (("zeroshot_top1",), "zero-shot top-1 accuracy", ""),
    "robustness_r1": (tuple(RETRIEVAL_KEYS), "retrieval R@1 (MRR where R@1 is absent)",
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
    rs = as_results(flat)
    curve = [r for r in rs if _is_curve(r)]
    if not curve:
        raise RobustMMError("plot_curves: no results of a norm-bounded attack with a budget eps; pass what "
                            "robustmm.curve(...) returns")
    keys, what, note = CURVE_FIGURES[CURVE_METRICS[metric]]
    fig = _curve_figure(curve, [r for r in rs if r.threat == "clean"], keys, what, colour_map(rs), note)
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
    rs = as_results(results)
    curve = [r for r in rs if _is_curve(r)]
    if not curve:
        log.info("plot_robustness_curves: no PGD-like results with a budget eps; nothing to plot")
        return []
    cleans = [r for r in rs if r.threat == "clean"]
    colours = colour_map(rs)
    out_dir = Path(out_dir)
    written: list[Path] = []
    for fname, (keys, what, note) in CURVE_FIGURES.items():
        if which is not None and fname not in which:
            continue
        fig = _curve_figure(curve, cleans, keys, what, colours, note)
        if fig is None:
            log.info("plot_robustness_curves: no %s in the results; skipping %s", what, fname)
            continue
        written += save_figure(fig, out_dir / fname)
    return written


def _curve_figure(curve: list[Result], cleans: list[Result], keys: Sequence[str], what: str,
                  colours: dict[str, Any], note: str = "") -> Any:
    panels: dict[tuple[str, str], list[Result]] = defaultdict(list)
    attack_labels: dict[str, str] = {}
    for r in curve:
        akey, alabel = attack_key(r)
        attack_labels[akey] = alabel
        panels[(r.modality, akey)].append(r)
    order = sorted(panels, key=lambda k: (modality_order(k[0]), k[1]))
    drawn = [(pk, key) for pk in order if (key := first_key(panels[pk], keys)) is not None]
    if not drawn:
        return None
    ncols = min(3, len(drawn))
    nrows = math.ceil(len(drawn) / ncols)
    fig = new_figure(4.6 * ncols, 3.6 * nrows + 1.3)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    legend: dict[str, Any] = {}
    styles = _SeriesStyles(colours)
    for ax in axes.flat[len(drawn):]:
        ax.set_visible(False)
    for ax, ((modality, akey), key) in zip(axes.flat, drawn):
        _draw_panel(ax, panels[(modality, akey)], modality, key, cleans, styles, legend)
        ns = sorted({r.n for r in panels[(modality, akey)]})
        ax.set_title(f"{modality} — {attack_labels[akey]}\n(n = {'/'.join(map(str, ns))})", fontsize=10, fontweight="bold")
    fig.suptitle(f"Robustness curves on {data_text(curve)}, {items_text(curve)}: {what} vs attack budget ε\n"
                 "(budgets evenly spaced on the x-axis, not to scale; “clean” = no attack on the same items)"
                 + (f"\n{wrap_text(note, 120)}" if note else ""), fontsize=11)
    labels = sorted(legend)
    fig.legend([legend[k] for k in labels], labels, loc="outside lower center", ncols=min(3, len(labels)),
               fontsize=8.5, frameon=False, title="model + defense (threat model)", title_fontsize=8.5)
    return fig


class _SeriesStyles:
    """(colour, linestyle, marker) per series label, fixed figure-wide at first use: the series'
    colour and the threat's line style; an attack variant of a series already drawn in that style
    gets a spare colour."""

    def __init__(self, colours: dict[str, Any]):
        self.colours = colours
        self.style_of: dict[str, tuple[Any, str, str]] = {}
        self.spare = iter([c for c in palette(10) if c not in colours.values()] + palette(20)[1::2])

    def of(self, label: str, r0: Result) -> tuple[Any, str, str]:
        """The style of ``label`` (``r0``: one of its records)."""
        if label not in self.style_of:
            ls, marker = _THREAT_STYLE.get(r0.threat, ("-.", "v"))
            style = (self.colours.get(colour_key(r0), "k"), ls, marker)
            if style in self.style_of.values():  # an attack variant of an existing series: new colour
                style = (next(self.spare, "k"), ls, marker)
            self.style_of[label] = style
        return self.style_of[label]


def _panel_series(recs: list[Result], modality: str, key: str,
                  ) -> tuple[dict[str, dict[float, list[float]]], dict[str, list[float]], dict[str, Result]]:
    """Per series label of one panel: attacked values by budget, its own clean values, and its
    first record. Records without an attacked ``key`` are logged and skipped."""
    series: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    own_clean: dict[str, list[float]] = defaultdict(list)
    meta: dict[str, Result] = {}
    usable = []
    for r in recs:
        if metric_value(r, "attacked", key) is None:
            log.warning("plots: %s/%s result at eps=%s has no attacked %s; skipped",
                        model_name(r), modality, record_eps(r), key)
        else:
            usable.append(r)
    slots: dict[tuple[str, float | None], list[Result]] = defaultdict(list)
    for r in usable:
        slots[(series_label(r), record_eps(r))].append(r)
    label_of = variant_labels(slots.values())
    for r in usable:
        v = metric_value(r, "attacked", key)
        label = label_of[id(r)]
        meta.setdefault(label, r)
        series[label][record_eps(r)].append(v)  # type: ignore[index]
        if (c := metric_value(r, "clean", key)) is not None:
            own_clean[label].append(c)
    return series, own_clean, meta


def _clean_point(own: list[float], cleans: list[Result], modality: str, r0: Result, key: str) -> float | None:
    """A series' score at eps 0: its own records' clean value (the same items), else that of a
    separate clean run of the same model and defense (it may use a bigger gallery, and retrieval
    scores fall with gallery size)."""
    match = [c for c in cleans if c.modality == modality and model_name(c) == model_name(r0)
             and defense_label(c) == defense_label(r0) and metric_value(c, "clean", key) is not None]
    from_clean = [v for c in match if (v := metric_value(c, "clean", key)) is not None]
    return mean_or_none(own) if own else (mean_or_none(from_clean) if from_clean else None)


def _draw_panel(ax: Any, recs: list[Result], modality: str, key: str, cleans: list[Result],
                styles: _SeriesStyles, legend: dict[str, Any]) -> None:
    """One panel: each series' score over the budgets (evenly spaced, clean first); adds each new
    series' legend handle to ``legend``."""
    from matplotlib.lines import Line2D

    fmt, xlabel = eps_formatter(modality, (recs[0].attack or {}).get("norm"))
    series, own_clean, meta = _panel_series(recs, modality, key)
    eps_all = sorted({0.0, *(e for s in series.values() for e in s)})
    pos = {e: i for i, e in enumerate(eps_all)}
    for label in sorted(series):
        r0 = meta[label]
        clean_v = _clean_point(own_clean[label], cleans, modality, r0, key)
        pts = sorted((e, float(np.mean(vs))) for e, vs in series[label].items())
        if clean_v is not None and 0.0 not in series[label]:
            pts = [(0.0, clean_v), *pts]
        colour, ls, marker = styles.of(label, r0)
        _plot_series(ax, [pos[e] for e, _ in pts], [v for _, v in pts], colour, ls, marker)
        legend.setdefault(label, Line2D([], [], linestyle=ls, marker=marker, color=colour, linewidth=1.8))
    ax.set_xticks(range(len(eps_all)))
    ticks = ["clean" if e == 0 else fmt(e) for e in eps_all]
    rotate = len(eps_all) > 6 or max(len(t) for t in ticks) > 6
    ax.set_xticklabels(ticks, rotation=30 if rotate else 0, ha="right" if rotate else "center", fontsize=8)
    ax.set_xlim(-0.3, len(eps_all) - 0.7)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(wrap_text(xlabel, 44), fontsize=8.5)
    ax.set_ylabel(metric_label(key, modality), fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.tick_params(axis="y", labelsize=8)


def _plot_series(ax: Any, xs: list[int], ys: list[float], colour: Any, ls: str, marker: str) -> None:
    """One series: a faint thin line through every point, and bold lines with markers over each run
    of consecutive budgets. Segments that jump over budgets the series was not run at stay faint:
    a reader should not read values off them."""
    ax.plot(xs, ys, linestyle=ls, color=colour, linewidth=1.0, alpha=0.35)
    runs: list[list[int]] = [[0]]
    for i in range(1, len(xs)):
        (runs[-1].append(i) if xs[i] == xs[i - 1] + 1 else runs.append([i]))
    for run in runs:
        ax.plot([xs[i] for i in run], [ys[i] for i in run], linestyle=ls, marker=marker, color=colour,
                linewidth=1.8, markersize=5, alpha=0.9)
