"""Flatten results into rows; write summary.csv and Markdown tables."""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from ..records import Result

#: columns of summary.csv, in order
COLUMNS = (
    "model", "modality", "attack", "eps", "eps_label", "defense", "threat", "n",
    "clean_zeroshot_top1", "attacked_zeroshot_top1", "clean_t2x_R@1", "attacked_t2x_R@1",
    "clean_x2t_R@1", "attacked_x2t_R@1", "clean_t2x_MRR", "attacked_t2x_MRR", "asr", "timing_s",
    "checks_passed", "passes_forward", "passes_backward",
)


#: how a PGD loss reads in tables and legends
LOSS_NAMES = {"ce": "zero-shot loss", "caption": "caption loss", "embedding": "embedding loss"}


def eps_label(r: Result) -> str:
    """A result's budget in its modality's unit (``4/255``, ``0.002``); ``""`` without an attack or eps."""
    from ..modalities import MODALITIES

    if not r.attack or r.attack.get("eps") is None:
        return ""
    spec = MODALITIES.get(r.modality)
    return spec.format_eps(r.attack["eps"]) if spec else f"{r.attack['eps']:g}"


def row(r: Result) -> dict[str, Any]:
    """One flat summary row of a result."""
    clean = r.metrics.get("clean") or {}
    adv = r.metrics.get("attacked") or {}
    defense = r.defense or {}
    out: dict[str, Any] = {
        "model": r.model.get("name"),
        "modality": r.modality,
        "attack": (r.attack or {}).get("name", ""),
        "eps": (r.attack or {}).get("eps", ""),
        "eps_label": eps_label(r),
        "defense": defense.get("name", "") + (f":{defense['objective']}" if defense.get("objective") else ""),
        "threat": r.threat,
        "n": r.n,
        "asr": r.metrics.get("asr"),
        "timing_s": r.timing_s,
        "checks_passed": r.metrics.get("checks_passed"),
        "passes_forward": (r.cost or {}).get("forward"),
        "passes_backward": (r.cost or {}).get("backward"),
    }
    for k in ("zeroshot_top1", "t2x_R@1", "x2t_R@1", "t2x_MRR"):
        out[f"clean_{k}"] = clean.get(k)
        out[f"attacked_{k}"] = adv.get(k)
    return out


def passes_cell(results: Iterable[Result]) -> str:
    """``forward+backward`` model passes per item the results' attacks spent together (e.g. the
    points of a curve up to one budget: each point records its own); ``""`` when none has a cost."""
    costs = [r.cost for r in results if r.cost is not None]
    if not costs:
        return ""
    return f"{sum(c['forward'] for c in costs):.3g}+{sum(c['backward'] for c in costs):.3g}"


def summary_csv(results: Iterable[Result]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in results:
        w.writerow({k: ("" if v is None else (round(v, 4) if isinstance(v, float) else v)) for k, v in row(r).items()})
    return buf.getvalue()


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; floats as 3-decimal numbers, None as an em dash."""

    def cell(v: Any) -> str:
        if v is None or v == "":
            return "—"
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain aligned table for the terminal."""

    def cell(v: Any) -> str:
        if v is None or v == "":
            return "-"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    body = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in body)])


CLEAN_HEADERS = ("modality", "zero-shot top-1", "top-5", "t2x R@1", "t2x R@5", "t2x R@10", "t2x MRR",
                 "x2t R@1", "x2t R@5", "x2t R@10", "x2t MRR")


def clean_rows(results: Iterable[Result]) -> list[list[Any]]:
    """Rows of the clean-evaluation table (one per modality)."""
    out = []
    for r in results:
        c = r.metrics["clean"]
        out.append([r.modality, c.get("zeroshot_top1"), c.get("zeroshot_top5"),
                    c.get("t2x_R@1"), c.get("t2x_R@5"), c.get("t2x_R@10"), c.get("t2x_MRR"),
                    c.get("x2t_R@1"), c.get("x2t_R@5"), c.get("x2t_R@10"), c.get("x2t_MRR")])
    return out
