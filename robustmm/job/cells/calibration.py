"""``[calibration]``: heads trained on adversarial examples (encoder frozen), scored under both
threat models, and the same heads trained on clean data only as the control."""
from __future__ import annotations

import dataclasses
from typing import Any

from ...defenses.objectives import parse_objective
from ...evaluation import evaluate
from ...modalities import get_modality
from ...records import Result
from ..context import JobContext
from ..registry import Cell, CellKind, register_cell
from ..sections import ItemsOf, Section, option
from ._shared import section_modalities


@dataclasses.dataclass
class CalibrationConfig(Section):
    """``[calibration]``: which heads to train, on what, for how long."""

    enabled: bool = True
    modalities: list[str] = option([], check=get_modality, in_run="modalities")  # empty = every modality of [run]
    objectives: list[str] = option(["ce"], check=parse_objective, nonempty=True)  # ce, l2, infonce, or sums like "ce+0.5*l2"
    train_split: str = option("train", split=True)
    train_n: int = option(600, positive=True, items=ItemsOf(key="train_split"))
    quick_train_n: int | None = option(100, positive=True, items=ItemsOf(key="train_split"))
    epochs: int = option(60, positive=True)
    steps: int = option(10, minimum=0)  # PGD steps for training and evaluation examples
    quick_steps: int | None = option(5, minimum=0)
    clean_control: bool = True  # also train the same head on clean data only


@register_cell("calibration", order=60)
class CalibrationCells(CellKind):
    """One cell per modality and objective, plus a clean-trained control per modality."""

    Config = CalibrationConfig

    def cells(self, ctx: JobContext, section: Any) -> list[Cell]:
        out = []
        for m in section_modalities(ctx, section.modalities):
            for obj in section.objectives:
                out.append(Cell(ctx.key(m, f"calibration:{obj}"), lambda m=m, obj=obj: run_calibration(ctx, m, obj)))
            if section.clean_control:
                out.append(Cell(ctx.key(m, "calibration:clean-control"), lambda m=m: run_clean_control(ctx, m)))
        return out


def _train_data(ctx: JobContext) -> Any:
    return ctx.dataset(ctx.section("calibration").train_split, int(ctx.pick("calibration", "train_n")))


def run_calibration(ctx: JobContext, modality: str, objective: str) -> list[Result]:
    """Train heads on PGD examples, keep them (in memory and under ``DIR/heads``), score both threats."""
    from ...cost import count_passes
    from ...defenses.calibrate import calibrate, default_attack
    from ...evaluation.threats import evaluate_threats

    cal = ctx.section("calibration")
    steps = int(ctx.pick("calibration", "steps"))
    labelled = modality in ctx.attacked.tasks
    attack = ctx.amp_wrap(default_attack(modality, labelled, steps=steps).replace(seed=ctx.seed))
    train = _train_data(ctx)
    with count_passes() as training:
        calib = calibrate(ctx.encoder(), train, modality=modality, objective=objective, attack=attack,
                          epochs=int(cal.epochs), seed=ctx.seed, progress=ctx.progress)
    ctx.calibrations[(modality, objective)] = calib
    if ctx.out_dir is not None:
        calib.save(str(ctx.heads_path(modality, objective)))
    # white-box first: the bare encoder under exactly the heads' attack, items and seed (the
    # head-unaware run reuses its examples), so the report's "no head" number is like for like
    # rather than a nested curve's, where an item broken at a smaller eps stays broken
    results = evaluate_threats(ctx.encoder(), calib, ctx.attacked, modality=modality, attack=attack,
                               threats=("white-box", "head-unaware", "adaptive"), **ctx.kw())
    results[0].extra["baseline_for"] = "calibration"
    for r in results[1:]:  # the heads' training (PGD examples + head updates), per training item
        r.extra["training_cost"] = training.as_dict(len(train))
    return results


def run_clean_control(ctx: JobContext, modality: str) -> list[Result]:
    """The same heads (first objective) trained on clean items only: what calibration gives for free."""
    from ...defenses.calibrate import calibrate

    cal = ctx.section("calibration")
    objective = cal.objectives[0] if cal.objectives else "ce"
    calib = calibrate(ctx.encoder(), _train_data(ctx), modality=modality, objective=objective,
                      epochs=int(cal.epochs), clean_only=True, seed=ctx.seed, progress=ctx.progress)
    wrapped = ctx.encoder().with_heads(calib.heads)
    return [evaluate(wrapped, ctx.attacked, modality=modality, defense=calib.defense_block(), **ctx.kw())]
