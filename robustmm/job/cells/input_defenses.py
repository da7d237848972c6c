"""``[input_defenses]``: input-transformation defenses (bit-depth, JPEG, random resize-and-pad) scored
clean, under the naive attack and under the adaptive one, beside the undefended model.

The naive attack differentiates the defended model as it is: rounding and JPEG give it no gradient
and random resizing a different model at every call, so it reports inflated robustness. The
adaptive attack takes that back (Athalye et al., ICML 2018): BPDA for a defense with
non-differentiable steps (the identity in the backward pass), EOT over ``eot_samples`` draws for a
randomized one (APGD folds the draws with ``softmin``, :mod:`robustmm.attacks.eot_reduction`),
both for a defense that is both. ``robustmm eval --defense`` uses the same
functions (:func:`adaptive_for`, :func:`score_defense`).

One cell per (modality, defense), key ``MODEL|MODALITY|input-defense:NAME``; its records carry the
transform's ``describe()`` as their ``defense`` block, ``threat`` ``clean``, ``white-box`` (naive)
and ``adaptive``, and ``extra["undefended"]``: the bare model's clean and attacked top-1 on the
same items under the same attack.
"""
from __future__ import annotations

import dataclasses
import json
import weakref
from typing import Any

from ...attacks.base import Attack, accepts, attack_class, build_attack
from ...attacks.bpda import BPDA, declared
from ...attacks.eot import EOT
from ...encoders.input_transforms import InputTransform, build_defense, defend, list_defenses
from ...errors import BudgetError, RobustMMError, UnknownNameError
from ...evaluation import evaluate
from ...modalities import get_modality
from ...records import Result, headline_score
from ..context import JobContext
from ..registry import Cell, CellKind, register_cell
from ..sections import RUN_ITEMS, ConfigError, Section, check_seeds, option
from ._shared import section_modalities

ADAPTIVE_MODES = ("auto", "bpda", "eot", "bpda+eot")


def check_defense_name(name: str) -> None:
    """A one-line error ("did you mean") unless ``name`` is a registered input defense."""
    if name not in list_defenses():
        raise UnknownNameError("defense", name, list_defenses())


def make_defense(name: str, settings: dict[str, Any]) -> InputTransform:
    """Input defense ``name`` with ``settings``; an unknown setting is a "did you mean" error,
    a bad value the defense's own one-line error."""
    check_defense_name(name)
    params = list(build_defense(name).settings())  # a default instance names the settings it takes
    for key in settings:
        if key not in params:
            raise UnknownNameError(f"setting of defense {name!r}", key, params)
    return build_defense(name, **settings)


