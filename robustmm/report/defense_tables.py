"""report.md sections for defended models beyond calibration heads: input-transformation defenses
(naive vs adaptive) and randomized-smoothing certificates (certified vs empirical accuracy).

Each function takes every result of a report and returns Markdown lines (``[]`` when it has
nothing to show); :mod:`.markdown` puts them in the report.
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import Any

from ..records import Result
from ..records import headline_score as _top1
from .tables import eps_label, markdown_table


def is_input_defense(r: Result) -> bool:
    """Whether ``r`` scores a model behind an input transform (its defense block has ``marks``)."""
    return bool(r.defense) and "marks" in r.defense


def adaptive_label(attack: dict[str, Any] | None, sep: str = " + ", empty: str = "—") -> str:
    """How an adaptive attack adapts: ``BPDA``, ``EOT-8``, ``EOT-8 softmin`` (draws folded by
    ``-log mean exp(-loss)``, not averaged) or ``BPDA + EOT-8``; ``sep`` joins the parts."""
    a = attack or {}
    fold = f" {a['eot_reduction']}" if a.get("eot_reduction", "mean") != "mean" else ""
    parts = (["BPDA"] if a.get("bpda") else []) + ([f"EOT-{a['eot_samples']}{fold}"] if a.get("eot_samples") else [])
    return sep.join(parts) or empty


def input_defense_section(results: Sequence[Result]) -> list[str]:
    """"Input defenses: naive vs adaptive": per (modality, defense, budget) the undefended model's
    clean and robust top-1, the defended model's clean top-1, its robust top-1 under the naive
    attack and under the adaptive one (BPDA / EOT), and how far the adaptive number is from the
    undefended one."""
    groups: dict[tuple[str, str, str], dict[str, Result]] = defaultdict(dict)
    for r in results:
        if is_input_defense(r):
            block = {k: v for k, v in r.defense.items() if k != "marks"}
            groups[(r.modality, json.dumps(block, sort_keys=True), eps_label(r))][r.threat] = r
    by_setting = {(m, d): rs for (m, d, e), rs in groups.items() if e == ""}  # clean records have no eps
    rows = []
    for (m, d, eps), rs in sorted(groups.items()):
        naive, adaptive = rs.get("white-box"), rs.get("adaptive")
        if naive is None and adaptive is None:
            continue
        ref = (naive or adaptive).extra.get("undefended") or {}
        clean = by_setting.get((m, d), {}).get("clean")
        block = json.loads(d)
        settings = ", ".join(f"{k}={v}" for k, v in block.items() if k != "name")
        marks = ", ".join((naive or adaptive).defense.get("marks") or []) or "—"
        ad_v = None if adaptive is None else _top1(adaptive.metrics.get("attacked"))
        un_v = ref.get("attacked")
        gap = None if ad_v is None or un_v is None else f"{100 * (ad_v - un_v):+.1f} pts"
        rows.append([m, block.get("name") + (f" ({settings})" if settings else ""), marks, eps, ref.get("clean"),
                     None if clean is None else _top1(clean.metrics.get("clean")), un_v,
                     None if naive is None else _top1(naive.metrics.get("attacked")), ad_v,
                     adaptive_label(None if adaptive is None else adaptive.attack), gap])
    if not rows:
        return []
    n = next(iter(next(iter(groups.values())).values())).n
    return ["## Input defenses: naive vs adaptive", "",
            f"Input transformations in front of the frozen encoder, on the first {n} attacked items. The naive attack"
            " differentiates the defended model as it is (rounding and JPEG give it no useful gradient, random resizing a"
            " new model at every call), so its robust top-1 is inflated; the adaptive attack uses BPDA (identity in the"
            " backward pass) for non-differentiable steps and EOT (gradient averaged over draws) for randomized ones"
            " (Athalye et al., 2018). Undefended: the bare model under the same attack on the same items; the last"
            " column is adaptive minus undefended.", "",
            markdown_table(["modality", "defense", "marks", "eps", "clean, undefended", "clean, defended",
                            "robust, undefended", "robust, naive", "robust, adaptive", "adaptive attack",
                            "adaptive − undefended"], rows), ""]


def certification_section(results: Sequence[Result]) -> list[str]:
    """Certified top-1 (randomized smoothing, Cohen et al. 2019) at each radius, with the empirical
    SmoothAdv accuracy beside it where it was measured, per modality, sigma and base model."""
    cert = [r for r in results if r.threat == "certified" and isinstance(r.metrics.get("certified"), dict)]
    if not cert:
        return []
    from .consistency import radius_reach

    rows, any_beyond = [], False
    for r in sorted(cert, key=lambda r: (r.modality, (r.defense or {}).get("sigma", 0), _base(r))):
        c, emp = r.metrics["certified"], (r.metrics.get("empirical") or {}).get("top1") or {}
        top, beyond = radius_reach(r)
        any_beyond |= bool(beyond)
        cells = []
        for key, v in (c.get("top1") or {}).items():
            e = emp.get(key)
            shown = "n/r¹" if key in beyond or v is None else f"{v:.3f}"
            cells.append(f"{key}: {shown}" + ("" if e is None else f" / {e:.3f}"))
        d = r.defense or {}
        rows.append([r.modality, _base(r), d.get("sigma"), d.get("n"), d.get("n0"), d.get("alpha"),
                     "—" if top is None else f"{top:.4g}", r.n,
                     (r.metrics.get("clean") or {}).get("zeroshot_top1"), c.get("abstain"), "; ".join(cells),
                     (r.metrics.get("empirical") or {}).get("n_items"), _r1(c.get("x2t_R@1"), beyond)])
    note = (["¹ n/r: not reachable with this n. No certificate can exceed the largest certifiable radius"
             " sigma·Φ⁻¹(alpha^(1/n)) (column \"max radius\"), so certified accuracy there is 0 whatever the model;"
             " raise n to report it.", ""] if any_beyond else [])
    return ["## Certified robustness (randomized smoothing)", "",
            "Certified zero-shot top-1 of the smoothed classifier (Gaussian noise of std sigma in the modality's raw"
            " unit, Monte Carlo with n0 selection and n estimation draws, Clopper-Pearson bound at alpha): the fraction"
            " of items classified correctly with a certified L2 radius of at least r (r in the modality's raw unit, over"
            " the whole input tensor). After the slash: the empirical accuracy under the adaptive SmoothAdv attack at"
            " the same radius on the first \"SmoothAdv items\" items, which must never be below the certified one by"
            " more than chance. Smoothed top-1: the"
            " smoothed classifier's accuracy without abstention.", "",
            " Max radius: the largest radius any item can be certified at with n draws at alpha (`robustmm run`"
            " reports it as each row's last radius).", "",
            markdown_table(["modality", "base model", "sigma", "n", "n0", "alpha", "max radius", "items",
                            "smoothed top-1", "abstain", "certified top-1 at r (/ empirical)", "SmoothAdv items",
                            "certified x2t R@1 at r"], rows), "", *note]


def _base(r: Result) -> str:
    heads = (r.defense or {}).get("heads")
    if not heads:
        return "bare encoder"
    return f"{heads.get('objective') or '?'} head" + (" (noise-trained)" if heads.get("noise") else "")


def _r1(values: dict[str, float | None] | None, beyond: Collection[str] = ()) -> str:
    return "; ".join(f"{k}: " + ("n/r¹" if k in beyond or v is None else f"{v:.3f}")
                     for k, v in (values or {}).items()) or "—"


def from_ensemble_cell(r: Result) -> bool:
    """Whether ``r`` comes from the job's ensemble cell (the ensemble itself or one of its parts run alone)."""
    return (r.attack or {}).get("name") == "ensemble" or "ensemble_part" in (r.extra or {})


