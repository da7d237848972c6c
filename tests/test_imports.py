"""No robustmm module reads another module's private (underscore) names.

A helper that two modules share is public in the module that owns it; a leading underscore means
"only this module uses it". The test walks every module of the package with :mod:`ast` and finds
``from X import _name`` and ``import X`` / ``from P import X`` followed by ``X._name``, where X is
another module of the package. Dunder names (``__version__``) are not private.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import robustmm

PACKAGE_DIR = Path(robustmm.__file__).parent
ROOT = PACKAGE_DIR.parent


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute dotted name that an (absolute or relative) ``from ... import`` refers to."""
    if not node.level:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    base = package.split(".")
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_package_module(name: str) -> bool:
    rel = name.split(".")[1:]
    target = PACKAGE_DIR.joinpath(*rel)
    return name.split(".")[0] == "robustmm" and (target.with_suffix(".py").is_file() or (target / "__init__.py").is_file())


def _imported_names(module: str, path: Path, tree: ast.Module) -> tuple[list[tuple[int, str, str]], dict[str, str]]:
    """(line, name, source module) of each private name imported from another robustmm module, and the
    local names bound to robustmm modules (``import robustmm.x as y``, ``from . import mod``)."""
    private: list[tuple[int, str, str]] = []
    module_aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _resolve(module, path, node)
            if not source.startswith("robustmm") or source == module:
                continue
            for alias in node.names:
                if _is_package_module(f"{source}.{alias.name}"):
                    module_aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
                elif _is_private(alias.name):
                    private.append((node.lineno, alias.name, source))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("robustmm") and alias.name != module:
                    module_aliases[alias.asname or alias.name] = alias.name
    return private, module_aliases


def private_imports(path: Path) -> list[str]:
    """``file:line: what`` for each use of another robustmm module's underscore name in ``path``."""
    module = _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    where = path.relative_to(ROOT)
    private, module_aliases = _imported_names(module, path, tree)
    found = [f"{where}:{line}: imports {name} from {source}" for line, name, source in private]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            owner = ast.unparse(node.value)
            if owner in module_aliases and module_aliases[owner] != module:
                found.append(f"{where}:{node.lineno}: reads {owner}.{node.attr} of {module_aliases[owner]}")
    return found


def test_private_imports_finds_both_patterns(tmp_path, monkeypatch):
    pkg = tmp_path / "robustmm"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("_x = 1\n__version__ = '1'\n")
    (pkg / "b.py").write_text("from .a import _x, __version__\nfrom . import a\nprint(a._x, a.__version__)\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_DIR", pkg)
    assert private_imports(pkg / "b.py") == [
        "robustmm/b.py:1: imports _x from robustmm.a",
        "robustmm/b.py:3: reads a._x of robustmm.a",
    ]
    assert private_imports(pkg / "a.py") == []


def test_no_module_imports_another_modules_private_names():
    found = [hit for path in sorted(PACKAGE_DIR.rglob("*.py")) for hit in private_imports(path)]
    if found:
        pytest.fail(
            "modules use another module's underscore names; make the helper public in the module that owns it "
            "(drop the leading underscore, update its callers) or move it where both use it:\n  " + "\n  ".join(found),
            pytrace=False,
        )
