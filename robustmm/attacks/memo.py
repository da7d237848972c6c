"""An attack wrapper that remembers its outputs.

Used to make adversarial examples once and score them several times (white-box on the bare
encoder, then head-unaware through calibration heads) and to read back what a text attack wrote.
"""
from __future__ import annotations

from typing import Any

from ..batch import Batch
from .base import Attack


class MemoAttack(Attack):
    """Wraps an attack and remembers its output per (source encoder, items), so the white-box
    examples made on the bare encoder are reused as the head-unaware ones instead of recomputed."""

    def __init__(self, attack: Attack):
        self.attack = attack
        self.name = attack.name
        self.perturbs = attack.perturbs
        self._memo: dict[tuple[int, tuple[int, ...]], Batch] = {}

    def describe(self) -> dict[str, Any]:
        return self.attack.describe()

    def fit(self, encoder: Any, dataset: Any) -> "MemoAttack":
        self.attack.fit(encoder, dataset)
        self._memo.clear()
        return self

    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        if batch.index is None:
            return self.attack(encoder, batch)
        key = (id(encoder), tuple(batch.index.tolist()))
        if key not in self._memo:
            self._memo[key] = self.attack(encoder, batch)
        out = self._memo[key]
        return out.replace(x=out.x.clone().to(batch.x.device))

    def outputs(self) -> list[Batch]:
        """Every remembered output batch, in the order they were first made."""
        return list(self._memo.values())
