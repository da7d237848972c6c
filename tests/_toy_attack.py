"""A toy attack defined outside the library, registered at test collection (conftest imports this).

It is a real attack with a budget -- a seeded random start plus one signed-gradient step away from
the clean embedding, projected onto the L-inf eps-ball and clamped to the modality's domain -- so
the contract tests (tests/test_contracts.py) and ``robustmm.evaluate`` treat it like a built-in
one. It is self-contained on purpose: it uses only the public Attack contract, so the test that
"a new attack in one file needs no other edit" does not lean on library internals.
"""
from __future__ import annotations

from typing import Any

import torch

from robustmm.attacks import Attack, register_attack
from robustmm.errors import BudgetError, UnknownNameError
from robustmm.modalities import CONTINUOUS_MODALITIES, get_modality

TOY_NAME = "toy-fgsm"


@register_attack(TOY_NAME)
class ToyFGSM(Attack):
    """Toy FGSM with a seeded random start (a test fixture, not a library attack)."""

    perturbs = ("x",)

    def __init__(self, eps: float | None = None, seed: int = 0):
        if eps is not None and (not isinstance(eps, (int, float)) or eps != eps or eps < 0):
            raise BudgetError(f"{TOY_NAME}: eps must be a number >= 0, got {eps!r}")
        self.eps = None if eps is None else float(eps)  # type: ignore[assignment]
        self.seed = int(seed)

    def settings(self) -> dict[str, Any]:
        return {"eps": self.eps, "seed": self.seed}

    def resolve(self, modality: str) -> "ToyFGSM":
        return self.replace(eps=get_modality(modality).middle_eps if self.eps is None else self.eps)

    def __call__(self, encoder: Any, batch: Any) -> Any:
        modality = batch.modality
        if modality not in CONTINUOUS_MODALITIES:
            raise UnknownNameError(f"continuous modality for {TOY_NAME}", modality, CONTINUOUS_MODALITIES)
        spec = get_modality(modality)
        eps = spec.middle_eps if self.eps is None else self.eps
        lo, hi = spec.domain
        x = batch.x.detach()
        if eps == 0:
            return batch.replace(x=x.clone())
        g = torch.Generator().manual_seed(self.seed)
        start = ((torch.rand(x.shape, generator=g, dtype=x.dtype) * 2 - 1) * eps).to(x.device)
        modes = [(m, m.training) for m in encoder.modules()]
        flags = [(p, p.requires_grad) for p in encoder.parameters()]
        try:
            encoder.eval()
            for p, _ in flags:
                p.requires_grad_(False)
            with torch.no_grad():
                clean = encoder.encode(modality, x)
            with torch.enable_grad():
                xa = (x + start).clamp(lo, hi).requires_grad_(True)
                loss = -(encoder.encode(modality, xa, validate=False) * clean).sum()
                (grad,) = torch.autograd.grad(loss, xa)
        finally:
            for m, training in modes:
                m.training = training
            for p, flag in flags:
                p.requires_grad_(flag)
        step = xa.detach() + eps * grad.sign()
        return batch.replace(x=torch.min(torch.max(step, x - eps), x + eps).clamp(lo, hi))
