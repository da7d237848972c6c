"""report.md's calibration table: each head's clean and robust top-1 beside the bare encoder's,
the bare number always from the same attack, budget, items and seed as the head's (see
:mod:`.baseline`); anything else is shown marked as not comparable, with what differs."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from ..records import Result
from ..records import headline_score as _top1
from .baseline import no_head_baseline
from .defense_tables import ensemble_by_model, ensemble_threat_flags, from_ensemble_cell
from .tables import eps_label, markdown_table

#: marks a "no head" number that does not come from the head's own attack settings
NOT_COMPARABLE = "†"

HEADERS = ("modality", "objective", "eps", "clean top-1", "clean-control top-1", "robust, no head",
           "robust, head-unaware", "robust, adaptive", "ensemble, no head", "ensemble, head-unaware",
           "**ensemble, adaptive**", "ensemble, worst case")

_INTRO = ("Clean top-1 without → with the head; the clean-control head has the same size but was trained on"
          " clean data only (a gain there is supervision, not robustness). Robust top-1 at the calibration budget:"
          " white-box on the bare encoder, then through the head when the attacker does not see it"
          " (head-unaware) and when it differentiates through it (adaptive), first under PGD, then under the"
          " worst-case ensemble (APGD-CE, APGD-T, Square, on the ensemble's items). Each \"no head\" number comes"
          " from the same attack (settings, steps, budget, seed) on the same items as the head numbers beside it;"
          f" one marked {NOT_COMPARABLE} does not (listed under the table) and must not be compared with them."
          " **The adaptive ensemble is the defended model's robust number**; the head-unaware one beside it is the"
          " naive number, and the worst case keeps, per item, the most damaging example of both.")


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _attacked(r: Result | None) -> float | None:
    return None if r is None else _top1(r.metrics.get("attacked"))


def _baseline(results: Sequence[Result], ref: Result | None, what: str, notes: list[str],
              fallback: Result | None = None) -> tuple[Result | None, Any]:
    """The bare record beside ``ref`` and its table cell; a non-comparable one is marked and explained."""
    if ref is None:
        return fallback, _attacked(fallback)
    bare, diff = no_head_baseline(results, ref)
    if bare is None or not diff:
        return bare, _attacked(bare)
    order = "; no-head value first" if any(" vs " in d for d in diff) else ""
    notes.append(f"{what}: not comparable ({'; '.join(diff)}{order})")
    return bare, f"{_f(_attacked(bare))} {NOT_COMPARABLE}"


def calibration_section(results: Sequence[Result]) -> list[str]:
    """The "Calibration heads" section: one row per (modality, objective) of calibrated records,
    a calibrated model scored without an attack listed as "clean only"; ``[]`` without any."""
    cal = [r for r in results if r.defense and r.defense.get("name") == "calibration" and not from_ensemble_cell(r)]
    if not cal:
        return []
    by: dict[tuple[str, Any], dict[str, Result]] = defaultdict(dict)
    controls = {}
    for r in cal:
        if r.defense.get("clean_only"):
            controls[r.modality] = _top1(r.metrics["clean"])
            continue
        by[(r.modality, r.defense.get("objective"))][r.threat] = r
    ens = ensemble_by_model(results)
    ens_bare = [d["white-box"] for (_, obj), d in ens.items() if obj is None and "white-box" in d]
    rows, flags, notes = [], [], []
    for (m, obj), d in sorted(by.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        hu, ad = d.get("head-unaware"), d.get("adaptive")
        ref = hu or ad
        if ref is None:  # e.g. `robustmm eval --heads H` without an attack: nothing to compare
            c = d.get("clean") or next(iter(d.values()))
            rows.append([m, obj, "clean only", _top1(c.metrics.get("clean")), controls.get(m), *([None] * 7)])
            continue
        bare, bare_cell = _baseline(results, ref, f"{m} / {obj}, robust, no head", notes)
        head_clean = _top1(ref.metrics["clean"])
        same_items = bare is not None and bare.n == ref.n and bare.dataset == ref.dataset
        clean = f"{_f(_top1(bare.metrics['clean']))} → {_f(head_clean)}" if same_items else head_clean
        e = ens.get((m, obj), {})
        _, e_bare_cell = _baseline(ens_bare, e.get("adaptive") or e.get("head-unaware"),
                                   f"{m} / {obj}, ensemble, no head", notes, ens.get((m, None), {}).get("white-box"))
        rows.append([m, obj, eps_label(ref), clean, controls.get(m), bare_cell, _attacked(hu), _attacked(ad),
                     e_bare_cell, *(_attacked(e.get(t)) for t in ("head-unaware", "adaptive", "worst-case"))])
        flags += [f"{m} / {obj} head: {f.message()}" for f in ensemble_threat_flags(e)]
    lines = ["## Calibration heads (encoder frozen)", "", _INTRO, "", markdown_table(HEADERS, rows), ""]
    if notes:
        lines += [f"{NOT_COMPARABLE} Not from the head's attack, so not comparable with the head numbers:", ""]
        lines += [f"- {n}." for n in notes] + [""]
    if flags:
        lines += ["**Weaker threat beats a stronger one** (the stronger attack has not converged):", ""]
        lines += [f"- ⚠ {f}." for f in flags] + [""]
    return lines
