"""The defense-zoo audit: one registered defense family on one modality, scored adaptively.

:func:`audit_defense` builds the defended Encoder with the family's audit recipe
(:mod:`.audit_recipes`; trained families train on the train split and, given alternatives, keep the
one with the best adaptive score on the validation split), then scores it on the test split:

* clean top-1;
* **naive**: the attacks made on the undefended model and transferred to the defended one
  (``source=bare``), what a defense-unaware evaluation reports: per item, the worst of PGD,
  APGD-CE and APGD-T made on the bare model (made once per modality and eps, shared by the families);
* **adaptive**: white-box on the defended Encoder with the full gradient, BPDA where the encoder
  declares non-differentiable steps (``bpda_steps``), EOT where it is randomized (its declared
  ``randomized``, or randomness seen by a probe: two encodings of the same input that differ);
* the **per-item worst case** over the naive examples and the adaptive PGD, APGD-CE and APGD-T, at
  the smallest and the middle eps of the modality's grid (the naive side is the worst case over
  the same parts made on the bare model, so the two differ only in who is differentiated);
* the gradient-masking checks (:func:`~robustmm.evaluation.checks.sanity_checks`) of the adaptive
  attack, the transfer check made on the bare model;
* parameters the defense trained or added, training and inference time (and ``cost`` passes
  where records carry them);
* certified accuracy at the modality's reference radii for smoothing entries.

**Naive overstates** (:func:`naive_overstates`): at an eps, the naive top-1 ``p_n`` exceeds the
adaptive worst case ``p_a`` by more than two standard errors of the difference,
``p_n - p_a > 2 sqrt((p_n (1 - p_n) + p_a (1 - p_a)) / n)`` (two binomial proportions over the same
``n`` items, treated as independent: conservative, since the pairing only lowers the variance).

This module sits in the defense-training layer: the lowest layer that may both build trained
defenses (the registry) and run the evaluation engines; the job layer (:mod:`robustmm.job.zoo`)
writes the records, and the report layer draws the table and the figure from the summary.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..attacks.base import Attack, build_attack
from ..attacks.bpda import BPDA
from ..attacks.eot import EOT
from ..attacks.memo import MemoAttack
from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from ..encoders.smoothed import SmoothedEncoder
from ..encoders.straight_through import declared
from ..errors import RobustMMError
from ..evaluation.certification import certify_dataset, reference_radii
from ..evaluation.checks import checks_result, sanity_checks
from ..evaluation.runner import evaluate
from ..evaluation.worst_case import RecordingAttack, worst_case
from ..modalities import get_modality
from ..records import Result, headline_score
from ..seeding import seeded
from .audit_recipes import audit_recipe
from .registry import defend, defense_family

log = logging.getLogger(__name__)

__all__ = ["AuditConfig", "AuditOutcome", "adaptive_attack", "attack_plan", "audit_defense", "find_cost",
           "naive_overstates", "trained_parameters"]

#: the parts of the adaptive worst case, besides the naive (transferred) examples
WORST_PARTS: tuple[str, ...] = ("pgd", "apgd-ce", "apgd-t")


@dataclass(frozen=True)
class AuditConfig:
    """The audit's budgets: items, attack steps, EOT draws, APGD-T targets, certification sizes."""

    n: int = 64                   # test items scored
    steps: int = 10               # PGD / APGD iterations of every attack
    eot_samples: int = 4          # EOT draws per step against a randomized defense
    targets: int = 3              # APGD-T target classes
    checks: bool = True           # gradient-masking checks on every defended model
    cert_n: int = 32              # items certified (smoothing entries)
    cert_draws: int = 256         # Monte Carlo draws per certified item (selection draws: an eighth, at least 16)
    seed: int = 0
    quick: bool = False           # the recipes' quick settings
    batch_size: int = 128

    def __post_init__(self) -> None:
        for k in ("n", "steps", "eot_samples", "targets", "cert_n", "cert_draws", "batch_size"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise RobustMMError(f"audit setting {k} must be an integer >= 1, got {v!r}")


@dataclass
class AuditOutcome:
    """One (family, modality) audit: its records and its row of the zoo summary."""

    results: list[Result]
    row: dict[str, Any] = field(default_factory=dict)


# -- what the defended encoder declares, and what a probe sees -------------------------------
def attack_plan(bare: Encoder, defended: Encoder, modality: str, data: MultimodalDataset, seed: int = 0) -> dict[str, Any]:
    """How the adaptive attack treats ``defended``: BPDA for declared non-differentiable steps, EOT
    for a declared or observed randomized encode; and what the probes saw.

    Probes on four items: ``random_observed`` (two encodings of the same input differ) and
    ``gradient`` (``ok``, ``zero`` or ``missing``: the gradient of the embedding in the input, with
    the defense's steps as they are). A zero or missing gradient that no ``bpda_steps`` covers is
    a masked gradient the adaptive attack cannot get past: ``masked_without_bpda``.
    """
    steps = declared(defended, "bpda_steps")
    declared_random = bool(declared(defended, "randomized"))
    x = data.get(modality, torch.arange(min(4, len(data)))).to(defended.device)
    with torch.no_grad(), seeded(seed):
        a, b = defended.encode(modality, x), defended.encode(modality, x)
    observed = not torch.allclose(a, b, atol=1e-6, rtol=0.0)
    xg = x.clone().requires_grad_(True)
    with seeded(seed):
        target = torch.nn.functional.normalize(torch.randn(a.shape[-1], generator=torch.Generator().manual_seed(seed)), dim=0)
        out = defended.encode(modality, xg, validate=False) @ target.to(a)
        try:
            (grad,) = torch.autograd.grad(out.sum(), xg, allow_unused=True)
        except RuntimeError:  # no graph at all: the output does not depend on x differentiably
            grad = None
    gradient = "missing" if grad is None else "zero" if not bool(grad.abs().sum() > 0) else \
        "ok" if bool(torch.isfinite(grad).all()) else "non-finite"
    return {"bpda": bool(steps), "bpda_steps": [str(s) for s in steps], "eot": declared_random or observed,
            "randomized_declared": declared_random, "random_observed": observed,
            "undeclared_randomness": observed and not declared_random, "gradient": gradient,
            "masked_without_bpda": gradient != "ok" and not steps}


def adaptive_attack(attack: Attack, plan: dict[str, Any], eot_samples: int) -> Attack:
    """``attack`` made adaptive by ``plan`` (:func:`attack_plan`): BPDA inside, EOT outside, early
    stopping off against a randomized encoder (one draw's verdict is not final)."""
    if plan["eot"] and attack.settings().get("early_stop"):
        attack = attack.replace(early_stop=False)
    out: Attack = BPDA(attack) if plan["bpda"] else attack
    if plan["eot"]:
        out = EOT(out, eot_samples, reduction="softmin" if "eot_reduction" in out.settings() else "mean")
    return out


def _part(name: str, eps: float, cfg: AuditConfig) -> Attack:
    if name == "pgd":
        return build_attack("pgd", eps=eps, steps=cfg.steps, seed=cfg.seed)
    if name == "apgd-ce":
        return build_attack("apgd", eps=eps, steps=cfg.steps, loss="ce", seed=cfg.seed, early_stop=True)
    if name == "apgd-t":
        return build_attack("apgd", eps=eps, steps=cfg.steps, loss="dlr-targeted", n_target_classes=cfg.targets,
                            seed=cfg.seed, early_stop=True)
    raise RobustMMError(f"unknown worst-case part {name!r}; known: {', '.join(WORST_PARTS)}")


# -- the numbers -------------------------------------------------------------------------------
def naive_overstates(naive: float | None, adaptive: float | None, n: int) -> tuple[bool, float]:
    """(whether ``naive`` beats ``adaptive`` by more than 2 standard errors of the difference, that
    standard error) for two top-1 rates over the same ``n`` items (see the module docstring)."""
    if naive is None or adaptive is None or n <= 0:
        return False, float("nan")
    se = math.sqrt((naive * (1 - naive) + adaptive * (1 - adaptive)) / n)
    return naive - adaptive > 2 * se, se


def trained_parameters(bare: Encoder, defended: Encoder) -> dict[str, int]:
    """Parameters of ``defended`` that the defense added or changed, against ``bare``.

    A defended parameter counts unless the bare encoder has the same tensor, or one of the same
    name (up to the wrapper's prefix, ``base.``) and equal values: heads and denoisers count as
    added, a FARE copy counts its tuned tower. ``training_info["trainable_params"]`` wins where
    the family reports it.
    """
    bare_params = dict(bare.named_parameters())
    ids = {id(p) for p in bare_params.values()}
    trained = 0
    for name, p in defended.named_parameters():
        if id(p) in ids:
            continue
        parts = name.split(".")
        twin = next((bare_params[".".join(parts[i:])] for i in range(len(parts)) if ".".join(parts[i:]) in bare_params), None)
        if twin is not None and twin.shape == p.shape and torch.equal(twin.detach().cpu(), p.detach().cpu()):
            continue
        trained += p.numel()
    info = getattr(defended, "training_info", None) or {}
    reported = info.get("trainable_params") if isinstance(info, dict) else None
    return {"trained": int(reported) if isinstance(reported, int) else trained,
            "bare_total": sum(p.numel() for p in bare.parameters()),
            "defended_total": sum(p.numel() for p in defended.parameters())}


def find_cost(record: Result | dict[str, Any]) -> dict[str, Any] | None:
    """The ``cost`` block (forward/backward passes) of a record, wherever it carries one (top
    level, ``extra``, ``attack`` or ``metrics``), else None."""
    d = record.to_dict() if isinstance(record, Result) else record
    for block in (d, d.get("extra") or {}, d.get("attack") or {}, d.get("metrics") or {}):
        if isinstance(block, dict) and isinstance(block.get("cost"), dict):
            return dict(block["cost"])
    return None


def _sum_costs(results: Sequence[Result]) -> dict[str, int] | None:
    costs = [c for c in (find_cost(r) for r in results) if c]
    if not costs:
        return None
    out: dict[str, int] = {}
    for c in costs:
        for k, v in c.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + int(v)
    return out


def _encode_seconds(encoder: Encoder, modality: str, x: torch.Tensor, seed: int) -> float:
    """Seconds one (warmed-up) ``encode`` of ``x`` takes: the inference cost, text side excluded."""
    with torch.no_grad(), seeded(seed):
        encoder.encode(modality, x[:1])
        t0 = time.perf_counter()
        encoder.encode(modality, x)
        return time.perf_counter() - t0


def _score(r: Result | None, key: str = "attacked") -> float | None:
    return None if r is None else headline_score((r.metrics or {}).get(key))


# -- building -------------------------------------------------------------------------------------
def _build(encoder: Encoder, family: str, modality: str, train: MultimodalDataset, settings: dict[str, Any]) -> Encoder:
    fam = defense_family(family)
    if fam.trained or audit_recipe(family).fit:
        return defend(encoder, family, data=train, modality=modality, **settings)
    return defend(encoder, family, **settings)


def build_selected(encoder: Encoder, family: str, modality: str, train: MultimodalDataset, val: MultimodalDataset,
                   cfg: AuditConfig) -> tuple[Encoder, dict[str, Any], dict[str, Any]]:
    """The defended encoder with the recipe's settings (the best candidate on ``val`` when the
    recipe gives several), the settings kept, and a training report (seconds, candidates' scores)."""
    recipe = audit_recipe(family)
    candidates = recipe.settings_for(modality, cfg.quick)
    t0 = time.perf_counter()
    if len(candidates) == 1:
        defended = _build(encoder, family, modality, train, candidates[0])
        return defended, candidates[0], {"train_s": round(time.perf_counter() - t0, 2), "selected_on": None}
    scored = []
    mid = get_modality(modality).middle_eps
    for settings in candidates:
        d = _build(encoder, family, modality, train, settings)
        plan = attack_plan(encoder, d, modality, val, cfg.seed)
        r = evaluate(d, val, modality=modality, attack=adaptive_attack(_part("pgd", mid, cfg), plan, cfg.eot_samples),
                     n=min(cfg.n, len(val)), seed=cfg.seed, progress=False, batch_size=cfg.batch_size)
        scored.append((_score(r, "clean") or 0.0, _score(r) or 0.0, settings, d))
    best_clean = max(s[0] for s in scored)
    keep = [s for s in scored if s[0] >= best_clean - 0.05] or scored  # robust among those within 5 points of clean
    clean, robust, settings, defended = max(keep, key=lambda s: s[1])
    report = {"train_s": round(time.perf_counter() - t0, 2), "selected_on": "val",
              "candidates": [{"settings": _jsonable(s[2]), "clean": s[0], "adaptive": s[1]} for s in scored]}
    return defended, settings, report


def _jsonable(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (int, float, str, bool, type(None))) else repr(v) for k, v in settings.items()}


