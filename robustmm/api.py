"""The verbs: one family of functions ``verb(encoder, data, *, modality, ...)``.

Every verb takes any :class:`~robustmm.encoders.Encoder` -- a bare model or a defended one (heads,
FARE, an input transform, smoothing) -- and a dataset, and returns a
:class:`~robustmm.records.Result` or a list of them (``calibrate`` returns the defended Encoder).
Argument names are the command line's (``eps=``, ``n=``, ``items=``, ``sigma=``)::

    import robustmm
    from robustmm.attacks import PGD

    res = robustmm.evaluate(enc, data, modality="image", attack=PGD(eps=4 / 255))
    curve = robustmm.curve(enc, data, modality="image", attack=PGD(), eps=[1 / 255, 2 / 255, 4 / 255])
    defended = robustmm.calibrate(enc, train, modality="image")
    threats = robustmm.evaluate(defended, data, modality="image", attack=PGD(), threats="all")
    cert = robustmm.certify(enc, data, modality="image", sigma=0.12)
    checks = robustmm.check(enc, data, modality="image")

These wrap the engines in :mod:`robustmm.evaluation` (``evaluate``, ``robustness_curve``,
``evaluate_threats``, ``worst_case``, ``certify_dataset``, ``sanity_checks``) and
:mod:`robustmm.defenses` (``calibrate``), which stay available for finer control.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .attacks.base import Attack, build_attack
from .data.base import MultimodalDataset
from .defenses.calibrate import calibrate as train_heads
from .defenses.calibrate import default_attack
from .encoders.base import Encoder
from .encoders.calibrated import CalibratedEncoder
from .encoders.heads import Calibration
from .encoders.smoothed import SmoothedEncoder
from .errors import RobustMMError
from .evaluation.certification import certify_dataset
from .evaluation.checks import checks_result, sanity_checks
from .evaluation.curves import robustness_curve
from .evaluation.runner import evaluate as run_evaluate
from .evaluation.threats import THREAT_NAMES, evaluate_threats
from .evaluation.worst_case import RecordingAttack
from .evaluation.worst_case import worst_case as score_worst_case
from .records import Result

__all__ = ["calibrate", "certify", "check", "curve", "evaluate"]

#: ``threats="all"``: every threat model of a calibrated encoder, the worst case last
ALL_THREATS: tuple[str, ...] = ("white-box", "head-unaware", "adaptive", "worst-case")


def _at_eps(attack: Attack | None, eps: float | None) -> Attack | None:
    if eps is None:
        return attack
    if attack is None:
        raise RobustMMError("eps= is the budget of an attack: pass attack=... too (e.g. attack=PGD())")
    return attack.with_eps(float(eps))


def check_heads_cover(encoder: Encoder, modality: str) -> None:
    """Refuse to score a calibrated encoder on a modality it has no head for: its embeddings would
    be the bare encoder's while the record named the heads (a one-line error naming the fix)."""
    inner = encoder.base if isinstance(encoder, SmoothedEncoder) else encoder
    if isinstance(inner, CalibratedEncoder) and modality not in inner.heads:
        have = ", ".join(sorted(inner.heads)) or "no modality"
        raise RobustMMError(f"the encoder's calibration heads are for {have}, not {modality}: train {modality} heads "
                            f"(robustmm.calibrate(..., modality={modality!r})) or score the bare encoder")


def with_seed(attack: Attack | None, seed: int | None) -> Attack | None:
    """``attack`` with its own random choices (random starts, Square's proposals) seeded by ``seed``
    when it has a ``seed`` setting and ``seed`` is given, so one seed reaches every random choice
    and the record's ``attack.seed`` says which; otherwise ``attack`` unchanged."""
    if attack is None or seed is None or "seed" not in attack.settings():
        return attack
    return attack.replace(seed=int(seed))


