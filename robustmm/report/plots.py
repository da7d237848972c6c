"""Figures from result records and from single examples (matplotlib, headless).

Every function writes the same figure twice -- ``.png`` (150 dpi) and ``.svg`` -- each through a
temp file in the target folder and ``os.replace``, and returns the paths it wrote. Nothing here
touches ``matplotlib.pyplot`` or the global backend: figures are plain
:class:`matplotlib.figure.Figure` objects rendered by the Agg / SVG canvases, so importing this
module never changes an interactive session and works without a display.

From result records (``robustmm.result/1``):

* :func:`plot_robustness_curves` -- metric vs budget eps, one panel per (modality, attack).
* :func:`plot_attack_bars` -- clean vs attacked bars with the attack success rate, per attack.
* :func:`plot_calibration` -- bare vs calibrated encoder, clean and under both threat models.
* :func:`write_all_plots` -- the three above into one folder (what ``robustmm report`` calls).

From examples: :func:`plot_gallery` (image grids), :func:`plot_spectrograms` (audio),
:func:`plot_pointcloud` (3-D points). Malformed records are skipped with a warning, never fatal;
empty input returns ``[]``.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import tempfile
import textwrap
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..modalities import MODALITIES
from ..records import Result
from .tables import LOSS_NAMES

log = logging.getLogger(__name__)

__all__ = [
    "CURVE_ATTACKS", "amplified_perturbation", "plot_attack_bars", "plot_calibration", "plot_gallery",
    "plot_pointcloud", "plot_robustness_curves", "plot_spectrograms", "write_all_plots",
]

#: attacks whose results form robustness curves over a budget eps (norm-bounded, iterative)
CURVE_ATTACKS: frozenset[str] = frozenset({"pgd", "torchattacks", "sga", "fgsm", "apgd", "autoattack"})

DPI = 150
FORMATS = ("png", "svg")
_IMAGE_SUFFIXES = {".png", ".svg", ".pdf", ".jpg", ".jpeg"}
_RETRIEVAL_KEYS = ("t2x_R@1", "x2t_R@1", "t2x_MRR")
_THREAT_STYLE = {  # linestyle, marker
    "white-box": ("-", "o"), "clean": ("-", "o"), "transfer": ("--", "D"),
    "head-unaware": ("--", "s"), "adaptive": (":", "^"),
}
_NORMS = {"linf": "L∞", "l2": "L2", "l1": "L1", "l0": "L0"}


# ----------------------------------------------------------------------------- helpers


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _stem(out_path: str | Path) -> Path:
    p = Path(out_path)
    return p.with_suffix("") if p.suffix.lower() in _IMAGE_SUFFIXES else p


def _save(fig: Any, stem: str | Path) -> list[Path]:
    """Write ``fig`` as ``stem.png`` and ``stem.svg`` atomically; return both paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    # lay out once, then freeze the layout and crop box: every format reuses them (one draw each)
    canvas = FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    bbox = fig.get_tightbbox(canvas.get_renderer()).padded(0.1)
    fig.set_layout_engine("none")
    written = []
    for ext in FORMATS:
        path = stem.parent / f"{stem.name}.{ext}"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            fig.savefig(tmp, format=ext, dpi=DPI, bbox_inches=bbox, facecolor="white")
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        written.append(path)
    log.info("wrote %s.{%s}", stem, ",".join(FORMATS))
    return written


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_") or "attack"


def _as_results(results: Iterable[Any] | None) -> list[Result]:
    """Keep well-formed records (Result or dict); log and drop the rest."""
    out: list[Result] = []
    for i, r in enumerate(results or []):
        try:
            if isinstance(r, dict):
                r = Result.from_dict(r)
            if not isinstance(r, Result):
                raise TypeError(f"not a Result: {type(r).__name__}")
            if not isinstance(r.metrics, dict) or not isinstance(r.metrics.get("clean"), dict):
                raise ValueError("metrics.clean missing")
            if not isinstance(r.modality, str) or not isinstance(r.model, dict):
                raise ValueError("modality/model missing")
        except Exception as e:  # noqa: BLE001 - one bad record must not sink the report
            log.warning("plots: skipping malformed result #%d (%s)", i, e)
            continue
        out.append(r)
    return out


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _metric(r: Result, part: str, key: str) -> float | None:
    block = r.metrics.get(part)
    return _num(block.get(key)) if isinstance(block, dict) else None


def _asr(r: Result, key: str) -> float | None:
    detail = r.metrics.get("asr_detail")
    if isinstance(detail, dict) and _num(detail.get(key)) is not None:
        return _num(detail.get(key))
    return _num(r.metrics.get("asr"))


def _eps(r: Result) -> float | None:
    return _num((r.attack or {}).get("eps")) if isinstance(r.attack, dict) else None


def _defense_label(r: Result) -> str:
    d = r.defense
    if not isinstance(d, dict) or not d.get("name"):
        return ""
    return str(d["name"]) + (f":{d['objective']}" if d.get("objective") else "")


