"""``[sga]``: the Set-level Guidance Attack, white-box and transferred (with plain PGD beside it)."""
from __future__ import annotations

import dataclasses
from typing import Any

from ...encoders.registry import check_model_name
from ...evaluation import evaluate
from ...modalities import get_modality
from ...records import Result
from ..context import JobContext
from ..registry import Cell, CellKind, register_cell
from ..sections import RUN_ITEMS, Section, option


@dataclasses.dataclass
class SGAConfig(Section):
    """``[sga]``: SGA's modality, budget, transfer targets and items."""

    enabled: bool = True
    modality: str = option("image", check=get_modality)
    eps: float = option(2 / 255, minimum=0)
    transfer_to: list[str] = option(["tinybind-alt"], check=check_model_name)  # also scores PGD transferred the same way
    n: int | None = option(100, positive=True, items=RUN_ITEMS)  # items (the text step embeds many candidate captions)
    quick_n: int | None = option(8, positive=True, items=RUN_ITEMS)


@register_cell("sga", order=40)
class SGACells(CellKind):
    """SGA white-box on the job's model, and transferred from it to each ``transfer_to`` model."""

    Config = SGAConfig

    def cells(self, ctx: JobContext, section: Any) -> list[Cell]:
        m = section.modality
        group = ctx.key(m, "sga")  # the transfers re-run SGA on the job's model: the text tower memoises its edits
        out = [Cell(ctx.key(m, "sga|white-box"), lambda: run_sga(ctx, m, None), group)]
        out += [Cell(ctx.key(m, f"sga|transfer:{alt}"), lambda alt=alt: run_sga(ctx, m, alt), group)
                for alt in section.transfer_to]
        return out


def run_sga(ctx: JobContext, modality: str, transfer_to: str | None) -> list[Result]:
    """SGA white-box (``transfer_to`` None), or SGA and caption-loss PGD made on the job's model
    and scored on ``transfer_to``."""
    from ...attacks import build_attack

    eps = float(ctx.section("sga").eps)
    sga = ctx.amp_wrap(build_attack("sga", eps=eps, seed=ctx.seed))
    src = ctx.encoder()
    data = ctx.attacked_for("sga")
    if transfer_to is None:
        return [evaluate(src, data, modality=modality, attack=sga, **ctx.kw())]
    tgt = ctx.encoder(transfer_to)
    pgd = ctx.pgd(eps=eps, loss="caption")
    return [evaluate(tgt, data, modality=modality, attack=a, source=src, **ctx.kw()) for a in (sga, pgd)]
