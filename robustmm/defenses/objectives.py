"""Training objectives for calibration heads (arXiv 2505.11895), on cached embeddings.

All objectives see a :class:`CalibBatch` of embeddings from the *frozen* encoder and the output
of the head on the adversarial ones, and return a scalar to minimise:

* ``ce``      fixed-center cross-entropy: logits = scale * head(adv) @ frozen class centers.
* ``l2``      clean-to-adversarial: ||head(adv) - clean||^2 (label-free).
* ``infonce`` clean-adversarial InfoNCE: head(adv)'s positive is its own clean embedding, the other
              clean embeddings of the batch are negatives (label-free).

A spec such as ``"ce+0.5*l2"`` is a weighted sum. :func:`consistency` is the modality-consistency
regulariser: calibrated *clean* embeddings stay close to the uncalibrated ones and aligned with
their captions in the text space.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import RobustMMError, UnknownNameError


@dataclass
class CalibBatch:
    """Embeddings of one training batch (all (B, D), unit norm, from the frozen encoder)."""

    clean: torch.Tensor
    adv: torch.Tensor
    caption: torch.Tensor          # one caption embedding per item
    labels: torch.Tensor | None    # (B,) zero-shot labels, if the modality has a task
    centers: torch.Tensor | None   # (C, D) frozen class "semantic centers"


def _unit(z: torch.Tensor) -> torch.Tensor:
    return F.normalize(z, dim=-1)


def ce_loss(out_adv: torch.Tensor, b: CalibBatch, scale: float = 50.0) -> torch.Tensor:
    if b.labels is None or b.centers is None:
        raise RobustMMError("objective 'ce' needs a zero-shot task (labels and class prompts) for this modality")
    return F.cross_entropy(scale * _unit(out_adv) @ b.centers.T, b.labels)


def l2_loss(out_adv: torch.Tensor, b: CalibBatch) -> torch.Tensor:
    return (_unit(out_adv) - b.clean).square().sum(-1).mean()


def infonce_loss(out_adv: torch.Tensor, b: CalibBatch, temperature: float = 0.05) -> torch.Tensor:
    logits = _unit(out_adv) @ b.clean.T / temperature
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


OBJECTIVES: dict[str, Callable[[torch.Tensor, CalibBatch], torch.Tensor]] = {
    "ce": ce_loss,
    "l2": l2_loss,
    "infonce": infonce_loss,
}


def parse_objective(spec: str) -> dict[str, float]:
    """``"ce"`` -> {"ce": 1}; ``"ce+0.5*l2"`` -> {"ce": 1, "l2": 0.5}."""
    terms: dict[str, float] = {}
    for part in spec.replace(" ", "").split("+"):
        m = re.fullmatch(r"(?:([0-9.eE-]+)\*)?([a-z0-9]+)", part)
        if not m:
            raise RobustMMError(f"cannot parse objective {spec!r}; use e.g. 'ce', 'l2', 'infonce' or 'ce+0.5*l2'")
        weight, name = float(m.group(1) or 1.0), m.group(2)
        if name not in OBJECTIVES:
            raise UnknownNameError("objective", name, OBJECTIVES)
        terms[name] = terms.get(name, 0.0) + weight
    return terms


def objective_loss(terms: dict[str, float], out_adv: torch.Tensor, b: CalibBatch) -> torch.Tensor:
    return sum(w * OBJECTIVES[name](out_adv, b) for name, w in terms.items())


def consistency(out_clean: torch.Tensor, b: CalibBatch, temperature: float = 0.05, scale: float = 50.0) -> torch.Tensor:
    """Modality-consistent alignment: calibrated *clean* embeddings stay near the uncalibrated ones
    and aligned with the text space -- with the frozen class centers when the modality has a task
    (the same fixed-center cross-entropy, on clean inputs), else with their own captions."""
    z = _unit(out_clean)
    stay = (z - b.clean).square().sum(-1).mean()
    if b.labels is not None and b.centers is not None:
        align = F.cross_entropy(scale * z @ b.centers.T, b.labels)
    else:
        align = F.cross_entropy(z @ b.caption.T / temperature, torch.arange(len(z), device=z.device))
    return stay + align
