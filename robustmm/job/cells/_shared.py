"""What several cell kinds share: the modalities a section runs on, and the calibration heads a
job trained, found again by later cells."""
from __future__ import annotations

from typing import Any

from ..context import JobContext


def section_modalities(ctx: JobContext, listed: list[str]) -> list[str]:
    """The modalities a section's cells run on: its ``modalities`` (empty = every modality of
    ``[run]``), kept to those ``[run]`` runs; the loader refuses a name outside them that a job
    file gives (:func:`robustmm.job.config.check_in_run`), so only a default is ever cut here."""
    return [m for m in (listed or ctx.modalities) if m in ctx.modalities]


def job_heads(ctx: JobContext, modality: str, objective: str) -> Any:
    """The Calibration of ``(modality, objective)`` this job trained: in memory, or saved under
    ``DIR/heads`` by an earlier process (``--resume``); None when its calibration cell has not run."""
    calib = ctx.calibrations.get((modality, objective))
    if calib is None and ctx.out_dir is not None and ctx.heads_path(modality, objective).exists():
        from ...encoders.heads import Calibration, load_heads

        heads, meta = load_heads(ctx.heads_path(modality, objective), ctx.encoder())
        calib = Calibration(heads, meta)
        ctx.calibrations[(modality, objective)] = calib
    return calib


def calibrated_objectives(ctx: JobContext, modality: str) -> list[str]:
    """The objectives whose heads the job trains for ``modality`` ([] when calibration is off)."""
    cal = ctx.section("calibration")
    if not cal.enabled or modality not in section_modalities(ctx, cal.modalities):
        return []
    return list(cal.objectives)
