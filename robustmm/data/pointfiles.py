"""Point-cloud files: ``.npy``, ``.txt``/``.xyz`` (ModelNet40's resampled ``x,y,z,nx,ny,nz``),
``.ply`` (ASCII or binary little/big endian) and ``.off`` (ModelNet's meshes: their vertices).

:func:`read_points` returns robustmm's point-cloud domain, (P, 6) float32: x, y, z centred and
scaled into the unit ball, then r, g, b in [-1, 1] (0 when the file has no colours; normals are
not colours and are dropped). ``points`` resamples to a fixed count: evenly spaced indices when
the file has more points, cycling when it has fewer, so the result is deterministic.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..errors import RobustMMError

__all__ = ["read_points", "normalise_points"]


def _bad(name: str, why: str) -> RobustMMError:
    from .decode import BadFileError

    return BadFileError(f"cannot read point cloud {name}: {why}")


def _ply_header(name: str, header: list[str]) -> tuple[str, int, list[tuple[str, str]]]:
    """A ply header's format, vertex count and vertex properties as (name, type) in file order."""
    fmt, count, props, in_vertex = "ascii", 0, [], False
    for line in header:
        parts = line.split()
        if parts[:1] == ["format"]:
            fmt = parts[1]
        elif parts[:1] == ["element"]:
            in_vertex = parts[1] == "vertex"
            if in_vertex:
                count = int(parts[2])
        elif parts[:1] == ["property"] and in_vertex:
            if parts[1] == "list":
                raise _bad(name, "list properties in the vertex element")
            props.append((parts[2], parts[1]))
    return fmt, count, props


def _ply(name: str, data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise _bad(name, "no ply header")
    header = data[:end].decode("ascii", "replace").splitlines()
    body = data[data.index(b"\n", end) + 1:]
    fmt, count, props = _ply_header(name, header)
    if count <= 0:
        raise _bad(name, "no vertices")
    names = [p for p, _ in props]
    if fmt == "ascii":
        arr = np.loadtxt(io.StringIO(body.decode("ascii", "replace")), max_rows=count, ndmin=2)
    else:
        kinds = {"float": "f4", "float32": "f4", "double": "f8", "float64": "f8", "uchar": "u1", "uint8": "u1",
                 "char": "i1", "int8": "i1", "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
                 "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4"}
        order = "<" if fmt == "binary_little_endian" else ">"
        dtype = np.dtype([(p, order + kinds[t]) for p, t in props])
        if len(body) < count * dtype.itemsize:
            raise _bad(name, "truncated vertex data")
        rec = np.frombuffer(body, dtype, count=count)
        arr = np.stack([rec[p].astype(np.float64) for p in names], axis=1)
    if arr.shape[0] < count or any(c not in names for c in "xyz"):
        raise _bad(name, "missing vertices or x/y/z")
    xyz = arr[:, [names.index(c) for c in "xyz"]]
    rgb = arr[:, [names.index(c) for c in ("red", "green", "blue")]] / 255.0 if {"red", "green", "blue"} <= set(names) else None
    return xyz, rgb


def _off(name: str, data: bytes) -> np.ndarray:
    lines = [ln.split("#")[0].strip() for ln in data.decode("ascii", "replace").splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or not lines[0].startswith("OFF"):
        raise _bad(name, "no OFF header")
    head = lines[0][3:].split() or lines.pop(1).split()  # ModelNet writes "OFF490 518 0" on one line
    nv = int(head[0])
    rows = lines[1: 1 + nv]
    if nv <= 0 or len(rows) < nv:
        raise _bad(name, "missing vertices")
    return np.array([[float(v) for v in r.split()[:3]] for r in rows])


def _table(name: str, data: bytes, suffix: str) -> tuple[np.ndarray, np.ndarray | None]:
    if suffix == ".npy":
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    else:
        text = data.decode("ascii", "replace").replace(",", " ")
        arr = np.loadtxt(io.StringIO(text), ndmin=2)
    if arr.ndim != 2 or arr.shape[1] < 3 or arr.shape[0] == 0:
        raise _bad(name, f"expected (points, 3+) numbers, got shape {arr.shape}")
    rgb = None
    if arr.shape[1] >= 6 and suffix == ".npy":  # npy: x, y, z, r, g, b (0..1 or 0..255)
        rgb = arr[:, 3:6] / (255.0 if arr[:, 3:6].max() > 1.0 else 1.0)
    return arr[:, :3], rgb


def normalise_points(xyz: np.ndarray, rgb: np.ndarray | None) -> np.ndarray:
    """(P, 3) coordinates (+ colours in [0, 1]) -> (P, 6) in robustmm's point-cloud domain."""
    xyz = xyz - xyz.mean(axis=0, keepdims=True)
    radius = float(np.sqrt((xyz ** 2).sum(axis=1)).max())
    xyz = xyz / radius if radius > 0 else xyz
    colour = np.zeros_like(xyz) if rgb is None else np.clip(rgb, 0.0, 1.0) * 2.0 - 1.0
    return np.clip(np.concatenate([xyz, colour], axis=1), -1.0, 1.0).astype(np.float32)


def read_points(name: str, data: bytes, points: int | None) -> np.ndarray:
    """A point-cloud file's bytes -> (points, 6) float32 (see the module docstring); ``points``
    None keeps every point. Unreadable files raise ``BadFileError`` naming the file."""
    suffix = Path(name).suffix.lower()
    try:
        if suffix == ".ply":
            xyz, rgb = _ply(name, data)
        elif suffix == ".off":
            xyz, rgb = _off(name, data), None
        elif suffix in (".npy", ".txt", ".xyz"):
            xyz, rgb = _table(name, data, suffix)
        else:
            raise _bad(name, f"unknown extension {suffix!r} (.npy .txt .xyz .ply .off)")
    except (ValueError, IndexError, KeyError, UnicodeError, EOFError, OSError) as e:
        raise _bad(name, f"{type(e).__name__}: {e}") from None
    if not np.isfinite(xyz).all():
        raise _bad(name, "NaN or infinite coordinates")
    out = normalise_points(xyz.astype(np.float64), rgb)
    if points is not None and len(out) != points:
        idx = np.linspace(0, len(out) - 1, points).round().astype(int) if len(out) > points else np.arange(points) % len(out)
        out = out[idx]
    return out
