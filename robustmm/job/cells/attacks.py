"""``[attacks.NAME]``: any registered attack, run through ``evaluate`` with only a job-file entry.

A new attack (one file in ``robustmm/attacks/`` with ``@register_attack("NAME")``) runs in
``robustmm run`` with a section like::

    [attacks.NAME]
    modalities = ["image"]       # empty = every modality of [run]
    eps = [0.0157]               # budgets in the modality's unit; empty = the attack's default
    settings = { steps = 20 }    # the attack's constructor keywords

One cell per modality (key ``MODEL|MODALITY|attack:NAME``), one result per budget. Attacks that
``needs_fit`` (the universal patch) are first fitted on ``fit_n`` items of their ``fit_split``; an
attack made for one modality (a constructor keyword ``modality``, like the patch) is built for the
cell's modality unless ``settings`` names one, the convention of ``robustmm eval``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ...attacks.base import Attack, accepts, attack_class, build_attack
from ...cost import count_passes
from ...errors import RobustMMError, UnknownNameError
from ...evaluation import evaluate
from ...modalities import get_modality
from ...records import Result
from ..context import JobContext
from ..registry import Cell, CellKind, register_cell
from ..sections import RUN_ITEMS, ConfigError, Section, check_seeds, option, reported_under
from ._shared import section_modalities


@dataclasses.dataclass
class AttackCellConfig(Section):
    """``[attacks.NAME]``: where, at which budgets and with which settings attack NAME runs."""

    enabled: bool = True
    modalities: list[str] = option([], check=get_modality, in_run="modalities")  # empty = every modality of [run]
    eps: list[float] = option([], minimum=0)  # budgets; empty = the attack's default (the modality's middle eps)
    n: int | None = option(None, positive=True, items=RUN_ITEMS)  # attacked items (None = [run] attack_n)
    quick_n: int | None = option(None, positive=True, items=RUN_ITEMS)
    fit_n: int = option(1000, positive=True)  # training items of learned attacks
    quick_fit_n: int | None = option(100, positive=True)
    settings: dict[str, Any] = option({})  # the attack's constructor keywords


@register_cell("attacks", order=55)
class AttackCells(CellKind):
    """Any registered attack by name, one ``[attacks.NAME]`` table each, through evaluate."""

    @classmethod
    def parse(cls, table: Any, source: str) -> dict[str, AttackCellConfig]:
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [attacks]: expected tables [attacks.NAME], got {table!r}")
        out = {}
        for name, sub in table.items():
            attack_class(name)  # unknown attack: "did you mean"
            cfg = AttackCellConfig.from_table(sub, f"attacks.{name}", source)
            for key in cfg.settings:
                if not accepts(name, key):
                    raise UnknownNameError(f"setting of attack {name!r} in [attacks.{name}] of {source}", key,
                                           _params(name))
            check_seeds(cfg.settings, f"{source}: [attacks.{name}] settings")
            if cfg.eps and not accepts(name, "eps"):
                raise ConfigError(f"{source}: [attacks.{name}] eps: attack {name!r} has no eps budget")
            attack = _built(name, cfg.settings, f"{source}: [attacks.{name}] settings")
            for i, eps in enumerate(cfg.eps):
                with reported_under(f"{source}: [attacks.{name}] eps[{i}]"):
                    attack.with_eps(eps)
            out[name] = cfg
        return out

    @classmethod
    def validate(cls, section: Any, job: Any, source: str) -> None:
        """Per enabled attack: it resolves on every modality it would run on, and a learned one
        has its ``fit_n`` training items in its fit split."""
        from ..config import check_item_count, check_split

        for name, cfg in section.items():
            if not cfg.enabled:
                continue
            attack = build_attack(name, **cfg.settings)
            for m in cfg.modalities or job.run.modalities:
                with reported_under(f"{source}: [attacks.{name}] modalities ({m})"):
                    build_attack(name, **cell_settings(name, cfg, m)).resolve(m)
            if attack.needs_fit:
                split = attack.fit_split or "train"
                check_split(job, split, f"{source}: [attacks.{name}] (attack {name!r} fits on split {split!r})")
                for key in ("fit_n", "quick_fit_n"):
                    if getattr(cfg, key) is not None:
                        check_item_count(job, getattr(cfg, key), split, f"{source}: [attacks.{name}] {key}")

    @classmethod
    def default(cls) -> dict[str, AttackCellConfig]:
        return {}

    @classmethod
    def tables(cls, section: Any) -> dict[str, Section]:
        return {f"attacks.{name}": cfg for name, cfg in section.items()}

    @classmethod
    def to_table(cls, section: Any) -> dict[str, Any]:
        return {name: cfg.to_table() for name, cfg in section.items()}

    def enabled(self, section: Any) -> bool:
        return any(cfg.enabled for cfg in section.values())

    def cells(self, ctx: JobContext, section: Any) -> list[Cell]:
        return [Cell(ctx.key(m, f"attack:{name}"), lambda name=name, cfg=cfg, m=m: run_attack(ctx, name, cfg, m))
                for name, cfg in section.items() if cfg.enabled for m in section_modalities(ctx, cfg.modalities)]


def _built(name: str, settings: dict[str, Any], where: str) -> Attack:
    """Attack ``name`` built from ``settings`` now, so that a value its constructor refuses (a
    norm that does not exist, a step count that is a string) is a load error naming the key."""
    try:
        return build_attack(name, **settings)
    except RobustMMError as e:
        for key, value in settings.items():  # name the setting that fails on its own, if one does
            try:
                build_attack(name, **{key: value})
            except RobustMMError:
                where = f"{where}.{key}"
                break
        raise ConfigError(f"{where}: {e}") from None


def _params(name: str) -> list[str]:
    import inspect

    return [p for p in inspect.signature(attack_class(name).__init__).parameters if p != "self"]


def cell_settings(name: str, cfg: AttackCellConfig, modality: str) -> dict[str, Any]:
    """The constructor keywords of attack ``name`` in its cell on ``modality``: the table's
    ``settings``, plus ``modality`` for an attack made for one (the patch) that they leave out."""
    made_for_one = "modality" in _params(name) and "modality" not in cfg.settings
    return cfg.settings | ({"modality": modality} if made_for_one else {})


def run_attack(ctx: JobContext, name: str, cfg: AttackCellConfig, modality: str) -> list[Result]:
    """Build attack ``name`` with its settings at each budget, fit it when it learns, evaluate it."""
    seed = {"seed": ctx.seed} if "seed" in _params(name) and "seed" not in cfg.settings else {}  # [run] seed by default
    base = build_attack(name, **seed, **cell_settings(name, cfg, modality))
    n = cfg.pick("n", ctx.quick)
    data = ctx.dataset(n=min(int(n), ctx.attack_n)) if n else ctx.attacked
    fit_data, fitting = None, None
    results = []
    for attack in [base.with_eps(e) for e in cfg.eps] or [base]:
        attack = ctx.amp_wrap(attack)
        if attack.needs_fit:  # learned attacks: fitted per budget on a training split, scored on held-out items
            fit_data = fit_data or ctx.dataset(attack.fit_split or "train", int(cfg.pick("fit_n", ctx.quick)))
            with count_passes() as fitting:
                attack.fit(ctx.encoder(), fit_data)
        res = evaluate(ctx.encoder(), data, modality=modality, attack=attack, **ctx.kw())
        if fit_data is not None:
            res.extra["fit"] = fit_data.info()
        if fitting is not None:  # a learned attack spends its passes fitting (per training item)
            res.extra["fit_cost"] = fitting.as_dict(len(fit_data))
        results.append(res)
    return results
