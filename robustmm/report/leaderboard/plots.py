"""The leaderboard's figures (PNG, matplotlib Agg, no pyplot state): per entry and per modality."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ...persist import atomic_write_bytes
from ..plots.style import modality_order, new_figure, palette

DPI = 110


def save_png(fig: Any, path: Path) -> Path:
    """Write ``fig`` as one PNG at ``path`` (atomically); returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _grid(n: int) -> tuple[int, int]:
    cols = min(3, max(n, 1))
    return (n + cols - 1) // cols, cols


def _curve(numbers: dict[str, Any]) -> tuple[list[float], list[float]]:
    xs = [0.0] + [float(c["eps"]) for c in numbers["robust"] if c["robust"] is not None]
    ys = [numbers["clean"]] + [float(c["robust"]) for c in numbers["robust"] if c["robust"] is not None]
    return ([x for x, y in zip(xs, ys) if y is not None], [y for y in ys if y is not None])


def plot_entry_curves(entry: dict[str, Any], path: Path) -> Path:
    """Robust accuracy (worst case of the ensemble) against eps, one panel per modality; eps 0 = clean."""
    mods = sorted(entry["modalities"], key=modality_order)
    rows, cols = _grid(len(mods))
    fig = new_figure(3.2 * cols, 2.6 * rows)
    for i, m in enumerate(mods):
        ax = fig.add_subplot(rows, cols, i + 1)
        xs, ys = _curve(entry["modalities"][m])
        ax.plot(xs, ys, marker="o", color=palette(1)[0])
        ax.axvline(entry["modalities"][m]["headline_eps"], color="0.6", lw=0.8, ls="--")
        ax.set_ylim(-0.02, 1.02)
        bare = entry["model"]["defense"] is not None and not entry["modalities"][m]["defended"]
        ax.set_title(m + (" (bare tower)" if bare else ""), fontsize=9)
        ax.set_xlabel("eps (L-inf, modality unit)", fontsize=8)
        ax.set_ylabel("robust accuracy", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(entry["model"]["name"], fontsize=10)
    return save_png(fig, path)


def plot_certified_curves(entry: dict[str, Any], path: Path) -> Path | None:
    """Certified accuracy against the L2 radius per modality (None when the entry certifies nothing)."""
    mods = [m for m in sorted(entry["modalities"], key=modality_order) if entry["modalities"][m].get("certified")]
    if not mods:
        return None
    rows, cols = _grid(len(mods))
    fig = new_figure(3.2 * cols, 2.6 * rows)
    for i, m in enumerate(mods):
        cert = entry["modalities"][m]["certified"]
        pts = [(c["radius"], c["accuracy"]) for c in cert["curve"] if c["accuracy"] is not None]
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", marker="o", color=palette(2)[1])
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{m} (sigma={cert['sigma']:g}, n={cert['n']})", fontsize=9)
        ax.set_xlabel("L2 radius (modality unit)", fontsize=8)
        ax.set_ylabel("certified accuracy", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(entry["model"]["name"] + ": certified accuracy", fontsize=10)
    return save_png(fig, path)


def plot_modality_overview(entries: list[dict[str, Any]], modality: str, path: Path) -> Path:
    """Every entry's robustness curve on ``modality`` in one panel."""
    fig = new_figure(6.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    have = [e for e in entries if modality in e["modalities"]]
    for e, color in zip(have, palette(len(have))):
        xs, ys = _curve(e["modalities"][modality])
        ax.plot(xs, ys, marker="o", ms=3, color=color, label=e["model"]["name"])
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{modality}: robust accuracy vs eps (worst case of the ensemble)", fontsize=9)
    ax.set_xlabel("eps (L-inf, modality unit)", fontsize=8)
    ax.set_ylabel("robust accuracy", fontsize=8)
    if have:
        ax.legend(fontsize=6, loc="upper right")
    return save_png(fig, path)
