"""``[xmai]``: cross-modal attribute insertion into the captions."""
from __future__ import annotations

import dataclasses
from typing import Any

from ...evaluation import evaluate
from ...modalities import get_modality
from ...records import Result
from ..context import JobContext
from ..registry import Cell, CellKind, register_cell
from ..sections import RUN_ITEMS, Section, option


@dataclasses.dataclass
class XMAIConfig(Section):
    """``[xmai]``: XMAI's modality and items."""

    enabled: bool = True
    modality: str = option("image", check=get_modality)
    n: int | None = option(200, positive=True, items=RUN_ITEMS)
    quick_n: int | None = option(12, positive=True, items=RUN_ITEMS)


@register_cell("xmai", order=50)
class XMAICells(CellKind):
    """XMAI caption edits, scored by the relative text->X MRR drop and the edits' caption similarity."""

    Config = XMAIConfig

    def cells(self, ctx: JobContext, section: Any) -> list[Cell]:
        m = section.modality
        return [Cell(ctx.key(m, "xmai"), lambda: run_xmai(ctx, m))]


def run_xmai(ctx: JobContext, modality: str) -> list[Result]:
    """Evaluate XMAI on ``modality``'s attacked items, with its two extra scores."""
    from ...attacks import build_attack
    from ...attacks.memo import MemoAttack
    from ...attacks.xmai import caption_similarity

    attack = MemoAttack(build_attack("xmai"))
    data = ctx.attacked_for("xmai")
    res = evaluate(ctx.encoder(), data, modality=modality, attack=attack, **ctx.kw())
    clean_mrr, adv_mrr = res.metrics["clean"]["t2x_MRR"], res.metrics["attacked"]["t2x_MRR"]
    res.extra["relative_t2x_MRR_drop"] = (clean_mrr - adv_mrr) / clean_mrr if clean_mrr else None
    edited = [caps for b in attack.outputs() for caps in b.captions]
    res.extra["caption_similarity"] = caption_similarity(ctx.encoder(), data.captions, edited)
    return [res]
