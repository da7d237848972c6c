"""One discovery mechanism for every registry: built-in modules and installed plugins.

A registry (encoders, datasets, attacks, job cells, defenses) fills itself by importing modules
whose decorators register things. :func:`discover` does that once per ``kind``:

* it imports every public module (name not starting with ``_``) of the registry's own package,
  found with :mod:`pkgutil`, so a new built-in is one new file;
* it loads every Python entry point of the group ``robustmm.<kind>`` (``robustmm.encoders``,
  ``robustmm.datasets``, ``robustmm.attacks``, ``robustmm.cells``, ``robustmm.defenses``), so an
  installed package can add to a registry without any edit here. In the package's
  ``pyproject.toml``::

      [project.entry-points."robustmm.encoders"]
      mybind = "mypkg.robustmm_plugin"           # a module whose import registers things
      mynet = "mypkg.models:load_mynet"          # or an object, which the registry may register

A plugin that fails to load stops the registry with one line naming the entry point, its
distribution and the error, never a traceback from deep inside ``importlib``.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import logging
import pkgutil
import threading
from collections.abc import Iterable
from typing import Any

from .errors import RobustMMError

__all__ = ["PluginError", "discover", "entry_point_group", "forget"]

log = logging.getLogger(__name__)

_DONE: dict[str, dict[str, Any]] = {}
_LOCK = threading.RLock()


class PluginError(RobustMMError):
    """An entry point of a ``robustmm.*`` group that cannot be loaded (broken plugin package)."""


def entry_point_group(kind: str) -> str:
    """The entry-point group of registry ``kind``: ``"encoders"`` -> ``"robustmm.encoders"``."""
    return f"robustmm.{kind}"


def _import_package_modules(packages: Iterable[str]) -> None:
    for name in packages:
        pkg = importlib.import_module(name)
        for mod in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{name}.{mod.name}")


def _load_entry_points(group: str) -> dict[str, Any]:
    loaded: dict[str, Any] = {}
    for ep in importlib.metadata.entry_points(group=group):
        dist = getattr(getattr(ep, "dist", None), "name", None) or "an installed package"
        try:
            loaded[ep.name] = ep.load()
        except Exception as e:  # noqa: BLE001 - any failure of a third-party import is reported in one line
            detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise PluginError(
                f"entry point {ep.name!r} = {ep.value!r} of group {group!r} (from {dist}) failed to load: "
                f"{type(e).__name__}{': ' + detail if detail else ''}; fix or uninstall that package"
            ) from None
        log.debug("loaded plugin %s = %s (%s) for %s", ep.name, ep.value, dist, group)
    return loaded


def discover(kind: str, packages: Iterable[str] = ()) -> dict[str, Any]:
    """Import the built-in modules of ``packages`` and load the entry points of group
    ``robustmm.<kind>``, once per process; return ``{entry point name: loaded object}``.

    Later calls return the same mapping without importing anything again (call :func:`forget`
    to rescan, e.g. after installing a plugin at run time, or in tests). The registry decides what
    a loaded object means: a module has registered its contents by being imported; a registry may
    also register a loaded callable under the entry point's name.
    """
    with _LOCK:
        if kind not in _DONE:
            _import_package_modules(packages)
            _DONE[kind] = _load_entry_points(entry_point_group(kind))
        return dict(_DONE[kind])


def forget(kind: str | None = None) -> None:
    """Let the next :func:`discover` of ``kind`` (None = every kind) scan again."""
    with _LOCK:
        if kind is None:
            _DONE.clear()
        else:
            _DONE.pop(kind, None)
