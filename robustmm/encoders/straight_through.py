"""Straight-through steps: how a defended encoder marks a non-differentiable step for BPDA.

A defense (an :class:`~robustmm.encoders.Encoder` wrapper) routes each non-differentiable step
(rounding, JPEG, a median filter ...) through :func:`straight_through` and lists the steps' names in
its ``bpda_steps`` attribute. Normally the step is what it is; inside ``with bpda():`` its forward
value is unchanged but the gradient is the stand-in's (the identity by default). The attack that
turns this on is :class:`robustmm.attacks.bpda.BPDA`; this module is the mechanism, which sits with
the models so that defended encoders need nothing from the attacks layer.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..errors import RobustMMError

__all__ = ["bpda", "bpda_enabled", "declared", "straight_through"]

_ON: contextvars.ContextVar[bool] = contextvars.ContextVar("robustmm_bpda", default=False)
Fn = Callable[[torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def bpda(on: bool = True) -> Iterator[None]:
    """Inside the block, :func:`straight_through` steps take their stand-in's gradient."""
    token = _ON.set(bool(on))
    try:
        yield
    finally:
        _ON.reset(token)


def bpda_enabled() -> bool:
    """Whether BPDA is on in this context."""
    return _ON.get()


class _ZeroGradient(torch.autograd.Function):
    """``y`` in the forward pass, attached to ``x`` with an exact (dense) zero gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.x_shape, ctx.x_dtype, ctx.x_device = x.shape, x.dtype, x.device
        return y.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return torch.zeros(ctx.x_shape, dtype=ctx.x_dtype, device=ctx.x_device), None


def straight_through(x: torch.Tensor, forward_fn: Fn, backward_fn: Fn | None = None) -> torch.Tensor:
    """``forward_fn(x)`` in the forward pass; in the backward pass, while BPDA is on, the gradient of
    ``backward_fn(x)`` (default: the identity, so ``forward_fn`` must keep the shape).

    With BPDA off it is the plain ``forward_fn(x)``: its own gradient (zero for rounding), or a
    zero gradient when ``forward_fn`` leaves the autograd graph (numpy, PIL), so that a naive
    attack runs and simply gets no signal.
    """
    if not _ON.get():
        y = forward_fn(x)
        if x.requires_grad and not y.requires_grad:
            y = _ZeroGradient.apply(x, y)
        return y
    with torch.no_grad():
        y = forward_fn(x)
    stand_in = x if backward_fn is None else backward_fn(x)
    if stand_in.shape != y.shape:
        raise RobustMMError(f"BPDA stand-in has shape {tuple(stand_in.shape)}, the step's output {tuple(y.shape)}")
    return stand_in + (y.to(stand_in.dtype) - stand_in).detach()


def declared(encoder: Any, attribute: str) -> tuple[Any, ...]:
    """What ``encoder`` -- or an encoder it wraps (``base``/``encoder``/``inner``) -- declares in
    ``attribute`` (e.g. ``bpda_steps``); empty when nothing does."""
    seen: set[int] = set()
    while encoder is not None and id(encoder) not in seen:
        seen.add(id(encoder))
        value = getattr(encoder, attribute, None)
        if value:
            return tuple(value) if isinstance(value, (list, tuple, set, frozenset)) else (value,)
        encoder = next((getattr(encoder, k) for k in ("base", "encoder", "inner") if getattr(encoder, k, None) is not None), None)
    return ()
