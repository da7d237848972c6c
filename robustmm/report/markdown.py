"""report.md: per-modality vulnerability, attack comparison and before/after calibration tables,
with a few sentences that name the most fragile modality and the strongest attack."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from ..modalities import MODALITIES
from ..records import Result
from ..records import headline_score as _top1
from .calibration_table import calibration_section
from .check_records import is_checks, masking_flags
from .consistency import consistency_section, is_worst_curve
from .defense_tables import certification_section, ensemble_checks_rows, from_ensemble_cell, input_defense_section
from .tables import CLEAN_HEADERS, LOSS_NAMES, clean_rows, eps_label, markdown_table, passes_cell


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def curves(results: Sequence[Result]) -> dict[str, list[Result]]:
    """PGD robustness-curve results without defense, per modality, sorted by eps."""
    out: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        bare_white_box = r.defense is None and r.threat == "white-box"
        if r.attack and r.attack.get("name") == "pgd" and bare_white_box and r.attack.get("nested"):
            out[r.modality].append(r)
    return {m: sorted(rs, key=lambda r: r.attack["eps"]) for m, rs in out.items()}


def worst_curves(results: Sequence[Result]) -> dict[str, list[Result]]:
    """Per-item worst-case curve points of the bare model, per modality, sorted by eps."""
    out: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        if is_worst_curve(r) and r.defense is None:
            out[r.modality].append(r)
    return {m: sorted(rs, key=lambda r: r.attack["eps"]) for m, rs in out.items()}


def worst_case_of(rs: Sequence[Result]) -> str:
    """``PGD-10, APGD-CE-20, APGD-T-20 (3 targets) and the smaller-eps examples``: what a worst-case curve took the worst of."""
    parts = (rs[0].attack or {}).get("parts") or {}
    names = []
    for label, d in parts.items():
        steps = d.get("steps")
        targets = d.get("n_target_classes")
        names.append(f"{label.upper()}" + ("" if steps is None or label.endswith(f"-{steps}") else f"-{steps}")
                     + (f" ({targets} targets)" if targets and "apgd-t" in label else ""))
    if any("ensemble" in ((r.attack or {}).get("of") or []) for r in rs):
        names.append("the ensemble's examples of its items at its eps")
    listed = ", ".join(names) if names else ", ".join(str(x) for x in (rs[-1].attack or {}).get("of", []))
    return listed + " and each item's breaking example of any smaller eps"


def vulnerability_section(results: Sequence[Result]) -> list[str]:
    """The headline table: per modality and eps, the per-item worst case over the job's attacks, with
    the nested PGD curve beside it as the weaker attack (or the PGD curve alone when no worst case
    was run), and the most fragile / most robust sentence from the same numbers."""
    cv, wc = curves(results), worst_curves(results)
    if not cv and not wc:
        return []
    mods = [m for m in MODALITIES if m in cv or m in wc]
    width = max(len(cv.get(m) or wc.get(m) or []) for m in mods)
    headers = ["modality", "clean top-1"] + [f"eps #{i + 1}" for i in range(width)] + ["unit"]
    rows, fragility, mids = [], {}, {}
    for m in mods:
        head = wc.get(m) or cv[m]
        weak = {round(r.attack["eps"], 12): r for r in cv.get(m, [])} if m in wc else {}
        clean = _top1(head[0].metrics["clean"])
        cells = []
        for r in head:
            cell = f"{eps_label(r)}: **{_f(_top1(r.metrics['attacked']))}**" if m in wc else \
                f"{eps_label(r)}: {_f(_top1(r.metrics['attacked']))}"
            w = weak.get(round(r.attack["eps"], 12))
            if w is not None:
                cell += f" (PGD-{w.attack.get('steps', '?')}: {_f(_top1(w.metrics['attacked']))})"
            cells.append(cell)
        rows.append([m, clean, *cells, *([""] * (width - len(head))), MODALITIES[m].eps_unit])
        mids[m] = head[len(head) // 2]
        if clean:
            fragility[m] = (_top1(mids[m].metrics["attacked"]) or 0.0) / clean
    n = (next(iter(wc.values())) if wc else next(iter(cv.values())))[0].n
    if wc:
        title = "## Per-modality vulnerability (per-item worst case, white-box)"
        what = ("Zero-shot top-1 (X→text R@1 where the dataset has no zero-shot task) under the **per-item worst case** at"
                f" each budget of the modality's default grid, in bold: an item counts as robust only if it survives"
                f" {worst_case_of(next(iter(wc.values())))} (each attack run only on the items every earlier one left"
                " robust, early stopping on), so curves never rise. In brackets: the nested PGD curve alone, **the weaker"
                " attack** (an upper bound, shown for comparison only).")
    else:
        title = "## Per-modality vulnerability (PGD, white-box)"
        what = ("Zero-shot top-1 (text→X R@1 where the dataset has no zero-shot task) under PGD at each budget of the"
                " modality's default grid (nested balls: a sample broken at a small budget stays broken at every larger"
                " one, so curves never rise). PGD alone is a weak attack: read these numbers as upper bounds.")
    lines = [title, "",
             f"On the first {n} items (the attacked subset, so clean numbers can differ slightly from the table above).",
             "", what, "", markdown_table(headers, rows), ""]
    if fragility:
        worst = min(fragility, key=fragility.get)
        best = max(fragility, key=fragility.get)
        by = "the per-item worst case" if wc else "PGD alone (an upper bound)"
        lines.append(
            f"**Most fragile modality: {worst}** — at its middle budget ({eps_label(mids[worst])}), under {by}, it keeps "
            f"{100 * fragility[worst]:.0f}% of its clean top-1; the most robust, {best}, keeps "
            f"{100 * fragility[best]:.0f}% ({eps_label(mids[best])}). Budgets differ in unit across modalities (see the"
            " last column), so compare modalities at the same position of their grid, not by number.")
        lines.append("")
    return lines


def _attack_name(r: Result) -> str:
    """``pgd (caption loss)``: PGD rows say what they maximise, since one report has several."""
    name = str((r.attack or {}).get("name"))
    loss = (r.attack or {}).get("loss")
    return f"{name} ({LOSS_NAMES.get(loss, str(loss) + ' loss')})" if name == "pgd" and loss else name


def _attack_rows(results: Sequence[Result]) -> list[tuple[Result, float | None]]:
    rows = []
    for r in results:
        if not r.attack or r.defense is not None:
            continue
        if (r.attack.get("name") == "pgd" and r.attack.get("nested")) or is_worst_curve(r):
            continue  # curves have their own table
        if r.extra.get("baseline_for"):
            continue  # a defense's no-defense reference: shown in that defense's table
        if r.attack.get("nested") is False and r.modality in MODALITIES and r.attack.get("eps") is not None \
                and abs(r.attack["eps"] - MODALITIES[r.modality].middle_eps) > 1e-12:
            continue  # of a full (naive) curve, only the middle budget, like the nested curves above
        rows.append((r, r.metrics.get("asr")))
    return rows


def _attack_notes(r: Result) -> str:
    """The notes column of one attack row: the extra scores an attack records (fooling rate, MRR
    drop, caption similarity), the per-direction ASR, and for caption attacks how many final edits
    still change what the caption says."""
    note = []
    for k in ("fooling_rate", "relative_t2x_MRR_drop", "caption_similarity"):
        if r.extra.get(k) is not None:
            note.append(f"{k.replace('_', ' ')} {r.extra[k]:.3f}")
    detail = r.metrics.get("asr_detail") or {}
    if detail.get("x2t_R@1") is not None:
        note.append(f"ASR x2t/t2x R@1 {detail['x2t_R@1']:.3f}/{(detail.get('t2x_R@1') or 0):.3f}")
    edits = r.metrics.get("caption_edits") or {}
    if edits.get("edits"):
        note.append(f"attribute-changing edits {edits.get('attribute_changes', 0)}/{edits['edits']}")
    return "; ".join(note)


def attack_section(results: Sequence[Result], curve: dict[str, list[Result]]) -> list[str]:
    rows = []
    candidates = []
    for m, rs in curve.items():
        mid = rs[len(rs) // 2]
        rows.append([_attack_name(mid), m, mid.threat, mid.model.get("name"), eps_label(mid), _top1(mid.metrics["clean"]),
                     _top1(mid.metrics["attacked"]), mid.metrics["clean"].get("t2x_R@1"),
                     mid.metrics["attacked"].get("t2x_R@1"), mid.metrics.get("asr"),
                     passes_cell(rs[: len(rs) // 2 + 1]), ""])
    for m, rs in worst_curves(results).items():
        mid = rs[len(rs) // 2]
        rows.append(["per-item worst case", m, mid.threat, mid.model.get("name"), eps_label(mid),
                     _top1(mid.metrics["clean"]), _top1(mid.metrics["attacked"]), mid.metrics["clean"].get("t2x_R@1"),
                     mid.metrics["attacked"].get("t2x_R@1"), mid.metrics.get("asr"),
                     passes_cell(rs[: len(rs) // 2 + 1]), worst_case_of(rs)])
    for r, asr in _attack_rows(results):
        src = (r.model.get("source") or {}).get("name")
        threat = r.threat + (f" ({src} → {r.model.get('name')})" if src else "")
        rows.append([_attack_name(r), r.modality, threat, r.model.get("name"), eps_label(r),
                     _top1(r.metrics["clean"]), _top1(r.metrics["attacked"]), r.metrics["clean"].get("t2x_R@1"),
                     r.metrics["attacked"].get("t2x_R@1"), asr, passes_cell([r]), _attack_notes(r)])
        if r.threat == "white-box" and asr is not None:
            candidates.append((asr, r))
    if not rows:
        return []
    lines = ["## Attack comparison", "",
             "ASR = fraction of items correct before the attack (zero-shot top-1, or retrieval R@1 when the attack"
             " targets retrieval) that are wrong after it. Transfer rows make the examples on the source model and"
             " score them on the target. Passes/item: the model's forward+backward passes per item the attack"
             " spent (for a curve, its sweep up to that budget; the worst case, its cascade's attacks).", "",
             markdown_table(["attack", "modality", "threat", "scored on", "eps", "clean top-1", "attacked top-1",
                             "clean t2x R@1", "attacked t2x R@1", "ASR", "passes/item (fwd+bwd)", "notes"], rows), ""]
    for rs in curve.values():
        mid = rs[len(rs) // 2]
        if mid.metrics.get("asr") is not None:
            candidates.append((mid.metrics["asr"], mid))
    if candidates:
        asr, r = max(candidates, key=lambda t: t[0])
        lines += [f"**Strongest attack (white-box): {_attack_name(r)}** on {r.modality}"
                  f"{' at ' + eps_label(r) if eps_label(r) else ''}, ASR {asr:.3f}.", ""]
    return lines


def checks_section(checks: Sequence[Result], results: Sequence[Result]) -> list[str]:
    """Gradient-masking sanity checks per model, and flags for calibrated models they do not back."""
    flags = masking_flags([r for r in results if not from_ensemble_cell(r)] + list(checks))
    ens_rows, ens_failed = ensemble_checks_rows(results)
    if not checks and not flags and not ens_rows:
        return []
    lines = ["## Sanity checks (gradient masking)", "",
             "Independent PGD runs (not nested) on the checked items: robust top-1 (X→text R@1 where the dataset has"
             " no zero-shot task) must not rise with the budget or"
             " the steps, must reach about 0 at half the value range when started at the clean input (no random start,"
             " which alone would destroy accuracy there even with zero gradients), random noise of the same budget must be weaker"
             " than PGD, and a transfer attack (from a surrogate model, or from the bare encoder for a calibrated"
             " one, i.e. the head-unaware threat) weaker than the white-box one. A failure means the attack or the"
             " model's gradients cannot be trusted (Carlini et al., 2019). In brackets: top-1 clean → at each budget"
             " of the grid; at the middle budget after each number of steps; at the huge budget; noise vs PGD;"
             " transfer vs white-box.", ""]
    if checks:
        names: list[str] = []
        for r in checks:
            for c in r.extra.get("checks", []):
                if c["name"] not in names:
                    names.append(c["name"])
        rows = []
        for r in checks:
            by = {c["name"]: c for c in r.extra.get("checks", [])}
            model = r.model.get("name", "?") + (f" + {r.defense.get('objective')} head (adaptive)" if r.defense else "")
            cells = []
            for name in names:
                c = by.get(name)
                cells.append("—" if c is None else ("ok" if c["passed"] else "**FAIL**") + f" ({_check_values(c)})")
            rows.append([model, r.modality, r.n, *cells])
        lines += [markdown_table(["model", "modality", "n", *names], rows), ""]
        failed = [r for r in checks if not r.metrics.get("checks_passed", True)]
        lines.append(f"{len(checks) - len(failed)} of {len(checks)} checked models pass every check." +
                     (" Failed: " + ", ".join(f"{r.modality}" + (f"/{r.defense.get('objective')} head" if r.defense else "")
                                             for r in failed) + "." if failed else ""))
        lines.append("")
    if ens_rows:
        lines += ["Worst-case ensemble checks: the ensemble must be no weaker than any of its parts run alone (robust"
                  " top-1 of the ensemble vs each part), and the gradient-free Square attack must not be much stronger"
                  " than APGD (more than 10 points lower robust top-1 means the gradients are masked).", "",
                  markdown_table(["model", "modality", "n", "ensemble no weaker than its parts",
                                  "Square not much stronger than APGD"], ens_rows), ""]
    messages = [f.message for f in flags] + ens_failed
    if messages:
        lines += ["**Flags:**", ""] + [f"- ⚠ {m}." for m in messages] + [""]
    return lines


def _check_values(c: dict[str, Any]) -> str:
    """The numbers of one check, short: ``noise 0.41 / attack 0.05``."""
    v = c.get("values", {})
    if c["name"].startswith("non-increasing"):
        return " → ".join(f"{x:.2f}" for x in v.values() if isinstance(x, (int, float)))
    if c["name"] == "about zero at a huge eps":
        return " ".join(f"{x:.3f}" for k, x in v.items() if k != "eps")
    return " / ".join(f"{k} {x:.2f}" for k, x in v.items() if isinstance(x, (int, float)))


def render(results: Sequence[Result], plots: Sequence[str] = ()) -> str:
    """The whole report.md text."""
    checks = [r for r in results if is_checks(r)]
    results = [r for r in results if not is_checks(r)]
    clean = [r for r in results if r.threat == "clean" and r.defense is None]
    lines = ["# robustmm report", ""]
    if results:
        r0 = (clean or list(results))[0]
        lines += [f"Model **{r0.model.get('name')}** ({r0.model.get('weights') or 'random init'}) on "
                  f"**{r0.dataset.get('name')}** / {r0.dataset.get('split')}. Clean evaluation on {r0.n} items; "
                  "attacks as listed. All numbers are fractions in [0, 1].", ""]
    if clean:
        lines += ["## Clean evaluation", "",
                  "Zero-shot top-1/top-5 on each modality's own task; retrieval R@K and MRR text→X (t2x) and X→text"
                  " (x2t), an item counting as retrieved if any of its captions is.", "",
                  markdown_table(CLEAN_HEADERS, clean_rows(clean)), ""]
    cv = curves(results)
    lines += consistency_section(results)
    lines += vulnerability_section(results)
    lines += attack_section(results, cv)
    lines += calibration_section(results)
    lines += input_defense_section(results)
    lines += certification_section(results)
    lines += checks_section(checks, results)
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines) + "\n"
