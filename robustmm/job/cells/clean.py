"""``[clean]``: the clean evaluation of every modality of ``[run]``."""
from __future__ import annotations

from typing import Any

from ...evaluation import evaluate
from ..context import JobContext
from ..registry import Cell, CellKind, register_cell


@register_cell("clean", order=10)
class CleanCells(CellKind):
    """Clean zero-shot and retrieval metrics, one cell per modality."""

    def cells(self, ctx: JobContext, section: Any) -> list[Cell]:
        return [Cell(ctx.key(m, "clean"), lambda m=m: [evaluate(ctx.encoder(), ctx.test, modality=m, **ctx.kw())])
                for m in ctx.modalities]
