"""Low-rank adapters (LoRA) on the Linear layers of a tower, for parameter-efficient fine-tuning.

:class:`LoRALinear` computes ``W x + b + (B A x) * alpha / r`` with the wrapped Linear's ``W`` and
``b`` frozen, ``A`` (r x in) drawn at random and ``B`` (out x r) zero, so a freshly adapted tower
is the same function as before and training moves only ``A`` and ``B`` (Hu et al., 2022).
:func:`add_lora` puts an adapter on every ``nn.Linear`` of a module and returns the adapter
parameters (the only trainable ones); :func:`merge_lora` folds each adapter back into a plain
``nn.Linear`` (``W + B A * alpha / r``), so a fine-tuned encoder has its original architecture
again and saves and loads like the base model (TinyBind: safetensors + JSON via ``save``/``load``).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import RobustMMError


def check_rank(rank: Any) -> int:
    """``rank`` as a positive int, else a one-line error naming the fix."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise RobustMMError(f"lora_rank must be a positive integer (e.g. lora_rank=8), got {rank!r}")
    return rank


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: ``base(x) + (x A^T B^T) * alpha / r``.

    Args:
        base: the Linear layer to adapt (its weight and bias are frozen here).
        rank: ``r``, the rank of the update.
        alpha: the update's scale numerator (default ``r``: scale 1).
        generator: draws ``A`` (Kaiming-uniform, as ``nn.Linear`` initialises its weight); ``B`` starts at zero.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.rank = check_rank(rank)
        self.alpha = float(rank if alpha is None else alpha)
        if not math.isfinite(self.alpha) or self.alpha <= 0:
            raise RobustMMError(f"lora_alpha must be a positive number, got {alpha!r}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        w = base.weight
        bound = 1.0 / math.sqrt(base.in_features)
        a = torch.rand(rank, base.in_features, generator=generator, dtype=w.dtype) * 2 - 1
        self.lora_A = nn.Parameter((a * bound).to(w.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype, device=w.device))

    @property
    def scale(self) -> float:
        """``alpha / r``, the factor on the low-rank update."""
        return self.alpha / self.rank

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> torch.Tensor:
        """The update to the base weight, ``B A * alpha / r`` (out x in, rank <= r)."""
        return (self.lora_B @ self.lora_A) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scale

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing the same function (weight ``W + B A * alpha / r``)."""
        # skip_init: no random initialisation (every value is copied below), so the global RNG is untouched
        out = nn.utils.skip_init(nn.Linear, self.in_features, self.out_features, bias=self.base.bias is not None,
                                 device=self.base.weight.device, dtype=self.base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.delta_weight())
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        out.weight.requires_grad_(self.base.weight.requires_grad)
        if out.bias is not None:
            out.bias.requires_grad_(self.base.weight.requires_grad)
        return out

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


def _linear_slots(module: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, layer) of every ``nn.Linear`` inside ``module`` not already adapted."""
    slots = []
    for parent in module.modules():
        if isinstance(parent, LoRALinear):
            continue
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                slots.append((parent, name, child))
    return slots


def add_lora(module: nn.Module, rank: int, alpha: float | None = None,
             generator: torch.Generator | None = None) -> list[nn.Parameter]:
    """Replace every ``nn.Linear`` in ``module`` (in place) by a :class:`LoRALinear` and freeze
    every other parameter of ``module``; returns the adapter parameters (``A``, ``B`` of each layer),
    the only ones left trainable. A module without Linear layers is a one-line error."""
    rank = check_rank(rank)
    slots = _linear_slots(module)
    if not slots:
        raise RobustMMError(f"{type(module).__name__} has no nn.Linear layer to put a LoRA adapter on; "
                            "fine-tune it fully (lora_rank=None)")
    for p in module.parameters():
        p.requires_grad_(False)
    params: list[nn.Parameter] = []
    for parent, name, layer in slots:
        adapted = LoRALinear(layer, rank, alpha, generator)
        setattr(parent, name, adapted)
        params += [adapted.lora_A, adapted.lora_B]
    return params


def lora_layers(module: nn.Module) -> list[LoRALinear]:
    """Every :class:`LoRALinear` inside ``module``."""
    return [m for m in module.modules() if isinstance(m, LoRALinear)]


def merge_lora(module: nn.Module) -> int:
    """Fold every adapter in ``module`` into a plain ``nn.Linear`` (in place); returns how many.

    Afterwards ``module`` has its original architecture and state-dict keys again.
    """
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
                count += 1
    return count
