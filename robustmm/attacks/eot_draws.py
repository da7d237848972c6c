"""How an EOT attack draws a randomized model's randomness, and translation-invariant gradients.

:class:`~robustmm.attacks.eot.EOT` averages an attack's gradient over ``k`` draws per step. By
default each draw is whatever the randomized encoder picks (``draws="random"``). A randomized
encoder that declares its finite set of draws -- ``draw_support(modality, shape)`` giving
(probability, draw) pairs and ``encode_draw(modality, x, draw)`` embedding through one of them, as
the input defenses do -- can be drawn better:

* ``"stratified"``: every ``k`` consecutive calls take a systematic sample of the distribution
  (the points ``(j + u) / k`` of its CDF, the draws in their declared order, ``u`` fresh per
  block from the attack's seed): an unbiased mean with less variance than ``k`` independent
  draws, and the whole support is covered once ``k`` reaches its size;
* ``"fixed"``: one such sample, reused by every step -- the attack then maximises a fixed,
  deterministic objective (a sample-average approximation), so loss comparisons between its
  iterates (APGD's step-size checkpoints, the best iterate) are not decided by draw noise.

``smooth=sigma`` (Dong et al., "Evading defenses to transferable adversarial examples by
translation-invariant attacks", CVPR 2019) blurs the gradient reaching the input with a Gaussian of
``sigma`` samples over its last two axes (image-like modalities), so that the perturbation favours
what survives shifts and resampling; the forward values are untouched.

Example::

    >>> robust = EOT(build_attack("apgd", steps=100), samples=33, draws="fixed", smooth=1.0)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..encoders.base import Encoder
from ..errors import RobustMMError, UnknownNameError
from .bpda import declared
from .views import EncoderView

__all__ = ["DRAW_MODES", "DrawnEncoder", "smooth_gradient", "systematic_sample"]

DRAW_MODES = ("random", "stratified", "fixed")


def systematic_sample(probs: Sequence[float], k: int, u: float) -> list[int]:
    """Indices of ``k`` systematic samples of the distribution ``probs``: sample j is the entry whose
    CDF interval holds ``(j + u) / k`` (``u`` in [0, 1)). Each entry of probability p is picked
    ``floor(k p)`` or ``ceil(k p)`` times, so the mean over the sample is unbiased."""
    cdf = torch.tensor(list(probs), dtype=torch.float64).cumsum(0)
    cdf = cdf / cdf[-1]
    points = (torch.arange(k, dtype=torch.float64) + u) / k
    return torch.searchsorted(cdf, points, right=True).clamp_max(len(cdf) - 1).tolist()


def _gaussian(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


class _SmoothGrad(torch.autograd.Function):
    """Identity forward; backward: the gradient blurred by a separable Gaussian on the last two axes."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, sigma: float) -> torch.Tensor:  # noqa: D102
        ctx.sigma = sigma
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        shape = grad.shape
        g = grad.reshape(-1, 1, *shape[-2:])
        k = _gaussian(ctx.sigma, g.dtype, g.device)
        r = len(k) // 2
        g = F.conv2d(F.pad(g, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        g = F.conv2d(F.pad(g, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
        return g.reshape(shape), None


def smooth_gradient(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``x`` in the forward pass; in the backward pass its gradient blurred by a Gaussian of ``sigma``
    samples over the last two axes (translation-invariant attack). ``sigma <= 0``: ``x`` itself."""
    if sigma <= 0 or not x.requires_grad:
        return x
    if x.dim() < 3:
        raise RobustMMError(f"EOT smooth needs image-like inputs (two spatial axes), got shape {tuple(x.shape)}")
    return _SmoothGrad.apply(x, float(sigma))


class DrawnEncoder(EncoderView):
    """A view of a randomized ``base`` whose calls take draws on a schedule (``mode``, see the
    module docstring) in blocks of ``samples``, with the gradient smoothed by ``smooth``.
    :meth:`restart` rewinds the schedule (each attacked batch starts from the same state)."""

    def __init__(self, base: Encoder, samples: int, mode: str = "random", smooth: float = 0.0, seed: int = 0):
        super().__init__(base)
        if mode not in DRAW_MODES:
            raise UnknownNameError("EOT draws", str(mode), DRAW_MODES)
        declares_draws = callable(getattr(base, "draw_support", None)) and callable(getattr(base, "encode_draw", None))
        if mode != "random" and not declares_draws:
            raise RobustMMError(f"EOT draws={mode!r} on encoder {getattr(base, 'name', type(base).__name__)!r}: it declares "
                                "no draws (draw_support / encode_draw); use draws='random'")
        self.samples, self.mode, self.smooth, self.seed = int(samples), mode, float(smooth), int(seed)
        self.restart()

    def restart(self) -> None:
        """Rewind the draw schedule to its seeded start."""
        self._gen = torch.Generator().manual_seed(self.seed)
        self._calls, self._plan = 0, None

    @property
    def bpda_steps(self) -> tuple[Any, ...]:
        """The wrapped defense's non-differentiable steps (so BPDA composes)."""
        return declared(self.base, "bpda_steps")

    @property
    def randomized(self) -> bool:
        """Whether the wrapped encoder is randomized."""
        return bool(getattr(self.base, "randomized", False))

    def _draw(self, modality: str, shape: torch.Size) -> Any:
        k = self.samples
        new_input = self._plan is None or self._plan[0] != (modality, tuple(shape[1:]))
        if new_input or (self.mode == "stratified" and self._calls % k == 0):
            support = self.base.draw_support(modality, shape)
            if not support:
                raise RobustMMError(f"EOT draws={self.mode!r}: encoder {self.base.name!r} declares no draws for {modality}")
            u = float(torch.rand((), generator=self._gen, dtype=torch.float64))
            picks = systematic_sample([p for p, _ in support], k, u)
            self._plan = ((modality, tuple(shape[1:])), [support[i][1] for i in picks])
        draw = self._plan[1][self._calls % k]
        self._calls += 1
        return draw

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        x = smooth_gradient(x, self.smooth)
        if self.mode == "random":
            return self.base.encode(modality, x, validate=False)
        return self.base.encode_draw(modality, x, self._draw(modality, x.shape))
