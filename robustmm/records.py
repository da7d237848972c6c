"""The result record (schema ``robustmm.result/1``), the threat models it names, and its JSON /
JSON-lines readers and writers (atomic, see :mod:`robustmm.persist`).

This is a base-layer module: the runners produce records, the report and the job read them.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ._version import __version__
from .errors import ResultFileError
from .persist import append_lines_durably, atomic_write_text

log = logging.getLogger(__name__)

SCHEMA = "robustmm.result/1"

class Threat(StrEnum):
    """Who made the adversarial examples a result scores (str-valued: JSON keeps the plain name).

    ``clean``: no attack. ``white-box``: made on the scored model itself. ``head-unaware``: made on
    the bare encoder, scored through calibration heads. ``adaptive``: made through the heads (or
    any defense). ``transfer``: made on another model. ``certified``: a certificate, not an attack.
    """

    CLEAN = "clean"
    WHITE_BOX = "white-box"
    HEAD_UNAWARE = "head-unaware"
    ADAPTIVE = "adaptive"
    TRANSFER = "transfer"
    CERTIFIED = "certified"
    WORST_CASE = "worst-case"  # per item, the most damaging of every threat run on a defended model

THREATS: tuple[str, ...] = tuple(t.value for t in Threat)

#: the ``attack.name`` of a gradient-masking sanity-checks record (written by robustmm.evaluation.checks,
#: read by robustmm.report.check_records)
CHECKS_ATTACK = "sanity-checks"

def headline_score(metrics: dict[str, Any] | None) -> float | None:
    """Zero-shot top-1, or text->X R@1 for retrieval-only datasets (no zero-shot task)."""
    if not metrics:
        return None
    return metrics.get("zeroshot_top1", metrics.get("t2x_R@1"))

def versions() -> dict[str, str]:
    """The package versions recorded in every result."""
    import torch

    return {"robustmm": __version__, "torch": torch.__version__}

@dataclass
class Result:
    """One (model, dataset, modality, attack, eps, defense, threat) cell; see docs/ARCHITECTURE.md ("Result")."""

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
        schema = d.get("schema") if isinstance(d, dict) else None
        if isinstance(schema, str) and schema.startswith("robustmm.result/") and schema != SCHEMA:
            raise ResultFileError(f"record of schema {schema!r}: written by another robustmm version (this one reads {SCHEMA})")
        if schema != SCHEMA:
            raise ResultFileError(f"not a {SCHEMA} record (schema={schema!r})")
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

def write_json(path: str | Path, result: Result | dict[str, Any]) -> None:
    d = result.to_dict() if isinstance(result, Result) else result
    atomic_write_text(path, json.dumps(d, indent=2) + "\n")

def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file. A torn last line (a writer killed mid-line) is skipped with a
    warning naming the file; a bad line anywhere else is a :class:`ResultFileError`."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return []
    text = _read_text(path)
    out = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1 and not text.endswith("\n"):
                log.warning("%s: torn last line (a writer was killed mid-line); ignoring it", path)
                break
            raise ResultFileError(f"{path}: line {i + 1} is not valid JSON") from None
    return out

def _drop_torn_tail(path: Path) -> None:
    """Cut an unterminated last line (left by a crash) so that appended lines start clean."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    log.warning("%s: removing a torn last line of %d bytes before appending", path, len(data) - keep)
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.flush()

        os.fsync(f.fileno())

def write_jsonl(path: str | Path, records: Iterable[Result | dict[str, Any]]) -> None:
    """Atomically (re)write a JSON-lines file."""
    lines = [json.dumps(r.to_dict() if isinstance(r, Result) else r) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))

def append_jsonl(path: str | Path, records: Iterable[Result | dict[str, Any]]) -> None:
    """Append records as one write of complete lines with fsync (O(records), not O(file)).

    All records of one call land together or not at all under kill -9 (a job appends one cell's
    rows per call, so ``--resume`` never sees half a cell); a torn tail (power loss) is reported
    by readers and removed by the next append.
    """
    path = Path(path)
    _drop_torn_tail(path)
    append_lines_durably(path, [json.dumps(r.to_dict() if isinstance(r, Result) else r) for r in records])


def _read_text(path: Path) -> str:
    """A results file's text, or a one-line :class:`ResultFileError` for every way it can fail."""
    try:
        if path.is_dir():
            raise ResultFileError(f"{path} is a directory, not a results file")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ResultFileError(f"{path}: not a UTF-8 text file") from None
    except OSError as e:
        raise ResultFileError(f"{path}: cannot read ({e.strerror or e})") from None


def load_results(paths: Iterable[str | Path]) -> list[Result]:
    """Results from .json (one record or a list) and .jsonl files."""
    out: list[Result] = []
    for p in paths:
        p = Path(p)
        if p.suffix == ".jsonl":
            try:
                out += [Result.from_dict(d) for d in read_jsonl(p)]
            except ResultFileError as e:
                raise ResultFileError(f"{p}: {e}" if str(p) not in str(e) else str(e)) from None
            continue
        try:
            d = json.loads(_read_text(p))
        except json.JSONDecodeError as e:
            raise ResultFileError(f"{p}: not valid JSON ({e})") from None
        try:
            out += [Result.from_dict(x) for x in (d if isinstance(d, list) else [d])]
        except ResultFileError as e:
            raise ResultFileError(f"{p}: {e}") from None
    return out
