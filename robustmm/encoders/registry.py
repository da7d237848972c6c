"""Model registry: ``load_encoder("tinybind")``, ``load_encoder("open_clip:ViT-B-32@laion2b_s34b_b79k")``.

A name is ``family`` or ``family:spec``. Families register a factory with
:func:`register_encoder`; the factory receives the part after the colon ("" if none) and
keyword options (``device`` and family-specific ones). The built-in families are the modules of
this package; an installed package adds families through the entry-point group
``robustmm.encoders`` (:func:`robustmm.plugins.discover`): a module that calls
:func:`register_encoder`, or a factory registered under the entry point's name.

A name that is no registered family but ``module.path:function`` (a dotted module importable
from ``sys.path``, for example ``mypkg.models:build``) is the user's own model: the function is
called with the keyword options and must return an :class:`Encoder` (for example a
:class:`~robustmm.encoders.custom.ModuleEncoder`).
"""
from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import torch

from ..errors import RobustMMError, UnknownNameError
from ..plugins import discover
from .base import Encoder

_FACTORIES: dict[str, Callable[..., Encoder]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_encoder(family: str, description: str = "") -> Callable[[Callable[..., Encoder]], Callable[..., Encoder]]:
    """Decorator registering ``factory(spec: str, **kw) -> Encoder`` under ``family``."""

    def deco(factory: Callable[..., Encoder]) -> Callable[..., Encoder]:
        _FACTORIES[family] = factory
        _DESCRIPTIONS[family] = description or (factory.__doc__ or "").strip().split("\n")[0]
        return factory

    return deco


def unregister_encoder(family: str) -> None:
    """Remove model family ``family`` (a plugin's, or a test's); unknown names are ignored."""
    _FACTORIES.pop(family, None)
    _DESCRIPTIONS.pop(family, None)


def _ensure_builtin() -> None:
    # Importing the modules runs their @register_encoder decorators; entry points may add more.
    for name, obj in discover("encoders", [__package__]).items():
        if callable(obj) and name not in _FACTORIES:
            register_encoder(name)(obj)


_USER_MODEL = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_user_model(name: str) -> bool:
    """Whether ``name`` is a ``module.path:function`` model id (its family not registered)."""
    _ensure_builtin()
    return name.partition(":")[0] not in _FACTORIES and bool(_USER_MODEL.match(name))


def _import_user_module(module: str) -> Any:
    """Import ``module`` from ``sys.path``, else from the current folder (the ``robustmm`` script,
    unlike ``python -m``, does not put the current folder on ``sys.path``)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        cwd = os.getcwd()
        if e.name != module.split(".")[0] or cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        try:
            return importlib.import_module(module)
        finally:
            sys.path.remove(cwd)


def user_model_factory(name: str) -> Callable[..., Encoder]:
    """The function named by a ``module.path:function`` model id, imported (not called): one-line
    errors for a module that does not import and a function it does not have."""
    module, _, attr = name.partition(":")
    try:
        obj: Any = _import_user_module(module)
    except ImportError as e:
        if getattr(e, "name", None) and module.startswith(str(e.name)):
            raise RobustMMError(f"model {name!r}: {module!r} is neither a model family ({', '.join(sorted(_FACTORIES))}) "
                                f"nor an importable module (no module {e.name!r} on sys.path)") from None
        raise RobustMMError(f"model {name!r}: importing {module} failed: {type(e).__name__}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RobustMMError(f"model {name!r}: module {module} has no {attr!r} (a function returning an Encoder)")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RobustMMError(f"model {name!r}: {module}.{attr} is a {type(obj).__name__}, not a function returning an Encoder")
    return obj


def list_encoders() -> dict[str, str]:
    """Registered model families and one-line descriptions."""
    _ensure_builtin()
    return dict(_DESCRIPTIONS)


def check_model_name(name: str) -> None:
    """Raise :class:`UnknownNameError` (with "did you mean") unless ``name``'s family is registered.

    Loads nothing, so a job can check every model name before any work starts.
    """
    _ensure_builtin()
    if is_user_model(name):
        user_model_factory(name)
    elif name.partition(":")[0] not in _FACTORIES:
        raise UnknownNameError("model", name, _FACTORIES)


def load_encoder(name: str, *, device: str | torch.device = "cpu", **kwargs: Any) -> Encoder:
    """Build a frozen, eval-mode encoder from a model name (the README's "Models" table lists the
    names) or from ``module.path:function``, the user's own model (see the module docstring)."""
    _ensure_builtin()
    family, _, spec = name.partition(":")
    if is_user_model(name):
        enc = user_model_factory(name)(**kwargs)
        if not isinstance(enc, Encoder):
            raise RobustMMError(f"model {name!r} returned a {type(enc).__name__}, not an Encoder "
                                "(wrap torch modules with robustmm.encoders.ModuleEncoder)")
    elif family not in _FACTORIES:
        raise UnknownNameError("model", name, _FACTORIES)
    else:
        enc = _FACTORIES[family](spec, **kwargs)
    return enc.freeze().to(device)
