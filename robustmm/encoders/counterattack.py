"""Test-time counterattacks (Xing, Zhao & Sebe, CVPR 2025), for every continuous modality.

"CLIP is Strong Enough to Fight Back: Test-time Counterattacks towards Zero-shot Adversarial
Robustness of CLIP". An attack that maximises the classification loss leaves the input "falsely
stable": its embedding barely moves under small random noise, while a clean input's moves more. At
inference the defense therefore

1. draws a random start ``delta_0`` in the counterattack budget and measures the sensitivity
   ``tau_0 = ||f(x + delta_0) - f(x)|| / ||f(x)||`` (embeddings here are unit vectors);
2. if ``tau_0`` is above the threshold ``tau_thres`` the input is taken as clean and embedded as
   given; otherwise it is counterattacked: a few L-inf PGD steps that *maximise*
   ``||f(x + delta) - f(x)||``, pushing the embedding away from the one the attacker chose;
3. the returned embedding is the tau-weighted mean of the embeddings along the counterattack,
   ``sum_k softmax_k(beta * tau_k) f(x + delta_k)`` (renormalised).

Adaptive attackers differentiate through all of it. The PGD steps use ``sign`` of the inner
gradient, whose derivative is zero, and the threshold is a hard decision: both go through
:func:`~robustmm.encoders.straight_through.straight_through` and are listed in ``bpda_steps``, so
under BPDA the sign takes the gradient of a scaled copy of the inner gradient and the threshold that
of a sigmoid -- and only then is the inner gradient taken with ``create_graph=True`` (without BPDA
its second-order terms would be multiplied by the sign's zero derivative). The random start makes
the defense randomized (``randomized``): EOT averages over it. Randomness comes from torch's global
generator, which :func:`robustmm.evaluate` seeds.

Example::

    >>> ttc = defend(enc, "counterattack", data=train, modality="image")   # tau_thres fitted on train
    >>> naive = evaluate(ttc, data, modality="image", attack=PGD(eps=1/255), source=enc)
    >>> adaptive = evaluate(ttc, data, modality="image", attack=EOT(BPDA(PGD(eps=1/255)), samples=4))
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import RobustMMError
from ..modalities import get_modality
from .base import Encoder, WrapperEncoder
from .clipure import check_positive
from .straight_through import bpda_enabled, straight_through


def _sign_stand_in(g: torch.Tensor) -> torch.Tensor:
    """A differentiable stand-in for ``sign(g)`` of the same average size: ``g`` over its mean
    absolute value per item."""
    scale = g.detach().abs().flatten(1).mean(1).clamp_min(1e-20)
    return g / scale.view(-1, *([1] * (g.dim() - 1)))


class CounterattackEncoder(WrapperEncoder):
    """``base`` that counterattacks its inputs at inference (Xing et al., CVPR 2025).

    Args:
        base: the frozen encoder.
        eps: the counterattack's L-inf budget in each modality's unit: a number, a mapping
            modality -> number, or None for each modality's middle eps (4/255 for pixels, the paper's).
        steps: counterattack PGD steps (the paper: 2).
        step_size: the PGD step; None = ``eps / steps``.
        tau_thres: counterattack only inputs whose sensitivity ``tau_0`` is at most this: a number,
            a mapping modality -> number (a modality left out is always counterattacked), or None
            (always counterattack).
        beta: the tau-weighting's temperature (the paper: 2); 0 weights the iterates equally.
        random_start: the random start ``delta_0`` (the paper's; it also measures ``tau_0``).
            Without it ``tau_0`` is measured at ``delta_0 = 0`` -- always 0, so ``tau_thres`` is moot.
    """

    bpda_steps = ("counterattack-sign", "tau-threshold")

    def __init__(self, base: Encoder, *, eps: float | Mapping[str, float] | None = None, steps: int = 2,
                 step_size: float | None = None, tau_thres: float | Mapping[str, float] | None = None,
                 beta: float = 2.0, random_start: bool = True):
        super().__init__(base)
        check_positive("counterattack steps", steps, integer=True, allow_zero=True)
        if step_size is not None:
            check_positive("counterattack step_size", step_size)
        check_positive("counterattack beta", beta, allow_zero=True)
        self.eps = self._per_modality("eps", eps, lambda m: get_modality(m).middle_eps)
        for m, e in self.eps.items():
            get_modality(m).check_budget(check_positive(f"counterattack eps for {m}", e), what=f"counterattack eps for {m}")
        self.tau_thres = {m: float(check_positive(f"counterattack tau_thres for {m}", t, allow_zero=True))
                          for m, t in self._per_modality("tau_thres", tau_thres, lambda m: None).items() if t is not None}
        self.steps, self.beta, self.random_start = int(steps), float(beta), bool(random_start)
        self.step_size = None if step_size is None else float(step_size)
        self.eval()

    def _per_modality(self, name: str, value: Any, default: Any) -> dict[str, Any]:
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(self.modalities))
            if unknown:
                raise RobustMMError(f"counterattack {name} names modality {unknown[0]!r}, which encoder {self.name!r} "
                                    f"does not embed; it embeds {', '.join(self.modalities)}")
            return {m: value.get(m, default(m)) for m in self.modalities}
        return {m: default(m) if value is None else value for m in self.modalities}

    @property
    def randomized(self) -> bool:
        """Whether two calls on the same input may differ (the random start; EOT averages over it)."""
        return self.random_start

    def _start(self, x: torch.Tensor, eps: float, lo: float, hi: float) -> torch.Tensor:
        if not self.random_start:
            return x
        return (x + (torch.rand_like(x) * 2 - 1) * eps).clamp(lo, hi)

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """The counterattacked embedding (see the module docstring); differentiable in ``x``."""
        lo, hi = get_modality(modality).domain
        eps = float(self.eps[modality])
        alpha = self.step_size if self.step_size is not None else eps / max(self.steps, 1)
        outer = torch.is_grad_enabled() and x.requires_grad
        create_graph = outer and bpda_enabled()
        encode = lambda v: self.base.encode(modality, v, validate=False)  # noqa: E731
        with torch.enable_grad():
            anchor = encode(x)
            target = anchor if create_graph else anchor.detach()
            xk = self._start(x, eps, lo, hi)
            zs, taus = [], []
            for k in range(self.steps + 1):
                if not xk.requires_grad:
                    xk = xk.detach().requires_grad_(True)
                z = encode(xk)
                tau = (z - target).norm(dim=-1)
                zs.append(z)
                taus.append(tau)
                if k == self.steps:
                    break
                (g,) = torch.autograd.grad(tau.sum(), xk, create_graph=create_graph, retain_graph=True)
                step = straight_through(g, torch.sign, _sign_stand_in)
                xk = (x + (xk + alpha * step - x).clamp(-eps, eps)).clamp(lo, hi)
        weights = torch.softmax(self.beta * torch.stack(taus), dim=0)  # (steps + 1, N)
        countered = F.normalize((weights.unsqueeze(-1) * torch.stack(zs)).sum(0), dim=-1)
        out = self._threshold(modality, taus[0], countered, anchor)
        return out if outer else out.detach()

    def _threshold(self, modality: str, tau0: torch.Tensor, countered: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """The counterattacked embedding where ``tau_0 <= tau_thres`` (falsely stable), else the input's own."""
        thres = self.tau_thres.get(modality)
        if thres is None:
            return countered
        temperature = max(0.1 * thres, 1e-3)
        mask = straight_through(tau0, lambda t: (t <= thres).to(t.dtype), lambda t: torch.sigmoid((thres - t) / temperature))
        mask = mask.unsqueeze(-1)
        return mask * countered + (1 - mask) * anchor

    def settings(self) -> dict[str, Any]:
        """The counterattack's settings (recorded in ``info()``)."""
        return {"eps": dict(self.eps), "steps": self.steps, "step_size": self.step_size, "tau_thres": dict(self.tau_thres),
                "beta": self.beta, "random_start": self.random_start}

    @torch.no_grad()
    def sensitivity(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """``tau_0`` per item: how far the embedding moves under the random start (what the
        threshold compares; fit ``tau_thres`` on clean training items with it)."""
        self.check_modality(modality)
        lo, hi = get_modality(modality).domain
        anchor = self.base.encode(modality, x)
        return (self.base.encode(modality, self._start(x, float(self.eps[modality]), lo, hi), validate=False)
                - anchor).norm(dim=-1)

    def info(self) -> dict[str, Any]:
        return self.base.info() | {"defense": {"name": "counterattack", **self.settings()}}
