"""The report's robustness figures, one comparison each, every one saying what it shows.

* :func:`plot_worst_curves` (``robustness_worst``): per modality, the per-item worst-case curve
  (the headline) against the nested PGD curve alone (the weaker attack).
* :func:`plot_retrieval_curves` (``robustness_retrieval``): per modality, X->text R@1 under PGD on
  the caption loss, every item attacked at every budget.
* :func:`plot_single_budget` (``robustness_one_eps``): the attacks run at a single budget on the
  bare model (the ensemble and its parts, SGA, ...), as a coloured table: a row per attack, a column
  per modality, each cell the attacked score with the clean one and the items.
* :func:`plot_defended` (``robustness_defended``): every defended model at its single budget, in
  the same kind of table, under a row with the bare model's worst case at that budget.

Budgets are drawn to scale on a log2 axis (each grid step doubles eps; the axis says so), the
clean score as a dotted line; a series with one budget is drawn as points, never as a line
through a budget axis; attacks run at one budget are a table (row per series, column per modality).
Every title names the model, dataset, items, attacks and steps.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...modalities import MODALITIES
from ...records import Result, headline_score
from .record_values import as_number, as_results, items_text, metric_value, record_eps
from .style import modality_order, new_figure, palette, save_figure, wrap_text

log = logging.getLogger(__name__)

__all__ = ["plot_defended", "plot_retrieval_curves", "plot_single_budget", "plot_worst_curves", "series_name"]

WORST = "per-item worst case"


def series_name(r: Result) -> str:
    """A legend label that names the attack and its steps: ``PGD-10 (nested, the weaker attack)``,
    ``APGD-T-5 (2 targets)``, ``ensemble (apgd-ce, apgd-t, square; 5 steps)``, ``per-item worst case``."""
    a = r.attack or {}
    name = str(a.get("name", "?"))
    if r.threat == "worst-case" and name == "worst-case":
        return WORST
    steps = a.get("steps")
    label = (name.upper() if name in ("pgd", "apgd", "fgsm", "sga") else name) + (f"-{steps}" if steps else "")
    if name == "apgd" and a.get("loss"):
        label = ("APGD-T" if "targeted" in str(a["loss"]) else "APGD-CE") + (f"-{steps}" if steps else "")
    if a.get("n_target_classes") and "targeted" in str(a.get("loss", "")):
        label += f" ({a['n_target_classes']} targets)"
    if name == "ensemble":
        parts = [p.get("part") or p.get("name") for p in a.get("parts") or [] if isinstance(p, dict)]
        label = "ensemble" + (f" ({', '.join(map(str, parts))})" if parts else "")
    if a.get("loss") == "caption":
        label += " (caption loss)"
    src = (r.model or {}).get("source")
    if isinstance(src, dict) and src.get("name"):
        label += f" (transfer from {src['name']})"
    d = r.defense
    if isinstance(d, dict) and d.get("name"):
        label = f"{d['name']}{':' + str(d['objective']) if d.get('objective') else ''} / {label} ({r.threat})"
    return label


def _log2_axis(ax: Any, modality: str, grid: Sequence[float]) -> None:
    """x on a log2 scale with the grid's budgets as ticks in the modality's unit."""
    spec = MODALITIES.get(modality)
    ax.set_xscale("log", base=2)
    ticks = sorted(set(grid))
    ax.set_xticks(ticks)
    ax.set_xticklabels([spec.format_eps(e) if spec else f"{e:g}" for e in ticks], fontsize=7)
    ax.minorticks_off()
    unit = spec.eps_unit if spec else "raw units"
    ax.set_xlabel(f"budget ε, log scale ({unit})", fontsize=7)


def _about(rs: Sequence[Result]) -> str:
    """``tinybind on synthscenes/test``."""
    r0 = rs[0]
    return f"{(r0.model or {}).get('name', '?')} on {(r0.dataset or {}).get('name', '?')}/{(r0.dataset or {}).get('split', '?')}"


def _items(rs: Sequence[Result]) -> str:
    ns = sorted({r.n for r in rs})
    return f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]} (per series in the legend)"


def _panels(by: dict[str, Any]) -> tuple[Any, list[Any], list[str]]:
    mods = sorted(by, key=modality_order)
    cols = min(3, len(mods))
    rows = (len(mods) + cols - 1) // cols
    fig = new_figure(4.4 * cols, 3.2 * rows + 1.4)
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[len(mods):]:
        ax.set_visible(False)
    return fig, axes, mods


def _style(ax: Any, title: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10, fontweight="bold")
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=7)


def _curve_points(rs: Sequence[Result], series: Callable[[Result], str | None], key: str
                  ) -> tuple[dict[str, dict[str, dict[float, float]]], dict[str, float], dict[tuple[str, str], int]]:
    """The attacked ``key`` per modality, series and budget; the first clean score per modality; and
    the item count per (modality, series). Records without a series, a positive budget or ``key`` are left out."""
    by: dict[str, dict[str, dict[float, float]]] = defaultdict(lambda: defaultdict(dict))
    clean: dict[str, float] = {}
    n_of: dict[tuple[str, str], int] = {}
    for r in rs:
        label, eps, v = series(r), record_eps(r), metric_value(r, "attacked", key)
        if label is None or eps is None or v is None or eps <= 0:
            continue
        by[r.modality][label][eps] = v
        n_of[(r.modality, label)] = r.n
        c = metric_value(r, "clean", key)
        if c is not None:
            clean.setdefault(r.modality, c)
    return by, clean, n_of


def _curve_figure(rs: Sequence[Result], series: Callable[[Result], str | None], key: str, title: str,
                  styles: dict[str, tuple[str, str]] | None = None) -> Any:
    """One panel per modality, one line per series over the budgets (log2 x), points where a series
    has one budget, the clean score as a dotted line; None when nothing has ``key``."""
    by, clean, n_of = _curve_points(rs, series, key)
    if not by:
        return None
    labels = sorted({lab for m in by.values() for lab in m}, key=lambda s: (s != WORST, s))
    colours = dict(zip(labels, palette(len(labels))))
    fig, axes, mods = _panels(by)
    for ax, m in zip(axes, mods):
        grid = sorted({e for pts in by[m].values() for e in pts})
        for label in labels:
            pts = sorted(by[m].get(label, {}).items())
            if not pts:
                continue
            ls, marker = (styles or {}).get(label, ("-", "o"))
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            text = label
            if len(pts) == 1:
                ax.plot(xs, ys, linestyle="none", marker=marker, markersize=7, color=colours[label], label=text)
            else:
                ax.plot(xs, ys, linestyle=ls, marker=marker, markersize=4, linewidth=1.6, color=colours[label], label=text)
        if m in clean:
            ax.axhline(clean[m], color="0.4", linestyle=":", linewidth=1)
            ax.annotate(f"clean {clean[m]:.2f}", (0.99, clean[m]), xycoords=("axes fraction", "data"), ha="right",
                        va="bottom", fontsize=6, color="0.3")
        _log2_axis(ax, m, grid)
        ns = sorted({n for (mm, _), n in n_of.items() if mm == m})
        _style(ax, f"{m} (n = {'/'.join(map(str, ns))})", _ylabel(key, m))
    _shared_legend(fig, axes)
    fig.suptitle(title, fontsize=9)
    return fig


def _shared_legend(fig: Any, axes: Sequence[Any]) -> None:
    """One legend below all panels, each series once (in the order the panels first show it)."""
    handles, texts = [], []
    for ax in axes:
        for h, t in zip(*ax.get_legend_handles_labels()):
            if t not in texts:
                handles.append(h)
                texts.append(t)
    fig.legend(handles, texts, loc="outside lower center", ncol=min(3, len(texts)), fontsize=7, frameon=False)


def _ylabel(key: str, modality: str) -> str:
    return {"zeroshot_top1": "zero-shot top-1", "x2t_R@1": f"{modality}→text R@1",
            "t2x_R@1": f"text→{modality} R@1"}.get(key, key)


def _is_worst(r: Result) -> bool:
    return r.threat == "worst-case" and (r.attack or {}).get("name") == "worst-case" and r.defense is None


def _is_nested_pgd(r: Result) -> bool:
    a = r.attack or {}
    return a.get("name") == "pgd" and bool(a.get("nested")) and r.defense is None and r.threat == "white-box"


def _what_worst(rs: Sequence[Result]) -> str:
    parts = next(((r.attack or {}).get("parts") for r in rs if (r.attack or {}).get("parts")), None) or {}
    bits = []
    for label, d in parts.items():
        steps, targets = d.get("steps"), d.get("n_target_classes")
        bits.append(label.upper() + ("" if not steps or label.endswith(f"-{steps}") else f"-{steps}")
                    + (f" ({targets} targets)" if targets and "apgd-t" in label else ""))
    if any("ensemble" in ((r.attack or {}).get("of") or []) for r in rs):
        bits.append("the ensemble's examples at its ε")
    return ", ".join(bits) or "the job's attacks"


def plot_worst_curves(results: Sequence[Result], out_dir: str | Path) -> list[Path]:
    """``robustness_worst``: the headline curves, per-item worst case (solid) vs the nested PGD
    curve alone (dashed, the weaker attack), zero-shot top-1, one panel per modality; ``[]``
    without worst-case curves (then the PGD curves alone, titled as the weaker attack)."""
    rs = as_results(results)
    worst = [r for r in rs if _is_worst(r)]
    pgd = [r for r in rs if _is_nested_pgd(r)]
    if not worst and not pgd:
        return []
    steps = sorted({(r.attack or {}).get("steps") for r in pgd if (r.attack or {}).get("steps")})
    pgd_label = f"PGD-{'/'.join(map(str, steps))} alone (nested, the weaker attack)"
    chosen = worst + pgd

    def series(r: Result) -> str:
        return WORST if _is_worst(r) else pgd_label

    head = (f"per-item worst case over {_what_worst(worst)} and smaller-ε examples (early stopping)"
            if worst else "PGD alone: an upper bound on robust accuracy (no worst case in these records)")
    title = (f"{_about(chosen)}, {_items(chosen)}: zero-shot top-1 vs L∞ budget ε — {head}\n"
             f"solid: {WORST}; dashed: {pgd_label}; dotted: clean; budgets on a log2 axis")
    fig = _curve_figure(chosen, series, "zeroshot_top1", title,
                        styles={WORST: ("-", "o"), pgd_label: ("--", "s")})
    return [] if fig is None else save_figure(fig, Path(out_dir) / "robustness_worst")


def plot_retrieval_curves(results: Sequence[Result], out_dir: str | Path) -> list[Path]:
    """``robustness_retrieval``: X->text R@1 under PGD on the caption loss (every item attacked at
    every budget), one panel per modality; ``[]`` without such records."""
    rs = [r for r in as_results(results) if (r.attack or {}).get("name") == "pgd" and (r.attack or {}).get("loss") == "caption"
          and r.defense is None and r.threat == "white-box"]
    if not rs:
        return []
    steps = sorted({(r.attack or {}).get("steps") for r in rs if (r.attack or {}).get("steps")})
    label = f"PGD-{'/'.join(map(str, steps))} (caption loss, every item at every ε)"
    title = (f"{_about(rs)}, {_items(rs)}: {'{modality}'}→text R@1 vs L∞ budget ε under {label}\n"
             "dotted: clean; budgets on a log2 axis").replace("{modality}", "X")
    fig = _curve_figure(rs, lambda r: label, "x2t_R@1", title)
    return [] if fig is None else save_figure(fig, Path(out_dir) / "robustness_retrieval")


def _matrix_figure(rs: Sequence[Result], title: str, reference: dict[tuple[str, float], Result] | None = None) -> Any:
    """A table as a figure: one row per series (defense / attack, steps, threat), one column per
    modality, each cell coloured by the attacked zero-shot top-1 and showing it, the clean score
    and the items; a first row with the reference at each column's budget (the bare model's
    per-item worst case) when there is one. Compact at any number of modalities and series."""
    import numpy as np

    rows_of: dict[str, dict[str, Result]] = defaultdict(dict)
    eps_of: dict[str, list[float]] = defaultdict(list)
    for r in rs:
        if _score(r, "attacked") is None:
            continue
        label = series_name(r)
        if r.modality in rows_of[label]:  # one series at several budgets: one row per budget
            label = f"{label}, ε = {_eps_text(r)}"
        rows_of[label][r.modality] = r
        eps_of[r.modality].append(round(float(record_eps(r) or 0), 12))
    if not rows_of:
        return None
    mods = sorted(eps_of, key=modality_order)
    labels = sorted(rows_of)
    # each column at its most common budget; a cell at another budget says so
    main_eps = {m: max(sorted(set(es)), key=es.count) for m, es in eps_of.items()}
    ref_row = {m: (reference or {}).get((m, main_eps[m])) for m in mods}
    table = ([(f"bare model: {WORST} at the column's ε", ref_row)] if any(ref_row.values()) else []) + \
        [(lab, rows_of[lab]) for lab in labels]
    values = np.full((len(table), len(mods)), np.nan)
    for i, (_, cells) in enumerate(table):
        for j, m in enumerate(mods):
            if (r := cells.get(m)) is not None:
                values[i, j] = _score(r, "attacked")
    fig = new_figure(3.6 + 1.35 * len(mods), 0.5 * len(table) + 1.9)
    ax = fig.add_subplot()
    from matplotlib import colormaps

    cmap = colormaps["RdYlGn"].with_extremes(bad="0.93")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for i, (_, cells) in enumerate(table):
        for j, m in enumerate(mods):
            _cell_text(ax, i, j, cells.get(m), main_eps[m])
    ax.set_xticks(range(len(mods)))
    ax.set_xticklabels([f"{m}\nε = {_format_eps(m, main_eps[m])}" for m in mods], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(table)))
    ax.set_yticklabels([wrap_text(lab, 52) for lab, _ in table], fontsize=7)
    if table and table[0][1] is ref_row and any(ref_row.values()):
        ax.get_yticklabels()[0].set_fontweight("bold")
        ax.axhline(0.5, color="black", linewidth=1.2)
    ax.set_xticks(np.arange(len(mods) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(table) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    ax.tick_params(which="major", length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    bar = fig.colorbar(image, ax=ax, shrink=min(1.0, 6 / max(len(table), 1)), pad=0.02, aspect=25)
    bar.set_label("attacked zero-shot top-1", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    return fig


def _score(r: Result, part: str) -> float | None:
    """The headline score of ``metrics[part]`` as a number; None when missing or malformed."""
    metrics = r.metrics if isinstance(r.metrics, dict) else {}
    part_metrics = metrics.get(part)
    return as_number(headline_score(part_metrics)) if isinstance(part_metrics, dict) else None


def _cell_text(ax: Any, i: int, j: int, r: Result | None, column_eps: float) -> None:
    """One cell's text: the attacked score (bold), the clean score and the items, and the budget
    when it is not the column's; ``—`` when empty."""
    if r is None:
        ax.text(j, i, "—", ha="center", va="center", fontsize=8, color="0.5")
        return
    a, c = _score(r, "attacked"), _score(r, "clean")
    dark = a is not None and (a < 0.2 or a > 0.85)
    eps = round(float(record_eps(r) or 0), 12)
    ax.text(j, i - 0.12, f"{a:.2f}", ha="center", va="center", fontsize=9, fontweight="bold",
            color="white" if dark else "black")
    note = ("" if c is None else f"clean {c:.2f}, ") + f"n = {r.n}" + ("" if eps == column_eps else f", ε = {_eps_text(r)}")
    ax.text(j, i + 0.22, note, ha="center", va="center", fontsize=6, color="white" if dark else "0.15")


