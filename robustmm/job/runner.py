"""`robustmm run`: every cell of a job, resumable, one process per output folder, then the report.

Each cell's results are appended durably to ``DIR/results.jsonl`` as soon as it finishes, tagged
with the cell's key (``extra.cell``); ``--resume`` skips cells whose key is already there, so a
killed run loses at most the cell in progress. The folder is checked writable before any work and
locked (``DIR/.robustmm.lock``, released by the kernel on exit or crash) for the whole run, so two
runs never write into one folder. At the end ``summary.csv``, ``plots/`` and ``report.md`` are
(re)written from all rows.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ..errors import RobustMMError
from ..outdir import FolderLock, check_writable_dir
from ..persist import atomic_write_text
from ..records import Result, append_jsonl, read_jsonl
from ..report.tables import summary_csv
from .config import JobConfig, as_config
from .context import JobContext
from .registry import Cell, cell_kinds

log = logging.getLogger(__name__)


def job_cells(ctx: JobContext) -> list[Cell]:
    """Every cell of the job, kind by kind in registry order (only the enabled kinds)."""
    out: list[Cell] = []
    for kind_cls in cell_kinds():
        kind = kind_cls()
        section = ctx.section(kind_cls.name)
        if kind.enabled(section):
            out += kind.cells(ctx, section)
    return out


def run_job(config: JobConfig | dict[str, Any], out_dir: str | Path, *, quick: bool = False, resume: bool = False,
            overwrite: bool = False, device: str = "cpu", progress: bool = True, wait: bool = False) -> list[Result]:
    """Run every cell of ``config`` into ``out_dir``; returns all results (old and new).

    ``config`` is a :class:`JobConfig` or plain tables (checked like a job file). The folder must
    be writable (checked first) and not in use by another run: a live holder of its lock is a
    one-line error, or with ``wait`` this blocks until the lock is free.
    """
    config = as_config(config)
    out_dir = check_writable_dir(out_dir)
    with FolderLock(out_dir, wait=wait):
        return _run_locked(config, out_dir, quick=quick, resume=resume, overwrite=overwrite, device=device,
                           progress=progress)


def _run_locked(config: JobConfig, out_dir: Path, *, quick: bool, resume: bool, overwrite: bool, device: str,
                progress: bool) -> list[Result]:
    results_path = out_dir / "results.jsonl"
    if results_path.exists() and not (resume or overwrite):
        raise RobustMMError(f"{results_path} exists: pass --resume to continue that run or --overwrite to start again")
    if overwrite and results_path.exists():
        results_path.unlink()
    ctx = JobContext(config, quick=quick, device=device, progress=progress, out_dir=out_dir)
    done = {d.get("extra", {}).get("cell") for d in read_jsonl(results_path)}
    cells = job_cells(ctx)
    todo = [c for c in cells if c.key not in done]
    log.info("%d cells, %d already done, %d to run", len(cells), len(cells) - len(todo), len(todo))
    from ..progress import tqdm

    bar = tqdm(todo, desc="robustmm run", disable=not progress)
    for cell in bar:
        bar.set_postfix_str(cell.key)
        t0 = time.perf_counter()
        results = cell.run()
        for r in results:
            r.extra["cell"] = cell.key
        append_jsonl(results_path, results)
        log.info("%s done in %.1fs", cell.key, time.perf_counter() - t0)
    results = [Result.from_dict(d) for d in read_jsonl(results_path)]
    write_report(results, out_dir, extra_plots=_examples(ctx, out_dir) if config.report.examples else [])
    return results


def _examples(ctx: JobContext, out_dir: Path) -> list[str]:
    """The example figures (relative paths of the PNGs); a failure is logged, never fatal."""
    from .examples import example_figures

    try:
        paths = example_figures(ctx.encoder(), ctx.dataset(n=min(ctx.n, 8)), out_dir / "plots",
                                patch=ctx.fitted_patch, steps=int(ctx.pick("pgd", "steps")), seed=ctx.seed)
    except Exception as e:  # a figure must never cost the results
        log.warning("example figures failed: %s", e)
        return []
    return [str(p.relative_to(out_dir)) for p in paths if p.suffix == ".png"]


def write_report(results: list[Result], out_dir: str | Path, extra_plots: list[str] | None = None) -> None:
    """summary.csv, plots/ and report.md for a list of results (the folder is checked writable first)."""
    from ..report.markdown import render

    out_dir = check_writable_dir(out_dir)
    atomic_write_text(out_dir / "summary.csv", summary_csv(results))
    plots: list[str] = []
    try:
        from ..report.check_records import is_checks
        from ..report.plots import write_all_plots

        numbers = [r for r in results if not is_checks(r)]
        plots = [str(p.relative_to(out_dir)) for p in write_all_plots(numbers, out_dir / "plots") if p.suffix == ".png"]
    except ImportError:  # pragma: no cover - plots module is optional at import time
        log.warning("plots unavailable (robustmm.report.plots missing)")
    atomic_write_text(out_dir / "report.md", render(results, plots + list(extra_plots or [])))