# -- the audit -------------------------------------------------------------------------------------
def audit_defense(encoder: Encoder, family: str, modality: str, *, train: MultimodalDataset, val: MultimodalDataset,
                  test: MultimodalDataset, config: AuditConfig | None = None,
                  build: Callable[[], tuple[Encoder, dict[str, Any], dict[str, Any]]] | None = None,
                  naive_cache: dict[Any, Any] | None = None) -> AuditOutcome:
    """Audit defense ``family`` of ``encoder`` on ``modality`` (see the module docstring).

    ``train``/``val`` are the training and selection splits of trained families; ``test`` is cut to
    ``config.n`` items. ``build`` replaces the recipe (tests). A family that does not apply to the
    modality (``jpeg`` on audio) returns a row with ``status="n/a"`` and the builder's one-line reason.
    Returns the records (clean, naive and adaptive per eps, worst cases, checks, certificates) and
    the summary row.
    """
    cfg = config or AuditConfig()
    fam = defense_family(family)
    recipe = audit_recipe(family)
    row: dict[str, Any] = {"defense": family, "modality": modality, "kind": fam.kind, "trained": fam.trained,
                           "note": recipe.note}
    try:
        defended, settings, training = (build or (lambda: build_selected(encoder, family, modality, train, val, cfg)))()
        defended.check_modality(modality)
        with torch.no_grad():  # a transform that refuses the modality does so on its first input
            defended.encode(modality, test.get(modality, torch.arange(1)).to(defended.device))
    except RobustMMError as e:
        log.info("zoo: %s does not apply to %s: %s", family, modality, e)
        return AuditOutcome([], row | {"status": "n/a", "reason": " ".join(str(e).split())})
    test = test.head(min(cfg.n, len(test)))
    block = {"name": family, "kind": fam.kind, "settings": _jsonable(settings)}
    common = {"defense": block, "seed": cfg.seed, "progress": False, "batch_size": cfg.batch_size}
    plan = attack_plan(encoder, defended, modality, test, cfg.seed)
    results: list[Result] = []

    clean = evaluate(defended, test, modality=modality, **common)
    bare_clean = evaluate(encoder, test, modality=modality, seed=cfg.seed, progress=False, batch_size=cfg.batch_size)
    x_all = test.get(modality, torch.arange(len(test))).to(defended.device)
    infer_s, bare_s = _encode_seconds(defended, modality, x_all, cfg.seed), _encode_seconds(encoder, modality, x_all, cfg.seed)
    results.append(clean)
    spec = get_modality(modality)
    grid = {"smallest": spec.eps_grid[0], "middle": spec.middle_eps}
    per_eps: dict[str, Any] = {}
    for label, eps in grid.items():
        rows, eps_results = _attack_at(encoder, defended, test, modality, eps, plan, cfg, common,
                                       naive_cache if naive_cache is not None else {})
        per_eps[label] = {"eps": eps, "eps_label": spec.format_eps(eps)} | rows
        results += eps_results
    checks: dict[str, Any] | None = None
    if cfg.checks:
        checks, check_result = _checks(encoder, defended, test, modality, plan, cfg, block)
        results.append(check_result)
    certified = _certify(defended, test, modality, settings, cfg) if recipe.certify else None
    if certified is not None:
        results.append(certified[1])
    overstated = {label: naive_overstates(v["naive"], v["worst"], len(test)) for label, v in per_eps.items()}
    for label, (flag, se) in overstated.items():
        per_eps[label] |= {"naive_overstates": flag, "se_diff": None if math.isnan(se) else round(se, 4)}
    row |= {
        "status": "ok", "settings": _jsonable(settings), "n": len(test), "clean": _score(clean, "clean"),
        "bare_clean": _score(bare_clean, "clean"), "eps": per_eps, "plan": plan,
        "naive_overstates": any(f for f, _ in overstated.values()),
        "checks": checks, "flagged": _flags(plan, checks, overstated),
        "params": trained_parameters(encoder, defended),
        "cost": {"train_s": training.get("train_s"), "training": training,
                 "infer_ms_per_item": round(1000 * infer_s / len(test), 3),
                 "bare_infer_ms_per_item": round(1000 * bare_s / len(test), 3),
                 "attack_passes": _sum_costs(results) or "not recorded"},
        "certified": None if certified is None else certified[0],
    }
    for r in results:
        r.extra.setdefault("zoo", {"defense": family, "modality": modality})
    return AuditOutcome(results, row)


