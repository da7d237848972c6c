"""Gradient-masking sanity checks for an attack evaluation (Carlini et al., 2019, "On Evaluating
Adversarial Robustness"): a robustness number is only trustworthy if

1. robust accuracy does not rise with the budget (attacks run independently at each eps);
2. it does not rise with more attack steps;
3. it falls to about zero at a very large budget, with the attack started at the clean input
   (no random start: at half the value range a random start alone destroys accuracy, so only
   the gradient steps can make this check pass, and a model with zero gradients fails it);
4. random noise of the same budget is weaker than the attack;
5. a transfer attack from a surrogate model is weaker than the white-box attack.

For the worst-case ensemble (APGD-CE, APGD-T, FAB-T, Square; :mod:`robustmm.attacks.ensemble`) two more:

6. the ensemble is no weaker than any of its parts run alone (it attacks each item with every
   part, so it can only be stronger);
7. the gradient-free Square attack is not much stronger than APGD (robust accuracy more than
   :data:`SQUARE_MARGIN` below APGD's): if it is, the gradients are masked.

A model that "passes" an attack but fails these checks is probably masking gradients (or the
attack is broken), and robustmm says so in the report. This module runs the checks and writes
them as a result record; :mod:`robustmm.report.check_records` reads such records.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from ..attacks.base import Attack, build_attack
from ..cost import combined
from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from ..errors import RobustMMError
from ..modalities import CONTINUOUS_MODALITIES, get_modality
from ..records import CHECKS_ATTACK, Result
from .runner import evaluate

log = logging.getLogger(__name__)


@dataclass
class Check:
    """One sanity check: what was compared, the numbers, whether it passed, and the model passes
    its attacks spent (``cost``: a record's cost block per item of the dataset, None if it attacked nothing)."""

    name: str
    passed: bool
    detail: str
    values: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, Any] | None = None


def _from_clean_input(attack: Attack) -> tuple[Attack, str]:
    """``attack`` without its random start where it has one, and how it starts (for the detail)."""
    if "random_start" not in attack.settings():
        log.warning("sanity checks: attack %r has no random_start setting; the huge-eps check keeps its own start "
                    "(a random start alone may pass it)", attack.name)
        return attack, "the attack's own start"
    return attack.replace(random_start=False), "no random start"


def check_metric(dataset: MultimodalDataset, modality: str) -> str:
    """What the checks score: zero-shot top-1 when the dataset has a task for the modality, else
    X->text R@1 (a per-item score, so it too must fall with the budget)."""
    return "zeroshot_top1" if modality in dataset.tasks else "x2t_R@1"


