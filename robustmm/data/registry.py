"""Dataset registry: ``load_dataset("synthscenes", split="test", n=1000)``.

Loaders register with :func:`register_dataset`; each receives ``split``, ``n`` (None = all),
``seed`` (None = the split's default) and ``root`` (a folder on disk, for real datasets), plus
loader-specific keyword options.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import UnknownNameError
from .base import MultimodalDataset

_LOADERS: dict[str, Callable[..., MultimodalDataset]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_dataset(name: str, description: str = "") -> Callable[[Callable[..., MultimodalDataset]], Callable[..., MultimodalDataset]]:
    """Decorator registering ``loader(split=, n=, seed=, root=, **kw) -> MultimodalDataset``."""

    def deco(fn: Callable[..., MultimodalDataset]) -> Callable[..., MultimodalDataset]:
        _LOADERS[name] = fn
        _DESCRIPTIONS[name] = description or (fn.__doc__ or "").strip().split("\n")[0]
        return fn

    return deco


def _ensure_builtin() -> None:
    from . import cifar, esc50, karpathy, llvip, msrvtt, nyu_depth, synthscenes  # noqa: F401


def list_datasets() -> dict[str, str]:
    _ensure_builtin()
    return dict(_DESCRIPTIONS)


def check_dataset_name(name: str) -> None:
    """Raise :class:`UnknownNameError` (with "did you mean") unless ``name`` is registered."""
    _ensure_builtin()
    if name not in _LOADERS:
        raise UnknownNameError("dataset", name, _LOADERS)


def load_dataset(
    name: str,
    *,
    split: str = "test",
    n: int | None = None,
    seed: int | None = None,
    root: str | None = None,
    **kwargs: Any,
) -> MultimodalDataset:
    """Load a registered dataset by name."""
    _ensure_builtin()
    if name not in _LOADERS:
        raise UnknownNameError("dataset", name, _LOADERS)
    ds = _LOADERS[name](split=split, n=n, seed=seed, root=root, **kwargs)
    ds.check_nonempty()
    return ds
