"""`robustmm run`: a TOML-configured job over cells, resumable, writing results and a report.

A job is a list of *cells* (one per model x modality x attack x eps x defense x threat). Each cell
produces a :class:`~robustmm.report.Result`, appended atomically to ``DIR/results.jsonl`` as soon
as it finishes; ``--resume`` skips cells whose key is already there, so a killed run loses at most
the cell in progress. At the end ``summary.csv`` and ``report.md`` are (re)written from all rows.
"""
from __future__ import annotations

import logging
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .data.registry import load_dataset
from .encoders.registry import load_encoder
from .errors import RobustMMError
from .evaluate import evaluate
from .report.result import Result, append_jsonl, atomic_write_text, read_jsonl
from .report.tables import CLEAN_HEADERS, clean_rows, markdown_table, summary_csv

log = logging.getLogger(__name__)


def default_config() -> dict[str, Any]:
    """The job that ships inside the package (TinyBind / SynthScenes)."""
    return tomllib.loads(resources.files("robustmm").joinpath("configs/default.toml").read_text())


def load_config(path: str | Path | None) -> dict[str, Any]:
    """Read a TOML job file (None = the default job); missing keys fall back to the default."""
    base = default_config()
    if path is None:
        return base
    path = Path(path)
    if not path.exists():
        raise RobustMMError(f"config file not found: {path}")
    try:
        user = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise RobustMMError(f"{path}: invalid TOML ({e})") from None
    for section, values in user.items():
        if isinstance(values, dict):
            base.setdefault(section, {})
            base[section] = {**base[section], **values}
        else:
            base[section] = values
    return base


@dataclass
class Cell:
    """One unit of work: ``key`` identifies it in results.jsonl for --resume."""

    key: str
    run: Callable[[], Result]


class Job:
    """Lazily loads models and data once, builds the cells of a config, runs them."""

    def __init__(self, config: dict[str, Any], *, quick: bool = False, device: str = "cpu", progress: bool = True):
        self.config, self.quick, self.device, self.progress = config, quick, device, progress
        run = config["run"]
        self.n = int(run.get("quick_n", 200) if quick else run.get("n", 1000))
        self.seed = int(run.get("seed", 0))
        self.batch_size = int(run.get("batch_size", 128))
        self.modalities: list[str] = list(run["modalities"])
        self._encoders: dict[str, Any] = {}
        self._dataset = None

    def encoder(self, name: str):
        if name not in self._encoders:
            self._encoders[name] = load_encoder(name, device=self.device)
        return self._encoders[name]

    @property
    def dataset(self):
        if self._dataset is None:
            run = self.config["run"]
            self._dataset = load_dataset(run["dataset"], split=run.get("split", "test"), n=self.n,
                                         root=run.get("root"))
        return self._dataset

    def cells(self) -> list[Cell]:
        run = self.config["run"]
        model = run["model"]
        out: list[Cell] = []
        if self.config.get("clean", {}).get("enabled", True):
            for m in self.modalities:
                out.append(Cell(f"{model}|{m}|clean", lambda m=m: evaluate(
                    self.encoder(model), self.dataset, modality=m, batch_size=self.batch_size,
                    seed=self.seed, progress=self.progress)))
        return out


def run_job(config: dict[str, Any], out_dir: str | Path, *, quick: bool = False, resume: bool = False,
            overwrite: bool = False, device: str = "cpu", progress: bool = True) -> list[Result]:
    """Run every cell of ``config`` into ``out_dir``; returns all results (old and new)."""
    out_dir = Path(out_dir)
    results_path = out_dir / "results.jsonl"
    if results_path.exists() and not (resume or overwrite):
        raise RobustMMError(f"{results_path} exists: pass --resume to continue that run or --overwrite to start again")
    if overwrite and results_path.exists():
        results_path.unlink()
    job = Job(config, quick=quick, device=device, progress=progress)
    done = {d.get("extra", {}).get("cell") for d in read_jsonl(results_path)}
    cells = job.cells()
    todo = [c for c in cells if c.key not in done]
    log.info("%d cells, %d already done, %d to run", len(cells), len(cells) - len(todo), len(todo))
    from tqdm.auto import tqdm

    for cell in tqdm(todo, desc="robustmm run", disable=not progress):
        t0 = time.perf_counter()
        result = cell.run()
        result.extra["cell"] = cell.key
        append_jsonl(results_path, [result])
        log.info("%s done in %.1fs", cell.key, time.perf_counter() - t0)
    results = [Result.from_dict(d) for d in read_jsonl(results_path)]
    write_report(results, out_dir)
    return results


def write_report(results: list[Result], out_dir: str | Path) -> None:
    """summary.csv and report.md for a list of results."""
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "summary.csv", summary_csv(results))
    clean = [r for r in results if r.threat == "clean"]
    lines = ["# robustmm report", ""]
    if clean:
        r0 = clean[0]
        lines += [
            f"Model **{r0.model.get('name')}** ({r0.model.get('weights') or 'random init'}) on "
            f"**{r0.dataset.get('name')}** / {r0.dataset.get('split')} ({r0.n} items).",
            "",
            "## Clean evaluation",
            "",
            "Zero-shot top-1/top-5 on each modality's own task; retrieval R@K and MRR text->X (t2x) and"
            " X->text (x2t), an item counting as retrieved if any of its captions is.",
            "",
            markdown_table(CLEAN_HEADERS, clean_rows(clean)),
            "",
        ]
    atomic_write_text(out_dir / "report.md", "\n".join(lines) + "\n")
