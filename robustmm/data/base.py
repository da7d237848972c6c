"""The dataset contract shared by SynthScenes and the real-dataset loaders.

A :class:`MultimodalDataset` holds N items. Each item has one raw tensor per modality it
carries (loaded on demand through :meth:`MultimodalDataset.get`), one or more captions, and
optional ground-truth attributes. For zero-shot classification the dataset gives one
:class:`ZeroShotTask` per modality -- labels, class names and prompt templates -- so every
modality is scored on what its own content can tell.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import EmptyDatasetError, UnknownNameError


@dataclass(frozen=True)
class ZeroShotTask:
    """Zero-shot classification task for one modality.

    ``labels[i]`` indexes ``classnames``; a prompt is ``template.format(classname)`` and the class
    embedding is the normalised mean over templates (the CLIP recipe).
    """

    labels: torch.Tensor  # (N,) int64
    classnames: tuple[str, ...]
    templates: tuple[str, ...] = ("a photo of a {}.",)
    description: str = ""

    def prompts(self) -> list[list[str]]:
        """Prompts per class: ``prompts()[c][t]``."""
        return [[t.format(c) for t in self.templates] for c in self.classnames]

    def subset(self, index: torch.Tensor) -> "ZeroShotTask":
        return ZeroShotTask(self.labels[index], self.classnames, self.templates, self.description)


Loader = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class MultimodalDataset:
    """N aligned multimodal items.

    ``tensors`` holds in-memory modalities as (N, *shape) tensors; ``loaders`` holds lazy ones
    (a function from an index tensor to a batch) for datasets too large to keep in memory.
    ``info`` is recorded in results (name, split, seed, size).
    """

    name: str
    split: str
    captions: list[list[str]]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    loaders: dict[str, Loader] = field(default_factory=dict)
    tasks: dict[str, ZeroShotTask] = field(default_factory=dict)
    attributes: list[Any] | None = None
    seed: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    _index: torch.Tensor | None = None  # when a subset of a lazily-loaded dataset

    def __post_init__(self) -> None:
        n = len(self.captions)
        for m, t in self.tensors.items():
            if t.shape[0] != n:
                raise EmptyDatasetError(f"{self.name}: modality {m!r} has {t.shape[0]} items, captions {n}")
        for m, task in self.tasks.items():
            if task.labels.shape[0] != n:
                raise EmptyDatasetError(f"{self.name}: task {m!r} has {task.labels.shape[0]} labels, captions {n}")

    # -- size and modalities -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.captions)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.tensors) + tuple(m for m in self.loaders if m not in self.tensors)

    def check_modality(self, modality: str) -> None:
        if modality not in self.modalities:
            raise UnknownNameError(f"modality of dataset {self.name!r}", modality, self.modalities)

    def check_nonempty(self) -> None:
        if len(self) == 0:
            raise EmptyDatasetError(f"dataset {self.name!r} ({self.split}) has no items")
        missing = [i for i, caps in enumerate(self.captions) if not caps]
        if missing:
            raise EmptyDatasetError(f"dataset {self.name!r}: item {missing[0]} has no captions ({len(missing)} items)")

    # -- access ----------------------------------------------------------------------------
    def get(self, modality: str, index: torch.Tensor | Sequence[int] | slice) -> torch.Tensor:
        """Raw tensors of ``modality`` for the given item indices, shape (len(index), *shape)."""
        self.check_modality(modality)
        if isinstance(index, slice):
            index = torch.arange(len(self))[index]
        index = torch.as_tensor(index, dtype=torch.long)
        if modality in self.tensors:
            return self.tensors[modality][index]
        base = index if self._index is None else self._index[index]
        return self.loaders[modality](base)

    def task(self, modality: str) -> ZeroShotTask:
        if modality not in self.tasks:
            raise UnknownNameError(f"zero-shot task of dataset {self.name!r}", modality, self.tasks)
        return self.tasks[modality]

    def subset(self, index: torch.Tensor | Sequence[int]) -> "MultimodalDataset":
        """A new dataset of the selected items (tensors are indexed, lazy loaders re-mapped)."""
        index = torch.as_tensor(index, dtype=torch.long)
        idx_list = index.tolist()
        base = index if self._index is None else self._index[index]
        return MultimodalDataset(
            name=self.name,
            split=self.split,
            captions=[self.captions[i] for i in idx_list],
            tensors={m: t[index] for m, t in self.tensors.items()},
            loaders=dict(self.loaders),
            tasks={m: t.subset(index) for m, t in self.tasks.items()},
            attributes=None if self.attributes is None else [self.attributes[i] for i in idx_list],
            seed=self.seed,
            meta=dict(self.meta),
            _index=base if self.loaders else None,
        )

    def head(self, n: int) -> "MultimodalDataset":
        """The first ``n`` items (all of them if ``n`` >= len)."""
        return self.subset(torch.arange(min(n, len(self))))

    def info(self) -> dict[str, Any]:
        """The ``dataset`` block of a result record."""
        return {"name": self.name, "split": self.split, "size": len(self), "seed": self.seed, **self.meta}
