"""``[patch]``: the AdvCLIP universal patch, fitted on a training split and scored on held-out items."""
from __future__ import annotations

import dataclasses
from typing import Any

from ...evaluation import evaluate
from ...modalities import get_modality
from ...records import Result
from ..context import JobContext
from ..fields import Section, option
from ..registry import Cell, CellKind, register_cell


@dataclasses.dataclass
class PatchConfig(Section):
    """``[patch]``: the patch's modality, size, training split and epochs."""

    enabled: bool = True
    modality: str = option("image", check=get_modality)
    area: float = option(0.03, positive=True)  # fraction of the image the patch covers
    fit_split: str = "train"
    fit_n: int = option(1000, positive=True)
    quick_fit_n: int | None = option(100, positive=True)
    epochs: int = option(5, positive=True)


@register_cell("patch", order=30)
class PatchCells(CellKind):
    """One universal patch: fitted, then scored (with its fooling rate) on the attacked items."""

    Config = PatchConfig

    def cells(self, ctx: JobContext, section: Any) -> list[Cell]:
        m = section.modality
        return [Cell(ctx.key(m, "patch"), lambda: run_patch(ctx, m))]


def run_patch(ctx: JobContext, modality: str) -> list[Result]:
    """Fit the patch on ``[patch] fit_split`` and evaluate it; keeps it for the example gallery."""
    from ...attacks import build_attack

    sec = ctx.section("patch")
    attack = build_attack("patch", modality=modality, area=float(sec.area), epochs=int(sec.epochs), seed=ctx.seed)
    fit_data = ctx.dataset(sec.fit_split, int(ctx.pick("patch", "fit_n")))
    ctx.amp_wrap(attack).fit(ctx.encoder(), fit_data)  # fits ``attack`` itself
    ctx.fitted_patch = attack
    res = evaluate(ctx.encoder(), ctx.attacked, modality=modality, attack=ctx.amp_wrap(attack), **ctx.kw())
    if modality in ctx.attacked.tasks:  # fooling rate = zero-shot prediction changed
        res.extra["fooling_rate"] = attack.fooling_rate(ctx.encoder(), ctx.attacked, modality)
    res.extra["fit"] = fit_data.info()
    return [res]
