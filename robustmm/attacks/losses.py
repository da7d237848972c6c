"""Differentiable attack objectives on embeddings.

Every loss takes unit-norm embeddings ``emb`` (N, D) of the (perturbed) inputs and returns a
per-sample loss (N,) that the attack **maximises**. Summing it gives the batch objective; because
each sample's loss depends only on its own input, the gradient of the sum w.r.t. the input is
the per-sample gradient (so a per-sample step such as ``sign`` is independent of batch size).

========================= =========================================== ==========================
name                      loss (maximised)                             needs
========================= =========================================== ==========================
``ce``                    CE(scale * emb @ class_emb.T, label)         labels + class prompts
``ce-targeted``           -CE(scale * emb @ class_emb.T, target)       labels + class prompts
``caption``               -mean_j cos(emb, own caption j)              captions (label-free)
``caption-targeted``      cos(emb, target caption)                     captions (label-free)
``embedding``             1 - cos(emb, clean_emb)                      nothing (label-free)
========================= =========================================== ==========================

Example::

    >>> from robustmm.attacks.losses import zeroshot_ce
    >>> emb = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    >>> centers = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    >>> zeroshot_ce(emb, centers, torch.tensor([0, 1, 2, 0])).shape
    torch.Size([4])

:func:`make_objective` binds a loss to one batch (class centers, caption embeddings, targets,
clean embeddings: all computed once, without gradients) so an attack only calls
``objective(emb, idx)`` per step. ``idx`` selects the batch rows still being attacked.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..batch import Batch
from ..errors import RobustMMError, UnknownNameError

__all__ = [
    "LOSSES",
    "Objective",
    "caption_away",
    "caption_centroids",
    "caption_toward",
    "embedding_away",
    "make_objective",
    "resolve_loss",
    "targeted_zeroshot",
    "zeroshot_ce",
]

DEFAULT_SCALE = 100.0  # CLIP's logit scale (exp(4.6052)); the usual zero-shot temperature


# -- the losses -----------------------------------------------------------------------------------
def zeroshot_ce(emb: torch.Tensor, class_emb: torch.Tensor, labels: torch.Tensor, scale: float = DEFAULT_SCALE) -> torch.Tensor:
    """Cross-entropy of scaled cosine logits against class-prompt embeddings (untargeted).

    Args:
        emb: (N, D) unit embeddings.
        class_emb: (C, D) unit class "semantic centers" (``Encoder.class_embeddings``).
        labels: (N,) true class indices.
        scale: logit scale (CLIP uses 100).
    Returns:
        (N,) cross-entropy; maximising it pushes each sample away from its true class.
    """
    logits = scale * emb @ class_emb.to(emb.dtype).T
    return F.cross_entropy(logits, labels.to(logits.device), reduction="none")


def targeted_zeroshot(emb: torch.Tensor, class_emb: torch.Tensor, target: torch.Tensor,
                      scale: float = DEFAULT_SCALE) -> torch.Tensor:
    """Negative cross-entropy toward a target class: maximising it pulls samples to ``target``.

    Args:
        emb: (N, D); class_emb: (C, D); target: (N,) target class indices.
    Returns:
        (N,) ``-CE(scale * emb @ class_emb.T, target)``.
    """
    return -zeroshot_ce(emb, class_emb, target, scale)


def caption_away(emb: torch.Tensor, caption_emb: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """Minus the mean cosine similarity of each item to its own captions (label-free, untargeted).

    Args:
        emb: (N, D) unit embeddings of the items.
        caption_emb: (M, D) unit caption embeddings (``encoder.encode_text``, no gradient).
        owner: (M,) the item (row of ``emb``) each caption belongs to, in ``[0, N)``.
    Returns:
        (N,) ``-mean_{j: owner[j] = i} <emb_i, caption_j>`` (0 for an item without captions).
    """
    # mean_j <e, c_j> = <e, mean_j c_j>: one (N, D) product instead of an (N, M) similarity matrix
    centroid = caption_centroids(caption_emb.to(emb.dtype), owner.to(emb.device), emb.shape[0])
    return -(emb * centroid).sum(-1)


def caption_toward(emb: torch.Tensor, target_caption_emb: torch.Tensor) -> torch.Tensor:
    """Cosine similarity to a target caption per item (targeted, label-free).

    Args:
        emb: (N, D) unit embeddings; target_caption_emb: (N, D) unit target caption embeddings.
    Returns:
        (N,) ``<emb_i, target_i>``.
    """
    return (emb * target_caption_emb.to(emb.dtype)).sum(-1)


def embedding_away(emb: torch.Tensor, clean_emb: torch.Tensor) -> torch.Tensor:
    """``1 - cos(emb, clean_emb)``: push embeddings away from their clean versions (label-free).

    The gradient vanishes at the clean input itself, so use it with a random start.

    Args:
        emb: (N, D) unit embeddings of perturbed inputs; clean_emb: (N, D) of the clean inputs.
    Returns:
        (N,) in [0, 2].
    """
    return 1.0 - (emb * clean_emb.to(emb.dtype)).sum(-1)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "ce": zeroshot_ce,
    "ce-targeted": targeted_zeroshot,
    "caption": caption_away,
    "caption-targeted": caption_toward,
    "embedding": embedding_away,
}
TARGETED = {"ce": "ce-targeted", "caption": "caption-targeted"}


def resolve_loss(name: str) -> Callable[..., torch.Tensor]:
    """The loss function registered as ``name`` (``UnknownNameError`` with a suggestion otherwise)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise UnknownNameError("attack loss", name, LOSSES) from None


