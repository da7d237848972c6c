"""The main job, `robustmm run`: a typed TOML config and a registry of cells.

* :mod:`~robustmm.job.config` -- the typed job (``load_config``, ``JobConfig``);
* :mod:`~robustmm.job.registry` -- cells and cell kinds (``register_cell``), one kind per section;
* :mod:`~robustmm.job.cells` -- the built-in kinds, one file each;
* :mod:`~robustmm.job.context` -- what the cells share (lazily loaded models and data);
* :mod:`~robustmm.job.runner` -- ``run_job`` (locked, resumable) and ``write_report``;
* :mod:`~robustmm.job.eval_command` -- the library side of `robustmm eval`.
"""
from .config import JobConfig, RunConfig, default_config, load_config, parse_config, read_toml
from .context import JobContext
from .registry import Cell, CellKind, cell_kind, cell_kinds, list_cell_kinds, register_cell
from .runner import job_cells, run_job, write_report

__all__ = ["Cell", "CellKind", "JobConfig", "JobContext", "RunConfig", "cell_kind", "cell_kinds", "default_config",
           "job_cells", "list_cell_kinds", "load_config", "parse_config", "read_toml", "register_cell", "run_job",
           "write_report"]
