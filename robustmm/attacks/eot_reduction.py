"""How an EOT attack folds its ``k`` per-draw losses and gradients into one per item.

* ``"mean"`` (the default): ``L = mean_t l_t``, ``grad = mean_t g_t`` -- the classic EOT estimate
  of ``grad E_t[l_t]``.
* ``"softmin"``: ``L = -log mean_t exp(-l_t)``, ``grad = sum_t w_t g_t`` with
  ``w_t = softmax_t(-l_t)`` per item -- the exact gradient of that ``L``, from the same per-draw
  gradients (no extra backward pass). For the zero-shot cross-entropy ``exp(-l_t)`` is the true
  class's probability in draw ``t``, so ``L = -log E_t[p_true(t)]``: the loss that matches the
  score (accuracy expected over draws). For any loss it is a soft minimum over draws, weighting
  most the draws in which the item still resists. With ``k = 1`` both are ``l`` and ``g``.

Example::

    >>> loss, grad = reduce_draws([l1, l2], [g1, g2], "softmin")
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import RobustMMError, UnknownNameError

__all__ = ["EOT_REDUCTIONS", "check_reduction", "reduce_draws"]

EOT_REDUCTIONS = ("mean", "softmin")


def check_reduction(reduction: str) -> str:
    """``reduction`` itself when it is one of :data:`EOT_REDUCTIONS`, else a one-line error."""
    if reduction not in EOT_REDUCTIONS:
        raise UnknownNameError("EOT reduction", str(reduction), EOT_REDUCTIONS)
    return reduction


def reduce_draws(losses: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                 reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """(loss (n,), gradient like ``grads[0]``) from ``k`` draws' per-item losses (n,) and input
    gradients (n, ...), folded by ``reduction`` (module docstring). ``"mean"`` adds the draws in
    order then divides by ``k`` (what APGD always did, so its numbers reproduce bit for bit)."""
    k = len(losses)
    if k == 0 or k != len(grads):
        raise RobustMMError(f"EOT needs k >= 1 draws with one gradient each, got {k} losses and {len(grads)} gradients")
    if check_reduction(reduction) == "mean" or k == 1:
        loss, grad = losses[0], grads[0]
        for l_t, g_t in zip(losses[1:], grads[1:]):
            loss, grad = loss + l_t, grad + g_t
        return (loss, grad) if k == 1 else (loss / k, grad / k)
    neg = -torch.stack(list(losses))  # (k, n)
    loss = math.log(k) - torch.logsumexp(neg, dim=0)
    w = torch.softmax(neg, dim=0)
    g = torch.stack(list(grads))
    grad = (w.to(g.dtype).view(*w.shape, *([1] * (g.dim() - 2))) * g).sum(0)
    return loss, grad