def _format_eps(modality: str, eps: float) -> str:
    spec = MODALITIES.get(modality)
    return spec.format_eps(eps) if spec else f"{eps:g}"


def _eps_text(r: Result) -> str:
    spec = MODALITIES.get(r.modality)
    eps = record_eps(r)
    return "?" if eps is None else (spec.format_eps(eps) if spec else f"{eps:g}")


def _single_budget(rs: Sequence[Result]) -> list[Result]:
    """Records of attacks run at one budget (no curve): not nested curves, not full (naive) curves,
    not worst-case curves, not clean or certified records."""
    out = []
    for r in rs:
        a = r.attack or {}
        if not a or record_eps(r) is None or r.threat in ("clean", "certified") or _is_worst(r) or "nested" in a:
            continue
        if (r.extra or {}).get("baseline_for"):
            continue
        out.append(r)
    return out


def _worst_at(rs: Sequence[Result]) -> dict[tuple[str, float], Result]:
    return {(r.modality, round(float(record_eps(r) or 0), 12)): r for r in rs if _is_worst(r)}


def plot_single_budget(results: Sequence[Result], out_dir: str | Path) -> list[Path]:
    """``robustness_one_eps``: every attack on the bare model at a single budget (the ensemble and
    its parts, SGA, transfers ...) as a coloured table (a row per attack, a column per modality) under
    the per-item worst case at that budget; ``[]`` without any."""
    rs = as_results(results)
    pts = [r for r in _single_budget(rs) if r.defense is None]
    if not pts:
        return []
    title = (f"{_about(pts)}, {items_text(pts)} (per cell): attacks run at one budget on the bare model (one row per attack and"
             " steps)\ncell: attacked zero-shot top-1 (bold; greener = more robust), the clean top-1 and the items;"
             f" first row: the {WORST} at the column's ε")
    fig = _matrix_figure(pts, title, _worst_at(rs))
    return [] if fig is None else save_figure(fig, Path(out_dir) / "robustness_one_eps")


def plot_defended(results: Sequence[Result], out_dir: str | Path) -> list[Path]:
    """``robustness_defended``: every defended model's attacked and clean top-1 at its budget
    (calibration heads, input transformations; head-unaware, adaptive, worst case) as a coloured
    table under the bare model's worst case at that budget; ``[]`` without defended records."""
    rs = as_results(results)
    pts = [r for r in rs if r.defense is not None and record_eps(r) is not None and r.threat not in ("clean", "certified")
           and not (r.attack or {}).get("nested")]
    if not pts:
        return []
    title = (f"{_about(pts)}, {items_text(pts)} (per cell): defended models at one budget (one row per defense / attack,"
             " steps and threat)\ncell: attacked zero-shot top-1 (bold; greener = more robust), the defended model's clean"
             f" top-1 and the items; first row: the bare model's {WORST} at the column's ε")
    fig = _matrix_figure(pts, title, _worst_at(rs))
    return [] if fig is None else save_figure(fig, Path(out_dir) / "robustness_defended")
