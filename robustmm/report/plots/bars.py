"""Attack bars: clean vs attacked score per modality, one chart per attack name."""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...records import Result
from .record_values import (
    as_results,
    asr_value,
    budget_text,
    chart_key,
    colour_key,
    colour_map,
    mean_or_none,
    metric_value,
    pick_eps,
    record_eps,
    series_label,
    variant_labels,
)
from .style import eps_formatter, metric_label, modality_order, new_figure, palette, safe_name, save_figure

log = logging.getLogger(__name__)


_THREAT_HATCH = {"head-unaware": "//", "adaptive": "xx", "transfer": ".."}


def plot_attack_bars(results: Sequence[Result], out_dir: str | Path) -> list[Path]:
    """One bar chart per attack name (``attack_<name>.png``/``.svg``): clean vs attacked score.

    Groups are modalities; within a group one pair of bars (light = clean, solid = attacked) per
    model / defense / threat (e.g. white-box vs transfer). The score is zero-shot top-1, or text->X
    R@1 where a result has no zero-shot task; the attack success rate is printed above each
    attacked bar. Attacks with a budget grid are shown at the budget nearest the modality's middle
    eps (named under the group).
    """
    rs = [r for r in as_results(results) if isinstance(r.attack, dict) and r.threat != "clean"]
    if not rs:
        log.info("plot_attack_bars: no attacked results; nothing to plot")
        return []
    colours = colour_map(rs)
    by_attack: dict[str, list[Result]] = defaultdict(list)
    for r in rs:
        by_attack[str(r.attack.get("name", "attack"))].append(r)  # type: ignore[union-attr]
    written: list[Path] = []
    for name in sorted(by_attack):
        try:
            fig = _bars_figure(name, by_attack[name], colours)
        except Exception:  # noqa: BLE001
            log.exception("plot_attack_bars: could not draw attack %r", name)
            continue
        if fig is None:
            log.info("plot_attack_bars: attack %r has no plottable metric", name)
            continue
        written += save_figure(fig, Path(out_dir) / f"attack_{safe_name(name)}")
    return written


#: the widest a bar chart may get, in inches (at 150 dpi: 2400 px); panels wrap into rows beyond it
MAX_WIDTH_IN = 16.0


