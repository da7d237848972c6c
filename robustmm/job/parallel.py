"""How a multi-process `robustmm run` (``torchrun ... robustmm run``) spreads its cells over ranks.

Two ways, chosen by ``ROBUSTMM_RUN_SHARD``:

* ``cells`` (default): **whole cells** go to ranks from a shared work queue (a counter in the
  process group's store; consecutive cells of one ``Cell.group``, which share memoised work, go
  together), and each rank runs its cell under :func:`~robustmm.distributed.local_only`,
  i.e. exactly as a single process runs it. Finished cells are published in the store with the
  state they leave behind (calibration heads, the fitted patch); rank 0 writes them strictly in
  cell order as soon as the prefix is complete, after writing the files the cell wrote on its rank
  (heads: the other ranks write into a private scratch folder) and adopting its state. The job is cut
  into *waves* where a later kind reads an earlier kind's state (the calibrated checks read the
  calibration heads); at the end of each wave rank 0 hands the merged state to every rank.
  This is what makes small jobs (`--quick`: every evaluation is one batch) faster.
* ``items``: every rank runs every cell together, and the runners that shard (evaluate, the
  curves, calibration's adversarial pass, so also the checks, SGA, XMAI's evaluate and
  transfers) split the items in whole batches and gather them. After each cell the ranks compare
  their results; a cell whose results differ (a loop that reads only this rank's share, e.g.
  XMAI's caption similarity over its own edits) is rerun whole on every rank.

Either way only rank 0 writes, and the results are those of one process on the same machine, bit for
bit, when every process runs the same kernels with the same thread count (``OMP_NUM_THREADS``):
the job's test texts are embedded in fixed chunks whatever the number of ranks (:func:`share_texts`).
Texts that attacks make up inside a cell (caption edits, substitute words) are embedded as they
come, so a cell that makes them can differ from one process within
:data:`~robustmm.encoders.base.NUMERIC_TOLERANCE` where an earlier cell memoised some of them; so
can anything compared across machines or thread counts.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any

from .. import distributed as dist
from ..errors import RobustMMError
from ..records import Result
from .context import JobContext
from .registry import Cell

log = logging.getLogger(__name__)

#: kinds whose cells leave state (ctx.calibrations) that cells of later kinds read: a wave ends after them
STATE_KINDS = ("calibration",)
MODES = ("cells", "items")
_calls = 0  # run_parallel calls in this process (the same count on every rank): store keys never repeat

Commit = Callable[[Cell, list[Result]], None]


def shard_mode() -> str:
    """``ROBUSTMM_RUN_SHARD`` (``cells`` or ``items``; default ``cells``)."""
    mode = os.environ.get("ROBUSTMM_RUN_SHARD", "cells").strip() or "cells"
    if mode not in MODES:
        raise RobustMMError(f"ROBUSTMM_RUN_SHARD={mode!r}: use one of {', '.join(MODES)}")
    return mode


def waves(plan: list[tuple[str, Cell]]) -> list[list[Cell]]:
    """The cells (``(kind, cell)`` in job order) cut after every run of :data:`STATE_KINDS` cells."""
    out: list[list[Cell]] = [[]]
    for i, (kind, cell) in enumerate(plan):
        out[-1].append(cell)
        if kind in STATE_KINDS and i + 1 < len(plan) and plan[i + 1][0] != kind:
            out.append([])
    return [w for w in out if w]


def run_parallel(plan: list[tuple[str, Cell]], ctx: JobContext, commit: Commit) -> None:
    """Run the cells of ``plan`` on every rank of the group; rank 0 calls ``commit`` in cell order."""
    global _calls
    _calls += 1
    if plan:
        share_texts(ctx)
    if shard_mode() == "items":
        for _, cell in plan:
            _run_together(cell, commit)
        return
    for w, wave in enumerate(waves(plan)):
        files = ctx.files()
        _run_wave(wave, ctx, commit, f"robustmm/run{_calls}/wave{w}")
        # rank 0 now holds every cell's state and files: the next wave starts from them on every rank
        state, written = dist.broadcast_object((ctx.state(), ctx.files_since(files)) if dist.rank() == 0 else None)
        if dist.rank() != 0:
            ctx.adopt(state)
            ctx.write_files(written)


def share_texts(ctx: JobContext) -> None:
    """Embed the test items' captions and the job's class prompts in canonical chunks, before any cell.

    Every cell reads them. The encoder's text memo (:meth:`~robustmm.encoders.base.Encoder.text_memo`;
    nothing happens for an encoder without one) cuts the job's distinct texts into fixed chunks
    (sorted, one token length each); rank ``r`` embeds chunks ``r, r + world, ...`` and every rank
    memoises every chunk, replacing what was memoised before. A single process runs this too, so
    each text has the same batch mates, hence the same bits, on 1 or N processes of one machine
    (same kernels and thread count), whichever cell asks for it first."""
    memo, share, failed = None, None, None
    try:  # every rank must reach the gather, or the others hang in it
        memo = ctx.encoder().text_memo()
        if memo is not None:
            data = ctx.test
            texts = [c for caps in data.captions for c in caps]
            tasks = [data.tasks[m] for m in ctx.modalities if m in data.tasks]  # the job's modalities' prompts
            texts += [p for task in tasks for prompts in task.prompts() for p in prompts]
            mine = memo.chunks(texts)[dist.rank()::dist.world_size()]
            with dist.local_only():
                share = [(chunk, memo.embed(chunk).cpu()) for chunk in mine]
    except Exception as e:
        failed, share = e, " ".join(f"{type(e).__name__}: {e}".split())
    shares = dist.all_gather_object(share)
    if failed is not None:
        raise failed  # this rank's own error, as it would have met it in its first cell
    for rank, got in enumerate(shares):
        if isinstance(got, str):
            raise RobustMMError(f"rank {rank} failed before the first cell: {got}")
    if memo is None:  # no memo here, so none on any rank (every rank loads the same encoder)
        return
    for got in shares:
        for chunk, emb in got:
            memo.remember(chunk, emb)
    log.info("rank %d embedded %d of %d test texts", dist.rank(), sum(len(c) for c, _ in share),
             sum(len(c) for got in shares for c, _ in got))


def _tagged(cell: Cell, results: list[Result]) -> list[Result]:
    for r in results:
        r.extra["cell"] = cell.key
    return results


def _run_wave(wave: list[Cell], ctx: JobContext, commit: Commit, prefix: str) -> None:
    """Take cells from the queue until it is empty; rank 0 also writes every finished cell in order."""
    lead = dist.rank() == 0
    written = 0

    def drain(block: bool) -> None:
        nonlocal written
        while written < len(wave) and (block or dist.store_poll(f"{prefix}/cell{written}")):
            payload = dist.store_get(f"{prefix}/cell{written}")
            if "error" in payload:
                raise RobustMMError(f"cell {wave[written].key} failed on rank {payload['rank']}: {payload['error']}")
            if payload["rank"] != 0:  # its files (heads) on disk before its results line
                ctx.write_files(payload["files"])
                ctx.adopt(payload["state"])
            commit(wave[written], payload["results"])
            written += 1

    units = cell_units(wave)
    while True:
        if dist.store_poll(f"{prefix}/abort"):
            raise RobustMMError(f"stopping: {dist.store_get(f'{prefix}/abort')}")
        u = dist.store_add(f"{prefix}/next") - 1
        if u >= len(units):
            break
        for i in units[u]:
            _run_one(wave[i], i, ctx, prefix)
            if lead:
                drain(block=False)
    if lead:
        drain(block=True)


def _run_one(cell: Cell, i: int, ctx: JobContext, prefix: str) -> None:
    """Run cell ``i`` of the wave here, alone, and publish its results, state and files (or its error)."""
    me = dist.rank()
    before, files = ctx.state(), ctx.files()
    log.info("rank %d runs %s", me, cell.key)
    try:
        with dist.local_only():
            results = _tagged(cell, cell.run())
    except BaseException as e:
        msg = " ".join(f"{type(e).__name__}: {e}".split())
        dist.store_set(f"{prefix}/cell{i}", {"rank": me, "error": msg})
        dist.store_set(f"{prefix}/abort", f"cell {cell.key} failed on rank {me}: {msg}")
        raise
    payload = {"rank": me, "results": results, "state": ctx.state_since(before) if me else _empty(),
               "files": ctx.files_since(files) if me else {}}
    dist.store_set(f"{prefix}/cell{i}", payload)


def cell_units(wave: list[Cell]) -> list[list[int]]:
    """What the queue hands out: the wave's cell positions, consecutive cells of one ``group`` together."""
    units: list[list[int]] = []
    for i, cell in enumerate(wave):
        if units and cell.group is not None and wave[units[-1][-1]].group == cell.group:
            units[-1].append(i)
        else:
            units.append([i])
    return units


def _empty() -> dict[str, Any]:
    return {"calibrations": {}, "fitted_patch": None}


def _untimed(value: Any) -> Any:
    """``value`` without its timings (keys ending in ``_s``: timing_s, train_s, attack_s ...)."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if not str(k).endswith("_s")}
    if isinstance(value, list | tuple):
        return [_untimed(v) for v in value]
    return value


def _digest(results: list[Result]) -> str:
    """The results without what legitimately differs between ranks (timings)."""
    return json.dumps([_untimed(r.to_dict()) for r in results], sort_keys=True, default=str)


def _run_together(cell: Cell, commit: Commit) -> None:
    """Items mode: every rank runs ``cell`` (its runners shard items); unequal results mean the
    cell reads rank-local data somewhere, so it is rerun whole on every rank."""
    results = _tagged(cell, cell.run())
    if len(set(dist.all_gather_object(_digest(results)))) > 1:
        log.warning("%s: ranks disagree (a loop of this cell is not gathered); rerunning it whole", cell.key)
        with dist.local_only():
            results = _tagged(cell, cell.run())
    if dist.rank() == 0:
        commit(cell, results)