def ensemble_by_model(results: Sequence[Result]) -> dict[tuple[str, str | None], dict[str, Result]]:
    """Ensemble records by (modality, calibration objective or None for the bare model), then threat."""
    out: dict[tuple[str, str | None], dict[str, Result]] = defaultdict(dict)
    for r in results:
        if (r.attack or {}).get("name") != "ensemble" or "ensemble_part" in (r.extra or {}):
            continue
        if r.defense is None:
            out[(r.modality, None)][r.threat] = r
        elif r.defense.get("name") == "calibration" and not r.defense.get("clean_only"):
            out[(r.modality, r.defense.get("objective"))][r.threat] = r
    return out


def ensemble_threat_flags(threats: dict[str, Result]) -> list[Any]:
    """threats.py's weaker-beats-stronger flags for one head's ensemble records (head-unaware,
    adaptive, worst case); [] when it has none."""
    from ..evaluation.threats import threat_flags

    return threat_flags([threats[t] for t in ("head-unaware", "adaptive", "worst-case") if t in threats])


def _check_cell(c: dict[str, Any] | None) -> str:
    if c is None:
        return "—"
    vals = " / ".join(f"{k} {v:.2f}" for k, v in c.get("values", {}).items() if isinstance(v, (int, float)))
    return ("ok" if c.get("passed") else "**FAIL**") + f" ({vals})"


def ensemble_checks_rows(results: Sequence[Result]) -> tuple[list[list[Any]], list[str]]:
    """Rows of the ensemble-checks table (one per checked model and modality) and a flag message
    for every failed check (``Square much stronger than APGD`` is gradient masking)."""
    rows, failed = [], []
    for r in results:
        checks = (r.extra or {}).get("ensemble_checks")
        if not checks or (r.attack or {}).get("name") != "ensemble":
            continue
        model = r.model.get("name", "?") + (f" + {r.defense.get('objective')} head (adaptive)" if r.defense else "")
        by = {c["name"]: c for c in checks}
        rows.append([model, r.modality, r.n, _check_cell(by.get("ensemble no weaker than its parts")),
                     _check_cell(by.get("Square not much stronger than APGD"))])
        failed += [f"{model} / {r.modality}: {c['name']} FAILS ({c.get('detail', '')})" for c in checks if not c.get("passed")]
    return rows, failed
