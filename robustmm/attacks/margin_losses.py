"""Margin-type objectives and the "is this item still robust?" test shared by APGD, Square and
the ensemble.

Zero-shot logits are ``scale * emb @ class_emb.T`` (the class-prompt "semantic centers"), as in
:mod:`robustmm.attacks.losses`. On them:

* :func:`dlr` -- the Difference of Logits Ratio of Croce & Hein (2020),
  ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)``; scale-invariant, maximised;
* :func:`dlr_targeted` -- ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`` (APGD-T);
* :func:`margin` -- ``z_y - max_{i != y} z_i``, Square's score (minimised; <= 0 means broken).

Label-free batches (retrieval datasets) have no classes; there the item's score is the X->text
R@1 margin within the batch: its best own caption's cosine minus the best other caption's
(:meth:`Scorer.caption_margin`; <= 0 means the item lost R@1, ties count against it, as in
:func:`robustmm.metrics.x2t_ranks`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..batch import Batch
from ..errors import RobustMMError
from ..metrics import caption_owner

__all__ = ["Scorer", "dlr", "dlr_targeted", "margin"]


def _sorted(logits: torch.Tensor, need: int) -> torch.Tensor:
    if logits.shape[1] < need:
        raise RobustMMError(f"the DLR loss needs at least {need} classes, the task has {logits.shape[1]}")
    return logits.sort(dim=1, descending=True).values


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) ``z_y - max_{i != y} z_i``: > 0 iff the true class is the strict top-1."""
    own = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return own - other


def dlr(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) untargeted DLR loss (maximised); needs >= 3 classes."""
    z = _sorted(logits, 3)
    return -margin(logits, labels) / (z[:, 0] - z[:, 2] + 1e-12)


def dlr_targeted(logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N,) targeted DLR loss toward ``target`` (maximised); needs >= 4 classes."""
    z = _sorted(logits, 4)
    gap = logits.gather(1, labels[:, None]).squeeze(1) - logits.gather(1, target[:, None]).squeeze(1)
    return -gap / (z[:, 0] - (z[:, 2] + z[:, 3]) / 2 + 1e-12)


@dataclass
class Scorer:
    """One batch's zero-shot task (if it has one) and captions, bound once without gradients.

    ``zero_shot``: the batch has labels and class prompts; then robustness is zero-shot top-1,
    else X->text R@1 among the batch's captions. Rows are given as a LongTensor ``rows`` into
    the full batch, so a sub-batch of still-robust items is scored against the full batch. Rows
    with the same dataset index (EOT's copies) are one item: their captions are all "own".
    """

    scale: float
    class_emb: torch.Tensor | None
    labels: torch.Tensor | None
    caption_emb: torch.Tensor | None
    owner: torch.Tensor | None  # per caption, the dataset index of its item
    texts: list[str]
    ids: torch.Tensor | None = None  # per row, its item's dataset index (rows sharing one are one item)

    @classmethod
    def of(cls, encoder: Any, batch: Batch, scale: float, device: torch.device) -> "Scorer":
        """Bind ``batch`` (class embeddings, or its captions' embeddings) for ``encoder``."""
        class_emb = labels = cap = owner = ids = None
        texts: list[str] = []
        if batch.labels is not None and batch.prompts is not None:
            class_emb = encoder.class_embeddings(batch.prompts).to(device)
            labels = batch.labels.to(device=device, dtype=torch.long)
        else:
            texts, owner = caption_owner(batch.captions)
            if not texts:
                raise RobustMMError(f"the {batch.modality} batch has neither labels nor captions to score")
            with torch.no_grad():
                cap = encoder.encode_text(texts).to(device)
            n = len(batch)
            ids = torch.as_tensor(batch.index) if batch.index is not None and len(batch.index) == n else torch.arange(n)
            ids = ids.to(device=device, dtype=torch.long)
            owner = ids[owner.to(device)]
        return cls(float(scale), class_emb, labels, cap, owner, texts, ids)

    @property
    def zero_shot(self) -> bool:
        return self.class_emb is not None

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        """(n, C) scaled zero-shot logits."""
        return self.scale * emb @ self.class_emb.to(emb.dtype).T

    def caption_margin(self, emb: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(n,) best own caption cosine minus best other caption cosine (X->text R@1 margin)."""
        sims = emb @ self.caption_emb.to(emb.dtype).T
        own = self.owner[None, :] == self.ids[rows][:, None]
        best_own = sims.masked_fill(~own, float("-inf")).amax(1)
        best_other = sims.masked_fill(own, float("-inf")).amax(1)
        return best_own - best_other

    def score(self, emb: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(n,) the robustness margin: zero-shot margin, else the caption margin (<= 0: broken)."""
        if self.zero_shot:
            return margin(self.logits(emb), self.labels[rows])
        return self.caption_margin(emb, rows)

    def robust(self, emb: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(n,) bool: zero-shot correct (strict top-1), else X->text R@1 kept."""
        with torch.no_grad():
            return self.score(emb.detach(), rows) > 0

    def other_captions(self, clean_emb: torch.Tensor, k: int) -> list[list[str]]:
        """For ranks 1..k, per item the rank-th most similar caption of another item (APGD-T's
        target "classes" on a label-free batch). Fewer ranks when the batch has fewer captions."""
        rows = torch.arange(clean_emb.shape[0], device=clean_emb.device)
        sims = clean_emb @ self.caption_emb.to(clean_emb.dtype).T
        sims = sims.masked_fill(self.owner[None, :] == self.ids[rows][:, None], float("-inf"))
        k = min(k, int((sims > float("-inf")).sum(1).min()))
        order = sims.argsort(dim=1, descending=True)[:, :k]
        return [[self.texts[j] for j in order[:, r].tolist()] for r in range(k)]
