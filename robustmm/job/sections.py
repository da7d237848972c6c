"""Typed config sections: a dataclass per TOML table, every key checked against its annotation.

A section is a dataclass subclassing :class:`Section`; each field's annotation is its type
(``int``, ``float``, ``bool``, ``str``, ``X | None``, ``list[X]``, ``dict[str, Any]``) and its
default is the one default of that key anywhere in robustmm. :func:`option` adds what a type
cannot say: bounds, a name check (``check_model_name`` ...), that a list may not be empty, that a
string is a split of ``[run] dataset``, that an integer counts items of one (so at most its size)
or that a list's names must be among those of a ``[run]`` key (a section's ``modalities``).
Loading a table checks every key (unknown keys get "did you mean"), so a wrong value is a one-line
error naming the section, key and expected type, before any model is loaded; the split rules need
``[run]`` and are applied to the whole job by :func:`robustmm.job.config.parse_config`.

``quick_KEY`` fields are the ``--quick`` overrides of ``KEY``: :meth:`Section.pick` returns them
under ``--quick`` when set (not None), else ``KEY``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import RobustMMError, UnknownNameError


class ConfigError(RobustMMError):
    """A job-file value of the wrong type or out of range."""


def option(default: Any, *, minimum: float | None = None, positive: bool = False, maximum: float | None = None,
           below: float | None = None, check: Callable[[Any], Any] | None = None, nonempty: bool = False,
           split: bool = False, items: ItemsOf | None = None, in_run: str | None = None) -> Any:
    """A dataclass field with bounds (``minimum``, or ``positive`` for > 0; ``maximum``, or ``below``
    for < below), a name check, and the job-level meanings ``split`` (a split name of ``[run]
    dataset``), ``items`` (an item count drawn from the split :class:`ItemsOf` names, so at
    most that split's size) and ``in_run`` (each element of the list is one of ``[run] IN_RUN``:
    a section's ``modalities`` name modalities the job runs, see
    :func:`robustmm.job.config.check_in_run`).

    Bounds and the check apply to each element of a list; ``nonempty`` refuses an empty list (one
    that would run nothing). ``check`` is one of the registries' public checks (it raises
    ``UnknownNameError``, or another one-line error that is reported under the key's name);
    mutable defaults (lists) are copied per instance.
    """
    meta = {"rule": Rule(minimum, positive, check, maximum, below, nonempty, split, items, in_run)}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class ItemsOf:
    """The split an item count draws from: the split named by key ``key`` of the same section,
    the fixed split ``split``, or (neither given) ``[run] split``."""

    key: str | None = None
    split: str | None = None

    def resolve(self, section: Any, run_split: str) -> str:
        """The split name for ``section`` in a job whose ``[run] split`` is ``run_split``."""
        return getattr(section, self.key) if self.key else self.split or run_split


#: an item count drawn from ``[run] split`` (the clean and attacked items)
RUN_ITEMS = ItemsOf()


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a type annotation cannot say about a key: bounds, name check and job-level meaning."""

    minimum: float | None = None
    positive: bool = False
    check: Callable[[Any], Any] | None = None
    maximum: float | None = None
    below: float | None = None
    nonempty: bool = False
    split: bool = False
    items: ItemsOf | None = None
    in_run: str | None = None

    def bound(self) -> str:
        """' >= 0', ' > 0 and <= 1' or '' for error messages."""
        low = " > 0" if self.positive else "" if self.minimum is None else f" >= {_num(self.minimum)}"
        high = f" < {_num(self.below)}" if self.below is not None else \
            "" if self.maximum is None else f" <= {_num(self.maximum)}"
        return low + (" and" if low and high else "") + high

    def holds(self, value: float) -> bool:
        """Whether a number meets the bounds."""
        return not ((self.positive and value <= 0) or (self.minimum is not None and value < self.minimum)
                    or (self.maximum is not None and value > self.maximum)
                    or (self.below is not None and value >= self.below))


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


NO_RULE = Rule()

MAX_SEED = 2**63 - 1  # torch.manual_seed and numpy take no more; cells add small offsets
#: the bounds of every seed in a job file: ``[run] seed`` and the seed-like keys of settings tables
SEED = Rule(minimum=0, maximum=MAX_SEED)


def is_seed_key(key: str) -> bool:
    """Whether a key of a free-form settings table names a seed (``seed``, ``X_seed``, ``seed_X``)."""
    return key == "seed" or key.endswith("_seed") or key.startswith("seed_")


def check_seeds(settings: dict[str, Any], where: str) -> None:
    """Each seed-like key of ``settings`` (an attack's or a defense's constructor keywords, which
    the section cannot type) is an integer bounded like ``[run] seed``: a one-line error under
    ``WHERE.KEY`` at load, not an overflow in the generator when the cell runs."""
    for key, value in settings.items():
        if is_seed_key(key):
            convert(value, int, f"{where}.{key}", SEED)


