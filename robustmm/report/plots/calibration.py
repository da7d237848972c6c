"""Calibration chart: bare vs calibrated encoder, clean and under both threat models."""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...records import Result
from ..baseline import no_head_baseline
from .record_values import (
    as_results,
    attack_key,
    chart_key,
    data_text,
    items_text,
    mean_or_none,
    metric_value,
    model_name,
    pick_eps,
    record_eps,
)
from .style import eps_formatter, metric_label, modality_order, new_figure, save_figure

log = logging.getLogger(__name__)

#: (legend label, colour) of the five calibration bars, in order
_CAL_BARS = (
    ("clean, no head", "#b0b0b0"),
    ("clean, with head", "#9ecae1"),
    ("attacked, no head (white-box, the heads' attack)", "#505050"),
    ("attacked, with head: head-unaware", "#3182bd"),
    ("attacked, with head: adaptive", "#e6550d"),
)


def _is_calibrated(r: Result) -> bool:
    return (isinstance(r.defense, dict) and r.defense.get("name") == "calibration"
            and r.threat in ("head-unaware", "adaptive")
            and (r.attack or {}).get("name") != "ensemble" and "ensemble_part" not in (r.extra or {}))


def _comparable_bare(results: Sequence[Result], heads: Sequence[Result]) -> list[Result]:
    """The bare records that match one of ``heads`` exactly (each at most once)."""
    out: dict[int, Result] = {}
    for h in heads:
        bare, diff = no_head_baseline(results, h)
        if bare is not None and not diff:
            out[id(bare)] = bare
    return list(out.values())


def plot_calibration(results: Sequence[Result], out_dir: str | Path) -> list[Path]:
    """Bare vs calibrated encoder (``calibration.png``/``.svg``), one panel per (model, objective).

    Per modality five bars: clean without head, clean with head (``metrics.clean`` of a calibrated
    result), attacked without head (``defense=None``, ``threat="white-box"``, exactly the heads'
    attack settings, budget, items and seed: :func:`~robustmm.report.baseline.no_head_baseline`;
    a nested curve's number is not comparable and is left out), attacked with head under the
    head-unaware and the adaptive threat model. Missing numbers are marked "n/a".
    """
    rs = as_results(results)
    cal = [r for r in rs if _is_calibrated(r) and isinstance(r.attack, dict)]
    if not cal:
        log.info("plot_calibration: no calibrated (head-unaware/adaptive) results; nothing to plot")
        return []
    cleans = [r for r in rs if r.defense is None and r.threat == "clean"]
    facets: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for r in cal:
        facets[(model_name(r), str((r.defense or {}).get("objective") or "?"))].append(r)
    rows = []
    for (model, objective), recs in sorted(facets.items()):
        groups = []
        for m in sorted({r.modality for r in recs}, key=modality_order):
            mrecs = [r for r in recs if r.modality == m]
            eps = pick_eps(mrecs, m)
            if eps is not None:
                mrecs = [r for r in mrecs if record_eps(r) == eps]
            key = chart_key(mrecs)
            if key is None:
                continue
            base = _comparable_bare(rs, mrecs)
            base_clean = [r for r in cleans if r.modality == m and model_name(r) == model]
            ha = [r for r in mrecs if r.threat == "head-unaware"]
            ad = [r for r in mrecs if r.threat == "adaptive"]
            clean_nohead = mean_or_none([v for r in base if (v := metric_value(r, "clean", key)) is not None])
            if clean_nohead is None:
                clean_nohead = mean_or_none([v for r in base_clean if (v := metric_value(r, "clean", key)) is not None])
            values = [
                clean_nohead,
                mean_or_none([v for r in mrecs if (v := metric_value(r, "clean", key)) is not None]),
                mean_or_none([v for r in base if (v := metric_value(r, "attacked", key)) is not None]),
                mean_or_none([v for r in ha if (v := metric_value(r, "attacked", key)) is not None]),
                mean_or_none([v for r in ad if (v := metric_value(r, "attacked", key)) is not None]),
            ]
            fmt, _ = eps_formatter(m, (mrecs[0].attack or {}).get("norm"))
            alabel = attack_key(mrecs[0])[1]
            tick = f"{m}\n{alabel}" + (f" ε = {fmt(eps)}" if eps is not None else "") + f"\n({metric_label(key, m)})"
            groups.append((m, tick, values))
        if groups:
            rows.append((model, objective, groups))
    if not rows:
        log.info("plot_calibration: calibrated results carry no plottable metric")
        return []
    return save_figure(_calibration_figure(rows, f"{data_text(cal)}, {items_text(cal)}"), Path(out_dir) / "calibration")


def _calibration_figure(rows: list[tuple[str, str, list[tuple[str, str, list[float | None]]]]], about: str = "") -> Any:
    from matplotlib.patches import Patch

    # every facet puts a modality at the same x position, so facets can be compared by eye
    mods = sorted({m for _, _, groups in rows for m, _, _ in groups}, key=modality_order)
    fig = new_figure(max(7.0, 1.2 + len(mods) * 2.3), 3.9 * len(rows) + 1.3)
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    width = 0.8 / len(_CAL_BARS)
    for ax, (model, objective, groups) in zip(axes, rows):
        ticks = [f"{m}\n(not run)" for m in mods]
        for m, tick, values in groups:
            gi = mods.index(m)
            ticks[gi] = tick
            for bi, ((_, colour), v) in enumerate(zip(_CAL_BARS, values)):
                x = gi - 0.4 + width * (bi + 0.5)
                if v is None:
                    ax.text(x, 0.01, "n/a", ha="center", va="bottom", fontsize=6.5, rotation=90, color="0.4")
                    continue
                ax.bar(x, v, width, color=colour, edgecolor="black", linewidth=0.4)
                ax.text(x, v + 0.012, f"{v:.2f}", ha="center", va="bottom", fontsize=6.5)
        ax.set_xticks(range(len(mods)))
        ax.set_xticklabels(ticks, fontsize=8)
        ax.set_xlim(-0.5, len(mods) - 0.5)
        ax.set_ylim(0, 1.1)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_ylabel("score (see group label)", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.set_title(f"{model}, calibration objective “{objective}”", fontsize=10, fontweight="bold")
    fig.suptitle("Calibration heads: clean and robust score without vs with the head" + (f" ({about})" if about else "") + "\n"
                 "head-unaware = attack crafted on the bare encoder, scored with the head\n"
                 "adaptive = the attacker also differentiates through the head", fontsize=10)
    handles = [Patch(facecolor=c, edgecolor="black", linewidth=0.4, label=lbl) for lbl, c in _CAL_BARS]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return fig