def evaluate(
    encoder: Encoder,
    data: MultimodalDataset,
    *,
    modality: str,
    attack: Attack | None = None,
    eps: float | None = None,
    threats: str | Sequence[str] | None = None,
    worst_case: Sequence[Attack] | None = None,
    source: Encoder | None = None,
    n: int | None = None,
    batch_size: int = 128,
    seed: int | None = None,
    progress: bool = True,
    **recorded: Any,
) -> Result | list[Result]:
    """Score ``encoder`` on ``data``'s ``modality``, clean and (optionally) under ``attack``.

    Args:
        attack: an :class:`~robustmm.attacks.Attack`; None scores clean inputs only.
        eps: the attack's budget (``attack.with_eps(eps)``), in the modality's unit.
        threats: for an encoder with calibration heads (``robustmm.calibrate``'s result): any of
            ``white-box`` (the bare encoder), ``head-unaware`` (examples made on the bare encoder),
            ``adaptive`` (made through the heads), ``worst-case``; or ``"all"``.
        worst_case: more attacks (e.g. ``[APGD(steps=50), Square()]``); the last result is the
            per-item worst case over ``attack`` and these, on ``encoder`` (any defense) -- or, with
            ``threats``, over every adaptive and head-unaware run.
        source: the encoder the attack differentiates (default ``encoder``: white-box; else transfer).
        n: the first ``n`` items only.
        seed: seeds torch and every attack that has a ``seed`` setting (random starts, Square's
            proposals), recorded in the result; None keeps each attack's own seed (torch seed 0).
        recorded: ``threat=`` / ``defense=`` labels written into the result (advanced).
    Returns:
        One Result; a list of Results when ``threats`` or ``worst_case`` is given.
    """
    check_heads_cover(encoder, modality)
    attack = with_seed(_at_eps(attack, eps), seed)
    worst_case = None if worst_case is None else [with_seed(a, seed) for a in worst_case]
    common = {"n": n, "batch_size": batch_size, "seed": 0 if seed is None else seed, "progress": progress}
    if threats is None and worst_case is None:
        return run_evaluate(encoder, data, modality=modality, attack=attack, source=source, **common, **recorded)
    if attack is None:
        raise RobustMMError("threats= and worst_case= score attacks: pass attack=... too (e.g. attack=PGD())")
    if source is not None or recorded:
        raise RobustMMError("threats= and worst_case= choose the sources and labels themselves: drop source=, threat=, defense=")
    if threats is not None:
        return _threats(encoder, data, modality, attack, threats, worst_case, common)
    return _worst_case(encoder, data, modality, [attack, *worst_case], common)  # type: ignore[list-item]


def _threats(encoder: Encoder, data: MultimodalDataset, modality: str, attack: Attack, threats: str | Sequence[str],
             stronger: Sequence[Attack] | None, common: dict[str, Any]) -> list[Result]:
    """The threat models of a calibrated encoder (:func:`~robustmm.evaluation.threats.evaluate_threats`)."""
    if not isinstance(encoder, CalibratedEncoder):
        raise RobustMMError("threats= compares attacks with and without the heads: pass an encoder with calibration "
                            "heads (robustmm.calibrate(...) or robustmm.defend(enc, 'calibration', heads=...))")
    names = ALL_THREATS if threats == "all" else (threats,) if isinstance(threats, str) else tuple(threats)
    if stronger and "worst-case" not in names:
        names = (*names, "worst-case")
    unknown = [t for t in names if t not in THREAT_NAMES]
    if unknown:
        raise RobustMMError(f"unknown threat {unknown[0]!r}; known: {', '.join(THREAT_NAMES)} or 'all'")
    calibration = Calibration(dict(encoder.heads), dict(getattr(encoder, "training_info", None) or {}))
    return evaluate_threats(encoder.base, calibration, data, modality=modality, attack=attack, threats=names,
                            stronger=list(stronger or []), **common)


def _worst_case(encoder: Encoder, data: MultimodalDataset, modality: str, attacks: Sequence[Attack],
                common: dict[str, Any]) -> list[Result]:
    """Each attack's white-box result on ``encoder``, then the per-item worst case over all of them."""
    recorded: dict[str, tuple[RecordingAttack, Result]] = {}
    out = []
    for i, att in enumerate(attacks):
        rec = RecordingAttack(att.resolve(modality))
        res = run_evaluate(encoder, data, modality=modality, attack=rec, **common)
        recorded[f"{i}:{att.name}"] = (rec, res)
        out.append(res)
    part = data.head(common["n"]) if common.get("n") else data
    out.append(score_worst_case(encoder, part, modality=modality,
                                examples={k: rec.stacked(len(part)) for k, (rec, _) in recorded.items()},
                                results={k: r for k, (_, r) in recorded.items()}, batch_size=common["batch_size"]))
    return out


def curve(
    encoder: Encoder,
    data: MultimodalDataset,
    *,
    modality: str,
    attack: Attack | None = None,
    eps: Sequence[float] | None = None,
    source: Encoder | None = None,
    n: int | None = None,
    batch_size: int = 128,
    seed: int | None = None,
    progress: bool = True,
    **recorded: Any,
) -> list[Result]:
    """A nested-ball robustness curve: one Result per budget in ``eps`` (ascending).

    Args:
        attack: an attack with an eps budget (default PGD with the modality's defaults).
        eps: budgets in the modality's unit (default: the modality's eps grid).
        source, n, batch_size, seed: as in :func:`evaluate`.
    """
    check_heads_cover(encoder, modality)
    attack = with_seed(attack if attack is not None else build_attack("pgd"), seed)
    return robustness_curve(encoder, data, modality=modality, attack=attack, eps_grid=eps, source=source, n=n,
                            batch_size=batch_size, seed=0 if seed is None else seed, progress=progress, **recorded)


