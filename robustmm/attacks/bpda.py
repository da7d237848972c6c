"""BPDA (Athalye, Carlini & Wagner, ICML 2018): a non-differentiable step of a defense, replaced by
a differentiable stand-in in the backward pass only.

A defense (an :class:`~robustmm.encoders.Encoder` wrapper) routes each non-differentiable step
(rounding, JPEG, a median filter ...) through :func:`straight_through` and lists the steps'
names in its ``bpda_steps`` attribute. Normally the step is what it is (its gradient is zero or
missing, which is why naive attacks report inflated robustness); inside ``with bpda():`` its
forward value is unchanged but the gradient is the stand-in's (the identity by default). The
:class:`BPDA` wrapper turns this on around any gradient attack.

Example::

    >>> class Quantized(Encoder):                   # a defense, in the defenses layer
    ...     bpda_steps = ("bit-depth",)
    ...     def _encode(self, modality, x):
    ...         return self.base.encode(modality, straight_through(x, lambda z: (z * 7).round() / 7))
    >>> adaptive = BPDA(build_attack("pgd"))        # naive: build_attack("pgd")
    >>> res = robustmm.evaluate(defended, data, modality="image", attack=adaptive)
"""
from __future__ import annotations

from typing import Any

from ..batch import Batch
from ..encoders.straight_through import bpda, bpda_enabled, declared, straight_through
from ..errors import RobustMMError
from .base import Attack, AttackWrapper

__all__ = ["BPDA", "bpda", "bpda_enabled", "declared", "straight_through"]


class BPDA(AttackWrapper):
    """Any gradient attack, run with BPDA on: the defense's declared non-differentiable steps
    (``bpda_steps``) take their differentiable stand-ins in the backward pass.

    An encoder that declares no such step is a one-line error (there is nothing to approximate).
    ``describe()`` adds ``"bpda": true``.
    """

    def __init__(self, inner: Attack):
        super().__init__(inner)

    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        steps = declared(encoder, "bpda_steps")
        if not steps:
            raise RobustMMError(f"BPDA on encoder {getattr(encoder, 'name', type(encoder).__name__)!r}: it declares no "
                                "non-differentiable step to approximate (its bpda_steps is empty)")
        with bpda():
            return self.inner(encoder, batch)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe() | {"bpda": True}
