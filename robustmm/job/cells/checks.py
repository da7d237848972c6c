"""``[checks]``: gradient-masking sanity checks (robustmm.evaluation.checks) of the bare model and of every
calibrated head (adaptive PGD; the bare model as the transfer source)."""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from ...encoders.registry import check_model_name
from ...modalities import get_modality
from ...records import Result
from ..context import JobContext
from ..registry import Cell, CellKind, register_cell
from ..sections import RUN_ITEMS, Section, option
from ._shared import job_heads, section_modalities

log = logging.getLogger(__name__)


def _model_or_empty(name: str) -> None:
    if name:
        check_model_name(name)


@dataclasses.dataclass
class ChecksConfig(Section):
    """``[checks]``: which checks, on how many items, with which step counts."""

    enabled: bool = True
    modalities: list[str] = option([], check=get_modality, in_run="modalities")  # empty = every modality of [run]
    n: int = option(100, positive=True, items=RUN_ITEMS)  # items checked (independent PGD runs: ~2 curves' cost)
    quick_n: int | None = option(12, positive=True, items=RUN_ITEMS)
    steps: list[int] = option([1, 5, 20], minimum=0, nonempty=True)  # robust top-1 must not rise with steps
    quick_steps: list[int] | None = option([1, 3, 5], minimum=0, nonempty=True)
    surrogate: str = option("tinybind-alt", check=_model_or_empty)  # transfer check ("" = skip it)
    calibrated: bool = True  # also check every calibrated head
    tolerance: float = option(0.02, minimum=0, maximum=1)  # slack for sampling noise, fraction of items


@register_cell("checks", order=70)  # after calibration: the calibrated checks reuse its heads
class ChecksCells(CellKind):
    """Sanity checks per modality, and per calibrated (modality, objective) when calibration runs."""

    Config = ChecksConfig

    def cells(self, ctx: JobContext, section: Any) -> list[Cell]:
        cal = ctx.section("calibration")
        out = []
        for m in section_modalities(ctx, section.modalities):
            out.append(Cell(ctx.key(m, "checks"), lambda m=m: run_checks(ctx, m, None)))
            if section.calibrated and cal.enabled and m in section_modalities(ctx, cal.modalities):
                for obj in cal.objectives:
                    out.append(Cell(ctx.key(m, f"checks:calibration:{obj}"), lambda m=m, obj=obj: run_checks(ctx, m, obj)))
        return out


def run_checks(ctx: JobContext, modality: str, objective: str | None) -> list[Result]:
    """The checks on the bare model (``objective`` None) or on the model with one calibration's heads."""
    from ...attacks import build_attack
    from ...evaluation.checks import checks_result, sanity_checks

    sec = ctx.section("checks")
    n = min(int(ctx.pick("checks", "n")), ctx.attack_n)
    data = ctx.dataset(n=n)
    bare = ctx.encoder()
    steps = tuple(int(s) for s in ctx.pick("checks", "steps"))
    loss = "ce" if modality in data.tasks else "caption"  # scored by top-1, else by X->text R@1
    attack = ctx.amp_wrap(build_attack("pgd", steps=int(ctx.pick("pgd", "steps")), loss=loss, seed=ctx.seed))
    defense = None
    if objective is None:
        target = bare
        surrogate = ctx.encoder(sec.surrogate) if sec.surrogate else None
    else:
        calib = job_heads(ctx, modality, objective)
        if calib is None:
            log.warning("no heads for %s/%s: run its calibration cell first", modality, objective)
            return []
        target, surrogate, defense = bare.with_heads(calib.heads), bare, calib.defense_block()
    t0 = time.perf_counter()
    checks = sanity_checks(target, data, modality=modality, attack=attack, surrogate=surrogate, steps=steps,
                           tolerance=float(sec.tolerance), seed=ctx.seed)
    return [checks_result(checks, target, data, modality=modality, attack=attack, defense=defense, seed=ctx.seed,
                          timing_s=time.perf_counter() - t0)]
