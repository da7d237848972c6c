"""An attack wrapper that remembers its outputs.

Used to make adversarial examples once and score them several times (white-box on the bare
encoder, then head-unaware through calibration heads) and to read back what a text attack wrote.
"""
from __future__ import annotations

from typing import Any

from ..batch import Batch
from ..cost import PassCount, count_passes, replay
from .base import Attack, AttackWrapper


class MemoAttack(AttackWrapper):
    """Wraps an attack and remembers its output per (source encoder, modality, items), so the
    white-box examples made on the bare encoder are reused as the head-unaware ones.

    The memo holds a reference to every encoder it has outputs for and checks identity on lookup,
    so a freed encoder whose ``id()`` is reused by another model can never match its entries.
    A remembered output is charged the passes that made it (:func:`robustmm.cost.replay`), so the
    head-unaware record's ``cost`` is its examples' cost, as if they had been made again.
    """

    def __init__(self, inner: Attack):
        super().__init__(inner)
        self._memo: dict[tuple[int, str, tuple[int, ...]], tuple[Any, Batch, PassCount]] = {}

    @property
    def attack(self) -> Attack:
        """The wrapped attack (kept for callers of the first round's API)."""
        return self.inner

    def resolve(self, modality: str) -> Attack:
        """Self when resolving changes nothing (the memo stays shared), else a fresh memo."""
        resolved = self.inner.resolve(modality)
        return self if resolved.settings() == self.inner.settings() else MemoAttack(resolved)

    def fit(self, encoder: Any, dataset: Any) -> "MemoAttack":
        self.inner.fit(encoder, dataset)
        self._memo.clear()
        return self

    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        if batch.index is None:
            return self.inner(encoder, batch)
        key = (id(encoder), batch.modality, tuple(batch.index.tolist()))
        hit = self._memo.get(key)
        if hit is None or hit[0] is not encoder:
            with count_passes() as spent:
                made = self.inner(encoder, batch)
            hit = (encoder, made, spent)
            self._memo[key] = hit
        else:
            replay(hit[2])
        out = hit[1]
        return out.replace(x=out.x.clone().to(batch.x.device))

    def outputs(self) -> list[Batch]:
        """Every remembered output batch, in the order they were first made."""
        return [out for _, out, _ in self._memo.values()]