def _attack_at(bare: Encoder, defended: Encoder, test: MultimodalDataset, modality: str, eps: float, plan: dict[str, Any],
               cfg: AuditConfig, common: dict[str, Any], cache: dict[Any, MemoAttack]) -> tuple[dict[str, Any], list[Result]]:
    """Naive (transferred) and adaptive results at one eps, each side's per-item worst case over the
    same parts, so the two sides differ only in which model the attacks differentiate."""
    naive: dict[str, tuple[RecordingAttack, Result]] = {}
    adaptive: dict[str, tuple[RecordingAttack, Result]] = {}
    out: list[Result] = []
    for part in WORST_PARTS:
        key = (modality, float(eps), part, cfg)
        if key not in cache:  # made on the bare model once, scored on every defense
            cache[key] = MemoAttack(_part(part, eps, cfg).resolve(modality))
        rec = RecordingAttack(cache[key])
        r = evaluate(defended, test, modality=modality, attack=rec, source=bare, **common)
        r.extra["zoo_role"] = f"naive:{part}"
        naive[f"naive:{part}"] = (rec, r)
        rec = RecordingAttack(adaptive_attack(_part(part, eps, cfg).resolve(modality), plan, cfg.eot_samples))
        r = evaluate(defended, test, modality=modality, attack=rec, threat="adaptive", **common)
        r.extra["zoo_role"] = f"adaptive:{part}"
        adaptive[part] = (rec, r)
        out += [naive[f"naive:{part}"][1], r]

    def composite(parts: dict[str, tuple[RecordingAttack, Result]], role: str) -> Result:
        w = worst_case(defended, test, modality=modality, examples={k: a.stacked(len(test)) for k, (a, _) in parts.items()},
                       results={k: r for k, (_, r) in parts.items()}, batch_size=cfg.batch_size, defense=common["defense"])
        w.extra["zoo_role"] = role
        return w

    naive_worst = composite(naive, "naive-worst-case")
    naive_worst.threat = "transfer"  # every candidate was made on the bare model
    worst = composite(naive | adaptive, "worst-case")
    out += [naive_worst, worst]
    rows = {"naive": _score(naive_worst), "naive_pgd": _score(naive["naive:pgd"][1]), "adaptive": _score(adaptive["pgd"][1]),
            "parts": {k: _score(r) for k, (_, r) in (naive | adaptive).items()}, "worst": _score(worst),
            "broken_by": worst.extra.get("broken_by")}
    return rows, out