def _model_name(r: Result) -> str:
    return str(r.model.get("name") or "?")


def _series_label(r: Result) -> str:
    """``tinybind``, ``tinybind + calibration:ce (head-unaware)``, ``a (transfer from b)``."""
    label = _model_name(r)
    defense = _defense_label(r)
    if defense:
        label += f" + {defense}"
    src = r.model.get("source")
    if r.threat == "transfer" or (isinstance(src, dict) and src.get("name") and r.threat != "head-unaware"):
        name = src.get("name") if isinstance(src, dict) else None
        label += f" (transfer from {name})" if name else " (transfer)"
    elif r.threat not in ("white-box", "clean") or defense:
        label += f" ({r.threat})"
    return label


def _colour_key(r: Result) -> str:
    src = r.model.get("source")
    src_name = src.get("name") if isinstance(src, dict) and r.threat == "transfer" else ""
    return f"{_model_name(r)}|{_defense_label(r)}|{src_name}"


def _attack_key(r: Result) -> tuple[str, str]:
    """(name, display label) of an attack: ``("pgd|linf", "PGD, L∞")``."""
    a = r.attack or {}
    name = str(a.get("name", "?"))
    sub = a.get("attack_name")
    norm = a.get("norm")
    key = "|".join(str(x) for x in (name, sub or "", norm or ""))
    label = name.upper() if name in ("pgd", "sga", "fgsm", "apgd") else name
    if sub:
        label += f":{sub}"
    if norm:
        label += f", {_NORMS.get(str(norm), str(norm))}"
    return key, label


def _modality_order(m: str) -> tuple[int, str]:
    names = list(MODALITIES)
    return (names.index(m) if m in names else len(names), m)


def _eps_formatter(modality: str, norm: Any) -> tuple[Callable[[float], str], str]:
    """Tick formatter and axis label for a modality's budget (its own unit when norms match)."""
    spec = MODALITIES.get(modality)
    if spec is not None and (norm is None or norm == spec.norm):
        return spec.format_eps, f"budget ε ({spec.eps_unit})"
    return (lambda e: f"{e:g}"), f"budget ε ({_NORMS.get(str(norm), norm)} norm, raw input units)"


def _metric_label(key: str, modality: str) -> str:
    return {
        "zeroshot_top1": "zero-shot top-1 accuracy",
        "t2x_R@1": f"text→{modality} R@1",
        "x2t_R@1": f"{modality}→text R@1",
        "t2x_MRR": f"text→{modality} MRR",
    }.get(key, key)


_NOT_VARIANTS = {"eps", "seed", "name", "step_size"}  # budget is the x-axis; seeds are averaged


def _variant_labels(slots: Iterable[Sequence[Result]]) -> dict[int, str]:
    """Series label per record (by ``id``), extended by the scalar attack parameters that differ
    between records which would otherwise land on the same point (e.g. ``steps=10`` vs ``100``),
    so different attacks are never silently averaged; repeated seeds are averaged."""
    slots = [list(s) for s in slots]
    varying: set[str] = set()
    for rs in slots:
        if len(rs) < 2:
            continue
        keys = set().union(*((r.attack or {}).keys() for r in rs)) - _NOT_VARIANTS
        varying |= {k for k in keys if len({repr((r.attack or {}).get(k)) for r in rs}) > 1
                    and all(isinstance((r.attack or {}).get(k), (str, int, float, type(None))) for r in rs)}
    out = {}
    for rs in slots:
        for r in rs:
            suffix = ", ".join(_variant_text(k, (r.attack or {}).get(k)) for k in sorted(varying)
                               if (r.attack or {}).get(k) is not None)
            out[id(r)] = _series_label(r) + (f" [{suffix}]" if suffix else "")
    return out


def _variant_text(key: str, value: Any) -> str:
    """How one differing attack setting reads in a legend (``caption loss``, ``nested sweep``)."""
    if key == "loss":
        return LOSS_NAMES.get(str(value), f"{value} loss")
    if key == "nested":
        return "nested sweep" if value else "every item attacked"
    return f"{key}={value}"


def _palette(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(max(n, 1))]


def _colour_map(results: Sequence[Result]) -> dict[str, Any]:
    """One colour per (model, defense, transfer source) over all attacked results, so a series
    keeps its colour in every figure drawn from the same result list."""
    keys = sorted({_colour_key(r) for r in results if isinstance(r.attack, dict) and r.threat != "clean"})
    return dict(zip(keys, _palette(len(keys))))


def _budget_text(r: Result, fmt: Callable[[float], str]) -> str:
    """``ε = 4/255`` for norm-bounded attacks, ``area = 0.05`` for patches, else ''."""
    a = r.attack or {}
    if _eps(r) is not None:
        return f"ε = {fmt(_eps(r))}"  # type: ignore[arg-type]
    for k in ("area", "max_insertions", "n_attributes"):
        if _num(a.get(k)) is not None:
            return f"{k} = {a[k]:g}"
    return ""


