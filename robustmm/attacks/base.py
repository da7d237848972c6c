"""The Attack contract and the attack registry.

``attack(encoder, batch) -> batch`` returns a perturbed copy of the batch (never mutating it).
Continuous attacks change ``batch.x`` inside the modality's domain and eps-ball; text attacks
change ``batch.captions``; joint attacks (SGA) change both. Attacks that learn first (the
universal patch) set ``needs_fit`` and implement ``fit(encoder, dataset) -> self``.

Every attack also takes plain tensors and returns the adversarial tensor (the two-line attack)::

    x_adv = PGD(eps=4 / 255)(encoder, x, labels=y, modality="image", classnames=names)

A new attack is one file in this package with a class decorated by :func:`register_attack`;
``robustmm list attacks``, ``robustmm eval --attack``, the contract tests and the job's attack
cell pick it up with no other edit (docs/ARCHITECTURE.md has a worked example).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from ..batch import Batch
from ..errors import BudgetError, RobustMMError, UnknownNameError

_ATTACKS: dict[str, type["Attack"]] = {}


class Attack:
    """The attack contract. Subclasses set ``name`` (through :func:`register_attack`), implement
    :meth:`__call__` and :meth:`settings`, and get every other method from here.

    Every method below has a sound default, so callers (runners, curves, checks, the job) use
    them directly and never probe with ``hasattr``:

    * :meth:`settings` -- the constructor keywords that rebuild this attack;
    * :meth:`replace` -- a copy with some settings changed (``steps=50``, ``loss="caption"``);
    * :meth:`with_eps` -- a copy at another budget (robustness curves);
    * :meth:`resolve` -- a copy with the modality's defaults filled in (``eps=None`` becomes the
      modality's middle eps), so result records name concrete values;
    * :meth:`fit` -- learn from a training split (universal attacks); a no-op by default;
    * :meth:`describe` -- the ``attack`` block of a result record.
    """

    name: str = "attack"
    #: what the attack perturbs: "x" (the modality tensor), "captions", or both
    perturbs: tuple[str, ...] = ("x",)
    #: the budget in the modality's unit; None = the modality's middle eps at call time
    eps: float | None = None
    #: True for attacks that must be fitted on a training split before use (the universal patch)
    needs_fit: bool = False
    #: the split a learned attack is fitted on (None: per-sample attacks, nothing to fit)
    fit_split: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give every attack's ``__call__`` the tensor form (see :func:`accepts_tensors`)."""
        super().__init_subclass__(**kwargs)
        call = cls.__dict__.get("__call__")
        if call is not None and not getattr(call, "accepts_tensors", False):
            cls.__call__ = accepts_tensors(call)  # type: ignore[method-assign]

    def __call__(self, encoder: Any, batch: Batch) -> Batch:  # pragma: no cover - abstract
        """Return a perturbed copy of ``batch``; never mutate it, leave the encoder as it was."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """The constructor keywords that rebuild this attack (``type(self)(**settings())``)."""
        return {}

    def replace(self, **changes: Any) -> "Attack":
        """A copy with some settings changed; an unknown setting is a one-line error."""
        current = self.settings()
        unknown = sorted(set(changes) - set(current))
        if unknown:
            raise UnknownNameError(f"setting of attack {self.name!r}", unknown[0], current)
        return type(self)(**(current | changes))

    def with_eps(self, eps: float) -> "Attack":
        """A copy at budget ``eps`` (for robustness curves)."""
        if "eps" not in self.settings():
            raise BudgetError(f"attack {self.name!r} has no eps budget")
        return self.replace(eps=eps)

    def resolve(self, modality: str) -> "Attack":
        """A copy with ``modality``'s defaults filled in (attacks without defaults return self)."""
        return self

    def fit(self, encoder: Any, dataset: Any) -> "Attack":
        """Learn from a training split (no-op for per-sample attacks); returns self."""
        return self

    def describe(self) -> dict[str, Any]:
        """The ``attack`` block of a result record: name and every setting."""
        return {"name": self.name, **{k: v for k, v in self.settings().items() if _recordable(v)}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in self.settings().items()) + ")"


