"""``[ensemble]``: the worst-case ensemble (APGD-CE, APGD-T, FAB-T, Square; AutoAttack's protocol) on every
modality, for the bare model and, adaptively, for every calibrated head.

Per modality one cell for the bare model (key ``MODEL|MODALITY|ensemble``: the ensemble white-box,
each part alone, and the ensemble checks of :func:`robustmm.evaluation.checks.ensemble_checks` in the
ensemble record's ``extra["ensemble_checks"]``), and one per calibration objective
(``MODEL|MODALITY|ensemble:calibration:OBJ``, after the calibration cells, whose heads it reuses):
head-unaware (the bare model's ensemble examples through the heads, made once), adaptive (the
ensemble differentiates through the heads) and the per-item worst case of the two, scored
through the heads, with the same checks on the adaptive run.
"""
from __future__ import annotations

import dataclasses
import logging
import weakref
from typing import Any

from ...attacks.base import Attack, build_attack
from ...attacks.ensemble import DEFAULT_PARTS, VERSIONS
from ...errors import UnknownNameError
from ...evaluation import evaluate
from ...modalities import get_modality
from ...records import Result
from ..context import JobContext
from ..registry import Cell, CellKind, register_cell
from ..sections import RUN_ITEMS, Section, option
from ._shared import calibrated_objectives, job_heads, section_modalities

log = logging.getLogger(__name__)


def _check_version(name: str) -> None:
    if name not in VERSIONS:
        raise UnknownNameError("ensemble version", name, VERSIONS)


def _check_part(name: str) -> None:
    from ...attacks.base import attack_class

    if name not in VERSIONS["standard"]:
        attack_class(name)  # any registered attack is a part too


@dataclasses.dataclass
class EnsembleConfig(Section):
    """``[ensemble]``: which parts, at which settings, on how many items."""

    enabled: bool = True
    modalities: list[str] = option([], check=get_modality, in_run="modalities")  # empty = every modality of [run]
    attacks: list[str] = option(list(DEFAULT_PARTS), check=_check_part, nonempty=True)
    version: str = option("cheap", check=_check_version)  # standard = AutoAttack's 100 steps / 5000 queries
    quick_version: str | None = option("cheap", check=_check_version)
    steps: int = option(10, minimum=0)  # APGD and FAB iterations of every part (0 = the version's)
    quick_steps: int | None = option(5, minimum=0)
    n_queries: int = option(100, minimum=0)  # Square's query budget (0 = the version's)
    quick_n_queries: int | None = option(30, minimum=0)
    n: int = option(32, positive=True, items=RUN_ITEMS)  # items attacked (at most [run] attack_n)
    quick_n: int | None = option(12, positive=True, items=RUN_ITEMS)
    calibrated: bool = True  # also attack every calibrated head (adaptive)
    check_parts: bool = True  # run each part alone: the ensemble must be no weaker, Square not much stronger
    tolerance: float = option(0.0, minimum=0, maximum=1)  # slack of the checks, fraction of items (at least one item)


@register_cell("ensemble", order=65)  # after calibration: the calibrated cells reuse its heads
class EnsembleCells(CellKind):
    """The worst-case ensemble, bare and adaptive through every calibrated head, with its checks."""

    Config = EnsembleConfig

    def cells(self, ctx: JobContext, section: Any) -> list[Cell]:
        out = []
        for m in section_modalities(ctx, section.modalities):
            out.append(Cell(ctx.key(m, "ensemble"), lambda m=m: run_bare(ctx, m)))
            for obj in calibrated_objectives(ctx, m) if section.calibrated else []:
                out.append(Cell(ctx.key(m, f"ensemble:calibration:{obj}"), lambda m=m, obj=obj: run_heads(ctx, m, obj)))
        return out


def build_ensemble(ctx: JobContext, modality: str) -> Any:
    """The section's ensemble for ``modality`` (resolved: its eps and norm filled in)."""
    sec = ctx.section("ensemble")
    steps, queries = int(ctx.pick("ensemble", "steps")), int(ctx.pick("ensemble", "n_queries"))
    return build_attack("ensemble", attacks=list(sec.attacks), version=ctx.pick("ensemble", "version"), seed=ctx.seed,
                        steps=steps or None, n_queries=queries or None).resolve(modality)


_MEMO: weakref.WeakKeyDictionary[JobContext, dict[str, Attack]] = weakref.WeakKeyDictionary()


def _shared(ctx: JobContext, modality: str) -> Attack:
    """One memoising ensemble per job and modality: the bare model's examples are made once and
    reused as the head-unaware examples of every head."""
    from ...evaluation.threats import reusable

    memo = _MEMO.setdefault(ctx, {})
    if modality not in memo:
        memo[modality] = reusable(ctx.amp_wrap(build_ensemble(ctx, modality)))
    return memo[modality]


def shared_ensemble(ctx: JobContext, modality: str) -> Attack:
    """The job's memoising ensemble of ``modality`` (its examples are made once per batch of items):
    the ``[worst_curves]`` cell takes the bare model's examples from it as candidates."""
    return _shared(ctx, modality)


def ensemble_data(ctx: JobContext) -> Any:
    """The items the ensemble cells attack (the first ``[ensemble] n`` of the attacked items)."""
    return _data(ctx)


def _data(ctx: JobContext) -> Any:
    return ctx.dataset(n=min(int(ctx.pick("ensemble", "n")), ctx.attack_n))


def _with_checks(ctx: JobContext, encoder: Any, data: Any, modality: str, result: Result, **kw: Any) -> list[Result]:
    """``result`` (an ensemble run on ``encoder``) with its checks in ``extra``, then the parts' results."""
    from ...evaluation.checks import check_metric, checks_to_dict, run_ensemble_checks

    sec = ctx.section("ensemble")
    if not sec.check_parts:
        return [result]
    score = float((result.metrics["attacked"] or {})[check_metric(data, modality)])
    checks, parts = run_ensemble_checks(encoder, data, modality=modality, ensemble=build_ensemble(ctx, modality),
                                        ensemble_score=score, wrap=ctx.amp_wrap, tolerance=float(sec.tolerance),
                                        **ctx.kw(), **kw)
    result.extra["ensemble_checks"] = checks_to_dict(checks)["checks"]
    for r in parts.values():
        r.extra["ensemble_of"] = result.threat
    return [result, *parts.values()]


def run_bare(ctx: JobContext, modality: str) -> list[Result]:
    """The ensemble white-box on the bare model, each part alone, and the ensemble checks."""
    data = _data(ctx)
    res = evaluate(ctx.encoder(), data, modality=modality, attack=_shared(ctx, modality), **ctx.kw())
    return _with_checks(ctx, ctx.encoder(), data, modality, res)


def run_heads(ctx: JobContext, modality: str, objective: str) -> list[Result]:
    """Head-unaware, adaptive and worst-case ensemble through one calibration's heads, with checks."""
    from ...evaluation.threats import evaluate_threats

    calib = job_heads(ctx, modality, objective)
    if calib is None:
        log.warning("no heads for %s/%s: run its calibration cell first", modality, objective)
        return []
    data = _data(ctx)
    results = evaluate_threats(ctx.encoder(), calib, data, modality=modality, attack=_shared(ctx, modality),
                               threats=("head-unaware", "adaptive", "worst-case"), **ctx.kw())
    adaptive = next(r for r in results if r.threat == "adaptive")
    calibrated = ctx.encoder().with_heads(calib.heads)
    checked = _with_checks(ctx, calibrated, data, modality, adaptive)
    for r in checked[1:]:
        r.defense, r.threat = calib.defense_block(), "adaptive"
    return results + checked[1:]
