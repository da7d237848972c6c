"""CLIPure-Cos (Zhang et al., ICLR 2025): purify an embedding in latent space, then classify.

"CLIPure: Purification in Latent Space via Multimodal Vision-Language Models for Adversarially
Robust Zero-Shot Classification". An adversarial input's embedding drifts away from where the
model's clean inputs lie; CLIPure-Cos pulls it back by gradient ascent, in the embedding space, on
its cosine similarity to the embedding of a blank template text ("a photo of a ."), which the
paper uses as a stand-in for the likelihood of an embedding. The steps are normalised (a fixed
length along the gradient's direction, with momentum), there is a fixed number of them, and the
purified embedding is what the encoder returns; zero-shot classification and retrieval then use
it unchanged. The paper's embedding is CLIP's unnormalised image feature; here every encoder
returns unit vectors, so the purification walks on the unit sphere (renormalised after each step).

The purification is differentiable end to end: each step's gradient is taken with
``create_graph=True`` whenever the caller differentiates the embedding, so an adaptive attacker
(any gradient attack on :class:`PurifiedEncoder`) follows the full gradient through the unrolled
steps. ``unroll=False`` keeps each step's direction out of the graph (a first-order
approximation); the published evaluation differentiated nothing of the defense (its attack was
made on the undefended model), which is a transfer attack here (``evaluate(..., source=bare)``).

Example::

    >>> pure = defend(enc, "clipure", steps=10, step_size=0.02)
    >>> naive = evaluate(pure, data, modality="image", attack=PGD(), source=enc)   # the paper's setting
    >>> adaptive = evaluate(pure, data, modality="image", attack=PGD())            # through the purification
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..errors import RobustMMError
from .base import Encoder, WrapperEncoder

#: the blank template of the paper (the class name left out of "a photo of a {}.")
NULL_TEXT = "a photo of a ."


def check_positive(name: str, value: Any, *, integer: bool = False, allow_zero: bool = False) -> float:
    """``value`` as a number if it is a positive (or, with ``allow_zero``, non-negative) number of the
    right kind; a one-line :class:`RobustMMError` naming the setting otherwise."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not (value >= 0 if allow_zero else value > 0):
        what = "an integer" if integer else "a number"
        raise RobustMMError(f"{name} must be {what} {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return value


def purify_cosine(z: torch.Tensor, anchor: torch.Tensor, *, steps: int, step_size: float, momentum: float,
                  create_graph: bool) -> torch.Tensor:
    """``steps`` normalised gradient-ascent steps of ``cos(z, anchor)`` on the unit sphere.

    Each step moves ``z`` by ``step_size`` along the momentum-averaged unit direction of the
    cosine's gradient and renormalises it. With ``create_graph`` the steps stay in the autograd
    graph (second-order terms included), so the result is differentiable in ``z`` as computed;
    otherwise each step's direction is a constant. Runs with gradients on even inside ``no_grad``
    (the steps need them); the result is then detached.
    """
    outer = torch.is_grad_enabled() and z.requires_grad
    create_graph = create_graph and outer
    anchor = anchor.detach().to(z)
    with torch.enable_grad():
        cur = z if outer else z.detach().requires_grad_(True)
        velocity = torch.zeros_like(cur)
        for _ in range(steps):
            if not cur.requires_grad:  # a step whose direction is a constant (unroll=False)
                cur = cur.detach().requires_grad_(True)
            cos = F.cosine_similarity(cur, anchor.expand_as(cur), dim=-1)
            (grad,) = torch.autograd.grad(cos.sum(), cur, create_graph=create_graph, retain_graph=outer)
            direction = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            velocity = momentum * velocity + direction
            cur = F.normalize(cur + step_size * velocity, dim=-1)
    return cur if outer else cur.detach()


class PurifiedEncoder(WrapperEncoder):
    """``base`` whose embeddings of every continuous modality are purified by CLIPure-Cos.

    Args:
        base: the frozen encoder.
        null_text: the blank template whose text embedding is the purification's anchor.
        steps: purification steps (the paper: 10).
        step_size: length of each step on the unit sphere (an angle in radians, roughly).
        momentum: the steps' momentum (the paper: 0.9).
        unroll: differentiate through each step's direction (``create_graph``) when the caller
            takes a gradient; False treats the directions as constants (first-order).
        modalities: the modalities purified (default: every one of ``base``); others pass through.
    """

    def __init__(self, base: Encoder, *, null_text: str = NULL_TEXT, steps: int = 10, step_size: float = 0.02,
                 momentum: float = 0.9, unroll: bool = True, modalities: tuple[str, ...] | None = None):
        super().__init__(base)
        check_positive("clipure steps", steps, integer=True)
        check_positive("clipure step_size", step_size)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
            raise RobustMMError(f"clipure momentum must be a number in [0, 1), got {momentum!r}")
        if not isinstance(null_text, str) or not null_text.strip():
            raise RobustMMError(f"clipure null_text must be a non-empty string, got {null_text!r}")
        for m in modalities or ():
            base.check_modality(m)
        self.null_text, self.steps, self.step_size, self.momentum = null_text, int(steps), float(step_size), float(momentum)
        self.unroll = bool(unroll)
        self.purified = tuple(modalities or base.modalities)
        with torch.no_grad():
            self.register_buffer("anchor", base.encode_text([null_text])[0].detach().clone())
        self.eval()

    def purify(self, z: torch.Tensor) -> torch.Tensor:
        """Embeddings ``z`` (N, D) after the purification steps (differentiable in ``z``)."""
        return purify_cosine(z, self.anchor, steps=self.steps, step_size=self.step_size, momentum=self.momentum,
                             create_graph=self.unroll)

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        z = self.base.encode(modality, x, validate=False)
        return self.purify(z) if modality in self.purified else z

    def settings(self) -> dict[str, Any]:
        """The purification's settings (recorded in ``info()``)."""
        return {"null_text": self.null_text, "steps": self.steps, "step_size": self.step_size,
                "momentum": self.momentum, "unroll": self.unroll, "modalities": list(self.purified)}

    def info(self) -> dict[str, Any]:
        return self.base.info() | {"defense": {"name": "clipure", **self.settings()}}
