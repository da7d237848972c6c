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
from .style import _NORMS, _palette

log = logging.getLogger(__name__)

_RETRIEVAL_KEYS = ("t2x_R@1", "x2t_R@1", "t2x_MRR")


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


def _first_key(records: Sequence[Result], keys: Sequence[str], part: str = "attacked") -> str | None:
    for k in keys:
        if any(_metric(r, part, k) is not None for r in records):
            return k
    return None


def _chart_key(records: Sequence[Result]) -> str | None:
    return _first_key(records, ("zeroshot_top1", *_RETRIEVAL_KEYS))


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
