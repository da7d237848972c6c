"""Benchmark entries: built from a bench's records, checked against the shipped JSON Schema.

The schema is ``robustmm/protocols/entry.schema.json`` (JSON Schema draft 2020-12, the subset
documented in :func:`schema_errors`: ``type``, ``required``, ``properties``,
``additionalProperties``, ``items``, ``enum``, ``const``, ``minimum``, ``maximum``, ``minItems``,
``pattern``), so that any JSON Schema tool reads it; :func:`check_entry` validates without a
dependency and names the first field that is wrong, as one line.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import platform
import re
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..errors import EntryError
from ..records import Result, versions

log = logging.getLogger(__name__)

ENTRY_SCHEMA = "robustmm.entry/1"
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def entry_schema() -> dict[str, Any]:
    """The entry schema shipped in the package."""
    return json.loads((resources.files("robustmm") / "protocols" / "entry.schema.json").read_text(encoding="utf-8"))


def _type_ok(value: Any, t: str) -> bool:
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, int | float) and not isinstance(value, bool) and value == value
    return isinstance(value, _TYPES[t])


def _scalar_errors(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    out = []
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        out.append(f"{where}: must be {schema['const']!r}, got {value!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{where}: {value!r} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{where}: {value!r} is above the maximum {schema['maximum']}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        out.append(f"{where}: {value!r} does not match {schema['pattern']!r}")
    return out


def schema_errors(value: Any, schema: dict[str, Any], where: str = "entry") -> list[str]:
    """Every way ``value`` breaks ``schema`` (a JSON Schema subset), each naming the field's path."""
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_type_ok(value, t) for t in types):
            return [f"{where}: expected {' or '.join(types)}, got {type(value).__name__} {json.dumps(value)[:40]}"]
    out = _scalar_errors(value, schema, where)
    if isinstance(value, dict):
        out += [f"{where}.{k}: missing" for k in schema.get("required", []) if k not in value]
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                out += schema_errors(v, props[k], f"{where}.{k}")
            elif extra is False:
                out.append(f"{where}.{k}: unknown field")
            elif isinstance(extra, dict):
                out += schema_errors(v, extra, f"{where}.{k}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            out.append(f"{where}: needs at least {schema['minItems']} items")
        if isinstance(schema.get("items"), dict):
            for i, v in enumerate(value):
                out += schema_errors(v, schema["items"], f"{where}[{i}]")
    return out


def check_entry(entry: Any, source: str = "entry") -> None:
    """Raise a one-line :class:`~robustmm.errors.EntryError` naming the first field of ``entry``
    that breaks the schema (wrong type, missing, out of range, unknown)."""
    errors = schema_errors(entry, entry_schema())
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise EntryError(f"{source}: {errors[0]}{more}: see robustmm/protocols/entry.schema.json")


def validate_file(path: str | Path) -> dict[str, Any]:
    """Read and validate the entry at ``path``; returns it (unreadable or invalid: one-line EntryError)."""
    try:
        entry = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise EntryError(f"{path}: cannot read the entry ({getattr(e, 'strerror', None) or e})") from None
    except ValueError as e:
        raise EntryError(f"{path}: not JSON ({e})") from None
    check_entry(entry, str(path))
    return entry


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of the state dict: each tensor's name, dtype, shape and bytes, names sorted."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _tensor_digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    return hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode() + t.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def parameter_counts(bare: torch.nn.Module, model: torch.nn.Module) -> tuple[int, int]:
    """(parameters of ``model``, how many of them the defense trained or added: tensors whose
    content is not one of the bare model's)."""
    base = {_tensor_digest(t) for t in bare.state_dict().values() if t.is_floating_point()}
    total = changed = 0
    seen: set[int] = set()
    for t in model.state_dict().values():
        if not t.is_floating_point() or t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel()
        if _tensor_digest(t) not in base:
            changed += t.numel()
    return total, changed


def model_card(req: Any, bare: Any, model: Any, defense: dict[str, Any] | None) -> dict[str, Any]:
    """Name, registry spec, parameters, trained share, defense and its settings, weights hash."""
    total, changed = parameter_counts(bare, model)
    name = req.model if defense is None else f"{req.model} + {defense['name']}" + "".join(
        f" {k}={v}" for k, v in sorted(defense["settings"].items()))
    return {"name": name, "model": req.model, "parameters": total, "trained_parameters": changed,
            "trainable_share": round(changed / total, 6) if total else 0.0, "defense": defense,
            "weights_sha256": weights_sha256(model), "info": json.loads(json.dumps(bare.info(), default=str))}


def git_commit() -> str | None:
    """The commit of the source tree robustmm is imported from, if it is a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance(protocol: Any, seed: int, command: str, device: str, wall_s: float) -> dict[str, Any]:
    """Where and how an entry was made: versions, commit, machine, date, protocol and its hash, seed, command."""
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "python": platform.python_version(), "device": device,
               "threads": torch.get_num_threads()}
    if device.startswith("cuda") and torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name(torch.device(device))
    v = versions()
    return {"robustmm": v["robustmm"], "torch": v["torch"], "git_commit": git_commit(), "machine": machine,
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "protocol": protocol.describe(), "seed": seed, "command": command, "wall_s": round(wall_s, 1)}


def record_cost(r: Result | None) -> dict[str, int] | None:
    """The ``cost: {forward, backward}`` passes of a record when it carries them, else None."""
    if r is None:
        return None
    cost = getattr(r, "cost", None) or r.to_dict().get("cost") or r.extra.get("cost")
    if isinstance(cost, dict) and all(isinstance(cost.get(k), int | float) for k in ("forward", "backward")):
        return {"forward": int(cost["forward"]), "backward": int(cost["backward"])}
    return None


def _sum_costs(costs: list[dict[str, int] | None]) -> dict[str, int] | None:
    if not costs or any(c is None for c in costs):
        return None
    return {k: sum(c[k] for c in costs) for k in ("forward", "backward")}  # type: ignore[index]


def _score(metrics: dict[str, Any] | None) -> float | None:
    if not metrics:
        return None
    v = metrics.get("zeroshot_top1", metrics.get("x2t_R@1"))
    return None if v is None else round(float(v), 6)


def modality_numbers(protocol: Any, modality: str, results: list[Result], defended: bool) -> dict[str, Any]:
    """The entry's numbers for one modality: clean, robust per eps, headline, certified, cost."""
    worst = sorted((r for r in results if r.modality == modality and r.extra.get("bench", {}).get("what") == "worst-curve"),
                   key=lambda r: float(r.attack["eps"]))
    cert = [r for r in results if r.modality == modality and r.extra.get("bench", {}).get("what") == "certified"]
    by_eps = {round(float(r.attack["eps"]), 12): r for r in worst}
    curve = []
    for eps in protocol.eps_grid(modality):
        r = by_eps.get(round(eps, 12))
        curve.append({"eps": eps, "robust": None if r is None else _score(r.metrics.get("attacked")),
                      "cost": record_cost(r), "wall_s": None if r is None else round(float(r.timing_s), 2)})
    head = protocol.headline_eps(modality)
    out: dict[str, Any] = {
        "defended": bool(defended), "n": worst[0].n if worst else 0,
        "clean": _score(worst[0].metrics.get("clean")) if worst else None,
        "robust": curve, "headline_eps": head,
        "headline": next((c["robust"] for c in curve if abs(c["eps"] - head) < 1e-12), None),
        "certified": None, "cost": _sum_costs([c["cost"] for c in curve]),
    }
    if cert:
        c = cert[0]
        top1 = c.metrics.get("certified", {}).get("top1", {})
        out["certified"] = {
            "sigma": float((c.defense or {}).get("sigma", 0.0)), "n": c.n,
            "curve": [{"radius": float(k), "accuracy": None if v is None else round(float(v), 6)}
                      for k, v in sorted(top1.items(), key=lambda kv: float(kv[0]))],
            "cost": record_cost(c)}
    return out


def headline(protocol: Any, numbers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The protocol's headline: per modality robust accuracy at its headline eps, their mean
    (``robust``), the mean clean accuracy; a mean is null unless every modality has its number."""
    per = {m: numbers[m]["headline"] for m in protocol.modalities}
    cleans = [numbers[m]["clean"] for m in protocol.modalities]
    mean = None if any(v is None for v in per.values()) else round(sum(per.values()) / len(per), 6)  # type: ignore[arg-type]
    clean = None if any(v is None for v in cleans) else round(sum(cleans) / len(cleans), 6)  # type: ignore[arg-type]
    return {"robust": mean, "clean": clean, "per_modality": per, "defended_modalities":
            [m for m in protocol.modalities if numbers[m]["defended"]]}


def build_entry(*, req: Any, protocol: Any, seed: int, bare: Any, model: Any, defense: dict[str, Any] | None,
                defended: dict[str, bool], results: list[Result], wall_s: float) -> dict[str, Any]:
    """The entry of one bench run (``robustmm.entry/1``): model card, numbers, headline, provenance."""
    numbers = {m: modality_numbers(protocol, m, results, defended[m]) for m in protocol.modalities}
    missing = [f"{m} eps={c['eps']:g}" for m, v in numbers.items() for c in v["robust"] if c["robust"] is None]
    if missing:
        log.warning("entry has no number for %s", ", ".join(missing))
    return {"schema": ENTRY_SCHEMA, "model": model_card(req, bare, model, defense),
            "headline": headline(protocol, numbers), "modalities": numbers,
            "provenance": provenance(protocol, seed, req.command, req.device, wall_s)}
