"""Model registry: ``load_encoder("tinybind")``, ``load_encoder("open_clip:ViT-B-32@laion2b_s34b_b79k")``.

A name is ``family`` or ``family:spec``. Families register a factory with
:func:`register_encoder`; the factory receives the part after the colon ("" if none) and
keyword options (``device`` and family-specific ones).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import UnknownNameError
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


def _ensure_builtin() -> None:
    # Importing the modules runs their @register_encoder decorators.
    from . import hf_clip, imagebind, languagebind, open_clip, tinybind  # noqa: F401


def list_encoders() -> dict[str, str]:
    """Registered model families and one-line descriptions."""
    _ensure_builtin()
    return dict(_DESCRIPTIONS)


def check_model_name(name: str) -> None:
    """Raise :class:`UnknownNameError` (with "did you mean") unless ``name``'s family is registered.

    Loads nothing, so a job can check every model name before any work starts.
    """
    _ensure_builtin()
    if name.partition(":")[0] not in _FACTORIES:
        raise UnknownNameError("model", name, _FACTORIES)


def load_encoder(name: str, *, device: str | torch.device = "cpu", **kwargs: Any) -> Encoder:
    """Build a frozen, eval-mode encoder from a model name (the README's "Models" table lists the names)."""
    _ensure_builtin()
    family, _, spec = name.partition(":")
    if family not in _FACTORIES:
        raise UnknownNameError("model", name, _FACTORIES)
    enc = _FACTORIES[family](spec, **kwargs)
    return enc.freeze().to(device)
