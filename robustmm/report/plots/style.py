"""How every figure looks and is written: canvas, atomic PNG + SVG output, palette, axis labels.

Nothing here touches ``matplotlib.pyplot`` or the global backend: figures are plain
:class:`matplotlib.figure.Figure` objects rendered by the Agg / SVG canvases.
"""
from __future__ import annotations

import io
import logging
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...modalities import MODALITIES
from ...persist import atomic_write_bytes

log = logging.getLogger(__name__)

DPI = 150
FORMATS = ("png", "svg")
_IMAGE_SUFFIXES = {".png", ".svg", ".pdf", ".jpg", ".jpeg"}
NORM_LABELS = {"linf": "L∞", "l2": "L2", "l1": "L1", "l0": "L0"}


def new_figure(width: float, height: float) -> Any:
    """A blank matplotlib Figure of the given size in inches, with constrained layout (no pyplot state)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def figure_stem(out_path: str | Path) -> Path:
    """``out_path`` without an image suffix, so that :func:`save_figure` can add each format's own."""
    p = Path(out_path)
    return p.with_suffix("") if p.suffix.lower() in _IMAGE_SUFFIXES else p


def save_figure(fig: Any, stem: str | Path) -> list[Path]:
    """Write ``fig`` as ``stem.png`` and ``stem.svg`` atomically; return both paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    # lay out once, then freeze the layout and crop box: every format reuses them (one draw each)
    canvas = FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    bbox = fig.get_tightbbox(canvas.get_renderer()).padded(0.2)
    fig.set_layout_engine("none")
    written = []
    for ext in FORMATS:
        path = stem.parent / f"{stem.name}.{ext}"
        buf = io.BytesIO()  # rendered in memory, then one atomic write (locked temp, fsync, rename)
        fig.savefig(buf, format=ext, dpi=DPI, bbox_inches=bbox, facecolor="white")
        atomic_write_bytes(path, buf.getvalue())
        written.append(path)
    log.info("wrote %s.{%s}", stem, ",".join(FORMATS))
    return written


def safe_name(s: str) -> str:
    """``s`` reduced to characters safe in a file name (``attack`` when nothing is left)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_") or "attack"


def palette(n: int) -> list[Any]:
    """``n`` distinct colours (tab10, or tab20 beyond ten series)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(max(n, 1))]


def modality_order(m: str) -> tuple[int, str]:
    """Sort key that orders modalities as the registry lists them, unknown ones last by name."""
    names = list(MODALITIES)
    return (names.index(m) if m in names else len(names), m)


def eps_formatter(modality: str, norm: Any) -> tuple[Callable[[float], str], str]:
    """Tick formatter and axis label for a modality's budget (its own unit when norms match)."""
    spec = MODALITIES.get(modality)
    if spec is not None and (norm is None or norm == spec.norm):
        return spec.format_eps, f"budget ε ({spec.eps_unit})"
    return (lambda e: f"{e:g}"), f"budget ε ({NORM_LABELS.get(str(norm), norm)} norm, raw input units)"


def metric_label(key: str, modality: str) -> str:
    """Axis label of a metric key for ``modality`` (the key itself when unknown)."""
    return {
        "zeroshot_top1": "zero-shot top-1 accuracy",
        "t2x_R@1": f"text→{modality} R@1",
        "x2t_R@1": f"{modality}→text R@1",
        "t2x_MRR": f"text→{modality} MRR",
    }.get(key, key)


def wrap_text(s: str, width: int = 48) -> str:
    """``s`` wrapped at ``width`` characters for titles and legends."""
    return "\n".join(textwrap.wrap(s, width)) or s
