"""Dataset registry: ``load_dataset("synthscenes", split="test", n=1000)``.

Loaders register with :func:`register_dataset`; each receives ``split``, ``n`` (None = all),
``seed`` (None = the split's default) and ``root`` (a folder on disk, for real datasets), plus
loader-specific keyword options.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import UnknownNameError
from .base import MultimodalDataset

_LOADERS: dict[str, Callable[..., MultimodalDataset]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_NEEDS_ROOT: set[str] = set()
_SPLITS: dict[str, dict[str, int | None]] = {}


def register_dataset(name: str, description: str = "", *, needs_root: bool = False,
                     splits: Mapping[str, int | None] | None = None
                     ) -> Callable[[Callable[..., MultimodalDataset]], Callable[..., MultimodalDataset]]:
    """Decorator registering ``loader(split=, n=, seed=, root=, **kw) -> MultimodalDataset``;
    ``needs_root``: the loader reads files under ``root`` (a folder), so it cannot run without one;
    ``splits``: the split names and sizes (None = known only on disk), so that a job can check a
    split name and an item count before anything loads (:func:`dataset_splits`). A split of size
    None has its name checked at job load and its item counts only when it is read, where a count
    above its size keeps every item with a warning (``data.files.choose_subset``)."""

    def deco(fn: Callable[..., MultimodalDataset]) -> Callable[..., MultimodalDataset]:
        _LOADERS[name] = fn
        _DESCRIPTIONS[name] = description or (fn.__doc__ or "").strip().split("\n")[0]
        if needs_root:
            _NEEDS_ROOT.add(name)
        else:  # re-registered without files
            _NEEDS_ROOT.discard(name)
        if splits is not None:
            _SPLITS[name] = dict(splits)
        else:
            _SPLITS.pop(name, None)
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


def dataset_needs_root(name: str) -> bool:
    """Whether dataset ``name`` (registered: checked) reads its files from a ``root`` folder, so
    that a missing root can be refused before any model or data loads."""
    check_dataset_name(name)
    return name in _NEEDS_ROOT


def dataset_splits(name: str) -> dict[str, int | None] | None:
    """The declared splits of dataset ``name`` (name -> size, None = unknown), None if undeclared."""
    check_dataset_name(name)
    return dict(_SPLITS[name]) if name in _SPLITS else None


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