def effective_loss(loss: str, targeted: bool, batch: Batch) -> str:
    """The loss name an attack really uses on ``batch``.

    ``targeted=True`` turns ``ce``/``caption`` into their targeted forms; the zero-shot losses fall
    back to the caption losses when the batch has no labels. Labels without class prompts are a
    one-line error naming ``classnames``/``prompts`` (there is nothing to score the labels against).
    """
    resolve_loss(loss)
    if targeted:
        if loss == "embedding":
            raise RobustMMError("the 'embedding' loss is untargeted; use 'ce-targeted' or 'caption-targeted'")
        loss = TARGETED.get(loss, loss)
    if loss.startswith("ce") and batch.labels is not None and batch.prompts is None:
        raise RobustMMError(f"the zero-shot loss {loss!r} has labels but no classes to score them against: "
                            "pass classnames=[...] (or prompts=[[...], ...]) with the labels, or choose loss='embedding'")
    if loss.startswith("ce") and batch.labels is None:
        loss = "caption" + loss[2:]
        if not any(batch.captions):
            raise RobustMMError("the zero-shot loss needs labels=[...] with classnames=[...] (or prompts=[[...], ...]); "
                                "without labels it falls back to the caption loss, which needs captions=[...]; "
                                "or choose loss='embedding'")
    return loss


