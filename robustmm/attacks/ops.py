"""Operations every continuous attack shares: budgets, norms, projections, random starts, steps.

PGD, the noise control, SGA's x step, the torchattacks bridge and the attacks added beside them
(APGD, Square, ensembles, EOT) import these from here, so a budget means the same thing (same
ball, same domain clamp, same seeded draws) in every attack.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..errors import BudgetError, UnknownNameError
from ..modalities import CONTINUOUS_MODALITIES, ModalitySpec, Norm, get_modality, parse_budget

__all__ = [
    "NORMS", "Norm", "ascent_step", "check_eps", "frozen", "item_seed", "per_sample", "project",
    "random_delta", "resolve_norm",
]

NORMS: tuple[Norm, ...] = tuple(Norm)
_NORM_ALIASES = {"linf": Norm.LINF, "inf": Norm.LINF, "l_inf": Norm.LINF, "l-inf": Norm.LINF,
                 "l2": Norm.L2, "l_2": Norm.L2}


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` inside the block; every flag restored exactly after.

    Each submodule's ``training`` flag and each parameter's ``requires_grad`` are recorded and put
    back, even when the block raises or code inside it (e.g. torchattacks) calls ``train()``.
    Eval mode also keeps BatchNorm running statistics untouched during the attack. Only flags
    that differ are written (an already frozen encoder, the usual case, costs two traversals:
    attacks enter this once per call, and a Module attribute write is slow).
    """
    modes = [(m, m.training) for m in module.modules()]
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        if any(training for _, training in modes):
            module.eval()
        for p, flag in flags:
            if flag:
                p.requires_grad_(False)
        yield module
    finally:
        for m, training in modes:
            if m.training != training:
                m.training = training
        for p, flag in flags:
            if p.requires_grad != flag:
                p.requires_grad_(flag)


def resolve_norm(norm: str | None, spec: ModalitySpec | None = None) -> Norm:
    """Canonical :class:`Norm` (aliases such as "inf" accepted); None means the modality's default."""
    if norm is None:
        if spec is None:
            raise BudgetError("norm=None needs a modality to take its default norm from")
        norm = spec.norm
    key = str(norm).lower()
    if key not in _NORM_ALIASES:
        raise UnknownNameError("threat norm", str(norm), [str(n) for n in NORMS])
    return _NORM_ALIASES[key]


def check_eps(eps: Any, what: str = "eps") -> float:
    """A finite, non-negative float budget, given as a number or a fraction like ``"4/255"``
    (``BudgetError`` otherwise; :func:`robustmm.modalities.parse_budget`)."""
    return parse_budget(eps, what)


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View the (N,) tensor ``v`` so it broadcasts over the sample dims of ``like``."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str, domain: tuple[float, float],
            *, inplace: bool = False) -> torch.Tensor:
    """Project ``x_adv`` onto the ``norm`` eps-ball around ``x`` (per sample), then clamp to ``domain``.

    Clamping after the projection keeps the ball constraint: the box contains ``x``, so clamping
    only moves each coordinate toward ``x``. ``inplace=True`` overwrites ``x_adv`` (a fresh tensor
    the caller owns, e.g. a step's gradient) instead of allocating one: same values, no new tensor.
    """
    d = x_adv.sub_(x) if inplace else x_adv - x  # the rest works in place on d (same values as out-of-place)
    if norm == Norm.LINF:
        d.clamp_(-eps, eps)
    else:
        n = d.flatten(1).norm(dim=1)
        d.mul_(per_sample((eps / n.clamp_min(1e-12)).clamp(max=1.0), d))
    return d.add_(x).clamp_(*domain)


def item_seed(seed: int, index: int) -> int:
    """A 63-bit seed for item ``index`` of an attack seeded with ``seed`` (splitmix-style mixing)."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + (int(index) + 1) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 31)) * 0x94D049BB133111EB) % 2**64
    return (z ^ (z >> 29)) & 0x7FFF_FFFF_FFFF_FFFF


def random_delta(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None = None, *,
                 seed: int = 0, index: torch.Tensor | None = None, sphere: bool = False) -> torch.Tensor:
    """A random perturbation of ``x``'s shape: uniform in the L-inf ball, or for L2 a uniform
    direction with radius U(0, eps) (PGD's random start) -- or exactly eps with ``sphere=True``
    (uniform on the sphere: the L2 noise control, which should spend its whole budget).

    With ``index`` (the items' dataset indices) every item draws from its own CPU generator seeded
    with :func:`item_seed`, so an item gets the same draw whatever batch it is in; otherwise the
    whole batch draws from ``generator`` (a fresh one seeded with ``seed`` when None).
    """
    if index is not None:
        parts = []
        for i in index.tolist():
            g = torch.Generator().manual_seed(item_seed(seed, i))
            if norm == Norm.LINF:
                parts.append(torch.rand(x.shape[1:], generator=g, dtype=x.dtype))
            else:
                d = torch.randn(x.shape[1:], generator=g, dtype=x.dtype)
                r = torch.ones((), dtype=x.dtype) if sphere else torch.rand((), generator=g, dtype=x.dtype)
                parts.append(d * (r / d.norm().clamp_min(1e-12)))
        u = torch.stack(parts).to(x.device)
        return (u * 2 - 1) * eps if norm == Norm.LINF else u * eps
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(seed)
    if norm == Norm.LINF:
        return (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    d = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    n = d.flatten(1).norm(dim=1).clamp_min(1e-12)
    if sphere:
        return d * per_sample(eps / n, d)
    r = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
    return d * per_sample(r * eps / n, d)


def ascent_step(g: torch.Tensor, norm: str, step: float | torch.Tensor) -> torch.Tensor:
    """``step`` x the steepest-ascent direction of ``norm`` (sign for L-inf, unit L2 direction),
    computed in place in the gradient ``g`` (a fresh tensor from autograd.grad that nothing else
    holds) to save a copy per step. ``step`` is one size for the batch or an (N,) tensor of
    per-item sizes (APGD halves each item's step on its own)."""
    if isinstance(step, torch.Tensor):
        step = per_sample(step, g)
    if norm == Norm.LINF:
        return g.sign_().mul_(step)
    return g.div_(per_sample(g.flatten(1).norm(dim=1).clamp_min(1e-12), g)).mul_(step)


def checked_input(label: str, encoder: Any, batch: Any) -> ModalitySpec:
    """The spec of ``batch``'s modality, after the checks every input attack makes on a call: a
    continuous modality, one the encoder embeds, and a valid batch (shape, values, domain)."""
    modality = batch.modality
    if modality not in CONTINUOUS_MODALITIES:
        raise UnknownNameError(f"continuous modality for {label}", modality, CONTINUOUS_MODALITIES)
    spec = get_modality(modality)
    encoder.check_modality(modality)
    spec.validate(batch.x)
    return spec
