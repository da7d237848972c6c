"""MkDocs hook: one page per measured JSON file, generated at build time.

Every ``docs/results/*.json`` becomes ``results/<name>.md`` and every ``docs/performance/*.json``
becomes ``performance/<name>.md`` in the built site, each opening with the command, commit and
machine recorded in the JSON ("not recorded" where the JSON has none), followed by the JSON's
content as tables. The pages are appended to the "Results" and "Performance" sections of the
navigation, so a new JSON file shows up without editing mkdocs.yml. Nothing is written to docs/.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File

SECTIONS = {"results": "Results", "performance": "Performance"}
_COMMAND_KEYS = ("command", "commands", "cmd", "argv")


def _pages(docs_dir: Path) -> dict[str, list[Path]]:
    return {sub: sorted((docs_dir / sub).glob("*.json")) for sub in SECTIONS}


def _find(data: Any, keys: tuple[str, ...], path: str = "") -> list[tuple[str, Any]]:
    """Every (dotted path, value) whose key is one of ``keys``, anywhere in ``data``."""
    found: list[tuple[str, Any]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            here = f"{path}.{key}" if path else str(key)
            if str(key).lower() in keys:
                found.append((here, value))
            else:
                found.extend(_find(value, keys, here))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found.extend(_find(value, keys, f"{path}[{i}]"))
    return found


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value)
    else:
        text = str(value)
    if len(text) > 160:
        text = text[:157] + "..."
    return text.replace("|", "\\|").replace("\n", " ")


def _flat(data: Any, path: str = "") -> dict[str, Any]:
    """Dotted paths to scalars (short scalar lists stay whole)."""
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{path}.{key}" if path else str(key)))
        return out
    return {path: data}


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _is_keyed_records(value: Any) -> bool:
    return isinstance(value, dict) and len(value) > 1 and all(isinstance(v, dict) and v for v in value.values())


def _records_table(records: list[dict[str, Any]], first: str | None = None) -> list[str]:
    keys = [r.get("\0key", "") for r in records]
    flat = [{k: v for k, v in _flat(r).items() if k != "\0key"} for r in records]
    columns: list[str] = []
    for row in flat:
        columns += [c for c in row if c not in columns]
    header = ([first] if first else []) + columns
    rows = [([key] if first else []) + [row.get(c, "") for c in columns] for key, row in zip(keys, flat, strict=True)]
    return _table(header, rows)


def _body(data: Any) -> list[str]:
    lines: list[str] = []
    scalars: list[list[Any]] = []
    skip = set(_COMMAND_KEYS) | {"commit", "machine"}
    items = data.items() if isinstance(data, dict) else [("value", data)]
    for key, value in items:
        if str(key).lower() in skip:
            continue
        if _is_records(value):
            lines += [f"### {key}", ""] + _records_table(value)
        elif _is_keyed_records(value):
            keyed = [{"\0key": k, **v} for k, v in value.items()]
            lines += [f"### {key}", ""] + _records_table(keyed, first=str(key))
        else:
            scalars += [[k, v] for k, v in _flat(value, str(key)).items()]
    if scalars:
        lines = ["### Values", ""] + _table(["key", "value"], scalars) + lines
    return lines


def _script(name: str, section: str, data: Any, root: Path | None) -> str | None:
    """The repository script that writes this JSON, where one is named after it."""
    stem = data.get("benchmark", name) if isinstance(data, dict) else name
    folder = "benchmarks" if section == "performance" else "experiments"
    script = f"{folder}/{stem}.py"
    return script if root is not None and (root / script).is_file() else None


def render(name: str, section: str, data: Any, root: Path | None = None) -> str:
    """The Markdown page of one measured JSON file (``root``: the repository, to name the script)."""
    commands = _find(data, _COMMAND_KEYS)
    commits = _find(data, ("commit",))
    machines = _find(data, ("machine",))
    lines = [f"# {name}", "",
             f"Generated from [`docs/{section}/{name}.json`]({name}.json) when the site is built.", ""]
    if commands:
        lines += ["**Command:**", ""]
        for path, value in commands:
            for cmd in value if isinstance(value, list) else [value]:
                lines += [f"- `{path}`:", "", "    ```text", f"    {cmd}", "    ```", ""]
    else:
        script = _script(name, section, data, root)
        where = f" It was written by `{script}`; the arguments it records are listed below." if script else ""
        lines += [f"**Command:** not recorded in the JSON.{where}", ""]
    if commits:
        lines += ["**Commit:** " + ", ".join(f"`{v}`" for _, v in commits), ""]
    else:
        lines += ["**Commit:** not recorded.", ""]
    if machines:
        lines += ["**Machine:**", ""]
        distinct = []
        for _, value in machines:
            if value not in distinct:
                distinct.append(value)
        for value in distinct:
            if isinstance(value, dict):
                lines += _table(["field", "value"], [[k, v] for k, v in _flat(value).items()])
            else:
                lines += [f"- {_cell(value)}", ""]
    else:
        lines += ["**Machine:** not recorded.", ""]
    return "\n".join(lines + ["## Content", ""] + _body(data)) + "\n"


def on_config(config: Any) -> Any:
    """Append one navigation entry per JSON file to the Results and Performance sections."""
    pages = _pages(Path(config["docs_dir"]))
    for entry in config["nav"] or []:
        if not isinstance(entry, dict):
            continue
        for title, children in entry.items():
            sub = next((s for s, t in SECTIONS.items() if t == title), None)
            if sub is not None and isinstance(children, list):
                children += [{p.stem: f"{sub}/{p.stem}.md"} for p in pages[sub]]
    return config


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages to the build."""
    root = Path(config["docs_dir"]).parent
    for sub, paths in _pages(Path(config["docs_dir"])).items():
        for path in paths:
            data = json.loads(path.read_text())
            uri = f"{sub}/{path.stem}.md"
            old = files.get_file_from_path(uri)
            if old is not None:  # an experiment's own Markdown rendering of the same JSON
                files.remove(old)
            files.append(File.generated(config, uri, content=render(path.stem, sub, data, root)))
    return files
