"""The cost of work in model passes: forward and backward passes through the encoder under attack.

Wall time on a shared machine is noise; the number of model passes is not, and it compares across
machines and tools (AutoAttack counts its model queries the same way). Every call of
:meth:`robustmm.encoders.Encoder.encode` made while a :func:`count_passes` block is open adds one
forward pass per item of its batch, and one backward pass per item when a gradient later flows
back through its output. Only the outermost ``encode`` counts: a defended encoder that calls the
encoder it wraps (heads, input transforms, a denoiser) is one pass of the model under attack, so
the count is in passes of whatever encoder the attack was given, head and defense included.
Calls of ``encode_text`` are counted apart, as ``text`` (texts embedded), since text embeddings are
mostly computed once per batch (class prompts) and memoised.

Example::

    with count_passes() as passes:
        x_adv = attack(encoder, batch)
    passes.as_dict(items=len(batch))   # {"forward": 101.0, "backward": 100.0, ...} per item

Counting is per process; :func:`PassCount.as_dict` reports per-item means, so ranks that each
attacked their own shard report the same unit (the caller sums totals across ranks).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch

from . import distributed


@dataclass
class PassCount:
    """Passes counted inside one :func:`count_passes` block (totals over items)."""

    forward: int = 0
    backward: int = 0
    text: int = 0

    def add(self, other: "PassCount") -> None:
        """Add ``other``'s totals to this count (a batch's count into a run's)."""
        self.forward += other.forward
        self.backward += other.backward
        self.text += other.text

    def as_dict(self, items: int) -> dict[str, Any]:
        """The record's ``cost`` block: per-item means of forward and backward passes (what compares
        across tools), the totals, the texts embedded, and the item count they are divided by."""
        per = max(int(items), 1)
        return {
            "forward": round(self.forward / per, 3),
            "backward": round(self.backward / per, 3),
            "forward_total": self.forward,
            "backward_total": self.backward,
            "text_total": self.text,
            "items": int(items),
        }

    @classmethod
    def from_dict(cls, block: Mapping[str, Any]) -> "PassCount":
        """The totals of a record's ``cost`` block (what :meth:`as_dict` wrote)."""
        return cls(int(block.get("forward_total", 0)), int(block.get("backward_total", 0)),
                   int(block.get("text_total", 0)))


_COUNTERS: ContextVar[tuple[PassCount, ...]] = ContextVar("robustmm_pass_counters", default=())
_INSIDE: ContextVar[bool] = ContextVar("robustmm_inside_encode", default=False)


@contextmanager
def count_passes() -> Iterator[PassCount]:
    """Count the model passes made inside the block (blocks nest: each open block counts)."""
    counter = PassCount()
    token = _COUNTERS.set(_COUNTERS.get() + (counter,))
    try:
        yield counter
    finally:
        _COUNTERS.reset(token)


@contextmanager
def model_call() -> Iterator[bool]:
    """Mark one encoder call; yields True for the outermost call only (the one that counts)."""
    if _INSIDE.get():
        yield False
        return
    token = _INSIDE.set(True)
    try:
        yield True
    finally:
        _INSIDE.reset(token)


def note_forward(out: torch.Tensor, items: int) -> None:
    """Count a forward pass of ``items`` items into every open block, and their backward pass when
    a gradient reaches ``out`` (a hook on the output, so passes that never back-propagate are free)."""
    counters = _COUNTERS.get()
    if not counters:
        return
    for c in counters:
        c.forward += items
    if out.requires_grad:
        def _backward(grad: torch.Tensor) -> None:
            for c in counters:
                c.backward += items
        out.register_hook(_backward)


def replay(count: PassCount) -> None:
    """Add ``count`` (passes spent earlier) into every open block: a remembered result (a memoised
    attack's examples) costs what making it cost, so records that reuse it compare with the rest."""
    for c in _COUNTERS.get():
        c.add(count)


def note_text(count: int) -> None:
    """Count ``count`` texts embedded into every open block."""
    for c in _COUNTERS.get():
        c.text += count


def summed_passes(count: PassCount) -> PassCount:
    """``count`` summed over the ranks of a process group (each rank attacked its own shard);
    ``count`` itself outside one. Every rank must call it."""
    if not distributed.is_distributed():
        return count
    total = PassCount()
    for c in distributed.all_gather_object(count):
        total.add(c)
    return total


def counting() -> bool:
    """Whether a :func:`count_passes` block is open (callers skip bookkeeping otherwise)."""
    return bool(_COUNTERS.get())


def combined(blocks: Iterable[Mapping[str, Any] | None], items: int) -> dict[str, Any] | None:
    """One ``cost`` block for work made of several records' (the attacks of a worst case, the
    evaluations behind a check): their totals summed, per item of ``items`` items; None when
    none of them carries a cost (nothing was attacked)."""
    total, seen = PassCount(), False
    for block in blocks:
        if block is not None:
            total.add(PassCount.from_dict(block))
            seen = True
    return total.as_dict(items) if seen else None
