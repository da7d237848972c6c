"""Score a calibrated encoder under both threat models, side by side with the bare encoder.

* ``white-box`` (no defense): the bare encoder attacked directly -- the number to beat.
* ``head-unaware``: adversarial examples made on the bare encoder, scored through the heads
  (the setting of the calibration paper; a transfer attack from the backbone).
* ``adaptive``: the attacker differentiates through the heads. Nobody publishes this number;
  robustmm always reports it next to the head-unaware one.
"""
from __future__ import annotations

from typing import Any

from ..attacks.base import Attack
from ..attacks.memo import MemoAttack
from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from ..evaluation import evaluate
from ..records import Result
from .calibrate import Calibration


def evaluate_threats(
    encoder: Encoder,
    calibration: Calibration,
    dataset: MultimodalDataset,
    *,
    modality: str,
    attack: Attack,
    threats: tuple[str, ...] = ("white-box", "head-unaware", "adaptive"),
    **kw: Any,
) -> list[Result]:
    """One Result per threat; each carries clean metrics of the model it scores."""
    calibrated = encoder.with_heads(calibration.heads)
    block = calibration.defense_block()
    attack = attack.resolve(modality)
    if not isinstance(attack, MemoAttack):
        attack = MemoAttack(attack)
    out = []
    for threat in threats:
        if threat == "white-box":
            out.append(evaluate(encoder, dataset, modality=modality, attack=attack, **kw))
        elif threat == "head-unaware":
            out.append(evaluate(calibrated, dataset, modality=modality, attack=attack, source=encoder,
                                threat="head-unaware", defense=block, **kw))
        elif threat == "adaptive":
            out.append(evaluate(calibrated, dataset, modality=modality, attack=attack, source=calibrated,
                                threat="adaptive", defense=block, **kw))
        else:
            raise ValueError(f"unknown threat {threat!r}")
    return out


def reusable(attack: Attack) -> MemoAttack:
    """An attack whose examples are shared by every :func:`evaluate_threats` call it is passed to
    (e.g. one white-box run on the bare encoder for several objectives' head-unaware scores)."""
    return attack if isinstance(attack, MemoAttack) else MemoAttack(attack)
