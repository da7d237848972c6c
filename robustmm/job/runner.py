"""`robustmm run`: every cell of a job, resumable, one process per output folder, then the report.

Each cell's results are appended durably to ``DIR/results.jsonl`` as soon as it finishes, tagged
with the cell's key (``extra.cell``); ``--resume`` skips cells whose key is already there, so a
killed run loses at most the cell in progress. The folder is checked writable before any work and
locked (``DIR/.robustmm.lock``, released by the kernel on exit or crash) for the whole run, so two
runs never write into one folder. At the end ``summary.csv``, ``plots/`` and ``report.md`` are
(re)written from all rows.

Under ``torchrun`` the ranks share the cells (:mod:`robustmm.job.parallel`); rank 0 alone takes
the lock, decides what --resume skips (and tells the others), and writes every file.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .. import distributed as dist
from ..errors import RobustMMError
from ..outdir import FolderLock, check_writable_dir
from ..persist import atomic_write_text
from ..records import Result, append_jsonl, load_results, read_jsonl
from ..report.tables import summary_csv
from .arg_checks import check_run_options
from .config import FINGERPRINT_NAME, JobConfig, as_config, fingerprint_differences, job_fingerprint
from .context import JobContext
from .figures import render_figures
from .parallel import run_parallel, share_texts
from .registry import Cell, cell_kinds

log = logging.getLogger(__name__)
T = TypeVar("T")


def job_plan(ctx: JobContext) -> list[tuple[str, Cell]]:
    """Every cell of the job with its kind's name, kind by kind in registry order (enabled kinds only)."""
    out: list[tuple[str, Cell]] = []
    for kind_cls in cell_kinds():
        kind = kind_cls()
        section = ctx.section(kind_cls.name)
        if kind.enabled(section):
            out += [(kind_cls.name, c) for c in kind.cells(ctx, section)]
    return out


def job_cells(ctx: JobContext) -> list[Cell]:
    """Every cell of the job, kind by kind in registry order (only the enabled kinds)."""
    return [c for _, c in job_plan(ctx)]


