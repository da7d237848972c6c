"""Reading the sanity-check records that :mod:`robustmm.evaluation.checks` writes into results.jsonl.

A checks record is an ordinary :class:`~robustmm.records.Result` whose ``attack.name`` is
``"sanity-checks"``: ``metrics.checks_passed`` says whether every check passed and
``extra.checks`` lists them (``name``, ``passed``, ``detail``, ``values``). This module only reads
such records (the report layer never runs an attack); :func:`masking_flags` combines them with
the attack records into the report's gradient-masking flags.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..records import CHECKS_ATTACK, Result  # CHECKS_ATTACK: the attack name of a checks record
from ..records import headline_score as top1
from .baseline import no_head_baseline


def is_checks(result: Result) -> bool:
    """Whether ``result`` is a sanity-checks record rather than one attack's metrics."""
    return bool(result.attack) and result.attack.get("name") == CHECKS_ATTACK


def failed_checks(result: Result) -> list[str]:
    """The names of the checks that failed in a checks record (``[]`` when all passed)."""
    return [c["name"] for c in result.extra.get("checks", []) if not c.get("passed", True)]


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
        bare, diff = no_head_baseline(results, hu)  # the same attack on the same items, else the nearest
        base = None if bare is None else top1(bare.metrics.get("attacked"))
        if hu_v is None or base is None or hu_v < base + margin:
            continue  # it does not pass the head-unaware attack: nothing to vouch for
        where = f"{key[0]} / {key[1]} head" + (f" (no-head number not comparable: {'; '.join(diff)})" if diff else "")
        chk = checks.get(key)
        if chk is not None and not chk.metrics.get("checks_passed", True):
            failed = failed_checks(chk)
            flags.append(Flag(key[0], key[1], f"{where}: passes the head-unaware attack ({hu_v:.3f} vs {base:.3f} "
                                              f"without head) but FAILS the sanity checks ({'; '.join(failed)}); "
                                              "its robustness number is not trustworthy"))
        ad_v = None if ad is None else top1(ad.metrics.get("attacked"))
        if ad_v is not None and hu_v - ad_v > drop:
            flags.append(Flag(key[0], key[1], f"{where}: head-unaware robust top-1 {hu_v:.3f}, adaptive {ad_v:.3f}; "
                                              "the gain holds only against an attacker that ignores the head"))
    return flags