# -- binding a loss to a batch ----------------------------------------------------------------------
@dataclass
class Objective:
    """A loss bound to one batch: ``objective(emb, idx) -> (len(idx),)`` to maximise.

    ``idx`` (a LongTensor of batch rows) says which rows ``emb`` holds; every per-item tensor is
    stored for the full batch and indexed with it. Built by :func:`make_objective`.
    """

    name: str
    scale: float = DEFAULT_SCALE
    class_emb: torch.Tensor | None = None  # (C, D)
    labels: torch.Tensor | None = None  # (N,) true classes (ce) or target classes (ce-targeted)
    true_labels: torch.Tensor | None = None  # (N,) true classes, for success bookkeeping
    reference: torch.Tensor | None = None  # (N, D) caption centroid / target caption / clean embedding

    def __call__(self, emb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self.name == "ce":
            return zeroshot_ce(emb, self.class_emb, self.labels[idx], self.scale)
        if self.name == "ce-targeted":
            return targeted_zeroshot(emb, self.class_emb, self.labels[idx], self.scale)
        if self.name == "caption":
            # the reference is the mean caption embedding, so one "caption" per item is exact
            return caption_away(emb, self.reference[idx], torch.arange(len(idx), device=emb.device))
        if self.name == "caption-targeted":
            return caption_toward(emb, self.reference[idx])
        return embedding_away(emb, self.reference[idx])

    def success(self, emb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor | None:
        """(len(idx),) bool: whether the zero-shot goal is already met (None: no such notion).

        Untargeted: the true class is not the strict top-1 (ties count as broken, as in
        :func:`robustmm.metrics.zeroshot_correct`). Targeted: the target is the strict top-1.
        """
        if self.class_emb is None:
            return None
        with torch.no_grad():
            logits = emb.detach() @ self.class_emb.to(emb.dtype).T
            lab = self.labels[idx].to(logits.device)
            own = logits.gather(1, lab[:, None])
            at_least = (logits >= own).sum(1) - 1  # other classes at least as similar
            return at_least > 0 if self.name == "ce" else at_least == 0


def _per_item_captions(encoder: Any, captions: Sequence[Sequence[str]], device: torch.device) -> torch.Tensor:
    """(N, D) mean caption embedding per item, captions embedded once without gradients."""
    flat = [c for caps in captions for c in caps]
    owner = torch.tensor([i for i, caps in enumerate(captions) for _ in caps], dtype=torch.long)
    if any(len(c) == 0 for c in captions):
        raise RobustMMError("the caption loss needs at least one caption per item")
    with torch.no_grad():
        emb = encoder.encode_text(flat).to(device)
    return caption_centroids(emb, owner.to(device), len(captions))


def caption_centroids(caption_emb: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """(n, D) per-item mean of its caption embeddings (not renormalised)."""
    centroid = torch.zeros(n, caption_emb.shape[1], dtype=caption_emb.dtype, device=caption_emb.device)
    centroid.index_add_(0, owner, caption_emb)
    return centroid / torch.bincount(owner, minlength=n).clamp_min(1).to(caption_emb.dtype)[:, None]


def _target_classes(target: Any, labels: torch.Tensor, n_classes: int, generator: torch.Generator) -> torch.Tensor:
    n = labels.shape[0]
    if target is None:  # a random class other than the true one, drawn from the attack's generator
        shift = torch.randint(1, n_classes, (n,), generator=generator, device=generator.device).to(labels.device)
        return (labels + shift) % n_classes
    if callable(target):
        target = target(labels)
    t = torch.as_tensor(target, dtype=torch.long, device=labels.device)
    t = t.expand(n).clone() if t.dim() == 0 else t
    if t.shape != (n,):
        raise RobustMMError(f"target classes: expected one int or {n} of them, got shape {tuple(t.shape)}")
    if t.min() < 0 or t.max() >= n_classes:
        raise RobustMMError(f"target classes must lie in [0, {n_classes}), got [{int(t.min())}, {int(t.max())}]")
    return t


def _target_captions(target: Any, captions: Sequence[Sequence[str]]) -> list[str]:
    n = len(captions)
    if target is None:  # the first caption of the next item in the batch
        if n < 2:
            raise RobustMMError("a targeted caption attack on a single item needs an explicit target caption")
        return [captions[(i + 1) % n][0] for i in range(n)]
    if callable(target):
        target = target(captions)
    if isinstance(target, str):
        return [target] * n
    target = list(target)
    if len(target) != n or not all(isinstance(t, str) for t in target):
        raise RobustMMError(f"target captions: expected one string or {n} strings")
    return target


def make_objective(
    name: str,
    encoder: Any,
    batch: Batch,
    *,
    x: torch.Tensor | None = None,
    target: Any = None,
    scale: float = DEFAULT_SCALE,
    generator: torch.Generator | None = None,
) -> Objective:
    """Bind loss ``name`` to ``batch`` for ``encoder``; every reference is computed once, no grad.

    Args:
        name: an effective loss name (see :func:`effective_loss`).
        encoder: the encoder the attack differentiates.
        batch: the clean batch (labels, prompts, captions).
        x: the clean inputs on the attack device (for the ``embedding`` loss).
        target: targeted losses only -- class index / (N,) indices / ``f(labels)`` for
            ``ce-targeted``; a caption / N captions / ``f(captions)`` for ``caption-targeted``.
            None picks a random other class, or the next item's first caption.
        generator: the attack's random generator (random target classes).
    """
    resolve_loss(name)
    device = batch.x.device if x is None else x.device
    if name in ("ce", "ce-targeted"):
        if batch.labels is None or batch.prompts is None:
            raise RobustMMError(f"loss {name!r} needs labels and the classes to score them against: "
                                "pass labels= with classnames=[...] (or prompts=[[...], ...])")
        class_emb = encoder.class_embeddings(batch.prompts).to(device)
        labels = batch.labels.to(device=device, dtype=torch.long)
        if name == "ce":
            return Objective(name, scale, class_emb, labels, labels)
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(0)
        tgt = _target_classes(target, labels, class_emb.shape[0], generator)
        return Objective(name, scale, class_emb, tgt, labels)
    if name == "caption":
        return Objective(name, scale, reference=_per_item_captions(encoder, batch.captions, device))
    if name == "caption-targeted":
        with torch.no_grad():
            ref = encoder.encode_text(_target_captions(target, batch.captions)).to(device)
        return Objective(name, scale, reference=ref)
    with torch.no_grad():
        clean = encoder.encode(batch.modality, batch.x if x is None else x).detach()
    return Objective(name, scale, reference=clean)