def certify(
    encoder: Encoder,
    data: MultimodalDataset,
    *,
    modality: str,
    sigma: float | Sequence[float] | None = None,
    n0: int | None = None,
    draws: int | None = None,
    alpha: float | None = None,
    n: int | None = None,
    radii: Sequence[float] | None = None,
    retrieval: bool = True,
    smoothadv: dict[str, Any] | None = None,
    batch_size: int = 32,
    seed: int | None = None,
    progress: bool = True,
) -> Result | list[Result]:
    """Certified accuracy (and X->text R@1) of ``encoder`` under randomized smoothing.

    ``encoder`` may be a :class:`~robustmm.encoders.smoothed.SmoothedEncoder` (``robustmm.defend(enc,
    "smoothing", sigma=...)``), whose settings are the defaults here; any other encoder (with heads,
    a denoiser ...) is smoothed with ``sigma``.

    Args:
        sigma: noise std in the modality's unit, or a list of them (one Result each).
        n0, draws, alpha: selection draws, estimation draws, failure probability (100, 1000, 0.001),
            as ``robustmm certify --n0 --draws --alpha``.
        n: certify the first ``n`` items only (``n`` counts items in every verb).
        radii: L2 radii at which certified accuracy is reported (default: the modality's).
        smoothadv: settings of the SmoothAdv attack run beside the certificate (e.g. ``{"steps": 10}``).
    Returns:
        A Result with ``threat="certified"``; a list when ``sigma`` is a list.
    """
    check_heads_cover(encoder, modality)
    settings = encoder.settings() if isinstance(encoder, SmoothedEncoder) else {}
    base = encoder.base if isinstance(encoder, SmoothedEncoder) else encoder
    sigma = settings.get("sigma") if sigma is None else sigma
    if sigma is None:
        raise RobustMMError("certify needs the noise level: pass sigma=... (or a smoothed encoder)")
    given = {"n0": n0, "draws": draws, "alpha": alpha, "seed": seed}
    kw = {k: v if v is not None else settings.get(k) for k, v in given.items()}
    kw = {("n" if k == "draws" else k): v for k, v in kw.items() if v is not None}  # certify_dataset's n: draws
    if "batch_noise" in settings:
        kw["batch_noise"] = settings["batch_noise"]
    many = not isinstance(sigma, (int, float))
    out = [certify_dataset(base, data, modality=modality, sigma=float(s), n_items=n, radii=radii, retrieval=retrieval,
                           smoothadv=smoothadv, batch_size=batch_size, progress=progress, **kw)
           for s in (sigma if many else [sigma])]  # type: ignore[union-attr]
    return out if many else out[0]


def calibrate(
    encoder: Encoder,
    data: MultimodalDataset,
    *,
    modality: str,
    objective: str = "ce",
    attack: Attack | None = None,
    eps: float | None = None,
    steps: int | None = None,
    epochs: int = 60,
    seed: int = 0,
    progress: bool = True,
    **settings: Any,
) -> Encoder:
    """Train calibration heads for ``modality`` on adversarial examples of ``data`` (the training
    split) and return the defended encoder (a :class:`~robustmm.encoders.CalibratedEncoder`).

    The training report (objective, attack, epochs, times, losses) is the result's
    ``training_info``; ``settings`` go to :func:`robustmm.defenses.calibrate` (``adaptive_every``,
    ``clean_only``, ``consistency_weight``, ``regulariser``, ``hidden``, ``lr``, ...).

    Args:
        attack: how the training examples are made; or ``eps``/``steps`` of the default PGD
            (the command line's ``--eps``/``--steps``).
    """
    if attack is not None and (eps is not None or steps is not None):
        raise RobustMMError("give attack= or eps=/steps= (the default PGD's budget), not both")
    if eps is not None or steps is not None:
        attack = default_attack(modality, modality in data.tasks, eps=eps, steps=10 if steps is None else steps)
    cal = train_heads(encoder, data, modality=modality, objective=objective, attack=attack, epochs=epochs, seed=seed,
                      progress=progress, **settings)
    defended = encoder.with_heads(cal.heads)
    defended.training_info = cal.meta
    return defended


def check(
    encoder: Encoder,
    data: MultimodalDataset,
    *,
    modality: str,
    attack: Attack | None = None,
    steps: int = 10,
    surrogate: Encoder | None = None,
    n: int | None = None,
    seed: int = 0,
) -> Result:
    """Gradient-masking sanity checks of ``attack`` (default PGD with ``steps``) on ``encoder``: one
    Result whose ``extra["checks"]`` lists each check and ``metrics["checks_passed"]`` says whether
    all passed. For an encoder with calibration heads the transfer check's surrogate defaults to
    the bare encoder (head-unaware must be weaker than adaptive)."""
    if n is not None:
        data = data.head(n)
    check_heads_cover(encoder, modality)
    if surrogate is None and isinstance(encoder, CalibratedEncoder):
        surrogate = encoder.base
    attack = attack if attack is not None else build_attack("pgd", steps=steps, seed=seed)
    t0 = time.perf_counter()
    found = sanity_checks(encoder, data, modality=modality, attack=attack, surrogate=surrogate, seed=seed)
    defense = {"name": "calibration"} if isinstance(encoder, CalibratedEncoder) else None
    return checks_result(found, encoder, data, modality=modality, attack=attack, defense=defense, seed=seed,
                         timing_s=time.perf_counter() - t0)
