"""Score a calibrated encoder under every threat model, side by side with the bare encoder.

* ``white-box`` (no defense): the bare encoder attacked directly -- the number to beat.
* ``head-unaware``: adversarial examples made on the bare encoder, scored through the heads
  (the setting of the calibration paper; a transfer attack from the backbone).
* ``adaptive``: the attacker differentiates through the heads. Nobody publishes this number;
  robustmm always reports it next to the head-unaware one. ``stronger=`` adds more attacks (more
  steps, APGD, APGD-T, ...), each recorded with ``extra["stronger_attack"]``: run adaptively, and
  (when ``head-unaware`` is asked for) also made on the bare encoder and transferred to the heads,
  since a head can mask a strong attack's gradient that transfers intact from the backbone.
* ``worst-case``: per item, the most damaging of every example above (and of the clean input),
  scored through the heads -- the defended model's robust score (:mod:`.worst_case`).
  :func:`threat_flags` lists the rows where a weaker threat beats a stronger one.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..attacks.base import Attack
from ..attacks.memo import MemoAttack
from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from ..encoders.heads import Calibration
from ..errors import RobustMMError
from ..records import Result
from .runner import evaluate
from .worst_case import RecordingAttack, ThreatFlag, threat_flags, threat_label, worst_case

__all__ = ["ThreatFlag", "evaluate_threats", "reusable", "threat_flags", "threat_label"]

THREAT_NAMES = ("white-box", "head-unaware", "adaptive", "worst-case")


def _named(stronger: Mapping[str, Attack] | Sequence[Attack] | None) -> dict[str, Attack]:
    if stronger is None:
        return {}
    if isinstance(stronger, Mapping):
        return dict(stronger)
    out: dict[str, Attack] = {}
    for a in stronger:
        name = f"{a.name}-{a.settings()['steps']}" if "steps" in a.settings() else a.name
        out[name if name not in out else f"{name}#{len(out)}"] = a
    return out


def _memo(attack: Attack) -> MemoAttack:
    return attack if isinstance(attack, MemoAttack) else MemoAttack(attack)


def evaluate_threats(
    encoder: Encoder,
    calibration: Calibration,
    dataset: MultimodalDataset,
    *,
    modality: str,
    attack: Attack,
    threats: tuple[str, ...] = ("white-box", "head-unaware", "adaptive"),
    stronger: Mapping[str, Attack] | Sequence[Attack] | None = None,
    transfer: Mapping[str, Attack] | None = None,
    **kw: Any,
) -> list[Result]:
    """One Result per threat; each carries clean metrics of the model it scores.

    Args:
        threats: any of ``white-box``, ``head-unaware``, ``adaptive``, ``worst-case``. The
            worst case covers every head-unaware, adaptive and ``stronger`` run of this call.
        stronger: more attacks (a mapping name -> attack, or attacks named by name and steps),
            e.g. PGD-50, APGD or APGD-T, so the worst case is over a converged attacker. Each runs
            adaptively; when ``threats`` has ``head-unaware``, each also runs on the bare encoder
            and is scored through the heads (a :class:`MemoAttack` passed here, e.g. from
            :func:`reusable`, makes those bare-encoder examples once for every call).
        transfer: the attack whose bare-encoder examples stand for a ``stronger`` one (same name)
            in its head-unaware run; default: the ``stronger`` attack itself. Pass one without
            early stopping where the adaptive run stops early: an example stopped as soon as it
            fools the bare encoder sits just past its boundary and transfers less than the
            attack's most damaging iterate.
        kw: passed to :func:`robustmm.evaluation.evaluate` (``n``, ``batch_size``, ``seed``, ...).
    Returns:
        The results of ``threats`` in order (worst-case last); before the worst case, the
        adaptive result of each ``stronger`` attack, then (with ``head-unaware``) the head-unaware
        one of each, all with ``extra["stronger_attack"]``.
    """
    _check_threats(threats, stronger)
    want_worst = "worst-case" in threats
    calibrated = encoder.with_heads(calibration.heads)
    block = calibration.defense_block()
    attack = _memo(attack.resolve(modality))
    extra_attacks = {name: _memo(att.resolve(modality)) for name, att in _named(stronger).items()}
    unknown = sorted(set(transfer or {}) - set(extra_attacks))
    if unknown:
        raise RobustMMError(f"transfer attack {unknown[0]!r} names no stronger attack; known: {', '.join(extra_attacks)}")
    bare = {name: _memo((transfer or {}).get(name, att).resolve(modality)) for name, att in extra_attacks.items()}
    out: list[Result] = []
    recorded: dict[str, tuple[RecordingAttack, Result]] = {}

    def scored(name: str, att: Attack, threat: str, source: Encoder) -> Result:
        rec = RecordingAttack(att) if want_worst else None
        r = evaluate(calibrated, dataset, modality=modality, attack=rec or att, source=source, threat=threat,
                     defense=block, **kw)
        if rec is not None:
            recorded[name] = (rec, r)
        return r

    for threat in threats:
        if threat == "white-box":
            out.append(evaluate(encoder, dataset, modality=modality, attack=attack, **kw))
        elif threat == "head-unaware":
            out.append(scored("head-unaware", attack, "head-unaware", encoder))
        elif threat == "adaptive":
            out.append(scored("adaptive", attack, "adaptive", calibrated))
    runs = [("adaptive", calibrated, extra_attacks)] + [("head-unaware", encoder, bare)] * ("head-unaware" in threats)
    for threat, source, attacks in runs:
        for name, att in attacks.items():
            r = scored(f"{threat}:{name}", att, threat, source)
            r.extra["stronger_attack"] = name
            out.append(r)
    if want_worst:
        data = dataset.head(kw["n"]) if kw.get("n") else dataset
        out.append(worst_case(calibrated, data, modality=modality, examples={k: rec.stacked(len(data))
                                                                            for k, (rec, _) in recorded.items()},
                              results={k: r for k, (_, r) in recorded.items()}, batch_size=kw.get("batch_size", 128),
                              defense=block))
    return out


def _check_threats(threats: Sequence[str], stronger: Mapping[str, Attack] | Sequence[Attack] | None) -> None:
    """One-line errors for unknown threat names and a worst case with nothing to take it over."""
    unknown = [t for t in threats if t not in THREAT_NAMES]
    if unknown:
        raise RobustMMError(f"unknown threat {unknown[0]!r}; known: {', '.join(THREAT_NAMES)}")
    if "worst-case" in threats and not ({"head-unaware", "adaptive"} & set(threats) or stronger):
        raise RobustMMError("threat 'worst-case' needs head-unaware, adaptive or stronger attacks in the same call")


def reusable(attack: Attack) -> MemoAttack:
    """An attack whose examples are shared by every :func:`evaluate_threats` call it is passed to
    (e.g. one white-box run on the bare encoder for several objectives' head-unaware scores)."""
    return _memo(attack)