def _checks(bare: Encoder, defended: Encoder, test: MultimodalDataset, modality: str, plan: dict[str, Any],
            cfg: AuditConfig, block: dict[str, Any]) -> tuple[dict[str, Any], Result]:
    attack = adaptive_attack(build_attack("pgd", steps=cfg.steps, seed=cfg.seed), plan, cfg.eot_samples)
    t0 = time.perf_counter()
    # the transfer check runs the attack on the bare model, where BPDA has no step to approximate
    surrogate = None if plan["bpda"] else bare
    found = sanity_checks(defended, test, modality=modality, attack=attack, surrogate=surrogate, seed=cfg.seed)
    res = checks_result(found, defended, test, modality=modality, attack=attack, defense=block, seed=cfg.seed,
                        timing_s=time.perf_counter() - t0)
    return {"passed": all(c.passed for c in found), "failed": [c.name for c in found if not c.passed]}, res


def _certify(defended: Encoder, test: MultimodalDataset, modality: str, settings: dict[str, Any],
             cfg: AuditConfig) -> tuple[dict[str, Any], Result] | None:
    """Certified top-1 at the reference radii of a smoothing entry, at its sigma, with the audit's
    draws for every entry (comparable across families)."""
    sigma = settings.get("sigma")
    if sigma is None:
        return None
    kw: dict[str, Any] = {"n0": max(16, cfg.cert_draws // 8), "n": cfg.cert_draws}
    base = defended
    if isinstance(defended, SmoothedEncoder):  # its noise and failure probability, the audit's draws
        kw["alpha"], base = defended.alpha, defended.base
    radii = list(reference_radii(modality))
    r = certify_dataset(base, test, modality=modality, sigma=float(sigma), radii=radii, retrieval=False,
                        n_items=min(cfg.cert_n, len(test)), seed=cfg.seed, progress=False, **kw)
    top1 = (r.metrics.get("certified") or {}).get("top1") or {}
    return {"sigma": float(sigma), "n": r.n, "draws": kw["n"], "top1": dict(top1)}, r


def _flags(plan: dict[str, Any], checks: dict[str, Any] | None, overstated: dict[str, tuple[bool, float]]) -> list[str]:
    """The report's warnings for one audit, each one line."""
    out = [f"naive overstates at the {label} eps" for label, (flag, _) in overstated.items() if flag]
    if plan["masked_without_bpda"]:
        out.append(f"gradient {plan['gradient']} with no BPDA stand-in declared (masked gradient)")
    if plan["undeclared_randomness"]:
        out.append("randomized encode not declared (EOT used because a probe saw it)")
    if checks is not None and not checks["passed"]:
        out.append("gradient-masking checks failed: " + ", ".join(checks["failed"]))
    return out