def _wrap(s: str, width: int = 48) -> str:
    return "\n".join(textwrap.wrap(s, width)) or s


def _first_key(records: Sequence[Result], keys: Sequence[str], part: str = "attacked") -> str | None:
    for k in keys:
        if any(_metric(r, part, k) is not None for r in records):
            return k
    return None


def _closest(values: Iterable[float], target: float) -> float:
    return min(values, key=lambda v: (abs(math.log(v / target)) if v > 0 and target > 0 else abs(v - target), v))


def _pick_eps(records: Sequence[Result], modality: str) -> float | None:
    """The budget to show in a single-budget chart: the one nearest the modality's middle eps."""
    eps = sorted({e for r in records if (e := _eps(r)) is not None})
    if not eps:
        return None
    spec = MODALITIES.get(modality)
    return _closest(eps, spec.middle_eps) if spec is not None else eps[len(eps) // 2]


def _mean(xs: Sequence[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


# ----------------------------------------------------------------------------- 1. robustness curves


def _is_curve(r: Result) -> bool:
    a = r.attack
    return isinstance(a, dict) and a.get("name") in CURVE_ATTACKS and _eps(r) is not None and r.threat != "clean"


def plot_robustness_curves(results: Sequence[Result], out_dir: str | Path) -> list[Path]:
    """Robustness curves (metric vs eps) from the norm-bounded attack results in ``results``.

    Writes ``robustness_top1`` (zero-shot top-1) and ``robustness_r1`` (text->X R@1, else X->text
    R@1, else text->X MRR), each ``.png`` + ``.svg``. One panel per (modality, attack, norm) with
    the modality's own budget unit on x (budgets evenly spaced, eps = 0 is the clean score, taken
    from a ``threat="clean"`` record of the same model/modality/defense when there is one, else
    from the attacked records' own clean metrics); one line per (model, defense, threat).
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
    specs = (
        ("robustness_top1", ("zeroshot_top1",), "zero-shot top-1 accuracy", ""),
        ("robustness_r1", _RETRIEVAL_KEYS, "retrieval R@1 (MRR where R@1 is absent)",
         "R@1 under an attack on the zero-shot loss is a side effect, and a nested sweep keeps each item's"
         " first successful example, so such curves can stay flat; SGA and caption-loss PGD attack retrieval itself"),
    )
    for fname, keys, what, note in specs:
        fig = _curve_figure(curve, cleans, keys, what, colours, note)
        if fig is None:
            log.info("plot_robustness_curves: no %s in the results; skipping %s", what, fname)
            continue
        written += _save(fig, out_dir / fname)
    return written


def _curve_figure(curve: list[Result], cleans: list[Result], keys: Sequence[str], what: str,
                  colours: dict[str, Any], note: str = "") -> Any:
    from matplotlib.lines import Line2D

    panels: dict[tuple[str, str], list[Result]] = defaultdict(list)
    attack_labels: dict[str, str] = {}
    for r in curve:
        akey, alabel = _attack_key(r)
        attack_labels[akey] = alabel
        panels[(r.modality, akey)].append(r)
    order = sorted(panels, key=lambda k: (_modality_order(k[0]), k[1]))
    drawn = []
    for pk in order:
        key = _first_key(panels[pk], keys)
        if key is not None:
            drawn.append((pk, key))
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
        norm = (recs[0].attack or {}).get("norm")
        fmt, xlabel = _eps_formatter(modality, norm)
        series: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
        own_clean: dict[str, list[float]] = defaultdict(list)
        meta: dict[str, Result] = {}
        usable = []
        for r in recs:
            if _metric(r, "attacked", key) is None:
                log.warning("plots: %s/%s result at eps=%s has no attacked %s; skipped",
                            _model_name(r), modality, _eps(r), key)
            else:
                usable.append(r)
        slots: dict[tuple[str, float | None], list[Result]] = defaultdict(list)
        for r in usable:
            slots[(_series_label(r), _eps(r))].append(r)
        label_of = _variant_labels(slots.values())
        for r in usable:
            v = _metric(r, "attacked", key)
            label = label_of[id(r)]
            meta.setdefault(label, r)
            series[label][_eps(r)].append(v)  # type: ignore[index]
            if (c := _metric(r, "clean", key)) is not None:
                own_clean[label].append(c)
        eps_all = sorted({0.0, *(e for s in series.values() for e in s)})
        pos = {e: i for i, e in enumerate(eps_all)}
        for label in sorted(series):
            r0 = meta[label]
            match = [c for c in cleans if c.modality == modality and _model_name(c) == _model_name(r0)
                     and _defense_label(c) == _defense_label(r0) and _metric(c, "clean", key) is not None]
            from_clean = [v for c in match if (v := _metric(c, "clean", key)) is not None]
            # the clean point of the same items when the records carry it (a separate clean run may
            # use a bigger gallery, and retrieval scores fall with gallery size)
            clean_v = _mean(own_clean[label]) if own_clean[label] else (_mean(from_clean) if from_clean else None)
            pts = sorted((e, float(np.mean(vs))) for e, vs in series[label].items())
            if clean_v is not None and 0.0 not in series[label]:
                pts = [(0.0, clean_v), *pts]
            if label not in style_of:
                ls, marker = _THREAT_STYLE.get(r0.threat, ("-.", "v"))
                style = (colours.get(_colour_key(r0), "k"), ls, marker)
                if style in style_of.values():  # an attack variant of an existing series: new colour
                    style = (next(spare, "k"), ls, marker)
                style_of[label] = style
            colour, ls, marker = style_of[label]
            xs, ys = [pos[e] for e, _ in pts], [v for _, v in pts]
            # segments that jump over budgets this series was not run at are drawn faint and thin:
            # a reader should not read values off them
            ax.plot(xs, ys, linestyle=ls, color=colour, linewidth=1.0, alpha=0.35)
            runs: list[list[int]] = [[0]]
            for i in range(1, len(xs)):
                (runs[-1].append(i) if xs[i] == xs[i - 1] + 1 else runs.append([i]))
            for run in runs:
                ax.plot([xs[i] for i in run], [ys[i] for i in run], linestyle=ls, marker=marker, color=colour,
                        linewidth=1.8, markersize=5, alpha=0.9)
            legend.setdefault(label, Line2D([], [], linestyle=ls, marker=marker, color=colour, linewidth=1.8))
        ax.set_xticks(range(len(eps_all)))
        ticks = ["clean" if e == 0 else fmt(e) for e in eps_all]
        rotate = len(eps_all) > 6 or max(len(t) for t in ticks) > 6
        ax.set_xticklabels(ticks, rotation=30 if rotate else 0, ha="right" if rotate else "center", fontsize=8)
        ax.set_xlim(-0.3, len(eps_all) - 0.7)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(_wrap(xlabel, 44), fontsize=8.5)
        ax.set_ylabel(_metric_label(key, modality), fontsize=9)
        ax.set_title(f"{modality} — {attack_labels[akey]}", fontsize=10, fontweight="bold")
        ax.grid(True, alpha=0.3)
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"Robustness curves: {what} vs attack budget ε\n"
                 "(budgets evenly spaced on the x-axis, not to scale; “clean” = no attack on the same items)"
                 + (f"\n{_wrap(note, 120)}" if note else ""), fontsize=11)
    labels = sorted(legend)
    fig.legend([legend[k] for k in labels], labels, loc="outside lower center", ncols=min(3, len(labels)),
               fontsize=8.5, frameon=False, title="model + defense (threat model)", title_fontsize=8.5)
    return fig


# ----------------------------------------------------------------------------- 2. attack bars


def _chart_key(records: Sequence[Result]) -> str | None:
    return _first_key(records, ("zeroshot_top1", *_RETRIEVAL_KEYS))


_THREAT_HATCH = {"head-unaware": "//", "adaptive": "xx", "transfer": ".."}


def plot_attack_bars(results: Sequence[Result], out_dir: str | Path) -> list[Path]:
    """One bar chart per attack name (``attack_<name>.png``/``.svg``): clean vs attacked score.

    Groups are modalities; within a group one pair of bars (light = clean, solid = attacked) per
    model / defense / threat (e.g. white-box vs transfer). The score is zero-shot top-1, or text->X
    R@1 where a result has no zero-shot task; the attack success rate is printed above each
    attacked bar. Attacks with a budget grid are shown at the budget nearest the modality's middle
    eps (named under the group).
    """
    rs = [r for r in _as_results(results) if isinstance(r.attack, dict) and r.threat != "clean"]
    if not rs:
        log.info("plot_attack_bars: no attacked results; nothing to plot")
        return []
    colours = _colour_map(rs)
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
        written += _save(fig, Path(out_dir) / f"attack_{_safe_name(name)}")
    return written


def _bars_figure(name: str, records: list[Result], colour_of: dict[str, Any]) -> Any:
    from matplotlib.patches import Patch

    groups: list[tuple[str, str, list[Result]]] = []  # (modality, key, records)
    by_mod: dict[str, list[Result]] = defaultdict(list)
    for r in records:
        by_mod[r.modality].append(r)
    for m in sorted(by_mod, key=_modality_order):
        recs = by_mod[m]
        eps = _pick_eps(recs, m)
        if eps is not None:
            recs = [r for r in recs if _eps(r) == eps]
        key = _chart_key(recs)
        if key is None:
            continue
        recs = [r for r in recs if _metric(r, "attacked", key) is not None]
        groups.append((m, key, recs))
    if not groups:
        return None
    # series labels (model / defense / threat, plus attack params that differ within a slot)
    slot: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for m, _, recs in groups:
        for r in recs:
            slot[(m, _series_label(r))].append(r)
    label_of = _variant_labels(slot.values())
    labels = sorted(set(label_of.values()))
    first = {label_of[id(r)]: r for _, _, recs in groups for r in recs}
    style = {k: (colour_of.get(_colour_key(first[k]), "0.5"), _THREAT_HATCH.get(first[k].threat, "")) for k in labels}
    if len(set(style.values())) < len(style):  # variants of one series: fall back to one colour each
        style = {k: (c, "") for k, c in zip(labels, _palette(len(labels)))}
    nbars = max(len({label_of[id(r)] for r in recs}) for _, _, recs in groups) * 2
    width = min(0.8 / nbars, 0.3)
    fig = _figure(max(6.0, 1.0 + len(groups) * (0.35 * nbars + 0.6)), 5.0)
    ax = fig.add_subplot()
    tick_labels = []
    for gi, (m, key, recs) in enumerate(groups):
        present = sorted({label_of[id(r)] for r in recs})
        offset = gi - len(present) * width + width / 2
        for si, label in enumerate(present):
            rs = [r for r in recs if label_of[id(r)] == label]
            clean_v = _mean([v for r in rs if (v := _metric(r, "clean", key)) is not None])
            adv_v = _mean([v for r in rs if (v := _metric(r, "attacked", key)) is not None])
            asr = _mean([v for r in rs if (v := _asr(r, key)) is not None])
            x = offset + 2 * si * width
            c, hatch = style[label]
            if clean_v is not None:
                ax.bar(x, clean_v, width, color=c, alpha=0.35, edgecolor=c, linewidth=1)
            if adv_v is not None:
                ax.bar(x + width, adv_v, width, color=c, edgecolor="black", linewidth=0.5, hatch=hatch)
                if asr is not None:
                    ax.text(x + width, adv_v + 0.015, f"{asr:.0%}", ha="center", va="bottom", fontsize=7,
                            rotation=90 if nbars > 6 else 0)
        fmt, _ = _eps_formatter(m, (recs[0].attack or {}).get("norm"))
        budget = _budget_text(recs[0], fmt)
        tick = m + (f"\n{budget}" if budget else "") + f"\n({_metric_label(key, m)})"
        tick_labels.append(tick)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(tick_labels, fontsize=8)
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_ylim(0, 1.12)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("score (zero-shot top-1, or R@1 where named)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    title = f"Attack “{name}”: clean vs attacked score per modality"
    if any(_eps(r) is not None for _, _, recs in groups for r in recs):
        title += "\n(at the budget nearest each modality's middle ε)"
    ax.set_title(title, fontsize=11)
    handles = [Patch(facecolor=style[k][0], edgecolor="black", linewidth=0.5, hatch=style[k][1], label=k)
               for k in labels]
    handles += [Patch(facecolor="0.6", alpha=0.35, edgecolor="0.6", label="light bar: clean"),
                Patch(facecolor="0.6", edgecolor="black", label="solid bar: attacked"),
                Patch(facecolor="none", edgecolor="none", label="% above bar: attack success rate")]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)), fontsize=8, frameon=False)
    return fig


# ----------------------------------------------------------------------------- 3. calibration

#: (legend label, colour) of the five calibration bars, in order
_CAL_BARS = (
    ("clean, no head", "#b0b0b0"),
    ("clean, with head", "#9ecae1"),
    ("attacked, no head (white-box)", "#505050"),
    ("attacked, with head: head-unaware", "#3182bd"),
    ("attacked, with head: adaptive", "#e6550d"),
)


def _is_calibrated(r: Result) -> bool:
    return (isinstance(r.defense, dict) and r.defense.get("name") == "calibration"
            and r.threat in ("head-unaware", "adaptive"))


def plot_calibration(results: Sequence[Result], out_dir: str | Path) -> list[Path]:
    """Bare vs calibrated encoder (``calibration.png``/``.svg``), one panel per (model, objective).

    Per modality five bars: clean without head, clean with head (``metrics.clean`` of a calibrated
    result), attacked without head (``defense=None``, ``threat="white-box"``, same attack and
    budget), attacked with head under the head-unaware and the adaptive threat model. Missing
    numbers are marked "n/a".
    """
    rs = _as_results(results)
    cal = [r for r in rs if _is_calibrated(r) and isinstance(r.attack, dict)]
    if not cal:
        log.info("plot_calibration: no calibrated (head-unaware/adaptive) results; nothing to plot")
        return []
    bare = [r for r in rs if r.defense is None and r.threat == "white-box" and isinstance(r.attack, dict)]
    cleans = [r for r in rs if r.defense is None and r.threat == "clean"]
    facets: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for r in cal:
        facets[(_model_name(r), str((r.defense or {}).get("objective") or "?"))].append(r)
    rows = []
    for (model, objective), recs in sorted(facets.items()):
        groups = []
        for m in sorted({r.modality for r in recs}, key=_modality_order):
            mrecs = [r for r in recs if r.modality == m]
            eps = _pick_eps(mrecs, m)
            if eps is not None:
                mrecs = [r for r in mrecs if _eps(r) == eps]
            akey = _attack_key(mrecs[0])[0]
            key = _chart_key(mrecs)
            if key is None:
                continue
            base = [r for r in bare if r.modality == m and _model_name(r) == model and _attack_key(r)[0] == akey
                    and (eps is None or _eps(r) == eps)]
            base_clean = [r for r in cleans if r.modality == m and _model_name(r) == model]
            ha = [r for r in mrecs if r.threat == "head-unaware"]
            ad = [r for r in mrecs if r.threat == "adaptive"]
            clean_nohead = _mean([v for r in base if (v := _metric(r, "clean", key)) is not None])
            if clean_nohead is None:
                clean_nohead = _mean([v for r in base_clean if (v := _metric(r, "clean", key)) is not None])
            values = [
                clean_nohead,
                _mean([v for r in mrecs if (v := _metric(r, "clean", key)) is not None]),
                _mean([v for r in base if (v := _metric(r, "attacked", key)) is not None]),
                _mean([v for r in ha if (v := _metric(r, "attacked", key)) is not None]),
                _mean([v for r in ad if (v := _metric(r, "attacked", key)) is not None]),
            ]
            fmt, _ = _eps_formatter(m, (mrecs[0].attack or {}).get("norm"))
            alabel = _attack_key(mrecs[0])[1]
            tick = f"{m}\n{alabel}" + (f" ε = {fmt(eps)}" if eps is not None else "") + f"\n({_metric_label(key, m)})"
            groups.append((m, tick, values))
        if groups:
            rows.append((model, objective, groups))
    if not rows:
        log.info("plot_calibration: calibrated results carry no plottable metric")
        return []
    return _save(_calibration_figure(rows), Path(out_dir) / "calibration")


def _calibration_figure(rows: list[tuple[str, str, list[tuple[str, str, list[float | None]]]]]) -> Any:
    from matplotlib.patches import Patch

    # every facet puts a modality at the same x position, so facets can be compared by eye
    mods = sorted({m for _, _, groups in rows for m, _, _ in groups}, key=_modality_order)
    fig = _figure(max(7.0, 1.2 + len(mods) * 2.3), 3.9 * len(rows) + 1.3)
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
    fig.suptitle("Calibration heads: clean and robust score without vs with the head\n"
                 "head-unaware = attack crafted on the bare encoder, scored with the head\n"
                 "adaptive = the attacker also differentiates through the head", fontsize=10)
    handles = [Patch(facecolor=c, edgecolor="black", linewidth=0.4, label=lbl) for lbl, c in _CAL_BARS]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return fig


# ----------------------------------------------------------------------------- 4. gallery


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def amplified_perturbation(clean: Any, adversarial: Any, gain: float | None = None) -> np.ndarray:
    """``0.5 + gain * (adversarial - clean)`` clipped to [0, 1], for showing a perturbation.

    ``gain`` defaults to the factor that maps the largest |delta| to 0.5 (full contrast); grey is
    "unchanged". Works on any (C, H, W) pair; returns a numpy array.
    """
    delta = _to_numpy(adversarial) - _to_numpy(clean)
    if gain is None:
        peak = float(np.abs(delta).max()) if delta.size else 0.0
        gain = 0.5 / peak if peak > 0 else 1.0
    return np.clip(0.5 + gain * delta, 0.0, 1.0)


def _image_array(img: Any) -> tuple[np.ndarray, str | None]:
    """(H, W, 3) or (H, W) array in [0, 1], upscaled (nearest neighbour) to >= 192 px."""
    a = _to_numpy(img)
    if a.ndim == 4:  # video (T, C, H, W): the middle frame
        a = a[a.shape[0] // 2]
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)
    elif a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] in (1, 3) and a.shape[0] != a.shape[-1]:
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    if a.ndim not in (2, 3):
        raise ValueError(f"cannot show an array of shape {a.shape} as an image")
    a = np.clip(a, 0.0, 1.0)
    k = max(1, math.ceil(192 / max(a.shape[0], a.shape[1])))
    if k > 1:
        a = a.repeat(k, axis=0).repeat(k, axis=1)
    return a, ("gray" if a.ndim == 2 else None)


def plot_gallery(rows: Sequence[Sequence[dict[str, Any] | None]], columns: Sequence[str],
                 out_path: str | Path) -> list[Path]:
    """A grid of examples: one row per item, one column per variant (e.g. clean / adversarial / patched).

    Each cell is ``{"image": Tensor (3,H,W) | (1,H,W) | (H,W) in [0, 1], "title": str,
    "caption": str}`` or ``None`` (left empty). The first cell's title labels the row; a cell
    title that differs from it is shown above its caption. Captions with ✓ are drawn green, with ✗
    red. Small images are upscaled nearest-neighbour, so pixels stay sharp in PNG and SVG. Show a
    perturbation by passing e.g. :func:`amplified_perturbation` as a cell image.
    """
    rows = [list(r) for r in (rows or []) if r]
    if not rows:
        log.info("plot_gallery: no examples; nothing to plot")
        return []
    ncols = max(len(columns), max(len(r) for r in rows))
    cols = [*columns, *([""] * (ncols - len(columns)))]
    fig = _figure(2.3 * ncols + 0.6, 2.75 * len(rows) + 0.3)
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for i, row in enumerate(rows):
        row_title = str((row[0] or {}).get("title", "")) if row else ""
        for j in range(ncols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            cell = row[j] if j < len(row) else None
            if i == 0 and cols[j]:
                ax.set_title(cols[j], fontsize=11, fontweight="bold")
            if j == 0 and row_title:
                ax.set_ylabel(_wrap(row_title, 24), fontsize=9)
            if not cell or cell.get("image") is None:
                for s in ax.spines.values():
                    s.set_visible(False)
                continue
            try:
                arr, cmap = _image_array(cell["image"])
            except Exception as e:  # noqa: BLE001
                log.warning("plot_gallery: cell (%d, %d) not drawable: %s", i, j, e)
                ax.text(0.5, 0.5, "not an image", ha="center", va="center", transform=ax.transAxes, fontsize=8)
                continue
            ax.imshow(arr, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            caption = str(cell.get("caption", "") or "")
            title = str(cell.get("title", "") or "")
            text = "\n".join(t for t in (title if title != row_title else "", _wrap(caption, 30)) if t)
            colour = "#1a7f37" if "✓" in caption else "#c0392b" if "✗" in caption else "black"
            ax.set_xlabel(text, fontsize=8.5, color=colour)
    return _save(fig, _stem(out_path))


# ----------------------------------------------------------------------------- 5. spectrograms


def _stft_db(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Magnitude in dB relative to a full-scale sine (|S| normalised by sum(window)/2)."""
    import torch

    w = torch.hann_window(n_fft)
    s = torch.stft(torch.from_numpy(x).float(), n_fft, hop_length=hop, window=w, center=True,
                   pad_mode="constant", return_complex=True).abs()
    s = s / (w.sum() / 2)
    return (20 * torch.log10(s + 1e-10)).numpy()


def plot_spectrograms(clean: Any, adversarial: Any, sample_rate: int, out_path: str | Path,
                      titles: tuple[str, str] = ("clean", "adversarial")) -> list[Path]:
    """Log-magnitude spectrograms of a clean and an adversarial waveform and of their difference.

    Three panels side by side on one colour scale (dB, 0 dB = a full-scale sine), time in seconds
    and frequency in Hz; the perturbation panel states its SNR and L-inf size. Waveforms are (L,)
    tensors or arrays (a leading singleton dimension is dropped).
    """
    c = _to_numpy(clean).reshape(-1)
    a = _to_numpy(adversarial).reshape(-1)
    if c.size == 0 or a.size == 0:
        log.info("plot_spectrograms: empty waveform; nothing to plot")
        return []
    if c.shape != a.shape:
        raise ValueError(f"clean and adversarial waveforms differ in length: {c.shape} vs {a.shape}")
    n_fft = 2 ** max(3, round(math.log2(max(sample_rate * 0.032, 8))))
    while n_fft > c.size and n_fft > 8:
        n_fft //= 2
    hop = max(1, n_fft // 4)
    d = a - c
    specs = [_stft_db(c, n_fft, hop), _stft_db(a, n_fft, hop), _stft_db(d, n_fft, hop)]
    vmax = float(max(s.max() for s in specs[:2]))
    vmin = vmax - 90.0
    dur = c.size / sample_rate
    p_sig, p_noise = float(np.mean(c ** 2)), float(np.mean(d ** 2))
    snr = "∞" if p_noise == 0 else f"{10 * math.log10(max(p_sig, 1e-20) / p_noise):.1f}"
    names = [titles[0], titles[1],
             f"perturbation ({titles[1]} − {titles[0]})\nSNR {snr} dB, L∞ = {np.abs(d).max():.3g}"]
    fig = _figure(13.5, 4.0)
    axes = fig.subplots(1, 3, sharey=True)
    im = None
    for ax, s, name in zip(axes, specs, names):
        im = ax.imshow(s, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
                       extent=(0.0, dur, 0.0, sample_rate / 2), interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("time (s)")
    axes[0].set_ylabel("frequency (Hz)")
    cb = fig.colorbar(im, ax=list(axes), shrink=0.9, pad=0.01)
    cb.set_label("level (dB, 0 dB = full-scale sine)")
    fig.suptitle(f"Log-magnitude spectrograms ({sample_rate} Hz, {n_fft}-point STFT, shared colour scale)", fontsize=11)
    return _save(fig, _stem(out_path))


# ----------------------------------------------------------------------------- 6. point clouds


def plot_pointcloud(clean: Any, adversarial: Any, out_path: str | Path, max_points: int = 4096) -> list[Path]:
    """Clean vs adversarial point cloud, plus where and how far the points moved.

    ``clean`` / ``adversarial``: (P, 6) tensors, xyz then rgb, every channel in [-1, 1]. Panels
    1-2 show the points in their own colours (rgb mapped to [0, 1]); panel 3 colours each clean
    point by its xyz displacement and draws arrows (scaled up, factor in the title) for the 40
    most displaced points. All panels share axes limits and view angle.
    """
    c = _to_numpy(clean)
    a = _to_numpy(adversarial)
    if c.size == 0 or a.size == 0:
        log.info("plot_pointcloud: empty point cloud; nothing to plot")
        return []
    if c.ndim != 2 or c.shape != a.shape or c.shape[1] < 3:
        raise ValueError(f"expected two (P, 6) point clouds of the same shape, got {c.shape} and {a.shape}")
    if c.shape[0] > max_points:
        idx = np.random.default_rng(0).choice(c.shape[0], max_points, replace=False)
        c, a = c[idx], a[idx]
    disp = a[:, :3] - c[:, :3]
    mag = np.linalg.norm(disp, axis=1)
    has_rgb = c.shape[1] >= 6
    rgb = lambda p: np.clip((p[:, 3:6] + 1) / 2, 0, 1) if has_rgb else "tab:blue"  # noqa: E731
    lo = np.minimum(c[:, :3].min(0), a[:, :3].min(0))
    hi = np.maximum(c[:, :3].max(0), a[:, :3].max(0))
    extent = float(max((hi - lo).max(), 1e-6))
    fig = _figure(15.0, 5.0)
    size = float(np.clip(6000 / c.shape[0], 2, 14))
    kw = dict(s=size, depthshade=False, linewidths=0, rasterized=True)
    axes = [fig.add_subplot(1, 3, i + 1, projection="3d") for i in range(3)]
    axes[0].scatter(c[:, 0], c[:, 1], c[:, 2], c=rgb(c), **kw)
    axes[0].set_title("clean", fontsize=10)
    axes[1].scatter(a[:, 0], a[:, 1], a[:, 2], c=rgb(a), **kw)
    colour_shift = float(np.abs(a[:, 3:6] - c[:, 3:6]).max()) if has_rgb else 0.0
    axes[1].set_title(f"adversarial\nmax |Δxyz|∞ = {np.abs(disp).max():.3g}, max |Δrgb|∞ = {colour_shift:.3g}",
                      fontsize=10)
    sc = axes[2].scatter(c[:, 0], c[:, 1], c[:, 2], c=mag, cmap="viridis", **kw)
    top = np.argsort(mag)[-40:]
    top = top[mag[top] > 0]
    gain = 0.15 * extent / float(mag.max()) if mag.max() > 0 else 1.0
    if mag.max() > 0:
        axes[2].quiver(c[top, 0], c[top, 1], c[top, 2], *(gain * disp[top].T), color="crimson",
                       linewidth=0.8, arrow_length_ratio=0.3)
    axes[2].set_title(f"displacement |Δxyz|₂ per point (mean {mag.mean():.3g})\n"
                      f"red arrows: 40 largest, drawn ×{gain:.0f}", fontsize=10)
    cb = fig.colorbar(sc, ax=axes[2], shrink=0.6, pad=0.02)
    cb.set_label("|Δxyz|₂ (coordinate units)", fontsize=8)
    cb.ax.tick_params(labelsize=8)
    for ax in axes:
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_zlim(lo[2], hi[2])
        ax.set_box_aspect(tuple(np.maximum(hi - lo, 0.05 * extent)), zoom=0.95)
        ax.view_init(elev=20, azim=-60)
        for axis, _name in zip((ax.xaxis, ax.yaxis, ax.zaxis), "xyz"):
            axis.set_major_locator(_max_n_locator(3))
            axis.set_tick_params(labelsize=7, pad=0)
        ax.set_xlabel("x", fontsize=8, labelpad=0)
        ax.set_ylabel("y", fontsize=8, labelpad=0)
        ax.set_zlabel("z", fontsize=8, labelpad=0)
    fig.suptitle("Point cloud before and after the attack (coordinate units; colours = the points' rgb channels)",
                 fontsize=11)
    return _save(fig, _stem(out_path))


def _max_n_locator(n: int) -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(n)


# ----------------------------------------------------------------------------- 7. all


def write_all_plots(results: Sequence[Result], out_dir: str | Path) -> list[Path]:
    """Robustness curves, per-attack bars and the calibration chart into ``out_dir`` (created).

    A failure in one figure is logged and the others are still written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rs = _as_results(results)
    if not rs:
        log.info("write_all_plots: no results; nothing to plot")
        return []
    written: list[Path] = []
    for fn in (plot_robustness_curves, plot_attack_bars, plot_calibration):
        try:
            written += fn(rs, out_dir)
        except Exception:  # noqa: BLE001 - a report should not die on one figure
            log.exception("write_all_plots: %s failed; continuing", fn.__name__)
    return written
