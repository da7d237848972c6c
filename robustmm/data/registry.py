"""Dataset registry: ``load_dataset("synthscenes", split="test", n=1000)``.

Loaders register with :func:`register_dataset`; each receives ``split``, ``n`` (None = all),
``seed`` (None = the split's default) and ``root`` (a folder on disk, for real datasets), plus
loader-specific keyword options. The built-in loaders are the modules of this package; an
installed package adds loaders through the entry-point group ``robustmm.datasets``
(:func:`robustmm.plugins.discover`).

A dataset *spec* is ``NAME[:ROOT][,KEY=VALUE]...``: ``imagefolder:~/pets`` is the loader
``imagefolder`` with ``root="~/pets"``, and ``hf:./saved,image=img,label=breed`` passes the
options ``image="img"`` and ``label="breed"`` to the loader. Every function here takes a spec
where it takes a name, so ``--data``, ``[run] dataset`` and :func:`load_dataset` all accept one
(:func:`parse_dataset_spec`).
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import RobustMMError, UnknownNameError
from ..plugins import discover
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


def unregister_dataset(name: str) -> None:
    """Remove dataset loader ``name`` (a plugin's, or a test's); unknown names are ignored."""
    for table in (_LOADERS, _DESCRIPTIONS, _SPLITS):
        table.pop(name, None)
    _NEEDS_ROOT.discard(name)


def _ensure_builtin() -> None:
    # Importing the modules runs their @register_dataset decorators; entry points may add more.
    for name, obj in discover("datasets", [__package__]).items():
        if callable(obj) and name not in _LOADERS:
            register_dataset(name, needs_root=True)(obj)


def list_datasets() -> dict[str, str]:
    _ensure_builtin()
    return dict(_DESCRIPTIONS)


_OPTION = re.compile(r",([A-Za-z_]\w*)=")


def parse_dataset_spec(spec: str) -> tuple[str, str | None, dict[str, str]]:
    """``NAME[:ROOT][,KEY=VALUE]...`` -> (name, root or None, options as strings).

    Options are split off at each ``,KEY=`` (KEY an identifier), so a root may itself hold
    commas elsewhere; values are strings, which each loader converts.
    """
    cut = [m.start() for m in _OPTION.finditer(spec)]
    head = spec[: cut[0]] if cut else spec
    options: dict[str, str] = {}
    for a, b in zip(cut, cut[1:] + [len(spec)]):
        key, _, value = spec[a + 1: b].partition("=")
        if key in options:
            raise RobustMMError(f"dataset {spec!r}: option {key!r} given twice")
        options[key] = value
    name, colon, root = head.partition(":")
    if colon and not root.strip():
        raise RobustMMError(f"dataset {spec!r}: nothing after {name + ':'!r} (write {name}:DIR, or pass --root DIR)")
    return name, (root if colon else None), options


def with_options(spec: str, **options: str) -> str:
    """``spec`` with ``,KEY=VALUE`` options appended (``--skip-bad`` is ``skip_bad="true"``)."""
    given = parse_dataset_spec(spec)[2]
    return spec + "".join(f",{k}={v}" for k, v in options.items() if k not in given)


def _check_options(name: str, loader: Callable[..., MultimodalDataset], options: Mapping[str, Any]) -> None:
    params = inspect.signature(loader).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    known = [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in ("split", "n", "seed", "root")]
    for key in options:
        if key not in known:
            raise UnknownNameError(f"option of dataset {name!r}", key, known)


def dataset_root(spec: str, root: str | None) -> tuple[str, str | None]:
    """The registered name and the root folder of a spec and a separate ``root`` (``--root``,
    ``[run] root``): one of the two may name the folder, not both."""
    name, inner, _ = parse_dataset_spec(spec)
    if inner is not None and root is not None:
        raise RobustMMError(f"dataset {spec!r} names its folder, and --root {root} names another: pass one of them")
    return name, inner if inner is not None else root


def check_dataset_name(name: str) -> None:
    """Raise :class:`UnknownNameError` (with "did you mean") unless the spec's name is registered."""
    _ensure_builtin()
    base = parse_dataset_spec(name)[0]
    if base not in _LOADERS:
        raise UnknownNameError("dataset", base, _LOADERS)


def dataset_needs_root(name: str) -> bool:
    """Whether dataset ``name`` (registered: checked) reads its files from a ``root`` folder, so
    that a missing root can be refused before any model or data loads."""
    check_dataset_name(name)
    return parse_dataset_spec(name)[0] in _NEEDS_ROOT


def dataset_splits(name: str) -> dict[str, int | None] | None:
    """The declared splits of dataset ``name`` (name -> size, None = unknown), None if undeclared."""
    check_dataset_name(name)
    base = parse_dataset_spec(name)[0]
    return dict(_SPLITS[base]) if base in _SPLITS else None


def load_dataset(
    name: str,
    *,
    split: str = "test",
    n: int | None = None,
    seed: int | None = None,
    root: str | None = None,
    **kwargs: Any,
) -> MultimodalDataset:
    """Load a registered dataset by name or spec (``imagefolder:DIR,templates=t.txt``: see the
    module docstring); keyword options override none of the spec's (a clash is an error)."""
    _ensure_builtin()
    check_dataset_name(name)
    spec = name
    name, root = dataset_root(spec, root)
    options = parse_dataset_spec(spec)[2]
    clash = sorted(set(options) & set(kwargs))
    if clash:
        raise RobustMMError(f"dataset {name!r}: option {clash[0]!r} given in the spec and as a keyword")
    _check_options(name, _LOADERS[name], {**options, **kwargs})
    ds = _LOADERS[name](split=split, n=n, seed=seed, root=root, **options, **kwargs)
    ds.check_nonempty()
    return ds
