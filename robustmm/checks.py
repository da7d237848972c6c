"""Gradient-masking sanity checks for an attack evaluation (Carlini et al., 2019, "On Evaluating
Adversarial Robustness"): a robustness number is only trustworthy if

1. robust accuracy does not rise with the budget (attacks run independently at each eps);
2. it does not rise with more attack steps;
3. it falls to about zero at a very large budget;
4. random noise of the same budget is weaker than the attack;
5. a transfer attack from a surrogate model is weaker than the white-box attack.

A model that "passes" an attack but fails these checks is probably masking gradients (or the
attack is broken), and robustmm says so in the report.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from .attacks.base import Attack, build_attack
from .data.base import MultimodalDataset
from .encoders.base import Encoder
from .errors import RobustMMError
from .evaluation import evaluate
from .modalities import CONTINUOUS_MODALITIES, get_modality
from .records import Result
from .records import headline_score as top1

log = logging.getLogger(__name__)


@dataclass
class Check:
    """One sanity check: what was compared, the numbers, whether it passed."""

    name: str
    passed: bool
    detail: str
    values: dict[str, Any] = field(default_factory=dict)


def _score(encoder: Encoder, data: MultimodalDataset, modality: str, attack: Attack | None, metric: str,
           source: Encoder | None = None, **kw: Any) -> float:
    r = evaluate(encoder, data, modality=modality, attack=attack, source=source, progress=False, **kw)
    return (r.metrics["attacked"] or r.metrics["clean"])[metric]


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

    def _top1(enc: Encoder, data: MultimodalDataset, mod: str, atk: Attack | None, **kw: Any) -> float:
        return _score(enc, data, mod, atk, metric, **kw)

    clean = _top1(encoder, dataset, modality, None)
    grid = list(spec.eps_grid)
    accs = [_top1(encoder, dataset, modality, attack.with_eps(e), seed=seed) for e in grid]
    rises = [(grid[i], grid[i + 1]) for i in range(len(grid) - 1) if accs[i + 1] > accs[i] + tolerance]
    checks.append(Check("non-increasing in eps", not rises and accs[0] <= clean + tolerance,
                        "independent attacks per eps" + (f"; rises between {rises}" if rises else ""),
                        {"clean": clean, **{spec.format_eps(e): a for e, a in zip(grid, accs)}}))
    mid = spec.middle_eps
    by_steps = {}
    for s in steps:
        a = attack.with_eps(mid).replace(steps=s)
        by_steps[s] = _top1(encoder, dataset, modality, a, seed=seed)
    vals = list(by_steps.values())
    ok = all(vals[i + 1] <= vals[i] + tolerance for i in range(len(vals) - 1))
    checks.append(Check("non-increasing in steps", ok, f"at eps {spec.format_eps(mid)}",
                        {f"steps={s}": v for s, v in by_steps.items()}))
    big = (spec.domain[1] - spec.domain[0]) / 2
    chance = 1.0 / len(dataset.tasks[modality].classnames) if metric == "zeroshot_top1" else 1.0 / len(dataset)
    floor = max(0.05, 2.0 * chance)
    big_acc = _top1(encoder, dataset, modality, attack.with_eps(big), seed=seed)
    checks.append(Check("about zero at a huge eps", big_acc <= floor,
                        f"eps {spec.format_eps(big)} (half the value range) must leave <= {floor:.3f}",
                        {"eps": big, "top1" if metric == "zeroshot_top1" else metric: big_acc}))
    noise_acc = _top1(encoder, dataset, modality, build_attack("noise", eps=mid, seed=seed), seed=seed)
    pgd_mid = accs[grid.index(mid)]
    checks.append(Check("random noise weaker than the attack", noise_acc + tolerance >= pgd_mid,
                        f"at eps {spec.format_eps(mid)}", {"noise": noise_acc, "attack": pgd_mid}))
    if surrogate is not None:
        transfer = _top1(encoder, dataset, modality, attack.with_eps(mid), source=surrogate, seed=seed)
        checks.append(Check("transfer weaker than white-box", transfer + tolerance >= pgd_mid,
                            f"at eps {spec.format_eps(mid)}, surrogate {surrogate.name}",
                            {"transfer": transfer, "white-box": pgd_mid}))
    for c in checks:
        log.info("%s: %s (%s) %s", c.name, "ok" if c.passed else "FAILED", c.detail, c.values)
    return checks


def checks_to_dict(checks: list[Check]) -> dict[str, Any]:
    return {"passed": all(c.passed for c in checks), "checks": [asdict(c) for c in checks]}


#: the ``attack`` name of a result record that holds sanity checks instead of one attack's metrics
CHECKS_ATTACK = "sanity-checks"


def checks_result(checks: list[Check], encoder: Encoder, dataset: MultimodalDataset, *, modality: str, attack: Attack,
                  defense: dict[str, Any] | None = None, seed: int = 0, timing_s: float = 0.0) -> Result:
    """The checks as one result record (``attack.name == "sanity-checks"``, details in ``extra``),
    so `robustmm run` keeps them in results.jsonl next to the numbers they vouch for."""
    first = checks[0].values if checks else {}
    return Result(
        model=encoder.info(), dataset=dataset.info(), modality=modality,
        attack={"name": CHECKS_ATTACK, "base": attack.describe()}, defense=defense,
        threat="adaptive" if defense else "white-box",
        metrics={"clean": {check_metric(dataset, modality): first.get("clean")}, "attacked": None, "asr": None,
                 "checks_passed": all(c.passed for c in checks)},
        n=len(dataset), seed=seed, timing_s=round(timing_s, 3), extra={"checks": checks_to_dict(checks)["checks"]},
    )


def is_checks(result: Result) -> bool:
    return bool(result.attack) and result.attack.get("name") == CHECKS_ATTACK


@dataclass
class Flag:
    """A calibrated model whose head-unaware robustness is not backed by the checks."""

    modality: str
    objective: str | None
    message: str


def masking_flags(results: list[Result], *, margin: float = 0.05, drop: float = 0.10) -> list[Flag]:
    """Flags for the report: a calibrated model *passes* the head-unaware attack when its robust
    top-1 beats the bare encoder's by ``margin``. It is flagged when its sanity checks failed, or
    when the adaptive attack takes away more than ``drop`` of that head-unaware number (the
    robustness is then only against an attacker that ignores the head)."""
    bare: dict[tuple[str, float], float] = {}
    for r in results:
        if r.attack and r.attack.get("name") == "pgd" and r.defense is None and r.threat == "white-box":
            v = top1(r.metrics.get("attacked"))
            if v is not None and r.attack.get("eps") is not None:
                bare[(r.modality, round(float(r.attack["eps"]), 10))] = v
    threats: dict[tuple[str, str | None], dict[str, Result]] = {}
    checks: dict[tuple[str, str | None], Result] = {}
    for r in results:
        if not (r.defense and r.defense.get("name") == "calibration") or r.defense.get("clean_only"):
            continue
        key = (r.modality, r.defense.get("objective"))
        if is_checks(r):
            checks[key] = r
        else:
            threats.setdefault(key, {})[r.threat] = r
    flags = []
    for key, d in sorted(threats.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        hu, ad = d.get("head-unaware"), d.get("adaptive")
        if hu is None:
            continue
        hu_v = top1(hu.metrics.get("attacked"))
        base = bare.get((key[0], round(float((hu.attack or {}).get("eps") or -1), 10)))
        if hu_v is None or base is None or hu_v < base + margin:
            continue  # it does not pass the head-unaware attack: nothing to vouch for
        where = f"{key[0]} / {key[1]} head"
        chk = checks.get(key)
        if chk is not None and not chk.metrics.get("checks_passed", True):
            failed = [c["name"] for c in chk.extra.get("checks", []) if not c["passed"]]
            flags.append(Flag(key[0], key[1], f"{where}: passes the head-unaware attack ({hu_v:.3f} vs {base:.3f} "
                                              f"without head) but FAILS the sanity checks ({'; '.join(failed)}); "
                                              "its robustness number is not trustworthy"))
        ad_v = None if ad is None else top1(ad.metrics.get("attacked"))
        if ad_v is not None and hu_v - ad_v > drop:
            flags.append(Flag(key[0], key[1], f"{where}: head-unaware robust top-1 {hu_v:.3f}, adaptive {ad_v:.3f}; "
                                              "the gain holds only against an attacker that ignores the head"))
    return flags
