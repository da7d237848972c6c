"""The unit of work passed to attacks: one modality's raw inputs plus the text that goes with them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Batch:
    """A batch of items of one modality.

    Attributes:
        modality: the attacked modality ("image", "audio", ...).
        x: raw inputs, (N, *shape), in the modality's domain.
        captions: per item, its captions (retrieval ground truth, text-attack targets).
        labels: (N,) zero-shot labels, or None when the dataset has no task for the modality.
        prompts: per class, its prompts (``classname`` in each template), or None.
        index: (N,) item indices in the dataset (for per-item bookkeeping).
    """

    modality: str
    x: torch.Tensor
    captions: list[list[str]]
    labels: torch.Tensor | None = None
    prompts: list[list[str]] | None = None
    index: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def replace(self, **changes: Any) -> "Batch":
        """A copy with some fields replaced (attacks return new batches, never mutate)."""
        return dataclasses.replace(self, **changes)