@dataclasses.dataclass
class Section:
    """Base of every config section: typed loading and ``quick_KEY`` picks."""

    def pick(self, key: str, quick: bool) -> Any:
        """``quick_KEY`` under --quick when it is set, else ``KEY``."""
        if quick and getattr(self, f"quick_{key}", None) is not None:
            return getattr(self, f"quick_{key}")
        return getattr(self, key)

    @classmethod
    def keys(cls) -> list[str]:
        """The keys this section accepts."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_table(cls, table: Any, section: str, source: str = "config") -> Section:
        """Build the section ``[section]`` from a TOML table of file ``source`` (named in errors)."""
        where = f"{source}: [{section}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table of keys, got {_show(table)}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in table.items():
            if key not in fields:
                raise UnknownNameError(f"key of [{section}] in {source}", key, fields)
            f = fields[key]
            values[key] = convert(value, hints[key], f"{where} {key}", f.metadata.get("rule", NO_RULE))
        return cls(**values)

    def to_table(self) -> dict[str, Any]:
        """The section as a plain table that :meth:`from_table` reads back to an equal section.

        None values stay (``quick_n = None`` means "no --quick override", not the default), so
        the table is TOML-like rather than TOML: TOML has no null.
        """
        return dataclasses.asdict(self)

    @classmethod
    def rules(cls) -> dict[str, Rule]:
        """Each key's :class:`Rule` (keys declared without :func:`option` have the empty rule)."""
        return {f.name: f.metadata.get("rule", NO_RULE) for f in dataclasses.fields(cls)}


@contextlib.contextmanager
def reported_under(where: str) -> Iterator[None]:
    """Re-raise a one-line :class:`RobustMMError` from the block as ``ConfigError("WHERE: ...")``,
    so a constructor's own check (an attack's, a defense's) names the job file, section and key."""
    try:
        yield
    except ConfigError:
        raise
    except RobustMMError as e:
        raise ConfigError(f"{where}: {e}") from None


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _describe(tp: Any, rule: Rule) -> str:
    """'an integer >= 0', 'a list of strings', 'a number or nothing' ... for error messages."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _describe(inner[0], rule)
    if origin is list:
        return "a list of " + _describe(args[0], rule).split(" ", 1)[1].replace("integer", "integers") \
            .replace("number", "numbers").replace("string", "strings").replace("boolean", "booleans")
    if origin is dict:
        return "a table of keys"
    name = {int: "an integer", float: "a number", bool: "a boolean (true/false)", str: "a string"}.get(tp, str(tp))
    return name + (rule.bound() if tp in (int, float) else "")


def convert(value: Any, tp: Any, where: str, rule: Rule = NO_RULE) -> Any:
    """``value`` checked (and ints widened to float) against type ``tp`` and ``rule``.

    A number may also be written as a fraction string (``eps = "4/255"``), parsed by the one
    budget parser of the CLI and the Python API (:func:`robustmm.modalities.parse_budget`).
    Raises :class:`ConfigError` naming ``where`` and the expected type, or the rule's name check's
    ``UnknownNameError``; returns the value (a float for an integer given where a number belongs).
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return convert(value, inner[0], where, rule)
    if origin is list:
        return _convert_list(value, tp, where, rule)
    if origin is dict:
        if not isinstance(value, dict):
            raise _bad(value, tp, where, rule)
        return dict(value)
    value = _convert_scalar(value, tp, where, rule)
    if rule.check is not None:
        _run_check(rule.check, value, where)
    return value


def _bad(value: Any, tp: Any, where: str, rule: Rule) -> ConfigError:
    return ConfigError(f"{where}: expected {_describe(tp, rule)}, got {_show(value)}")


def _convert_list(value: Any, tp: Any, where: str, rule: Rule) -> list[Any]:
    """A list value: each element converted under the rule (``nonempty`` applies to the list)."""
    if not isinstance(value, list):
        raise _bad(value, tp, where, rule)
    if rule.nonempty and not value:  # a list that would run nothing
        raise ConfigError(f"{where}: expected a non-empty {_describe(tp, rule)[2:]}, got []")
    each = dataclasses.replace(rule, nonempty=False)
    return [convert(v, typing.get_args(tp)[0], f"{where}[{i}]", each) for i, v in enumerate(value)]


def _as_number(value: Any) -> float | None:
    """A finite float from a number or a fraction string (``"4/255"``; a plain number in quotes
    stays a type error), else None."""
    from ..errors import BudgetError
    from ..modalities import parse_budget

    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if "/" not in value:
            return None
        try:
            return parse_budget(value)
        except BudgetError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _convert_scalar(value: Any, tp: Any, where: str, rule: Rule) -> Any:
    """A bool, int, float (numbers and fractions) or str value, bounds included."""
    if tp is float:
        number = _as_number(value)
        if number is None or not rule.holds(number):
            raise _bad(value if number is None or isinstance(value, str) else number, tp, where, rule)
        return number
    kinds = {bool: (bool,), int: (int,), str: (str,)}
    if tp not in kinds:  # pragma: no cover - a section annotated with a type this loader does not know
        raise TypeError(f"{where}: unsupported config type {tp!r}")
    ok = isinstance(value, kinds[tp]) and not (tp is int and isinstance(value, bool))
    if not ok or (tp is int and not rule.holds(value)):
        raise _bad(value, tp, where, rule)
    return value


def _run_check(check: Callable[[Any], Any], value: Any, where: str) -> None:
    """A rule's name check, its error placed under the key's name."""
    try:
        check(value)
    except UnknownNameError as e:  # the same error ("did you mean"), placed under the key
        placed = UnknownNameError(e.kind, e.name, e.known)
        placed.args = (f"{where}: {e}",)
        raise placed from None
    except RobustMMError as e:  # a check's own one-line reason, placed under the key
        raise ConfigError(f"{where}: {e}") from None
