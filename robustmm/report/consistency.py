"""Whether a report's numbers agree with each other: what every job checks before it ends.

Two rules, each a list of one-line problems (empty = consistent):

* :func:`headline_problems`: for every (model, modality, eps, defense) cell, the number the report
  headlines (the per-item worst case, or the PGD curve when no worst case was run) must not
  exceed the robust score of any attack reported for the same cell. A headline above some attack
  is a claim of robustness the report itself refutes.
* :func:`certificate_problems`: no certified number may be reported at a radius the Monte Carlo
  budget cannot reach (:func:`radius_reach`); such a number is 0 by construction.

:func:`check_consistency` runs both; :func:`consistency_section` is its part of report.md.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import RobustMMError
from ..evaluation.certification.reach import is_reachable, max_certified_radius
from ..records import Result, headline_score

#: slack for float round-off when comparing two fractions of the same items
TOLERANCE = 1e-9


def radius_reach(r: Result) -> tuple[float | None, set[str]]:
    """(largest certifiable radius, keys of the reported radii beyond it) of a certified record.

    Records that do not carry ``max_radius`` get it computed from their sigma, n and alpha; the
    radius is None (and nothing is marked) when those are missing too."""
    cert = (r.metrics or {}).get("certified") or {}
    top = cert.get("max_radius")
    if top is None:
        d = r.defense or {}
        try:
            top = max_certified_radius(float(d["sigma"]), int(d["n"]), float(d["alpha"]))
        except (KeyError, TypeError, ValueError, RobustMMError):  # a malformed record marks nothing
            return None, set()
    keys = set(cert.get("top1") or {}) | set(cert.get("x2t_R@1") or {})
    beyond = set(cert.get("unreachable") or [])
    for k in keys:
        try:
            if not is_reachable(float(k), float(top)):
                beyond.add(k)
        except ValueError:
            continue
    return float(top), beyond


@dataclass(frozen=True)
class Problem:
    """One inconsistency: which rule, and a line saying where and by how much."""

    rule: str  # "headline" or "certificate"
    message: str


def _eps_key(r: Result) -> float | None:
    eps = (r.attack or {}).get("eps")
    return round(float(eps), 12) if isinstance(eps, (int, float)) else None


def cell_of(r: Result) -> tuple[Any, ...] | None:
    """The (model, dataset, split, modality, eps, defense) cell a record reports a number for, or None
    when it reports none at an input budget (clean, certified, patch and caption-editing attacks)."""
    eps = _eps_key(r)
    if eps is None or r.threat in ("clean", "certified") or headline_score((r.metrics or {}).get("attacked")) is None:
        return None
    if (r.metrics or {}).get("caption_edits") is not None or (r.attack or {}).get("name") in ("sga", "xmai"):
        return None  # caption edits change the task, not the input within eps
    d = r.defense
    defense = None if d is None else tuple(sorted((k, str(v)) for k, v in d.items() if k in ("name", "objective",
                                                                                             "clean_only", "quality",
                                                                                             "bits", "sigma")))
    return ((r.model or {}).get("name"), (r.dataset or {}).get("name"), (r.dataset or {}).get("split"), r.modality, eps,
            defense)


def is_worst_curve(r: Result) -> bool:
    """A point of a per-item worst-case curve (the ``[worst_curves]`` cell)."""
    return r.threat == "worst-case" and (r.attack or {}).get("name") == "worst-case"


def is_pgd_curve(r: Result) -> bool:
    """A point of the job's nested PGD robustness curve (zero-shot loss, bare model)."""
    a = r.attack or {}
    return a.get("name") == "pgd" and bool(a.get("nested")) and r.defense is None and r.threat == "white-box"


def headlines(results: Sequence[Result]) -> dict[tuple[Any, ...], Result]:
    """The record the report headlines for each cell: its per-item worst case when one was run (a
    worst-case curve, or the worst case over threats of a defended cell), else its nested PGD curve."""
    out: dict[tuple[Any, ...], Result] = {}
    for rank in (is_pgd_curve, lambda r: r.threat == "worst-case"):  # later ranks win
        for r in results:
            cell = cell_of(r)
            if cell is not None and rank(r):
                out[cell] = r
    return out


def _on_items(headline: Result, n: int) -> float | None:
    """The headline's score on its first ``n`` items when it keeps per-item verdicts, else None."""
    robust = (headline.extra or {}).get("robust")
    if isinstance(robust, list) and 0 < n <= len(robust):
        return sum(robust[:n]) / n
    return None


def _what(r: Result) -> str:
    a = r.attack or {}
    name = str(a.get("name"))
    steps = a.get("steps")
    return f"{name}{'-' + str(steps) if steps else ''} ({r.threat}, n={r.n})"


def headline_problems(results: Sequence[Result]) -> list[Problem]:
    """Every cell whose headline number exceeds the robust score of an attack reported for it.

    Scores are compared on the same items: a headline that keeps per-item verdicts
    (``extra.robust``) is cut to the attack's first ``n`` items (the job attacks the first items of
    one split everywhere), otherwise the two numbers are compared as they stand."""
    heads = headlines(results)
    problems = []
    for r in results:
        cell = cell_of(r)
        head = heads.get(cell) if cell is not None else None
        if head is None or head is r:
            continue
        score = headline_score(r.metrics.get("attacked"))
        on_items = _on_items(head, r.n)
        shown = headline_score(head.metrics.get("attacked")) if on_items is None else on_items
        if shown is not None and score is not None and shown > score + TOLERANCE:
            model, _, _, modality, eps, defense = cell
            where = f"{model} {modality} eps={eps:g}" + ("" if defense is None else f" {dict(defense).get('name')}")
            items = "" if on_items is None else f" on the same {r.n} items"
            problems.append(Problem("headline", f"{where}: headline {_what(head)} {shown:.3f} > {_what(r)} {score:.3f}{items}"))
    return problems


def certificate_problems(results: Sequence[Result]) -> list[Problem]:
    """Every certified number reported at a radius its record's Monte Carlo budget cannot reach."""
    problems = []
    for r in results:
        if r.threat != "certified" or not isinstance((r.metrics or {}).get("certified"), dict):
            continue
        top, beyond = radius_reach(r)
        cert = r.metrics["certified"]
        for metric in ("top1", "x2t_R@1"):
            for k, v in (cert.get(metric) or {}).items():
                if k in beyond and v is not None:
                    d = r.defense or {}
                    problems.append(Problem("certificate", f"{r.modality} sigma={d.get('sigma')} n={d.get('n')}: certified "
                                                           f"{metric} {v:.3f} at radius {k} > max radius {top:.4g}"))
    return problems


def check_consistency(results: Sequence[Result]) -> list[Problem]:
    """Both rules over every record (checks records and others without numbers are ignored)."""
    return headline_problems(results) + certificate_problems(results)


def consistency_section(results: Sequence[Result]) -> list[str]:
    """The report's verdict: passed, or every problem found."""
    problems = check_consistency(results)
    lines = ["## Consistency check", "",
             "For every (model, modality, eps, defense) cell the headline number (the per-item worst case where it was"
             " run, else the PGD curve) must not exceed the robust score of any attack reported for that cell, on the"
             " same items; and no certified number may be reported at a radius its Monte Carlo budget cannot reach.", ""]
    if not problems:
        return lines + ["**Passed.**", ""]
    return lines + [f"**FAILED: {len(problems)} problem(s).** The headline claims more robustness than the report's own"
                    " evidence allows:", ""] + [f"- {p.message}" for p in problems] + [""]
