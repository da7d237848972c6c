"""The result record (schema ``robustmm.result/1``), the threat models it names, and its JSON /
JSON-lines readers and writers (atomic, see :mod:`robustmm.persist`).

This is a base-layer module: the runners produce records, the report and the job read them.
"""
from __future__ import annotations

import json
import logging
import math
import re
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
    #: the attack's model passes (:class:`robustmm.cost.PassCount` ``as_dict``); None where nothing was attacked
    cost: dict[str, Any] | None = None
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d = {"schema": d.pop("schema"), **d}
        if not d["extra"]:
            d.pop("extra")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Result":
        """The record ``d`` read back, checked against the schema (:func:`check_record`): a field of
        the wrong type, a missing one or an impossible value is a :class:`RecordFieldError`."""
        schema = d.get("schema") if isinstance(d, dict) else None
        if isinstance(schema, str) and schema.startswith("robustmm.result/") and schema != SCHEMA:
            raise ResultFileError(f"record of schema {schema!r}: written by another robustmm version (this one reads {SCHEMA})")
        if schema != SCHEMA:
            raise ResultFileError(f"not a {SCHEMA} record (schema={schema!r})")
        check_record(d)
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False)

    # convenience accessors used by reports and tests
    def clean(self, key: str) -> float | None:
        return self.metrics.get("clean", {}).get(key)

    def attacked(self, key: str) -> float | None:
        return (self.metrics.get("attacked") or {}).get(key)


class RecordFieldError(ResultFileError):
    """A record field of the wrong type or out of range; ``field`` names it (``metrics.clean.zeroshot_top1``)."""

    def __init__(self, field_name: str, problem: str):
        super().__init__(f"field {field_name}: {problem}")
        self.field = field_name


#: metric names that are rates (fractions of items): zero-shot top-k, recall@k, MRR, attack success
_RATE = re.compile(r"(top\d+|R@\d+|MRR)$")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _need(ok: bool, name: str, problem: str) -> None:
    if not ok:
        raise RecordFieldError(name, problem)


def _check_block(d: Any, name: str, optional: bool = False, named: bool = False) -> None:
    """An object (or None where ``optional``), with a string ``name`` where ``named`` (model, dataset, attack)."""
    _need(isinstance(d, dict) or (optional and d is None), name,
          f"expected an object{' or null' if optional else ''}, got {_shown(d)}")
    if named and d is not None:
        _need(isinstance(d.get("name"), str), f"{name}.name", f"expected a string, got {_shown(d.get('name'))}")


def _check_scores(scores: Any, name: str, low: float = 0.0) -> None:
    """A table of metric values: numbers (or null); rates in [low, 1] (deltas: ``low`` = -1)."""
    _need(isinstance(scores, dict), name, f"expected an object, got {_shown(scores)}")
    for k, v in scores.items():
        if v is None:
            continue
        _need(_is_number(v), f"{name}.{k}", f"expected a number, got {_shown(v)}")
        _need(not _RATE.search(k) or low <= v <= 1, f"{name}.{k}", f"{v:g} is outside [{low:g}, 1]")


def _check_metrics(m: Any) -> None:
    _need(isinstance(m, dict), "metrics", f"expected an object, got {_shown(m)}")
    _check_scores(m.get("clean"), "metrics.clean")
    if m.get("attacked") is not None:
        _check_scores(m["attacked"], "metrics.attacked")
    if m.get("delta") is not None:
        _check_scores(m["delta"], "metrics.delta", low=-1.0)
    asr = m.get("asr")
    _need(asr is None or (_is_number(asr) and 0 <= asr <= 1), "metrics.asr", f"expected a rate in [0, 1], got {_shown(asr)}")


def _check_attack(a: Any) -> None:
    _check_block(a, "attack", optional=True, named=True)
    eps = (a or {}).get("eps")
    _need(eps is None or (_is_number(eps) and eps >= 0), "attack.eps", f"expected a number >= 0, got {_shown(eps)}")
    steps = (a or {}).get("steps")
    _need(steps is None or (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0), "attack.steps",
          f"expected an integer >= 0, got {_shown(steps)}")


def _check_cost(c: Any) -> None:
    if c is None:
        return
    _need(isinstance(c, dict), "cost", f"expected an object or null, got {_shown(c)}")
    for k in ("forward", "backward"):
        _need(_is_number(c.get(k)) and c[k] >= 0, f"cost.{k}", f"expected a number >= 0, got {_shown(c.get(k))}")


def _check_count(v: Any, name: str) -> None:
    _need(isinstance(v, int) and not isinstance(v, bool) and v >= 0, name, f"expected an integer >= 0, got {_shown(v)}")


def _check_attacked_something(d: dict[str, Any]) -> None:
    """An attack at eps > 0 that attacked no item while unbroken items remained did not run (a
    nested curve that chose no item): its "attacked" numbers are the clean ones, mislabelled."""
    extra, attack = d.get("extra") or {}, d.get("attack") or {}
    attacked = headline_score((d.get("metrics") or {}).get("attacked"))
    if extra.get("n_attacked") == 0 and (attack.get("eps") or 0) > 0 and attacked:
        raise RecordFieldError("extra.n_attacked", f"0 items attacked at eps {attack['eps']:g} although "
                               f"{attacked:g} of them were unbroken: the attack did not run on them")