def accepts_tensors(call: Callable[[Any, Any, Batch], Batch]) -> Callable[..., Any]:
    """Wrap an attack's ``__call__(encoder, batch) -> batch`` so that it also takes plain tensors.

    ``attack(encoder, batch)`` is unchanged. ``attack(encoder, x, modality=..., labels=...,
    classnames=... | prompts=..., captions=..., templates=..., index=...)`` builds the batch with
    :meth:`Batch.from_tensors` and returns the adversarial tensor (same shape, dtype and device).
    Attacks that change only captions have no tensor to return: call them with a :class:`Batch`.
    """

    @functools.wraps(call)
    def __call__(self: Attack, encoder: Any, batch: Any = None, /, **inputs: Any) -> Any:
        if isinstance(batch, Batch):
            if inputs:
                raise TypeError(f"{type(self).__name__}(encoder, batch) takes no keywords, got {sorted(inputs)}")
            return call(self, encoder, batch)
        x = inputs.pop("x", None) if batch is None else batch
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} attacks a Batch or a tensor x, got {type(x).__name__}")
        if "modality" not in inputs:
            raise RobustMMError(f"{type(self).__name__}(encoder, x, ...): say which modality x is, e.g. modality=\"image\"")
        if "x" not in self.perturbs:
            raise RobustMMError(f"attack {self.name!r} changes captions only: call it on a Batch and read its captions")
        return call(self, encoder, Batch.from_tensors(x, **inputs)).x

    __call__.accepts_tensors = True  # type: ignore[attr-defined]
    return __call__


def _recordable(value: Any) -> bool:
    """Whether a setting can go into a JSON record as it is."""
    return value is None or isinstance(value, (bool, int, float, str)) or (
        isinstance(value, (list, tuple)) and all(_recordable(v) for v in value))


class AttackWrapper(Attack):
    """An attack that runs another one under some change (autocast, memoisation, EOT).

    ``resolve``, ``with_eps`` and ``replace`` act on the inner attack and re-wrap it, so a wrapped
    attack keeps its wrapper through curves and checks. Subclasses implement :meth:`wrap` (the
    same wrapper around another inner attack) and usually :meth:`__call__`.
    """

    def __init__(self, inner: Attack):
        if not isinstance(inner, Attack):
            raise TypeError(f"{type(self).__name__} wraps an Attack, got {type(inner).__name__}")
        self.inner = inner
        self.name, self.perturbs, self.needs_fit = inner.name, inner.perturbs, inner.needs_fit

    @property
    def eps(self) -> float | None:  # type: ignore[override]
        return self.inner.eps

    @property
    def fit_split(self) -> str | None:  # type: ignore[override]
        return self.inner.fit_split

    def wrap(self, inner: Attack) -> "AttackWrapper":
        """This wrapper, with its own settings, around ``inner``."""
        return type(self)(inner)

    def settings(self) -> dict[str, Any]:
        return self.inner.settings()

    def replace(self, **changes: Any) -> "Attack":
        return self.wrap(self.inner.replace(**changes))

    def with_eps(self, eps: float) -> "Attack":
        return self.wrap(self.inner.with_eps(eps))

    def resolve(self, modality: str) -> "Attack":
        return self.wrap(self.inner.resolve(modality))

    def fit(self, encoder: Any, dataset: Any) -> "Attack":
        self.inner.fit(encoder, dataset)
        return self

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        return self.inner(encoder, batch)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


def register_attack(name: str) -> Callable[[type[Attack]], type[Attack]]:
    """Class decorator: ``@register_attack("pgd")``."""

    def deco(cls: type[Attack]) -> type[Attack]:
        cls.name = name
        _ATTACKS[name] = cls
        return cls

    return deco


def _ensure_builtin() -> None:
    # Every module of robustmm.attacks, then the entry points of group robustmm.attacks (a module,
    # or an Attack subclass registered under the entry point's name).
    from ..plugins import discover

    for name, obj in discover("attacks", [__package__]).items():
        if isinstance(obj, type) and issubclass(obj, Attack) and name not in _ATTACKS:
            register_attack(name)(obj)


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
    """Instantiate a registered attack by name with its keyword settings; a keyword the attack
    does not take is a one-line :class:`UnknownNameError` (never silently dropped)."""
    import inspect

    cls = attack_class(name)
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        known = [k for k in params if k != "self"]
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise UnknownNameError(f"setting of attack {name!r}", unknown[0], known)
    return cls(**kwargs)
