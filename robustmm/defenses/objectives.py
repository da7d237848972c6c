"""Training objectives and regularisers for calibration heads (arXiv 2505.11895), on cached embeddings.

All objectives see a :class:`CalibBatch` of embeddings from the *frozen* encoder and the output
of the head on the adversarial ones, and return a scalar to minimise. What each one reads:

* ``ce``      fixed-center cross-entropy: logits = scale * head(adv) @ frozen class centers.
              Reads the adversarial embeddings, the class labels and the class centers.
* ``l2``      clean-to-adversarial: ||head(adv) - clean||^2. Reads the adversarial and the frozen
              clean embeddings; no labels, no captions.
* ``infonce`` clean-adversarial InfoNCE: head(adv)'s positive is its own clean embedding, the other
              clean embeddings of the batch are negatives. No labels, no captions.

A spec such as ``"ce+0.5*l2"`` is a weighted sum. A spec may name its regulariser after ``@``
(``"l2@label-free"``); the regulariser sees the head's output on the *clean* embeddings:

* ``supervised`` (the default): the calibrated clean embedding stays near the frozen one (L2)
  **plus** the fixed-center cross-entropy of the clean embedding against the labels (or, without a
  zero-shot task, InfoNCE against the item's own caption). Reads clean inputs, labels / captions.
* ``label-free`` (the paper's setting: trained on adversarial examples only, nothing labelled):
  ||head(clean) - clean||^2 only. Reads the clean embeddings; never labels, centers or captions.
* ``none``: no regulariser.
"""
from __future__ import annotations

import math
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
    """Fixed-center cross-entropy of the head's adversarial output (reads labels and centers)."""
    if b.labels is None or b.centers is None:
        raise RobustMMError("objective 'ce' needs a zero-shot task (labels and class prompts) for this modality")
    return F.cross_entropy(scale * _unit(out_adv) @ b.centers.T, b.labels)


def l2_loss(out_adv: torch.Tensor, b: CalibBatch) -> torch.Tensor:
    """Squared distance of the head's adversarial output to the frozen clean embedding (label-free)."""
    return (_unit(out_adv) - b.clean).square().sum(-1).mean()


def infonce_loss(out_adv: torch.Tensor, b: CalibBatch, temperature: float = 0.05) -> torch.Tensor:
    """Clean-adversarial InfoNCE over the batch (label-free)."""
    logits = _unit(out_adv) @ b.clean.T / temperature
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


OBJECTIVES: dict[str, Callable[[torch.Tensor, CalibBatch], torch.Tensor]] = {
    "ce": ce_loss,
    "l2": l2_loss,
    "infonce": infonce_loss,
}

#: objectives that never read labels, centers or captions
LABEL_FREE_OBJECTIVES: frozenset[str] = frozenset({"l2", "infonce"})


def _stay(out_clean: torch.Tensor, b: CalibBatch) -> torch.Tensor:
    return (_unit(out_clean) - b.clean).square().sum(-1).mean()


def consistency(out_clean: torch.Tensor, b: CalibBatch, temperature: float = 0.05, scale: float = 50.0) -> torch.Tensor:
    """The ``supervised`` regulariser: calibrated *clean* embeddings stay near the uncalibrated
    ones and aligned with the text space -- with the frozen class centers when the modality has a
    task (the fixed-center cross-entropy on clean, labelled inputs), else with their own captions."""
    z = _unit(out_clean)
    if b.labels is not None and b.centers is not None:
        align = F.cross_entropy(scale * z @ b.centers.T, b.labels)
    else:
        align = F.cross_entropy(z @ b.caption.T / temperature, torch.arange(len(z), device=z.device))
    return _stay(out_clean, b) + align


def label_free_consistency(out_clean: torch.Tensor, b: CalibBatch) -> torch.Tensor:
    """The ``label-free`` regulariser: ||head(clean) - clean||^2, the calibrated clean embedding
    against the frozen one. Reads only ``b.clean``: no labels, class centers or captions."""
    return _stay(out_clean, b)


def _no_regulariser(out_clean: torch.Tensor, b: CalibBatch) -> torch.Tensor:
    return out_clean.new_zeros(())


REGULARISERS: dict[str, Callable[[torch.Tensor, CalibBatch], torch.Tensor]] = {
    "supervised": consistency,
    "label-free": label_free_consistency,
    "none": _no_regulariser,
}
DEFAULT_REGULARISER = "supervised"


def parse_spec(spec: str) -> tuple[dict[str, float], str | None]:
    """``"ce+0.5*l2@label-free"`` -> ({"ce": 1, "l2": 0.5}, "label-free"); the regulariser is
    None when the spec names none (the caller's default applies)."""
    if not isinstance(spec, str) or not spec.strip():
        raise RobustMMError(f"objective must be a non-empty string, got {spec!r}")
    body, sep, reg = spec.replace(" ", "").partition("@")
    regulariser = None
    if sep:
        if reg not in REGULARISERS:
            raise UnknownNameError("regulariser", reg, REGULARISERS)
        regulariser = reg
    terms: dict[str, float] = {}
    for part in body.split("+"):
        m = re.fullmatch(r"(?:([0-9.eE-]+)\*)?([a-z0-9]+)", part)
        if not m:
            raise RobustMMError(f"cannot parse objective {spec!r}; use e.g. 'ce', 'l2', 'infonce', 'ce+0.5*l2' "
                                "or 'l2@label-free'")
        try:
            weight = float(m.group(1) or 1.0)
        except ValueError:
            raise RobustMMError(f"cannot parse the weight {m.group(1)!r} of objective {spec!r}") from None
        if not (math.isfinite(weight) and weight > 0):  # <= 0 would train the head to raise the loss
            raise RobustMMError(f"the weight of {m.group(2)!r} in objective {spec!r} must be a finite number > 0, "
                                f"got {m.group(1)}")
        name = m.group(2)
        if name not in OBJECTIVES:
            raise UnknownNameError("objective", name, OBJECTIVES)
        terms[name] = terms.get(name, 0.0) + weight
    return terms, regulariser


def parse_objective(spec: str) -> dict[str, float]:
    """``"ce"`` -> {"ce": 1}; ``"ce+0.5*l2"`` -> {"ce": 1, "l2": 0.5}; an ``@regulariser`` suffix is
    validated and dropped (see :func:`parse_spec` for both parts)."""
    return parse_spec(spec)[0]


def uses_labels(terms: dict[str, float], regulariser: str) -> bool:
    """Whether training with these objective terms and this regulariser reads class labels."""
    return any(t not in LABEL_FREE_OBJECTIVES for t in terms) or regulariser == "supervised"


def objective_loss(terms: dict[str, float], out_adv: torch.Tensor, b: CalibBatch) -> torch.Tensor:
    """The weighted sum of the objective terms on the head's adversarial output."""
    return sum(w * OBJECTIVES[name](out_adv, b) for name, w in terms.items())


def regulariser_loss(name: str, out_clean: torch.Tensor, b: CalibBatch) -> torch.Tensor:
    """Regulariser ``name`` (see :data:`REGULARISERS`) on the head's clean output."""
    if name not in REGULARISERS:
        raise UnknownNameError("regulariser", name, REGULARISERS)
    return REGULARISERS[name](out_clean, b)
