"""``[patch]``: the AdvCLIP universal patch, fitted on a training split and scored on held-out items."""
from __future__ import annotations

import dataclasses
from typing import Any

from ...errors import UnknownNameError
from ...evaluation import evaluate
from ...modalities import MODALITIES, get_modality
from ...records import Result
from ..context import JobContext
from ..registry import Cell, CellKind, register_cell
from ..sections import ItemsOf, Section, option, reported_under


def check_image_like(name: str) -> None:
    """A one-line error unless ``name`` is an image-like modality (the patch is a square of pixels)."""
    if not get_modality(name).image_like:
        raise UnknownNameError("image-like modality", name, [m for m, s in MODALITIES.items() if s.image_like])


@dataclasses.dataclass
class PatchConfig(Section):
    """``[patch]``: the patch's modality, size, training split and epochs."""

    enabled: bool = True
    modality: str = option("image", check=check_image_like)
    area: float = option(0.03, positive=True, below=1)  # fraction of the image the patch covers
    fit_split: str = option("train", split=True)
    fit_n: int = option(1000, positive=True, items=ItemsOf(key="fit_split"))
    quick_fit_n: int | None = option(100, positive=True, items=ItemsOf(key="fit_split"))
    epochs: int = option(5, positive=True)


@register_cell("patch", order=30)
class PatchCells(CellKind):
    """One universal patch: fitted, then scored (with its fooling rate) on the attacked items."""

    Config = PatchConfig

    @classmethod
    def validate(cls, section: Any, job: Any, source: str) -> None:
        """The patch the cell would fit, built now: its constructor's checks run at load."""
        from ...attacks import build_attack

        with reported_under(f"{source}: [patch]"):
            build_attack("patch", modality=section.modality, area=float(section.area), epochs=int(section.epochs),
                         seed=job.run.seed)

    def cells(self, ctx: JobContext, section: Any) -> list[Cell]:
        m = section.modality
        return [Cell(ctx.key(m, "patch"), lambda: run_patch(ctx, m))]


def run_patch(ctx: JobContext, modality: str) -> list[Result]:
    """Fit the patch on ``[patch] fit_split`` and evaluate it; keeps it for the example gallery."""
    from ...attacks import build_attack
    from ...cost import count_passes

    sec = ctx.section("patch")
    attack = build_attack("patch", modality=modality, area=float(sec.area), epochs=int(sec.epochs), seed=ctx.seed)
    fit_data = ctx.dataset(sec.fit_split, int(ctx.pick("patch", "fit_n")))
    with count_passes() as fitting:
        ctx.amp_wrap(attack).fit(ctx.encoder(), fit_data)  # fits ``attack`` itself
    ctx.fitted_patch = attack
    res = evaluate(ctx.encoder(), ctx.attacked, modality=modality, attack=ctx.amp_wrap(attack), **ctx.kw())
    if modality in ctx.attacked.tasks:  # fooling rate = zero-shot prediction changed
        res.extra["fooling_rate"] = attack.fooling_rate(ctx.encoder(), ctx.attacked, modality)
    res.extra["fit"] = fit_data.info()
    res.extra["fit_cost"] = fitting.as_dict(len(fit_data))  # the patch's passes are spent fitting it
    return [res]