def parse_settings(pairs: list[str] | None) -> dict[str, Any]:
    """``["quality=50", "bits=4"]`` as ``{"quality": 50, "bits": 4}`` (JSON values, else strings)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise RobustMMError(f"--defense-setting expects KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _plan(name: str, has_steps: bool, randomized: bool, mode: str, eot_samples: int) -> tuple[bool, bool]:
    """(BPDA?, EOT?) for a defense, or the one-line error of a request that makes no sense."""
    if mode not in ADAPTIVE_MODES:
        raise UnknownNameError("adaptive attack", mode, ADAPTIVE_MODES)
    if isinstance(eot_samples, bool) or not isinstance(eot_samples, int) or eot_samples < 1:
        raise BudgetError(f"EOT samples must be an integer >= 1, got {eot_samples!r}")
    use_bpda = has_steps if mode == "auto" else "bpda" in mode
    use_eot = randomized if mode == "auto" else "eot" in mode
    if use_bpda and not has_steps:
        raise RobustMMError(f"BPDA on defense {name!r}: it has no non-differentiable step to approximate")
    if use_eot and not randomized:
        raise RobustMMError(f"EOT on defense {name!r}: it is not randomized (every draw would be the same)")
    if not (use_bpda or use_eot):
        raise RobustMMError(f"defense {name!r} is differentiable and deterministic: the naive attack is already adaptive")
    return use_bpda, use_eot


def check_adaptive(transform: InputTransform, mode: str = "auto", eot_samples: int = 8) -> None:
    """The errors :func:`adaptive_for` would raise for ``transform``, before any model is loaded."""
    _plan(transform.name, not transform.differentiable, transform.randomized, mode, eot_samples)


def judged_on_every_draw(attack: Attack) -> Attack:
    """``attack`` without early stopping: against a randomized defense an item broken in the draws
    the attack saw is not broken for good, so it must keep being attacked (and scored afresh)."""
    return attack.replace(early_stop=False) if attack.settings().get("early_stop") else attack


def adaptive_for(defended: Any, attack: Attack, *, eot_samples: int = 8, mode: str = "auto") -> Attack:
    """The adaptive version of ``attack`` against an input-defended encoder.

    ``mode`` ``auto``: BPDA when the defense declares non-differentiable steps, EOT over
    ``eot_samples`` draws when it is randomized, both when both (EOT outside BPDA). ``bpda``,
    ``eot`` and ``bpda+eot`` ask for one explicitly: BPDA on a defense with nothing to approximate
    and EOT on a deterministic one are one-line errors, and so is ``eot_samples < 1``.

    An attack that averages draws itself (APGD) folds them with ``softmin``
    (``-log mean_t exp(-loss_t)``, for CE the expected accuracy's own loss): on random-resize-pad
    at 4/255 it leaves 0.434 over all draws where the mean CE leaves 0.466
    (``docs/performance/input_defenses_rrp_softmin.json``). A tiling one (PGD) averages the losses.
    """
    name = getattr(getattr(defended, "transform", None), "name", getattr(defended, "name", "?"))
    use_bpda, use_eot = _plan(name, bool(declared(defended, "bpda_steps")), bool(getattr(defended, "randomized", False)),
                              mode, eot_samples)
    if use_eot:
        attack = judged_on_every_draw(attack)
    out = BPDA(attack) if use_bpda else attack
    if not use_eot:
        return out
    return EOT(out, eot_samples, reduction="softmin" if "eot_reduction" in out.settings() else "mean")


def score_defense(encoder: Any, data: Any, *, modality: str, transform: InputTransform, attack: Attack | None,
                  adaptive: Attack | None = None, clean: bool = True, wrap: Any = None, **kw: Any) -> list[Result]:
    """Clean (optional), naive (``threat="white-box"``) and adaptive results of ``encoder`` behind ``transform``.

    ``adaptive`` is the adaptive attack (see :func:`adaptive_for`; None = naive only); ``wrap``
    (e.g. autocast) is applied to both attacks; ``kw`` goes to ``evaluate``.
    """
    transform.check(modality)
    defended = defend(encoder, transform)
    block = transform.describe()
    wrap = wrap or (lambda a: a)
    out = [evaluate(defended, data, modality=modality, defense=block, **kw)] if clean else []
    if attack is not None:
        naive = judged_on_every_draw(attack) if transform.randomized else attack
        out.append(evaluate(defended, data, modality=modality, attack=wrap(naive), defense=block, threat="white-box", **kw))
    if adaptive is not None:
        out.append(evaluate(defended, data, modality=modality, attack=wrap(adaptive), defense=block, threat="adaptive", **kw))
    return out


@dataclasses.dataclass
class InputDefensesConfig(Section):
    """``[input_defenses]``: which defenses, on which modalities, under which attack."""

    enabled: bool = True
    modalities: list[str] = option(["image"], check=get_modality, nonempty=True, in_run="modalities")  # image-like defenses
    defenses: list[str] = option(["bit-depth", "jpeg", "random-resize-pad"], check=check_defense_name, nonempty=True)
    settings: dict[str, Any] = option({})  # per defense, e.g. { jpeg = { quality = 75 } }
    attack: str = option("pgd", check=attack_class)  # the naive attack (adaptive: BPDA / EOT around it)
    steps: int = option(10, positive=True)
    quick_steps: int | None = option(5, positive=True)
    n: int = option(100, positive=True, items=RUN_ITEMS)  # items attacked (at most [run] attack_n)
    quick_n: int | None = option(16, positive=True, items=RUN_ITEMS)
    eot_samples: int = option(8, positive=True)  # EOT draws per step for randomized defenses
    quick_eot_samples: int | None = option(2, positive=True)


@register_cell("input_defenses", order=57)
class InputDefenseCells(CellKind):
    """Input defenses: clean, naive and adaptive (BPDA / EOT) attack, beside the undefended model."""

    Config = InputDefensesConfig

    @classmethod
    def parse(cls, table: Any, source: str) -> InputDefensesConfig:
        cfg = InputDefensesConfig.from_table(table, cls.name, source)
        for name, sub in cfg.settings.items():
            if name not in cfg.defenses:
                raise UnknownNameError(f"defense in [input_defenses] settings of {source}", name, cfg.defenses)
            if not isinstance(sub, dict):
                raise ConfigError(f"{source}: [input_defenses] settings.{name}: expected a table of keys, got {sub!r}")
            check_seeds(sub, f"{source}: [input_defenses] settings.{name}")
            try:
                make_defense(name, sub)
            except RobustMMError as e:
                raise ConfigError(f"{source}: [input_defenses] settings.{name}: {e}") from None
        return cfg

    @classmethod
    def validate(cls, section: Any, job: Any, source: str) -> None:
        """Each modality the section runs on has a defense that applies to it: one that none
        does (``jpeg`` alone on audio) would silently run nothing."""
        for m in [m for m in section.modalities if m in job.run.modalities]:
            if not any(_applies(d, section.settings.get(d, {}), m) for d in section.defenses):
                raise ConfigError(f"{source}: [input_defenses] modalities: none of the defenses "
                                  f"({', '.join(section.defenses)}) applies to {m!r}, so nothing would run on it")

    def cells(self, ctx: JobContext, section: Any) -> list[Cell]:
        mods = section_modalities(ctx, section.modalities)
        return [Cell(ctx.key(m, f"input-defense:{d}"), lambda m=m, d=d: run_input_defense(ctx, m, d))
                for m in mods for d in section.defenses if _applies(d, section.settings.get(d, {}), m)]


def _applies(name: str, settings: dict[str, Any], modality: str) -> bool:
    try:
        make_defense(name, settings).check(modality)
    except RobustMMError:
        return False
    return True


_UNDEFENDED: weakref.WeakKeyDictionary[JobContext, dict[str, dict[str, Any]]] = weakref.WeakKeyDictionary()


def _attack(ctx: JobContext) -> Attack:
    """The naive attack of the section: ``attack`` with the section's steps and the job's seed."""
    name = ctx.section("input_defenses").attack
    kw = {"steps": int(ctx.pick("input_defenses", "steps")), "seed": ctx.seed}
    return build_attack(name, **{k: v for k, v in kw.items() if accepts(name, k)})


def _undefended(ctx: JobContext, modality: str, data: Any, attack: Attack) -> dict[str, Any]:
    """The bare model's clean and attacked top-1 on the same items (once per job and modality)."""
    memo = _UNDEFENDED.setdefault(ctx, {})
    if modality not in memo:
        r = evaluate(ctx.encoder(), data, modality=modality, attack=ctx.amp_wrap(attack), **ctx.kw())
        memo[modality] = {"clean": headline_score(r.metrics["clean"]), "attacked": headline_score(r.metrics["attacked"]),
                          "attack": r.attack}
    return memo[modality]


def run_input_defense(ctx: JobContext, modality: str, name: str) -> list[Result]:
    """Clean, naive and adaptive results of the model behind defense ``name`` on ``modality``."""
    sec = ctx.section("input_defenses")
    data = ctx.dataset(n=min(int(ctx.pick("input_defenses", "n")), ctx.attack_n))
    transform = make_defense(name, sec.settings.get(name, {}))
    attack = _attack(ctx).resolve(modality)
    defended = defend(ctx.encoder(), transform)
    adaptive = adaptive_for(defended, attack, eot_samples=int(ctx.pick("input_defenses", "eot_samples")))
    results = score_defense(ctx.encoder(), data, modality=modality, transform=transform, attack=attack,
                            adaptive=adaptive, wrap=ctx.amp_wrap, **ctx.kw())
    ref = _undefended(ctx, modality, data, attack)
    for r in results:
        r.extra["undefended"] = ref
    return results