def on_lead(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0 only, its value (or its error, as a one-line RobustMMError) on every rank.

    Whatever only rank 0 may do (lock the folder, read or write results) goes through here, so the
    other ranks learn its outcome instead of hanging in the next collective when it fails.
    """
    if not dist.is_distributed():
        return fn()
    value, error = None, None
    if dist.rank() == 0:
        try:
            value = fn()
        except Exception as e:
            error = e
    message = dist.broadcast_object(None if error is None else " ".join(str(error).split()))
    if error is not None:
        raise error
    if message is not None:
        raise RobustMMError(f"rank 0 failed: {message}")
    return dist.broadcast_object(value)


@contextlib.contextmanager
def locked_folder(check: Callable[[], Path], *, wait: bool = False,
                  prefix: str = "robustmm") -> Iterator[tuple[Path, Path | None]]:
    """The output folder, locked by rank 0 for the block (``check()`` makes sure it is writable and
    returns it; a live holder of its lock is a one-line error, or with ``wait`` this blocks), and on
    the other ranks of a process group a private scratch folder for what cells write, deleted after
    the block (None on rank 0). The other ranks never touch the lock file."""
    held: list[FolderLock] = []

    def lock() -> str:
        folder = check()
        held.append(FolderLock(folder, wait=wait).acquire())
        return str(folder)

    folder = Path(on_lead(lock))
    scratch = None
    try:
        if dist.rank() != 0:
            scratch = Path(tempfile.mkdtemp(prefix=f"{prefix}-rank{dist.rank()}-"))
        yield folder, scratch
    finally:
        for h in held:
            h.release()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)



def run_job(config: JobConfig | dict[str, Any], out_dir: str | Path, *, quick: bool = False, resume: bool = False,
            overwrite: bool = False, device: str = "cpu", progress: bool = True, wait: bool = False) -> list[Result]:
    """Run every cell of ``config`` into ``out_dir``; returns all results (old and new).

    ``config`` is a :class:`JobConfig` or plain tables (checked like a job file). The folder must
    be writable (checked first) and not in use by another run: a live holder of its lock is a
    one-line error, or with ``wait`` this blocks until the lock is free.

    Inside a process group (``torchrun ... robustmm run``) the ranks share the cells (see
    :mod:`robustmm.job.parallel`) and return the same results; only rank 0 takes the lock and
    writes into ``out_dir``. The other ranks write what cells write (heads) into a private scratch
    copy of the folder's ``heads/``, deleted at the end. An empty ``out_dir`` and ``resume`` with
    ``overwrite`` are refused before anything is read.
    """
    check_run_options(out_dir, resume, overwrite)
    config = as_config(config)

    with locked_folder(lambda: check_writable_dir(out_dir), wait=wait) as (folder, scratch):
        return _run_locked(config, folder, scratch, quick=quick, resume=resume, overwrite=overwrite, device=device,
                           progress=progress)


def _start(results_path: Path, resume: bool, overwrite: bool, fingerprint: dict[str, Any]) -> list[str]:
    """Rank 0's look at the folder: refuse to clobber, or clear it, or list the finished cells.

    The job's fingerprint (:func:`~robustmm.job.config.job_fingerprint`) is stored beside the
    results when a run starts; ``--resume`` refuses a job that differs from it, naming each key
    that differs, so that one folder never mixes two configs or two models."""
    if results_path.exists() and not (resume or overwrite):
        raise RobustMMError(f"{results_path} exists: pass --resume to continue that run or --overwrite to start again")
    stored = results_path.parent / FINGERPRINT_NAME
    if overwrite and results_path.exists():
        results_path.unlink()
    if resume and results_path.exists():
        _check_same_job(stored, fingerprint)
    atomic_write_text(stored, json.dumps(fingerprint, indent=2) + "\n")
    return sorted({str(d.get("extra", {}).get("cell")) for d in read_jsonl(results_path)})


def _check_same_job(stored: Path, fingerprint: dict[str, Any]) -> None:
    """``--resume``: the job must be the one the folder was started with (a folder without a
    stored fingerprint, from an older robustmm, is resumed with a warning)."""
    if not stored.exists():
        log.warning("%s: no %s (started by an older robustmm): cannot check that --resume continues the same job",
                    stored.parent, FINGERPRINT_NAME)
        return
    try:
        old = json.loads(stored.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise RobustMMError(f"{stored}: cannot read the job this folder was started with ({e})") from None
    if differ := fingerprint_differences(old if isinstance(old, dict) else {}, fingerprint):
        raise RobustMMError(f"--resume: {stored.parent} was started with another job ({'; '.join(differ)}): resume with "
                            "that job, pass --overwrite to start again, or choose another --out")


def run_cells(todo: list[tuple[Any, Cell]], ctx: JobContext, results_path: Path, *, label: str,
              progress: bool = False) -> None:
    """Run the cells ``todo`` and append each one's results (tagged ``extra.cell``) to
    ``results_path`` as it finishes: shared over the ranks under torchrun (rank 0 writes), else one
    after another (the test texts embedded first in the same fixed chunks as on N ranks, so the
    bits agree), with a progress bar titled ``label`` when ``progress``."""
    def commit(cell: Cell, results: list[Result]) -> None:  # rank 0 only
        append_jsonl(results_path, results)
        log.info("%s written (%d results)", cell.key, len(results))

    if dist.is_distributed():
        run_parallel(todo, ctx, commit)
        return
    from ..progress import steps

    if todo:
        share_texts(ctx)
    for cell in steps([c for _, c in todo], label, name=lambda c: c.key, enabled=progress):
        t0 = time.perf_counter()
        results = cell.run()
        for r in results:
            r.extra["cell"] = cell.key
        commit(cell, results)
        log.info("%s done in %.1fs", cell.key, time.perf_counter() - t0)


def _run_locked(config: JobConfig, out_dir: Path, scratch: Path | None, *, quick: bool, resume: bool, overwrite: bool,
                device: str, progress: bool) -> list[Result]:
    results_path = out_dir / "results.jsonl"
    fingerprint = job_fingerprint(config, quick)
    done = set(on_lead(lambda: _start(results_path, resume, overwrite, fingerprint)))  # every rank skips the same cells
    if scratch is not None and (out_dir / "heads").is_dir():  # heads of finished cells, for the calibrated checks
        shutil.copytree(out_dir / "heads", scratch / "heads", ignore=shutil.ignore_patterns(".*"))
    dist.barrier()  # copied before rank 0 writes any new heads
    lead = dist.rank() == 0
    ctx = JobContext(config, quick=quick, device=device, progress=progress and lead,
                     out_dir=out_dir if scratch is None else scratch)
    plan = job_plan(ctx)
    todo = [(kind, c) for kind, c in plan if c.key not in done]
    log.info("%d cells, %d already done, %d to run", len(plan), len(plan) - len(todo), len(todo))
    if todo:
        preflight(ctx)
        on_lead(lambda: check_outputs(out_dir))

    run_cells(todo, ctx, results_path, label="robustmm run", progress=progress)

    # every rank draws a share of the figures (robustmm.job.figures); rank 0 writes them and the report
    results = on_lead(lambda: load_results([results_path]))
    plots = render_figures(ctx, results, out_dir)
    on_lead(lambda: write_report(results, out_dir, plots=plots))
    on_lead(lambda: log_consistency(results))
    return results


def preflight(ctx: JobContext) -> None:
    """Before the first cell: the job's model embeds every modality of ``[run] modalities``, and
    the dataset has them, so that a missing tower is a one-line error at once, not minutes in."""
    run = ctx.config.run
    have = set(ctx.encoder().modalities)
    if missing := [m for m in ctx.modalities if m not in have]:
        raise RobustMMError(f"[run] modalities: model {run.model!r} has no {', '.join(missing)} tower (it embeds "
                            f"{', '.join(sorted(have))}): drop {', '.join(missing)} from [run] modalities or choose "
                            "another model")
    have = set(ctx.dataset(n=1).modalities)  # one item: the modalities without generating the split
    if missing := [m for m in ctx.modalities if m not in have]:
        raise RobustMMError(f"[run] modalities: dataset {run.dataset!r} has no {', '.join(missing)} "
                            f"(it has {', '.join(sorted(have))}): drop them from [run] modalities")


def check_outputs(out_dir: Path) -> None:
    """Before the first cell: every folder and file the job writes into ``out_dir`` can be written
    (``heads/``, ``plots/``, results.jsonl, summary.csv, report.md), each named in the error."""
    for sub in ("heads", "plots"):  # a missing one is made in out_dir, proven writable already
        if (out_dir / sub).exists():
            check_writable_dir(out_dir / sub, f"{sub}/ folder")
    for name in ("results.jsonl",):  # appended in place: the file itself must be writable
        path = out_dir / name
        if path.exists() and not os.access(path, os.W_OK):
            raise RobustMMError(f"{path} is not writable (the job appends each cell's results to it)")


def log_consistency(results: list[Result]) -> bool:
    """Log the report's consistency verdict (report.md carries it too); True when it passed."""
    from ..report.consistency import check_consistency

    problems = check_consistency(results)
    for p in problems:
        log.warning("consistency check: %s", p.message)
    log.log(logging.INFO if not problems else logging.WARNING, "consistency check %s (%d problems)",
            "passed" if not problems else "FAILED", len(problems))
    return not problems


def write_report(results: list[Result], out_dir: str | Path, extra_plots: list[str] | None = None,
                 plots: list[str] | None = None) -> None:
    """summary.csv, plots/, report.md, report.html and report.tex for a list of results (the folder
    is checked writable first).

    ``plots``: the figures already drawn (paths relative to ``out_dir``); by default the record plots
    are drawn here, followed by ``extra_plots``."""
    out_dir = check_writable_dir(out_dir)
    atomic_write_text(out_dir / "summary.csv", summary_csv(results))
    if plots is not None:
        write_report_documents(results, out_dir, plots + list(extra_plots or []))
        return
    plots = []
    try:
        from ..report.check_records import is_checks
        from ..report.plots import write_all_plots

        numbers = [r for r in results if not is_checks(r)]
        plots = [str(p.relative_to(out_dir)) for p in write_all_plots(numbers, out_dir / "plots") if p.suffix == ".png"]
    except ImportError:  # pragma: no cover - plots module is optional at import time
        log.warning("plots unavailable (robustmm.report.plots missing)")
    write_report_documents(results, out_dir, plots + list(extra_plots or []))


#: the report's documents in a job or report folder, all written from one Markdown text
REPORT_FILES = ("report.md", "report.html", "report.tex")


def write_report_documents(results: list[Result], out_dir: Path, plots: list[str]) -> None:
    """report.md, and from the very same text report.html (a self-contained page: sortable tables,
    the figures by relative path) and report.tex (the tables in booktabs), each written atomically."""
    from ..report.html import markdown_to_html
    from ..report.latex import markdown_to_latex
    from ..report.markdown import render

    md = render(results, plots)
    atomic_write_text(out_dir / "report.md", md)
    atomic_write_text(out_dir / "report.html", markdown_to_html(md))
    atomic_write_text(out_dir / "report.tex", markdown_to_latex(md))
