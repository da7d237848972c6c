"""``[worst_curves]``: per-item worst-case robustness curves, the numbers the report headlines.

One cell per modality (none when ``[pgd]`` is off), ``MODEL|MODALITY|worst-curve``: at each eps of
the modality's grid, on the
job's attacked items, an item counts as robust only if it survives its example of the ``[pgd]``
nested sweep, APGD-CE and APGD-T (the ensemble's parts, early stopping on, each run only on the
items still robust) and its breaking example of any smaller eps
(:func:`robustmm.evaluation.worst_curve.worst_case_curve`), and at the ensemble's budget the
``[ensemble]`` cell's examples of its items (:func:`ensemble_examples`). The PGD examples are the ``[pgd]``
cell's own when it ran in this process (:func:`recording_pgd`), else the cell runs that sweep
again. Records: ``threat="worst-case"``, ``attack.name="worst-case"`` with ``attack.of`` naming
the candidates and ``attack.parts`` their settings.
"""
from __future__ import annotations

import dataclasses
import weakref
from typing import Any

from ...records import Result
from ..context import JobContext
from ..registry import Cell, CellKind, register_cell
from ..sections import ConfigError, Section, option

PARTS = ("apgd-ce", "apgd-t")

#: per job and modality, the [pgd] cell's nested-sweep examples (eps -> item -> example)
_PGD_STORES: weakref.WeakKeyDictionary[JobContext, dict[str, Any]] = weakref.WeakKeyDictionary()


def _check_parts(name: str) -> None:
    if name not in PARTS:
        raise ConfigError(f"unknown worst-curve attack {name!r}: choose from {', '.join(PARTS)}")


@dataclasses.dataclass
class WorstCurvesConfig(Section):
    """``[worst_curves]``: the attacks of the per-item worst case besides PGD, and their budgets."""

    enabled: bool = True
    # run in this order, each on the items still robust
    attacks: list[str] = option(list(PARTS), check=_check_parts, nonempty=True)
    steps: int = option(20, positive=True)  # APGD iterations of every part (early stopping on)
    quick_steps: int | None = option(5, positive=True)
    targets: int = option(3, positive=True)  # APGD-T's target classes
    quick_targets: int | None = option(3, positive=True)


@register_cell("worst_curves", order=66)  # after [ensemble]: its examples are candidates
class WorstCurvesCells(CellKind):
    """Per-item worst case over PGD, APGD-CE and APGD-T at every eps of each modality's grid (the headline)."""

    Config = WorstCurvesConfig

    def cells(self, ctx: JobContext, section: Any) -> list[Cell]:
        """One cell per modality; none when ``[pgd]`` is off (the worst case sits beside its curve)."""
        if not ctx.enabled("pgd"):
            return []
        return [Cell(ctx.key(m, "worst-curve"), lambda m=m: run_worst_curve(ctx, m)) for m in ctx.modalities]


def recording_pgd(ctx: JobContext, modality: str) -> Any:
    """The job's PGD wrapped so that its nested sweep's examples stay available to this kind's cell
    of ``modality`` (in this process only; a resumed job runs the sweep again)."""
    from ...evaluation.worst_curve import SweepRecorder

    rec = SweepRecorder(ctx.pgd())
    if ctx.enabled("worst_curves"):
        _PGD_STORES.setdefault(ctx, {})[modality] = rec.store
    return rec


def parts_for(ctx: JobContext, modality: str, eps: float) -> dict[str, Any]:
    """The section's attacks at ``eps``, resolved for ``modality``: the ensemble's APGD parts (the
    standard version's settings with the section's steps and targets, early stopping on)."""
    from ...attacks import build_attack

    names = list(ctx.section("worst_curves").attacks)
    steps, targets = int(ctx.pick("worst_curves", "steps")), int(ctx.pick("worst_curves", "targets"))
    ens = build_attack("ensemble", attacks=names, version="standard", eps=eps, steps=steps, seed=ctx.seed,
                       early_stop=True).resolve(modality)
    return {label: ctx.amp_wrap((p.replace(n_target_classes=targets) if label == "apgd-t" else p).resolve(modality))
            for label, p in ens.parts}


def ensemble_examples(ctx: JobContext, modality: str) -> dict[float, dict[str, Any]]:
    """{eps: {"ensemble": examples}}: the ``[ensemble]`` cell's bare-model examples of its items (the
    first ones of the attacked items; the others keep their clean input) at its budget, a candidate
    of the worst case there, so the headline is never above the ensemble on the ensemble's items.
    Taken from the job's memoised ensemble (free when that cell ran in this process), ``{}`` when
    the job runs no ensemble on ``modality``."""
    import torch

    from ...evaluation import evaluate
    from ...evaluation.worst_case import RecordingAttack
    from ._shared import section_modalities
    from .ensemble import ensemble_data, shared_ensemble

    sec = ctx.section("ensemble")
    if not sec.enabled or modality not in section_modalities(ctx, sec.modalities):
        return {}
    attack = shared_ensemble(ctx, modality)
    data, items = ctx.attacked, ensemble_data(ctx)
    rec = RecordingAttack(attack)
    evaluate(ctx.encoder(), items, modality=modality, attack=rec, **ctx.kw())
    x = data.get(modality, torch.arange(len(data)))
    k = min(len(items), len(data))
    x[:k] = rec.stacked(len(items))[:k]
    return {float(attack.eps): {"ensemble": x}}


def run_worst_curve(ctx: JobContext, modality: str) -> list[Result]:
    """The worst-case curve of ``modality`` over its eps grid (the PGD sweep's examples included)."""
    import torch

    from ...evaluation import robustness_curve
    from ...evaluation.worst_curve import SweepRecorder, nested_examples, worst_case_curve
    from ...modalities import get_modality

    data = ctx.attacked
    grid = sorted(float(e) for e in get_modality(modality).eps_grid)
    store = _PGD_STORES.get(ctx, {}).pop(modality, None)
    if store is None:  # [pgd] did not run here (--resume, another rank, switched off): sweep again
        rec = SweepRecorder(ctx.pgd())
        robustness_curve(ctx.encoder(), data, modality=modality, attack=rec, **ctx.kw())
        store = rec.store
    pgd_x = nested_examples(store, grid, data.get(modality, torch.arange(len(data))))
    pgd_steps = int(ctx.pick("pgd", "steps"))
    out = worst_case_curve(ctx.encoder(), data, modality=modality, attacks=lambda eps: parts_for(ctx, modality, eps),
                           pgd_examples=pgd_x, pgd_label=f"pgd-{pgd_steps}", extra_examples=ensemble_examples(ctx, modality),
                           grid=grid, **ctx.kw())
    parts = {label: atk.describe() for label, atk in parts_for(ctx, modality, grid[0]).items()}
    amp = next((d["amp"] for d in parts.values() if d.get("amp")), None)  # `run --amp`: say so, like every attack
    for r in out:
        if amp:
            r.attack["amp"] = amp
        r.attack["parts"] = {f"pgd-{pgd_steps}": {"name": "pgd", "steps": pgd_steps, "nested": True},
                             **{k: {kk: v for kk, v in d.items() if kk != "eps"} for k, d in parts.items()}}
    return out
