"""The result record (schema ``robustmm.result/1``) and atomic JSON / JSON-lines writers."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ResultFileError

SCHEMA = "robustmm.result/1"
THREATS = ("clean", "white-box", "head-unaware", "adaptive", "transfer")


def versions() -> dict[str, str]:
    import torch

    from .. import __version__

    return {"robustmm": __version__, "torch": torch.__version__}


@dataclass
class Result:
    """One (model, dataset, modality, attack, eps, defense, threat) cell; see DESIGN.md."""

    model: dict[str, Any]
    dataset: dict[str, Any]
    modality: str
    attack: dict[str, Any] | None
    defense: dict[str, Any] | None
    threat: str
    metrics: dict[str, Any]
    n: int
    seed: int
    timing_s: float
    versions: dict[str, str] = field(default_factory=versions)
    extra: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d = {"schema": d.pop("schema"), **d}
        if not d["extra"]:
            d.pop("extra")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Result":
        if d.get("schema") != SCHEMA:
            raise ResultFileError(f"not a {SCHEMA} record (schema={d.get('schema')!r})")
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        try:
            return cls(**fields)
        except TypeError:
            missing = [k for k, f in cls.__dataclass_fields__.items() if k not in d and f.default is MISSING
                       and f.default_factory is MISSING]
            raise ResultFileError(f"{SCHEMA} record without {', '.join(missing) or 'valid fields'}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False)

    # convenience accessors used by reports and tests
    def clean(self, key: str) -> float | None:
        return self.metrics.get("clean", {}).get(key)

    def attacked(self, key: str) -> float | None:
        return (self.metrics.get("attacked") or {}).get(key)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json(path: str | Path, result: Result | dict[str, Any]) -> None:
    d = result.to_dict() if isinstance(result, Result) else result
    atomic_write_text(path, json.dumps(d, indent=2) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a torn last line (killed writer) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ResultFileError(f"{path}: line {i + 1} is not valid JSON") from None
    return out


def write_jsonl(path: str | Path, records: Iterable[Result | dict[str, Any]]) -> None:
    """Atomically (re)write a JSON-lines file."""
    lines = [json.dumps(r.to_dict() if isinstance(r, Result) else r) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def append_jsonl(path: str | Path, records: Iterable[Result | dict[str, Any]]) -> None:
    """Append records atomically: the file is rewritten whole through a temp file + rename,
    so a crash leaves either the old or the new file, never a torn line."""
    write_jsonl(path, [*read_jsonl(path), *records])


def load_results(paths: Iterable[str | Path]) -> list[Result]:
    """Results from .json (one record or a list) and .jsonl files."""
    out: list[Result] = []
    for p in paths:
        p = Path(p)
        if p.suffix == ".jsonl":
            out += [Result.from_dict(d) for d in read_jsonl(p)]
        else:
            try:
                d = json.loads(p.read_text())
            except json.JSONDecodeError as e:
                raise ResultFileError(f"{p}: not valid JSON ({e})") from None
            try:
                out += [Result.from_dict(x) for x in (d if isinstance(d, list) else [d])]
            except ResultFileError as e:
                raise ResultFileError(f"{p}: {e}") from None
    return out