def check_record(d: dict[str, Any]) -> None:
    """Check a record (a dict as read from JSON) against the schema of :class:`Result`, the one
    typed model shared by the writers and the readers: every field present with its type,
    modality and threat known names, counts, budgets and rates in range, and an attack at
    eps > 0 that attacked something. Raises :class:`RecordFieldError` naming the field."""
    from .modalities import MODALITIES

    _need(isinstance(d, dict), "record", f"expected an object, got {_shown(d)}")
    for k, f in Result.__dataclass_fields__.items():
        _need(k in d or f.default is not MISSING or f.default_factory is not MISSING, k, "missing")
    _check_block(d["model"], "model", named=True)
    _check_block(d["dataset"], "dataset", named=True)
    _need(isinstance(d["modality"], str) and d["modality"] in MODALITIES, "modality",
          f"expected one of {', '.join(MODALITIES)}, got {_shown(d['modality'])}")
    _need(isinstance(d["threat"], str) and d["threat"] in THREATS, "threat",
          f"expected one of {', '.join(THREATS)}, got {_shown(d['threat'])}")
    _check_attack(d["attack"])
    _check_block(d["defense"], "defense", optional=True)
    _check_metrics(d["metrics"])
    _check_count(d["n"], "n")
    _check_count(d["seed"], "seed")
    _need(_is_number(d["timing_s"]) and d["timing_s"] >= 0, "timing_s", f"expected a number >= 0, got {_shown(d['timing_s'])}")
    for k in ("versions", "extra"):
        if k in d:
            _check_block(d[k], k)
    _check_cost(d.get("cost"))
    _check_attacked_something(d)


def _shown(v: Any) -> str:
    text = json.dumps(v, default=repr) if not isinstance(v, float) or math.isfinite(v) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def checked_dict(record: Result | dict[str, Any]) -> dict[str, Any]:
    """The record as a dict, checked by :func:`check_record` (a Result, or a dict of this schema;
    other JSON objects pass through): writers refuse what readers would."""
    d = record.to_dict() if isinstance(record, Result) else record
    if isinstance(record, Result) or (isinstance(d, dict) and d.get("schema") == SCHEMA):
        check_record(d)
    return d


def write_json(path: str | Path, result: Result | dict[str, Any]) -> None:
    """Write one record as a JSON document (atomically), checked against the schema first."""
    d = checked_dict(result)
    atomic_write_text(path, json.dumps(d, indent=2) + "\n")

def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file. A torn last line (a writer killed mid-line) is skipped with a
    warning naming the file; a bad line anywhere else is a :class:`ResultFileError`."""
    return [d for _, d in numbered_lines(path)]


def numbered_lines(path: str | Path) -> list[tuple[int, Any]]:
    """(line number, parsed JSON) of each non-blank line of a JSON-lines file (see :func:`read_jsonl`)."""
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
            out.append((i + 1, json.loads(line)))
        except json.JSONDecodeError:
            if i == len(lines) - 1 and not text.endswith("\n"):
                log.warning("%s: torn last line (a writer was killed mid-line); ignoring it", path)
                break
            raise ResultFileError(f"{path}: line {i + 1} is not valid JSON") from None
    return out


def write_jsonl(path: str | Path, records: Iterable[Result | dict[str, Any]]) -> None:
    """Atomically (re)write a JSON-lines file."""
    lines = [json.dumps(checked_dict(r)) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))

def append_jsonl(path: str | Path, records: Iterable[Result | dict[str, Any]]) -> None:
    """Append records as one write of complete lines with fsync (O(records), not O(file)).

    All records of one call land together or not at all under kill -9 (a job appends one cell's
    rows per call, so ``--resume`` never sees half a cell); a torn tail (power loss) is reported
    by readers and removed by the next append.
    """
    append_lines_durably(path, [json.dumps(checked_dict(r)) for r in records])


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
    """Results from .json (one record or a list) and .jsonl files, each record checked against the
    schema: a bad one is a one-line :class:`ResultFileError` naming the file, the line (the
    record's position in a .json list) and the field."""
    out: list[Result] = []
    for p in paths:
        p = Path(p)
        if p.suffix == ".jsonl":
            out += [_read_record(d, f"{p}: line {i}") for i, d in numbered_lines(p)]
            continue
        try:
            d = json.loads(_read_text(p))
        except json.JSONDecodeError as e:
            raise ResultFileError(f"{p}: not valid JSON ({e})") from None
        docs = d if isinstance(d, list) else [d]
        out += [_read_record(x, f"{p}: record {k + 1}" if isinstance(d, list) else str(p)) for k, x in enumerate(docs)]
    return out


def _read_record(d: Any, where: str) -> Result:
    try:
        return Result.from_dict(d)
    except ResultFileError as e:
        raise ResultFileError(f"{where}: {e}") from None