def _bars_figure(name: str, records: list[Result], colour_of: dict[str, Any]) -> Any:
    """One panel per modality (a grid, at most :data:`MAX_WIDTH_IN` wide), each with its pairs of
    bars; one shared legend below."""
    from matplotlib.patches import Patch

    groups = _bar_groups(records)
    if not groups:
        return None
    label_of, labels, style = _series_styles(groups, colour_of)
    nbars = max(len({label_of[id(r)] for r in recs}) for _, _, recs in groups) * 2
    width = min(0.8 / nbars, 0.3)
    panel_w = max(3.2, 0.28 * nbars + 1.2)
    cols = max(1, min(len(groups), 3, int(MAX_WIDTH_IN // panel_w)))
    rows = (len(groups) + cols - 1) // cols
    legend_rows = (len(labels) + 3 + 2) // 3
    fig = new_figure(panel_w * cols, 3.6 * rows + 1.0 + 0.22 * legend_rows)
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    for ax, (m, key, recs) in zip(axes, groups):
        tick = _draw_group(ax, 0, m, key, recs, label_of, style, width, nbars)
        ax.set_xticks([])
        ax.set_xlim(-0.5, 0.5)
        ax.set_ylim(0, 1.12)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_title(tick.replace("\n", ", ", 1).replace("\n", " "), fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.tick_params(labelsize=8)
    for ax in axes[::cols]:
        ax.set_ylabel("score (zero-shot top-1,\nor R@1 where named)", fontsize=8)
    r0 = records[0]
    title = (f"Attack “{name}” on {(r0.model or {}).get('name', '?')}, {(r0.dataset or {}).get('name', '?')}"
             f"/{(r0.dataset or {}).get('split', '?')}, n = {'/'.join(map(str, sorted({r.n for r in records})))}:"
             " clean vs attacked score per modality")
    if any(record_eps(r) is not None for _, _, recs in groups for r in recs):
        title += "\n(at the budget nearest each modality's middle ε)"
    fig.suptitle(title, fontsize=11)
    handles = [Patch(facecolor=style[k][0], edgecolor="black", linewidth=0.5, hatch=style[k][1], label=k)
               for k in labels]
    handles += [Patch(facecolor="0.6", alpha=0.35, edgecolor="0.6", label="light bar: clean"),
                Patch(facecolor="0.6", edgecolor="black", label="solid bar: attacked"),
                Patch(facecolor="none", edgecolor="none", label="% above bar: attack success rate")]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)), fontsize=8, frameon=False)
    return fig


def _bar_groups(records: list[Result]) -> list[tuple[str, str, list[Result]]]:
    """(modality, metric key, records) per modality with a plottable metric, in the modalities'
    order; records at the budget nearest the modality's middle eps when they have budgets."""
    groups: list[tuple[str, str, list[Result]]] = []
    by_mod: dict[str, list[Result]] = defaultdict(list)
    for r in records:
        by_mod[r.modality].append(r)
    for m in sorted(by_mod, key=modality_order):
        recs = by_mod[m]
        eps = pick_eps(recs, m)
        if eps is not None:
            recs = [r for r in recs if record_eps(r) == eps]
        key = chart_key(recs)
        if key is None:
            continue
        recs = [r for r in recs if metric_value(r, "attacked", key) is not None]
        groups.append((m, key, recs))
    return groups


def _series_styles(groups: list[tuple[str, str, list[Result]]], colour_of: dict[str, Any],
                   ) -> tuple[dict[int, str], list[str], dict[str, tuple[Any, str]]]:
    """Series labels (model / defense / threat, plus attack params that differ within a slot) per
    record id, the sorted labels, and each label's (colour, hatch): the series' colour and the
    threat's hatch, or one palette colour per label when that would not tell the labels apart."""
    slot: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for m, _, recs in groups:
        for r in recs:
            slot[(m, series_label(r))].append(r)
    label_of = variant_labels(slot.values())
    labels = sorted(set(label_of.values()))
    first = {label_of[id(r)]: r for _, _, recs in groups for r in recs}
    style = {k: (colour_of.get(colour_key(first[k]), "0.5"), _THREAT_HATCH.get(first[k].threat, "")) for k in labels}
    if len(set(style.values())) < len(style):  # variants of one series: fall back to one colour each
        style = {k: (c, "") for k, c in zip(labels, palette(len(labels)))}
    return label_of, labels, style


def _draw_group(ax: Any, gi: int, m: str, key: str, recs: list[Result], label_of: dict[int, str],
                style: dict[str, tuple[Any, str]], width: float, nbars: int) -> str:
    """Draw one modality's bars at x position ``gi`` (light: clean, solid: attacked, with the
    attack success rate above); returns its tick label (modality, budget, metric)."""
    present = sorted({label_of[id(r)] for r in recs})
    offset = gi - len(present) * width + width / 2
    for si, label in enumerate(present):
        rs = [r for r in recs if label_of[id(r)] == label]
        clean_v = mean_or_none([v for r in rs if (v := metric_value(r, "clean", key)) is not None])
        adv_v = mean_or_none([v for r in rs if (v := metric_value(r, "attacked", key)) is not None])
        asr = mean_or_none([v for r in rs if (v := asr_value(r, key)) is not None])
        x = offset + 2 * si * width
        c, hatch = style[label]
        if clean_v is not None:
            ax.bar(x, clean_v, width, color=c, alpha=0.35, edgecolor=c, linewidth=1)
        if adv_v is not None:
            ax.bar(x + width, adv_v, width, color=c, edgecolor="black", linewidth=0.5, hatch=hatch)
            if asr is not None:
                ax.text(x + width, adv_v + 0.015, f"{asr:.0%}", ha="center", va="bottom", fontsize=7,
                        rotation=90 if nbars > 6 else 0)
    fmt, _ = eps_formatter(m, (recs[0].attack or {}).get("norm"))
    budget = budget_text(recs[0], fmt)
    return m + (f"\n{budget}" if budget else "") + f"\n({metric_label(key, m)})"
