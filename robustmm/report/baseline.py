"""Like with like: the bare-encoder record a defended record is compared with.

A calibrated head's robust number is measured by one attack (name, steps, step size, loss, seed
...) at one budget on ``n`` items. The "no head" number beside it means something only when it
comes from exactly that attack on exactly those items. A nested robustness curve does not qualify
even at the same eps and steps: an item broken at a smaller budget of the grid counts as broken at
every larger one, so the curve's number is lower than one independent attack's would be.

:func:`no_head_baseline` finds the matching bare record (``white-box``, no defense) for a head's
record, or else the nearest non-comparable one together with what differs, so the report can
show it labelled as not comparable instead of silently mixing the two.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..records import Result

#: model-block keys that say how the scored model was assembled, not which backbone it is
_WRAPPING = ("heads", "source")
#: attack-block keys that record what a run did (the ensemble's per-part counts), not its settings
_OUTCOMES = ("ran",)


def _backbone(model: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (model or {}).items() if k not in _WRAPPING}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def setting_differences(bare: Result, head: Result) -> list[str]:
    """What keeps ``bare``'s attacked score from being comparable with ``head``'s: ``[]`` when both
    come from the same attack settings, budget, model backbone, items (dataset block and ``n``)
    and seed; else short phrases such as ``"nested robustness curve"`` or ``"steps 5 vs 10"``
    (the bare value first). What a run did (``ran``: the ensemble's per-part counts) is no setting."""
    out = []
    a, h = dict(bare.attack or {}), dict(head.attack or {})
    if a.pop("nested", None):
        out.append("nested robustness curve")
    h.pop("nested", None)
    for k in _OUTCOMES:
        a.pop(k, None), h.pop(k, None)
    for k in sorted(set(a) | set(h)):
        if not _same(a.get(k), h.get(k)):
            out.append(f"{k} {_short(a.get(k))} vs {_short(h.get(k))}")
    if bare.n != head.n:
        out.append(f"n {bare.n} vs {head.n}")
    if bare.seed != head.seed:
        out.append(f"seed {bare.seed} vs {head.seed}")
    if not _same(bare.dataset, head.dataset):
        out.append("other items")
    if not _same(_backbone(bare.model), _backbone(head.model)):
        out.append("other model")
    return out


def _is_bare(r: Result, head: Result) -> bool:
    return (r.defense is None and r.threat == "white-box" and r.modality == head.modality
            and bool(r.attack) and r.metrics.get("attacked") is not None)


def no_head_baseline(results: Sequence[Result], head: Result | None) -> tuple[Result | None, list[str]]:
    """The bare encoder's record to put beside ``head`` (a calibrated model's attacked record).

    Returns ``(record, [])`` for a white-box record of the bare backbone with exactly ``head``'s
    attack settings, budget, items and seed; else ``(record, differences)`` for the nearest
    non-comparable one (same modality, model name, attack name and eps; fewest differences, the
    first found among equals), which the report must label as not comparable; else
    ``(None, [])``.
    """
    if head is None or not head.attack:
        return None, []
    best: tuple[int, Result, list[str]] | None = None
    for r in results:
        if not _is_bare(r, head):
            continue
        diff = setting_differences(r, head)
        if not diff:
            return r, []
        same_kind = (r.model.get("name") == head.model.get("name") and r.attack.get("name") == head.attack.get("name")
                     and _same(r.attack.get("eps"), head.attack.get("eps")))
        if same_kind and (best is None or len(diff) < best[0]):
            best = (len(diff), r, diff)
    return (best[1], best[2]) if best else (None, [])
