"""``[pgd]``: PGD robustness curves over each modality's eps grid, and a retrieval curve."""
from __future__ import annotations

import dataclasses
from typing import Any

from ...records import Result
from ..context import JobContext
from ..registry import Cell, CellKind, register_cell
from ..sections import RUN_ITEMS, Section, option


@dataclasses.dataclass
class PGDConfig(Section):
    """``[pgd]``: PGD steps and the retrieval curve's size."""

    enabled: bool = True
    steps: int = option(10, minimum=0)  # step size eps/4 (L-inf), random start, zero-shot CE loss
    quick_steps: int | None = option(5, minimum=0)
    retrieval: bool = True  # also a retrieval curve: caption loss, every item at every eps
    retrieval_n: int = option(100, positive=True, items=RUN_ITEMS)  # its items (= the retrieval gallery)
    quick_retrieval_n: int | None = option(24, positive=True, items=RUN_ITEMS)


@register_cell("pgd", order=20)
class PGDCells(CellKind):
    """PGD robustness curves (nested balls) and, with ``retrieval``, caption-loss retrieval curves."""

    Config = PGDConfig

    def cells(self, ctx: JobContext, section: Any) -> list[Cell]:
        out = [Cell(ctx.key(m, "pgd-curve"), lambda m=m: curve(ctx, m)) for m in ctx.modalities]
        if section.retrieval:
            out += [Cell(ctx.key(m, "pgd-retrieval-curve"), lambda m=m: retrieval_curve(ctx, m)) for m in ctx.modalities]
        return out


def curve(ctx: JobContext, modality: str) -> list[Result]:
    """The zero-shot robustness curve of ``modality`` over its eps grid."""
    from ...evaluation import robustness_curve
    from .worst_curves import recording_pgd  # its examples are candidates of the [worst_curves] cell

    return robustness_curve(ctx.encoder(), ctx.attacked, modality=modality, attack=recording_pgd(ctx, modality), **ctx.kw())


def retrieval_curve(ctx: JobContext, modality: str) -> list[Result]:
    """PGD on the caption loss (push the item away from its own captions), every item attacked
    at every eps: the retrieval curve a nested zero-shot sweep cannot give."""
    from ...evaluation import naive_curve

    n = min(int(ctx.pick("pgd", "retrieval_n")), ctx.attack_n)
    return naive_curve(ctx.encoder(), ctx.dataset(n=n), modality=modality, attack=ctx.pgd(loss="caption"), **ctx.kw())