def sanity_checks(
    encoder: Encoder,
    dataset: MultimodalDataset,
    *,
    modality: str,
    attack: Attack | None = None,
    surrogate: Encoder | None = None,
    steps: tuple[int, ...] = (1, 5, 20),
    tolerance: float = 0.02,
    seed: int = 0,
) -> list[Check]:
    """Run the five checks on ``encoder`` (any Encoder, e.g. one with calibration heads).

    Args:
        attack: the PGD-like attack under test (default PGD-10 with the modality's grid, on the
            zero-shot loss, or on the caption loss for a dataset without a zero-shot task, which is
            then scored by X->text R@1 instead of top-1).
        surrogate: the model a transfer attack is made on (default: none, check 5 skipped). For
            a calibrated model pass the bare encoder: head-unaware must be weaker than adaptive.
        tolerance: slack for sampling noise (fraction of items); never less than two items, so a
            rise of one or two items between independent random-start runs on a small set (e.g.
            `run --quick`) is not called gradient masking.
    """
    spec = get_modality(modality)
    if modality not in CONTINUOUS_MODALITIES:
        raise RobustMMError(f"sanity checks attack a continuous input; {modality!r} is not one "
                            f"({', '.join(CONTINUOUS_MODALITIES)})")
    dataset.check_modality(modality)
    dataset.check_nonempty()
    metric = check_metric(dataset, modality)
    attack = attack or build_attack("pgd", steps=10, seed=seed, loss="ce" if metric == "zeroshot_top1" else "caption")
    checks: list[Check] = []
    tolerance = max(tolerance, 2.0 / len(dataset))

    spent: list[dict[str, Any] | None] = []  # the cost of every evaluation so far

    def _top1(enc: Encoder, data: MultimodalDataset, mod: str, atk: Attack | None, **kw: Any) -> float:
        r = evaluate(enc, data, modality=mod, attack=atk, progress=False, **kw)
        spent.append(r.cost)
        return (r.metrics["attacked"] or r.metrics["clean"])[metric]

    def _costed(check: Check, since: int) -> Check:  # the check's own evaluations: spent[since:]
        check.cost = combined(spent[since:], len(dataset))
        return check

    clean = _top1(encoder, dataset, modality, None)
    grid = list(spec.eps_grid)
    accs = [_top1(encoder, dataset, modality, attack.with_eps(e), seed=seed) for e in grid]
    rises = [(grid[i], grid[i + 1]) for i in range(len(grid) - 1) if accs[i + 1] > accs[i] + tolerance]
    checks.append(_costed(Check("non-increasing in eps", not rises and accs[0] <= clean + tolerance,
                                "independent attacks per eps" + (f"; rises between {rises}" if rises else ""),
                                {"clean": clean, **{spec.format_eps(e): a for e, a in zip(grid, accs)}}), 0))
    mid = spec.middle_eps
    since = len(spent)
    by_steps = {}
    for s in steps:
        a = attack.with_eps(mid).replace(steps=s)
        by_steps[s] = _top1(encoder, dataset, modality, a, seed=seed)
    vals = list(by_steps.values())
    ok = all(vals[i + 1] <= vals[i] + tolerance for i in range(len(vals) - 1))
    checks.append(_costed(Check("non-increasing in steps", ok, f"at eps {spec.format_eps(mid)}",
                                {f"steps={s}": v for s, v in by_steps.items()}), since))
    since = len(spent)
    big = (spec.domain[1] - spec.domain[0]) / 2
    chance = 1.0 / len(dataset.tasks[modality].classnames) if metric == "zeroshot_top1" else 1.0 / len(dataset)
    floor = max(0.05, 2.0 * chance)
    big_attack, start = _from_clean_input(attack.with_eps(big))
    big_acc = _top1(encoder, dataset, modality, big_attack, seed=seed)
    checks.append(_costed(Check("about zero at a huge eps", big_acc <= floor,
                                f"eps {spec.format_eps(big)} (half the value range), {start}, must leave <= {floor:.3f}",
                                {"eps": big, "top1" if metric == "zeroshot_top1" else metric: big_acc}), since))
    since = len(spent)
    noise_acc = _top1(encoder, dataset, modality, build_attack("noise", eps=mid, seed=seed), seed=seed)
    pgd_mid = accs[grid.index(mid)]
    checks.append(_costed(Check("random noise weaker than the attack", noise_acc + tolerance >= pgd_mid,
                                f"at eps {spec.format_eps(mid)}", {"noise": noise_acc, "attack": pgd_mid}), since))
    if surrogate is not None:
        since = len(spent)
        transfer = _top1(encoder, dataset, modality, attack.with_eps(mid), source=surrogate, seed=seed)
        checks.append(_costed(Check("transfer weaker than white-box", transfer + tolerance >= pgd_mid,
                                    f"at eps {spec.format_eps(mid)}, surrogate {surrogate.name}",
                                    {"transfer": transfer, "white-box": pgd_mid}), since))
    for c in checks:
        log.info("%s: %s (%s) %s", c.name, "ok" if c.passed else "FAILED", c.detail, c.values)
    return checks


#: Square's robust score this far (fraction of items) below the best APGD part's flags gradient masking
SQUARE_MARGIN = 0.10


