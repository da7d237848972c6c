"""The unit of work passed to attacks: one modality's raw inputs plus the text that goes with them."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import RobustMMError

#: the prompt template used when class names come without prompts (the CLIP recipe's plain form)
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


@dataclass(frozen=True)
class Embedded:
    """An embedding an attack already computed of exactly the inputs it returns.

    ``x`` is the very tensor that was embedded (checked by identity, so a batch whose ``x`` was
    replaced never passes a stale embedding on), ``encoder`` the encoder that embedded it, in eval
    mode and without gradient tracking in the result, and ``emb`` the (N, D) embedding.
    """

    x: torch.Tensor
    encoder: Any
    emb: torch.Tensor


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
        embedded: the embedding of ``x`` an attack already computed (:class:`Embedded`), or None;
            :func:`robustmm.evaluate` uses it instead of embedding ``x`` again (:meth:`embedding_by`).
    """

    modality: str
    x: torch.Tensor
    captions: list[list[str]]
    labels: torch.Tensor | None = None
    prompts: list[list[str]] | None = None
    index: torch.Tensor | None = None
    embedded: Embedded | None = field(default=None, compare=False, repr=False)

    def __len__(self) -> int:
        return self.x.shape[0]

    def replace(self, **changes: Any) -> "Batch":
        """A copy with some fields replaced (attacks return new batches, never mutate)."""
        return dataclasses.replace(self, **changes)

    def embedding_by(self, encoder: Any) -> torch.Tensor | None:
        """The embedding of this batch's ``x`` by ``encoder`` that an attack handed back, or None:
        only when it was computed for this very ``x`` tensor by this very encoder, that encoder is
        ``deterministic`` (no random draws in ``encode``, so a second call would give the same
        bits) and it is in eval mode now, as it was when the attack embedded ``x``."""
        e = self.embedded
        if e is None or e.x is not self.x or e.encoder is not encoder:
            return None
        if not getattr(encoder, "deterministic", False) or any(m.training for m in encoder.modules()):
            return None
        return e.emb

    def take(self, rows: torch.Tensor) -> "Batch":
        """The items ``rows`` (a LongTensor of positions) of this batch, their dataset indices kept
        (positions stand in when the batch has none), so per-item seeds match in any sub-batch."""
        n = len(self)
        index = self.index if self.index is not None and len(self.index) == n else torch.arange(n)
        r = rows.cpu()
        labels = None if self.labels is None else self.labels[rows.to(self.labels.device)]
        return Batch(self.modality, self.x[rows], [self.captions[i] for i in r.tolist()], labels, self.prompts,
                     torch.as_tensor(index)[r])

    @classmethod
    def from_tensors(
        cls,
        x: torch.Tensor,
        *,
        modality: str,
        labels: torch.Tensor | Sequence[int] | None = None,
        classnames: Sequence[str] | None = None,
        prompts: Sequence[Sequence[str]] | None = None,
        captions: Sequence[str] | Sequence[Sequence[str]] | None = None,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        index: torch.Tensor | Sequence[int] | None = None,
    ) -> "Batch":
        """A batch from plain tensors and lists, for attacking inputs that are not in a dataset.

        ``classnames`` become per-class prompts through ``templates`` (``"a photo of a {}."`` by
        default); ``prompts`` (one list per class) are used as they are. ``captions`` may give one
        string or a list of strings per item; without them every item has none (zero-shot and
        embedding losses need none).
        """
        if not isinstance(x, torch.Tensor):
            raise RobustMMError(f"x must be a tensor of {modality} inputs (N, ...), got {type(x).__name__}")
        n = x.shape[0]
        if prompts is not None and classnames is not None:
            raise RobustMMError("give classnames= or prompts=, not both (prompts are built from classnames)")
        if classnames is not None:
            prompts = [[t.format(c) for t in templates] for c in classnames]
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long)
            if labels.shape != (n,):
                raise RobustMMError(f"labels: expected shape ({n},) for {n} inputs, got {tuple(labels.shape)}")
        if captions is None:
            per_item: list[list[str]] = [[] for _ in range(n)]
        else:
            per_item = [[c] if isinstance(c, str) else list(c) for c in captions]
            if len(per_item) != n:
                raise RobustMMError(f"captions: expected {n} (one per input), got {len(per_item)}")
        idx = None if index is None else torch.as_tensor(index, dtype=torch.long)
        return cls(modality, x, per_item, labels, None if prompts is None else [list(p) for p in prompts], idx)
