"""The Attack contract and the attack registry.

``attack(encoder, batch) -> batch`` returns a perturbed copy of the batch (never mutating it).
Continuous attacks change ``batch.x`` inside the modality's domain and eps-ball; text attacks
change ``batch.captions``; joint attacks (SGA) change both. Attacks that learn first (the
universal patch) also implement ``fit(encoder, dataset) -> self``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..batch import Batch
from ..errors import UnknownNameError

_ATTACKS: dict[str, type["Attack"]] = {}


class Attack:
    """Base class. Subclasses set ``name`` and implement :meth:`__call__`."""

    name: str = "attack"
    #: what the attack perturbs: "x" (the modality tensor), "captions", or both
    perturbs: tuple[str, ...] = ("x",)
    eps: float = 0.0

    def __call__(self, encoder: Any, batch: Batch) -> Batch:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, encoder: Any, dataset: Any) -> "Attack":
        """Learn from a training split (no-op for per-sample attacks)."""
        return self

    def describe(self) -> dict[str, Any]:
        """The ``attack`` block of a result record: name and every setting."""
        return {"name": self.name}

    def with_eps(self, eps: float) -> "Attack":
        """A copy at another budget (for robustness curves)."""
        raise NotImplementedError(f"attack {self.name!r} has no eps budget")


def register_attack(name: str) -> Callable[[type[Attack]], type[Attack]]:
    """Class decorator: ``@register_attack("pgd")``."""

    def deco(cls: type[Attack]) -> type[Attack]:
        cls.name = name
        _ATTACKS[name] = cls
        return cls

    return deco


def _ensure_builtin() -> None:
    import importlib
    import pkgutil

    from .. import attacks as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name not in ("base", "memo"):
            importlib.import_module(f"{pkg.__name__}.{mod.name}")


def list_attacks() -> dict[str, str]:
    """Registered attacks and the first line of their docstrings."""
    _ensure_builtin()
    return {n: (c.__doc__ or "").strip().split("\n")[0] for n, c in sorted(_ATTACKS.items())}


def attack_class(name: str) -> type[Attack]:
    """The registered class of an attack (to inspect its arguments)."""
    _ensure_builtin()
    if name not in _ATTACKS:
        raise UnknownNameError("attack", name, _ATTACKS)
    return _ATTACKS[name]


def accepts(name: str, argument: str) -> bool:
    """Whether attack ``name`` takes keyword ``argument`` (e.g. ``eps``, ``steps``)."""
    import inspect

    params = inspect.signature(attack_class(name).__init__).parameters
    return argument in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def build_attack(name: str, **kwargs: Any) -> Attack:
    """Instantiate a registered attack by name with its keyword settings."""
    _ensure_builtin()
    if name not in _ATTACKS:
        raise UnknownNameError("attack", name, _ATTACKS)
    return _ATTACKS[name](**kwargs)
