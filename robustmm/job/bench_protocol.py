"""Benchmark protocols: the versioned, hashed definition of what `robustmm bench` measures.

A protocol is a JSON file shipped in the package (``robustmm/protocols/NAME.json``) or any path.
It fixes, per modality, the dataset and split, the item list (each item's id with the SHA-256 of
its raw input tensor, so a changed file or generator is caught before any work), the threat model
and eps grid, the certification radii, and for all modalities the attack ensemble's settings, the
certification's Monte Carlo settings, the seed and which numbers form the headline. The protocol's
own hash (SHA-256 of the file's bytes) goes into every entry, so two entries are comparable only
when they carry the same hash.

:func:`build_protocol` writes a protocol from a dataset (how ``mm-v1.json`` was made:
``benchmarks/make_protocol.py``); :func:`verify_items` checks a loaded dataset against it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..errors import ProtocolError

PROTOCOL_SCHEMA = "robustmm.protocol/1"
DEFAULT_PROTOCOL = "mm-v1"
REQUIRED = ("name", "version", "schema", "seed", "batch_size", "ensemble", "certification", "headline", "modalities")
MODALITY_KEYS = ("dataset", "split", "items", "threat", "certification_radii")


def shipped_protocols() -> list[str]:
    """The names of the protocols shipped in the package (``robustmm/protocols/*.json`` but the schema)."""
    folder = resources.files("robustmm") / "protocols"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json") and not p.name.endswith(".schema.json"))


@dataclass(frozen=True)
class Protocol:
    """A loaded protocol: its parsed tables, where it came from and the SHA-256 of its bytes."""

    data: dict[str, Any]
    source: str
    sha256: str

    @property
    def name(self) -> str:
        """The protocol's name, e.g. ``mm-v1``."""
        return str(self.data["name"])

    @property
    def version(self) -> str:
        """The protocol's version string (a changed protocol is a new version and a new hash)."""
        return str(self.data["version"])

    @property
    def modalities(self) -> list[str]:
        """The modalities the protocol measures, in file order."""
        return list(self.data["modalities"])

    def modality(self, name: str) -> dict[str, Any]:
        """The table of modality ``name``."""
        return self.data["modalities"][name]

    def item_ids(self, modality: str) -> list[int]:
        """The dataset positions of ``modality``'s items, in order."""
        return [int(it["id"]) for it in self.modality(modality)["items"]]

    def n_items(self) -> int:
        """How many leading items of the split the protocol needs loaded (the largest id + 1)."""
        return max(max(self.item_ids(m)) for m in self.modalities) + 1

    def eps_grid(self, modality: str) -> list[float]:
        """The eps grid of ``modality`` (ascending)."""
        return sorted(float(e) for e in self.modality(modality)["threat"]["eps"])

    def headline_eps(self, modality: str) -> float:
        """The budget whose robust accuracy is the modality's headline number."""
        return float(self.modality(modality)["threat"]["headline_eps"])

    def describe(self) -> dict[str, Any]:
        """The ``protocol`` block of an entry: name, version, hash and source."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "quick": bool(self.data.get("quick"))}


def _read(spec: str) -> tuple[bytes, str]:
    path = Path(spec)
    if spec.endswith(".json") or path.exists():
        try:
            return path.read_bytes(), str(path)
        except OSError as e:
            raise ProtocolError(f"protocol {spec}: cannot read it ({e.strerror or e})") from None
    res = resources.files("robustmm") / "protocols" / f"{spec}.json"
    if not res.is_file():
        raise ProtocolError(f"unknown protocol {spec!r}: use one of {', '.join(shipped_protocols())} or a path to a .json file")
    return res.read_bytes(), f"robustmm/protocols/{spec}.json"


def load_protocol(spec: str = DEFAULT_PROTOCOL) -> Protocol:
    """The protocol named ``spec`` (shipped) or stored at path ``spec``, checked for shape.

    A missing table, a modality without items or an eps grid that is not a list of numbers is a
    one-line :class:`~robustmm.errors.ProtocolError` naming the key."""
    raw, source = _read(spec)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"protocol {source}: not UTF-8 JSON ({e})") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"protocol {source}: the top level must be an object")
    check_protocol(data, source)
    return Protocol(data, source, hashlib.sha256(raw).hexdigest())


def check_protocol(data: dict[str, Any], source: str) -> None:
    """One-line errors for a protocol table missing a key or with a malformed modality table."""
    for key in REQUIRED:
        if key not in data:
            raise ProtocolError(f"protocol {source}: missing key {key!r}")
    if data["schema"] != PROTOCOL_SCHEMA:
        raise ProtocolError(f"protocol {source}: schema {data['schema']!r} is not {PROTOCOL_SCHEMA!r}")
    if not isinstance(data["modalities"], dict) or not data["modalities"]:
        raise ProtocolError(f"protocol {source}: 'modalities' must be a non-empty object")
    for m, table in data["modalities"].items():
        for key in MODALITY_KEYS:
            if key not in table:
                raise ProtocolError(f"protocol {source}: modalities.{m} has no {key!r}")
        items = table["items"]
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) and {"id", "sha256"} <= set(i)
                                                               for i in items):
            raise ProtocolError(f"protocol {source}: modalities.{m}.items must be a non-empty list of {{id, sha256}}")
        eps = table["threat"].get("eps")
        if not isinstance(eps, list) or not eps or not all(isinstance(e, int | float) and e > 0 for e in eps):
            raise ProtocolError(f"protocol {source}: modalities.{m}.threat.eps must be a non-empty list of positive numbers")
        if float(table["threat"].get("headline_eps", -1)) not in [float(e) for e in eps]:
            raise ProtocolError(f"protocol {source}: modalities.{m}.threat.headline_eps must be one of its eps")


def item_hash(x: torch.Tensor) -> str:
    """SHA-256 of one item's raw input: its dtype, its shape and its float32 bytes (C order)."""
    t = x.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha256(f"{tuple(t.shape)}|float32|".encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()


def item_label(dataset_info: dict[str, Any], modality: str, idx: int) -> str:
    """How an error names an item: ``synthscenes/test[17] image``."""
    return f"{dataset_info.get('name', '?')}/{dataset_info.get('split', '?')}[{idx}] {modality}"


def verify_items(protocol: Protocol, dataset: Any) -> None:
    """Refuse (one line naming the first item) data whose raw inputs differ from the protocol's hashes.

    ``dataset`` holds at least the protocol's first :meth:`Protocol.n_items` items of its split."""
    info = dataset.info()
    for m in protocol.modalities:
        items = protocol.modality(m)["items"]
        ids = torch.tensor([int(i["id"]) for i in items])
        if int(ids.max()) >= len(dataset):
            raise ProtocolError(f"protocol {protocol.name}: item {item_label(info, m, int(ids.max()))} is missing "
                                f"(the data has {len(dataset)} items)")
        x = dataset.get(m, ids)
        for it, xi in zip(items, x):
            if item_hash(xi) != it["sha256"]:
                raise ProtocolError(f"protocol {protocol.name}: item {item_label(info, m, int(it['id']))} changed "
                                    f"(its content hash differs from the protocol's {it['sha256'][:12]}...): restore "
                                    "the original data or use a protocol built from this data")


def build_protocol(dataset: Any, *, name: str, version: str, modalities: list[str], settings: dict[str, Any],
                   eps: dict[str, list[float]], headline_eps: dict[str, float], radii: dict[str, list[float]],
                   n: int | None = None) -> dict[str, Any]:
    """A protocol table for the first ``n`` items of ``dataset`` (every item hashed).

    ``settings`` holds the shared tables (``seed``, ``batch_size``, ``ensemble``, ``certification``,
    ``headline``, ``description``...); the result passes :func:`check_protocol`."""
    info = dataset.info()
    n = len(dataset) if n is None else int(n)
    table: dict[str, Any] = {"name": name, "version": version, "schema": PROTOCOL_SCHEMA, **settings, "modalities": {}}
    from ..modalities import get_modality

    for m in modalities:
        spec = get_modality(m)
        x = dataset.get(m, torch.arange(n))
        table["modalities"][m] = {
            "dataset": info.get("name"), "split": info.get("split"),
            "dataset_info": {k: v for k, v in info.items() if k not in ("size",)},
            "threat": {"norm": str(spec.norm), "unit": spec.eps_unit, "eps": [float(e) for e in eps[m]],
                       "headline_eps": float(headline_eps[m])},
            "certification_radii": [float(r) for r in radii[m]],
            "items": [{"id": i, "sha256": item_hash(x[i])} for i in range(n)],
        }
    check_protocol(table, name)
    return table
