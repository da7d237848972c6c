"""How an EOT attack folds its ``k`` per-draw losses and gradients into one per item.

* ``"mean"`` (the default): ``L = mean_t l_t``, ``grad = mean_t g_t`` -- the classic EOT estimate
  of ``grad E_t[l_t]``.
* ``"softmin"``: ``L = -log mean_t exp(-l_t)``, ``grad = sum_t w_t g_t`` with
  ``w_t = softmax_t(-l_t)`` per item -- the exact gradient of that ``L``, from the same per-draw
  gradients (no extra backward pass). For the zero-shot cross-entropy ``exp(-l_t)`` is the true
  class's probability in draw ``t``, so ``L = -log E_t[p_true(t)]``: the loss that matches the
  score (accuracy expected over draws). For any loss it is a soft minimum over draws, weighting
  most the draws in which the item still resists. With ``k = 1`` both are ``l`` and ``g``.

Draws are folded as they come (:class:`DrawFold`), so an attack keeps one running gradient per
item, never all ``k`` (``k`` times the input size: video, batch 250, k = 16 is ~1.6 GB):

    >>> fold = DrawFold("softmin")
    >>> fold.add(l1, g1); fold.add(l2, g2)
    >>> loss, grad = fold.result()

:func:`reduce_draws` folds lists the same way.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import RobustMMError, UnknownNameError

__all__ = ["EOT_REDUCTIONS", "DrawFold", "check_reduction", "reduce_draws"]

EOT_REDUCTIONS = ("mean", "softmin")


def check_reduction(reduction: str) -> str:
    """``reduction`` itself when it is one of :data:`EOT_REDUCTIONS`, else a one-line error."""
    if reduction not in EOT_REDUCTIONS:
        raise UnknownNameError("EOT reduction", str(reduction), EOT_REDUCTIONS)
    return reduction


class DrawFold:
    """A running fold of per-draw losses (n,) and input gradients (n, ...) by ``reduction``.

    ``mean`` keeps the running sums and adds the draws in order (what APGD always did, so its
    numbers reproduce bit for bit); ``softmin`` keeps an online log-sum-exp: the running maximum
    ``m`` of ``-l_t``, ``s = sum_t exp(-l_t - m)`` and ``G = sum_t exp(-l_t - m) g_t``, rescaled when
    ``m`` grows, so ``loss = log k - m - log s`` and ``grad = G / s`` without keeping the draws.
    """

    def __init__(self, reduction: str = "mean"):
        self.reduction = check_reduction(reduction)
        self.k = 0
        self._loss: torch.Tensor | None = None  # mean: sum of losses; softmin: the running max m of -l
        self._sum: torch.Tensor | None = None  # softmin: s
        self._grad: torch.Tensor | None = None  # mean: sum of gradients; softmin: G

    def add(self, loss: torch.Tensor, grad: torch.Tensor) -> None:
        """Fold in one draw's per-item loss (n,) and gradient (n, ...)."""
        self.k += 1
        if self.k == 1:
            self._grad = grad
            if self.reduction == "mean":
                self._loss = loss
            else:
                self._loss, self._sum = -loss, torch.ones_like(loss)
            return
        assert self._loss is not None and self._grad is not None
        if self.reduction == "mean":
            self._loss, self._grad = self._loss + loss, self._grad + grad
            return
        assert self._sum is not None
        m = torch.maximum(self._loss, -loss)
        old, new = torch.exp(self._loss - m), torch.exp(-loss - m)
        shape = (-1, *([1] * (grad.dim() - 1)))
        self._grad = self._grad * old.to(grad.dtype).view(shape) + grad * new.to(grad.dtype).view(shape)
        self._loss, self._sum = m, self._sum * old + new

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss (n,), gradient) of the draws folded so far (module docstring)."""
        if self.k == 0 or self._loss is None or self._grad is None:
            raise RobustMMError("EOT needs k >= 1 draws, got none")
        if self.k == 1:
            return (self._loss if self.reduction == "mean" else -self._loss), self._grad
        if self.reduction == "mean":
            return self._loss / self.k, self._grad / self.k
        assert self._sum is not None
        loss = math.log(self.k) - self._loss - torch.log(self._sum)
        shape = (-1, *([1] * (self._grad.dim() - 1)))
        return loss, self._grad / self._sum.to(self._grad.dtype).view(shape)


def reduce_draws(losses: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                 reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """(loss (n,), gradient like ``grads[0]``) from ``k`` draws' per-item losses (n,) and input
    gradients (n, ...), folded by ``reduction`` (module docstring). ``"mean"`` adds the draws in
    order then divides by ``k`` (what APGD always did, so its numbers reproduce bit for bit)."""
    k = len(losses)
    if k == 0 or k != len(grads):
        raise RobustMMError(f"EOT needs k >= 1 draws with one gradient each, got {k} losses and {len(grads)} gradients")
    fold = DrawFold(reduction)
    for l_t, g_t in zip(losses, grads):
        fold.add(l_t, g_t)
    return fold.result()
