"""The figures of a run -- the record plots and the example gallery -- rendered, in a
multi-process run, by every rank and written by rank 0 alone.

Each figure is independent, so under ``torchrun`` the ranks take them one at a time from a shared
queue (a counter in the process group's store; the example figures first: they run PGD and are
the largest), render each into a private temporary folder, and publish the files' bytes; rank 0 renders
its own share in place and writes the others' into ``DIR/plots`` atomically. A single process
renders them all in place, as before. Either way the report lists the same figures in the same
order, and a failing figure is logged, never fatal.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .. import distributed as dist
from ..persist import atomic_write_bytes
from ..records import Result
from .context import JobContext

log = logging.getLogger(__name__)

Figure = Callable[[Path], list[Path]]  # draw into a plots folder, return the files written
_calls = 0  # render_figures calls in this process (the same on every rank): store keys never repeat


def figure_tasks(ctx: JobContext, results: list[Result]) -> list[tuple[str, Figure]]:
    """(name, draw) of every figure of the report: the example figures of the job's modalities that
    have one (when ``[report] examples``; image, audio, point cloud), then
    :data:`~robustmm.report.plots.RECORD_PLOTS` from the non-check records."""
    from ..report.check_records import is_checks
    from ..report.plots import RECORD_PLOTS, write_all_plots
    from .example_attacks import EXAMPLE_MODALITIES

    numbers = [r for r in results if not is_checks(r)]
    tasks: list[tuple[str, Figure]] = []
    if ctx.config.report.examples:
        tasks += [(f"examples:{m}", lambda d, m=m: example_paths(ctx, d, m)) for m in EXAMPLE_MODALITIES
                  if m in ctx.modalities]
    tasks += [(name, lambda d, name=name: write_all_plots(numbers, d, only=(name,))) for name in RECORD_PLOTS]
    return tasks


def example_paths(ctx: JobContext, plots: Path, modality: str) -> list[Path]:
    """The example figure of ``modality`` (PGD, and the fitted patch on images, on a few items); a
    failure is logged, never fatal."""
    from .example_attacks import example_figures

    try:
        with dist.local_only():  # PGD on this rank alone
            return example_figures(ctx.encoder(), ctx.dataset(n=min(ctx.n, 8)), plots, patch=ctx.fitted_patch,
                                   steps=int(ctx.pick("pgd", "steps")), seed=ctx.seed, modalities=(modality,))
    except Exception as e:  # a figure must never cost the results
        log.warning("example figures failed: %s", e)
        return []


def render_figures(ctx: JobContext, results: list[Result], out_dir: Path) -> list[str]:
    """Draw every figure into ``out_dir/plots``; on rank 0 the PNGs' paths relative to ``out_dir``
    (record plots first, then the examples: the report's order), elsewhere ``[]``.

    Every rank of a process group must call it, with the same ``results``."""
    global _calls
    _calls += 1
    tasks = figure_tasks(ctx, results)
    plots = out_dir / "plots"
    if not dist.is_distributed():
        plots.mkdir(parents=True, exist_ok=True)
        drawn = [task(plots) for _, task in tasks]
    else:
        drawn = _shared(tasks, plots, f"robustmm/figures{_calls}")
    if dist.rank() != 0:
        return []
    examples = [i for i, (name, _) in enumerate(tasks) if name.startswith("examples:")]
    order = [i for i in range(len(tasks)) if i not in examples] + examples  # the report's order
    return [str(p.relative_to(out_dir)) for i in order for p in drawn[i] if p.suffix == ".png"]


def _shared(tasks: list[tuple[str, Figure]], plots: Path, prefix: str) -> list[list[Path]]:
    """The queue of figures over the ranks; on rank 0 every figure's paths under ``plots`` (by task)."""
    me = dist.rank()
    here = plots if me == 0 else Path(tempfile.mkdtemp(prefix=f"robustmm-figures-rank{me}-"))
    here.mkdir(parents=True, exist_ok=True)
    try:
        while (i := dist.store_add(f"{prefix}/next") - 1) < len(tasks):
            name, task = tasks[i]
            log.info("rank %d draws %s", me, name)
            paths = task(here)
            names = [p.relative_to(here).as_posix() for p in paths]
            files = {} if me == 0 else {name: (here / name).read_bytes() for name in names}
            dist.store_set(f"{prefix}/figure{i}", {"rank": me, "names": names, "files": files})
    finally:
        if me != 0:
            shutil.rmtree(here, ignore_errors=True)
    if me != 0:
        return []
    drawn = []
    for i in range(len(tasks)):
        payload = dist.store_get(f"{prefix}/figure{i}")
        for name, data in payload["files"].items():
            (plots / name).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(plots / name, data)
        drawn.append([plots / name for name in payload["names"]])
    return drawn
