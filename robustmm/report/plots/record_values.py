"""Reading result records for the figures: well-formed records only, metric values, budgets,
series labels and colours (a series keeps its colour in every figure of one result list)."""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ...modalities import MODALITIES
from ...records import Result
from ..tables import LOSS_NAMES
from .style import NORM_LABELS, palette

log = logging.getLogger(__name__)

RETRIEVAL_KEYS = ("t2x_R@1", "x2t_R@1", "t2x_MRR")


def as_results(results: Iterable[Any] | None) -> list[Result]:
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


def as_number(v: Any) -> float | None:
    """``v`` as a finite float, or None for anything else (bools, strings, NaN, inf): figures skip missing values."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def metric_value(r: Result, part: str, key: str) -> float | None:
    """The finite number ``r.metrics[part][key]`` (``part`` is ``clean`` or ``attacked``), or None."""
    block = r.metrics.get(part)
    return as_number(block.get(key)) if isinstance(block, dict) else None


def asr_value(r: Result, key: str) -> float | None:
    """The attack success rate of ``r`` for metric ``key`` (per-metric detail first, then the overall rate), or None."""
    detail = r.metrics.get("asr_detail")
    if isinstance(detail, dict) and as_number(detail.get(key)) is not None:
        return as_number(detail.get(key))
    return as_number(r.metrics.get("asr"))


def record_eps(r: Result) -> float | None:
    """The attack budget of ``r``, or None when the record has no numeric eps."""
    return as_number((r.attack or {}).get("eps")) if isinstance(r.attack, dict) else None


def defense_label(r: Result) -> str:
    """``name`` or ``name:objective`` of the record's defense; empty for the bare encoder."""
    d = r.defense
    if not isinstance(d, dict) or not d.get("name"):
        return ""
    return str(d["name"]) + (f":{d['objective']}" if d.get("objective") else "")


def model_name(r: Result) -> str:
    """The record's model name (``?`` when it has none)."""
    return str(r.model.get("name") or "?")


def series_label(r: Result) -> str:
    """``tinybind``, ``tinybind + calibration:ce (head-unaware)``, ``a (transfer from b)``."""
    label = model_name(r)
    defense = defense_label(r)
    if defense:
        label += f" + {defense}"
    src = r.model.get("source")
    if r.threat == "transfer" or (isinstance(src, dict) and src.get("name") and r.threat != "head-unaware"):
        name = src.get("name") if isinstance(src, dict) else None
        label += f" (transfer from {name})" if name else " (transfer)"
    elif r.threat not in ("white-box", "clean") or defense:
        label += f" ({r.threat})"
    return label


def colour_key(r: Result) -> str:
    """What keeps one colour across figures: model, defense and (for transfer) source model."""
    src = r.model.get("source")
    src_name = src.get("name") if isinstance(src, dict) and r.threat == "transfer" else ""
    return f"{model_name(r)}|{defense_label(r)}|{src_name}"


def attack_key(r: Result) -> tuple[str, str]:
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
        label += f", {NORM_LABELS.get(str(norm), str(norm))}"
    return key, label


_NOT_VARIANTS = {"eps", "seed", "name", "step_size"}  # budget is the x-axis; seeds are averaged


def variant_labels(slots: Iterable[Sequence[Result]]) -> dict[int, str]:
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
            out[id(r)] = series_label(r) + (f" [{suffix}]" if suffix else "")
    return out


def _variant_text(key: str, value: Any) -> str:
    """How one differing attack setting reads in a legend (``caption loss``, ``nested sweep``)."""
    if key == "loss":
        return LOSS_NAMES.get(str(value), f"{value} loss")
    if key == "nested":
        return "nested sweep" if value else "every item attacked"
    return f"{key}={value}"


def colour_map(results: Sequence[Result]) -> dict[str, Any]:
    """One colour per (model, defense, transfer source) over all attacked results, so a series
    keeps its colour in every figure drawn from the same result list."""
    keys = sorted({colour_key(r) for r in results if isinstance(r.attack, dict) and r.threat != "clean"})
    return dict(zip(keys, palette(len(keys))))


def budget_text(r: Result, fmt: Callable[[float], str]) -> str:
    """``ε = 4/255`` for norm-bounded attacks, ``area = 0.05`` for patches, else ''."""
    a = r.attack or {}
    if record_eps(r) is not None:
        return f"ε = {fmt(record_eps(r))}"  # type: ignore[arg-type]
    for k in ("area", "max_insertions", "n_attributes"):
        if as_number(a.get(k)) is not None:
            return f"{k} = {a[k]:g}"
    return ""


def first_key(records: Sequence[Result], keys: Sequence[str], part: str = "attacked") -> str | None:
    """The first of ``keys`` that some record has a number for in ``metrics[part]``, or None."""
    for k in keys:
        if any(metric_value(r, part, k) is not None for r in records):
            return k
    return None


def chart_key(records: Sequence[Result]) -> str | None:
    """The metric a chart shows: zero-shot top-1 when present, else the first retrieval metric present."""
    return first_key(records, ("zeroshot_top1", *RETRIEVAL_KEYS))


def _closest(values: Iterable[float], target: float) -> float:
    return min(values, key=lambda v: (abs(math.log(v / target)) if v > 0 and target > 0 else abs(v - target), v))


def pick_eps(records: Sequence[Result], modality: str) -> float | None:
    """The budget to show in a single-budget chart: the one nearest the modality's middle eps."""
    eps = sorted({e for r in records if (e := record_eps(r)) is not None})
    if not eps:
        return None
    spec = MODALITIES.get(modality)
    return _closest(eps, spec.middle_eps) if spec is not None else eps[len(eps) // 2]


def mean_or_none(xs: Sequence[float]) -> float | None:
    """The mean of ``xs``, or None for an empty list."""
    return float(np.mean(xs)) if xs else None


def data_text(rs: Sequence[Result]) -> str:
    """``tinybind on synthscenes/test`` (every model and dataset the records name), for titles."""
    models = sorted({str((r.model or {}).get("name", "?")) for r in rs})
    data = sorted({f"{(r.dataset or {}).get('name', '?')}/{(r.dataset or {}).get('split', '?')}" for r in rs})
    return f"{', '.join(models)} on {', '.join(data)}"


def items_text(rs: Sequence[Result]) -> str:
    """``n = 64``, or ``n = 12–64`` when the records attacked different numbers of items."""
    ns = sorted({r.n for r in rs})
    return "n = ?" if not ns else f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]}"