def ensemble_checks(parts: dict[str, float], ensemble: float, *, tolerance: float = 0.0,
                    square_margin: float = SQUARE_MARGIN) -> list[Check]:
    """Checks 6 and 7 from robust scores: ``parts`` (part label -> score of the part run alone,
    labels as the ensemble names them: ``apgd-ce``, ``apgd-t``, ``square`` ...) and the ensemble's."""
    weaker = {p: v for p, v in parts.items() if ensemble > v + tolerance}
    checks = [Check("ensemble no weaker than its parts", not weaker,
                    "the ensemble vs each part alone" + (f"; weaker than {', '.join(weaker)}" if weaker else ""),
                    {"ensemble": ensemble, **parts})]
    apgd = {p: v for p, v in parts.items() if p.startswith("apgd")}
    if "square" in parts and apgd:
        best = min(apgd, key=apgd.get)
        masked = parts["square"] < apgd[best] - square_margin
        checks.append(Check("Square not much stronger than APGD", not masked,
                            f"gradient-free Square may not beat {best} by more than {square_margin:.2f}"
                            + ("; it does: the gradients are masked" if masked else ""),
                            {"square": parts["square"], best: apgd[best]}))
    return checks


def run_ensemble_checks(encoder: Encoder, dataset: MultimodalDataset, *, modality: str, ensemble: Any,
                        ensemble_score: float, wrap: Any = None, tolerance: float = 0.0, **kw: Any,
                        ) -> tuple[list[Check], dict[str, Result]]:
    """Run every part of ``ensemble`` (an :class:`~robustmm.attacks.ensemble.Ensemble`) alone on
    ``encoder`` and check it against the ensemble's robust score; returns the checks and the parts'
    results (each with ``extra["ensemble_part"]``). ``wrap`` (e.g. autocast) wraps each part;
    ``kw`` goes to ``evaluate``; the tolerance is never less than one item."""
    metric = check_metric(dataset, modality)
    results: dict[str, Result] = {}
    from ..attacks.ensemble import runs_on

    task = dataset.tasks.get(modality)
    classes = None if task is None else len(task.prompts())
    for label, part in ensemble.resolve(modality).parts:
        if not runs_on(part, classes):
            continue  # as in the ensemble itself: DLR needs at least 4 classes
        r = evaluate(encoder, dataset, modality=modality, attack=wrap(part) if wrap else part, **kw)
        r.extra["ensemble_part"] = label
        results[label] = r
    scores = {label: float((r.metrics["attacked"] or {})[metric]) for label, r in results.items()}
    n = len(dataset) if not kw.get("n") else min(len(dataset), int(kw["n"]))
    return ensemble_checks(scores, ensemble_score, tolerance=max(tolerance, 1.0 / max(n, 1))), results


def checks_to_dict(checks: list[Check]) -> dict[str, Any]:
    """The checks as JSON-ready data: ``{"passed": all passed, "checks": [each check as a dict]}``."""
    return {"passed": all(c.passed for c in checks), "checks": [asdict(c) for c in checks]}


#: the ``attack`` name of a result record that holds sanity checks instead of one attack's metrics
#: (read by ``robustmm.report.check_records``, which keeps the same string; a test ties the two)


def checks_result(checks: list[Check], encoder: Encoder, dataset: MultimodalDataset, *, modality: str, attack: Attack,
                  defense: dict[str, Any] | None = None, seed: int = 0, timing_s: float = 0.0) -> Result:
    """The checks as one result record (``attack.name == "sanity-checks"``, details in ``extra``),
    so `robustmm run` keeps them in results.jsonl next to the numbers they vouch for. Its ``cost``
    sums the passes of every check's attacks, per item of ``dataset``."""
    first = checks[0].values if checks else {}
    return Result(
        model=encoder.info(), dataset=dataset.info(), modality=modality,
        attack={"name": CHECKS_ATTACK, "base": attack.describe()}, defense=defense,
        threat="adaptive" if defense else "white-box",
        metrics={"clean": {check_metric(dataset, modality): first.get("clean")}, "attacked": None, "asr": None,
                 "checks_passed": all(c.passed for c in checks)},
        n=len(dataset), seed=seed, timing_s=round(timing_s, 3), extra={"checks": checks_to_dict(checks)["checks"]},
        cost=combined((c.cost for c in checks), len(dataset)),
    )
