"""Figures from result records and from single examples (matplotlib, headless).

Every function writes the same figure twice -- ``.png`` (150 dpi) and ``.svg`` -- each through a
temp file in the target folder and ``os.replace``, and returns the paths it wrote. Nothing here
touches ``matplotlib.pyplot`` or the global backend: figures are plain
:class:`matplotlib.figure.Figure` objects rendered by the Agg / SVG canvases, so importing this
module never changes an interactive session and works without a display.

From result records (``robustmm.result/1``):

* :func:`plot_worst_curves` -- the headline: per-item worst case vs PGD alone over each modality's
  budgets; :func:`plot_retrieval_curves`, :func:`plot_single_budget`, :func:`plot_defended` --
  the caption-loss retrieval curves, the single-budget attacks and the defended models, as points
  (:mod:`.headline`, one comparison per figure).
* :func:`plot_robustness_curves` -- metric vs budget eps, one panel per (modality, attack) (not
  drawn by the job; every curve of a set of records on one figure); :func:`plot_curves` returns
  the same figure (a matplotlib Figure) without writing it.
* :func:`plot_attack_bars` -- clean vs attacked bars with the attack success rate, per attack.
* :func:`plot_calibration` -- bare vs calibrated encoder, clean and under both threat models.
* :func:`plot_certified` -- certified (and SmoothAdv empirical) top-1 against the L2 radius.
* :func:`write_all_plots` -- the four above into one folder (what ``robustmm report`` calls);
  :data:`RECORD_PLOTS` lists them (a multi-process run shares them out over its ranks).

From examples: :func:`plot_gallery` (image grids), :func:`plot_spectrograms` (audio),
:func:`plot_pointcloud` (3-D points). Malformed records are skipped with a warning, never fatal;
empty input returns ``[]``.

The package: :mod:`.style` (canvas, output, palette), :mod:`.fields` (reading records),
:mod:`.curves`, :mod:`.bars`, :mod:`.calibration`, :mod:`.certified` (one figure kind each) and :mod:`.examples`;
:mod:`.worst_case` (single attacks against their per-item worst case; experiments/converged_curves.py) is
imported from its module, not by :func:`write_all_plots`.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from ...records import Result
from .bars import plot_attack_bars
from .calibration import plot_calibration
from .certified import plot_certified
from .curves import CURVE_ATTACKS, plot_curves, plot_robustness_curves
from .headline import plot_defended, plot_retrieval_curves, plot_single_budget, plot_worst_curves
from .item_views import amplified_perturbation, plot_gallery, plot_pointcloud, plot_spectrograms
from .record_values import as_results

log = logging.getLogger(__name__)

__all__ = [
    "CURVE_ATTACKS", "RECORD_PLOTS", "amplified_perturbation", "plot_attack_bars", "plot_calibration", "plot_certified",
    "plot_curves", "plot_defended", "plot_gallery", "plot_pointcloud", "plot_retrieval_curves", "plot_robustness_curves",
    "plot_single_budget", "plot_spectrograms", "plot_worst_curves", "write_all_plots",
]


#: the figures drawn from result records, by name, in the report's order; each ``fn(results, out_dir) -> paths``
RECORD_PLOTS: dict[str, Callable[..., list[Path]]] = {
    "robustness_worst": plot_worst_curves, "robustness_retrieval": plot_retrieval_curves,
    "robustness_one_eps": plot_single_budget, "robustness_defended": plot_defended,
    "attack_bars": plot_attack_bars, "calibration": plot_calibration, "certified": plot_certified,
}


def write_all_plots(results: Sequence[Result], out_dir: str | Path, only: Sequence[str] | None = None) -> list[Path]:
    """Robustness curves, per-attack bars, the calibration chart and the certified-accuracy curves
    into ``out_dir`` (created); ``only`` draws just those names of :data:`RECORD_PLOTS`.

    A failure in one figure is logged and the others are still written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rs = as_results(results)
    if not rs:
        log.info("write_all_plots: no results; nothing to plot")
        return []
    written: list[Path] = []
    for name, fn in RECORD_PLOTS.items():
        if only is not None and name not in only:
            continue
        try:
            written += fn(rs, out_dir)
        except Exception:  # noqa: BLE001 - a report should not die on one figure
            log.exception("write_all_plots: %s failed; continuing", name)
    return written
