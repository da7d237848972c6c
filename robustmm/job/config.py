"""The typed `robustmm run` job: ``[run]``, ``[report]`` and one section per registered cell kind.

:func:`load_config` reads a TOML job file and checks all of it before any work: the file must be
UTF-8 TOML, every section and key must be known ("did you mean" otherwise), every value must have
its key's type and range, and every model, dataset, modality and objective name must be
registered. Keys a file leaves out take their defaults, which live in the section dataclasses
(``RunConfig`` below, each kind's ``Config`` in ``robustmm/job/cells/``) and nowhere else;
``robustmm/configs/default.toml`` lists them for copying, and a test keeps it equal to them.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import tomllib
from pathlib import Path
from typing import Any

from ..data.registry import check_dataset_name, dataset_splits
from ..encoders.registry import check_model_name
from ..errors import RobustMMError, UnknownNameError
from ..modalities import get_modality
from .registry import cell_kinds
from .sections import MAX_SEED, RUN_ITEMS, SEED, ConfigError, Section, option

log = logging.getLogger(__name__)

ALL_MODALITIES = ["image", "video", "audio", "depth", "thermal", "pointcloud"]


@dataclasses.dataclass
class RunConfig(Section):
    """``[run]``: the model, the data and the sizes every cell shares."""

    model: str = option("tinybind", check=check_model_name)
    dataset: str = option("synthscenes", check=check_dataset_name)
    root: str | None = None  # folder of a real dataset on disk
    split: str = option("test", split=True)
    n: int = option(1000, positive=True, items=RUN_ITEMS)  # items of the clean evaluation
    attack_n: int | None = option(300, positive=True, items=RUN_ITEMS)  # items attacked (None = n)
    quick_n: int | None = option(200, positive=True, items=RUN_ITEMS)
    quick_attack_n: int | None = option(64, positive=True, items=RUN_ITEMS)
    modalities: list[str] = option(ALL_MODALITIES, check=get_modality, nonempty=True)
    batch_size: int = option(250, positive=True)
    seed: int = option(0, minimum=SEED.minimum, maximum=MAX_SEED)
    amp: bool = False  # attacks under bfloat16 autocast


@dataclasses.dataclass
class ReportConfig(Section):
    """``[report]``: what the final report draws besides the result plots."""

    examples: bool = True  # example figures (gallery, spectrograms, point cloud)


FIXED = {"run": RunConfig, "report": ReportConfig}


@dataclasses.dataclass
class JobConfig:
    """A whole job: ``run``, ``report`` and the typed section of every cell kind."""

    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)
    sections: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = "config"

    def __post_init__(self) -> None:
        for kind in cell_kinds():
            self.sections.setdefault(kind.name, kind.default())

    def section(self, name: str) -> Any:
        """The typed section of cell kind ``name`` (its defaults when the file leaves it out)."""
        if name in FIXED:
            return getattr(self, name)
        if name not in self.sections:
            raise UnknownNameError("config section", f"[{name}]", [f"[{k}]" for k in (*FIXED, *self.sections)])
        return self.sections[name]

    def tables(self) -> dict[str, Section]:
        """Every typed table of the job by its name in a job file (``run``, ``pgd``, ``attacks.pgd`` ...)."""
        out: dict[str, Section] = {"run": self.run, "report": self.report}
        for kind in cell_kinds():
            out |= kind.tables(self.sections[kind.name])
        return out

    def to_dict(self) -> dict[str, Any]:
        """The job as plain TOML-like tables (what :func:`parse_config` reads back)."""
        out: dict[str, Any] = {"run": self.run.to_table(), "report": self.report.to_table()}
        for kind in cell_kinds():
            out[kind.name] = kind.to_table(self.sections[kind.name])
        return out


def parse_config(raw: dict[str, Any], source: str = "config") -> JobConfig:
    """Check a job given as plain tables (a parsed TOML file) and type it; ``source`` names the
    file in errors. Unknown sections and keys, wrong types and unknown names are one-line errors."""
    kinds = {k.name: k for k in cell_kinds()}
    known = [f"[{k}]" for k in (*FIXED, *kinds)]
    fixed: dict[str, Section] = {}
    sections: dict[str, Any] = {}
    for name, table in raw.items():
        if name in FIXED:
            fixed[name] = FIXED[name].from_table(table, name, source)
        elif name in kinds:
            sections[name] = kinds[name].parse(table, source)
        else:
            raise UnknownNameError(f"section of {source}", f"[{name}]", known)
    job = JobConfig(run=fixed.get("run", RunConfig()), report=fixed.get("report", ReportConfig()),  # type: ignore[arg-type]
                    sections=sections, source=source)
    check_meanings(job)
    return job


def check_meanings(job: JobConfig) -> None:
    """The checks that need more than one key, for ``[run]`` and every enabled section: each
    ``split`` key names a split of ``[run] dataset``, each ``items`` count fits in the split it
    draws from, each ``in_run`` list names only what ``[run]`` runs (:func:`check_in_run`), then
    the kind's :meth:`~robustmm.job.registry.CellKind.validate`. One-line :class:`ConfigError`
    naming the file, section and key. A split whose size the dataset does not declare (known only
    on disk) has its name checked here and its counts when it loads; a disabled section runs
    nothing, so only its types are."""
    kinds = [k for k in cell_kinds() if k().enabled(job.sections[k.name])]
    tables: dict[str, Section] = {"run": job.run}
    for kind in kinds:
        tables |= {k: t for k, t in kind.tables(job.sections[kind.name]).items() if getattr(t, "enabled", True)}
    for name, table in tables.items():
        where = f"{job.source}: [{name}]"
        for key, rule in type(table).rules().items():
            value = getattr(table, key)
            if rule.split and value is not None:
                check_split(job, value, f"{where} {key}")
            if rule.items is not None and value is not None:
                check_item_count(job, value, rule.items.resolve(table, job.run.split), f"{where} {key}")
            if rule.in_run is not None and value:
                check_in_run(job, table, key, rule.in_run, where)
        check_budget_domains(job, table, where)
    for kind in kinds:
        kind.validate(job.sections[kind.name], job, job.source)


def check_budget_domains(job: JobConfig, table: Section, where: str) -> None:
    """A table's ``eps`` (a budget or a list of them) fits the domain of every modality it runs
    on (its ``modalities``, else ``[run] modalities``) under its ``norm``: ``eps = [4]`` on
    images is refused at load ("did you mean 4/255?"), as ``--eps 4`` is on the command line."""
    from ..errors import BudgetError
    from ..modalities import CONTINUOUS_MODALITIES

    eps = getattr(table, "eps", None)
    budgets = [e for e in (eps if isinstance(eps, list) else [eps]) if isinstance(e, (int, float))]
    modalities = getattr(table, "modalities", None) or job.run.modalities
    for m in (m for m in modalities if m in CONTINUOUS_MODALITIES):
        for e in budgets:
            try:
                get_modality(m).check_budget(e, getattr(table, "norm", None))
            except BudgetError as err:
                raise ConfigError(f"{where} eps: {err}") from None


def check_split(job: JobConfig, split: str, where: str) -> None:
    """A one-line error unless ``split`` is a split of ``[run] dataset`` (when it declares its splits)."""
    splits = dataset_splits(job.run.dataset)
    if splits is not None and split not in splits:
        raise ConfigError(f"{where}: expected a split of {job.run.dataset} ({', '.join(splits)}), got {json.dumps(split)}")


def check_in_run(job: JobConfig, table: Section, key: str, run_key: str, where: str) -> None:
    """The names in list ``key`` of ``table`` (a section's ``modalities``) must be among ``[run]
    run_key``: cells run only on what ``[run]`` runs, so a name outside it would silently run
    nothing. A list the file gave is refused at the first such name; the key's default (the
    image-only ``[input_defenses]``) may miss ``[run]``, as in an audio-only job, and is then only
    logged as a warning when none of it is run."""
    values, allowed = getattr(table, key), list(getattr(job.run, run_key))
    outside = [v for v in values if v not in allowed]
    if not outside:
        return
    if values != getattr(type(table)(), key):
        raise ConfigError(f"{where} {key}: {json.dumps(outside[0])} is not in [run] {run_key} ({', '.join(allowed)}), "
                          f"so nothing would run on it; add it there or leave it out here")
    if len(outside) == len(values):
        log.warning("%s %s: none of the default %s is in [run] %s (%s), so this section runs nothing; "
                    "set enabled = false to say so", where, key, ", ".join(values), run_key, ", ".join(allowed))


def check_item_count(job: JobConfig, n: int, split: str, where: str) -> None:
    """A one-line error when ``n`` items are more than split ``split`` of ``[run] dataset`` holds
    (when its size is declared): the dataset would be asked for items it does not have."""
    size = (dataset_splits(job.run.dataset) or {}).get(split)
    if size is not None and n > size:
        raise ConfigError(f"{where}: expected an integer <= {size} (the size of {job.run.dataset} split {split!r}), "
                          f"got {n}")


def read_toml(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML file; a missing, unreadable, non-UTF-8 or non-TOML file is a one-line error."""
    path = Path(path)
    if not path.exists():
        raise RobustMMError(f"config file not found: {path}")
    if path.is_dir():
        raise RobustMMError(f"config file {path} is a folder, not a file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise RobustMMError(f"{path}: not a UTF-8 text file (invalid byte at offset {e.start})") from None
    except OSError as e:
        raise RobustMMError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RobustMMError(f"{path}: invalid TOML ({e})") from None


def load_config(path: str | Path | None) -> JobConfig:
    """The job in TOML file ``path`` (None = the default job); left-out keys take their defaults."""
    if path is None:
        return JobConfig(source="default job")
    return parse_config(read_toml(path), str(path))


def default_config() -> JobConfig:
    """The default job (TinyBind / SynthScenes, every modality, every cell kind)."""
    return load_config(None)


def as_config(config: JobConfig | dict[str, Any]) -> JobConfig:
    """``config`` typed: a :class:`JobConfig` as it is, plain tables checked by :func:`parse_config`."""
    if isinstance(config, JobConfig):
        return config
    if not isinstance(config, dict):
        raise ConfigError(f"a job config is a JobConfig or a dict of tables, got {type(config).__name__}")
    return parse_config(config)


#: the file in a run's output folder that records the job it was started with
FINGERPRINT_NAME = "job.json"


def job_fingerprint(config: JobConfig, quick: bool) -> dict[str, Any]:
    """What a run's results depend on: every table of the job (``[report]`` aside: it only draws)
    and ``--quick``, as plain JSON. Stored in the output folder when a run starts, and compared by
    ``--resume`` so that one folder never mixes the results of two jobs or two models."""
    tables = {k: v for k, v in config.to_dict().items() if k != "report"}
    return json.loads(json.dumps({"schema": "robustmm.job/1", "quick": quick, "job": tables}, default=str))


def fingerprint_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``[pgd] steps: 2 -> 7`` for each key whose value differs between two fingerprints (empty
    when they are equal), keys of either side included."""
    flat_old, flat_new = _flatten(old.get("job", {})), _flatten(new.get("job", {}))
    out = [f"{k}: {_shown(flat_old.get(k, '(unset)'))} -> {_shown(flat_new.get(k, '(unset)'))}"
           for k in sorted(set(flat_old) | set(flat_new)) if flat_old.get(k, ...) != flat_new.get(k, ...)]
    if old.get("quick") != new.get("quick"):
        out.insert(0, f"--quick: {old.get('quick')} -> {new.get('quick')}")
    return out


def _flatten(tables: dict[str, Any]) -> dict[str, Any]:
    """``{"[pgd] steps": 10, "[attacks] apgd.eps": [...]}`` from nested tables."""
    out: dict[str, Any] = {}
    for name, table in tables.items():
        sub: dict[str, Any] = {}
        for k, v in (table.items() if isinstance(table, dict) else [("", table)]):
            _walk_into(sub, k, v)
        out |= {f"[{name}] {key}".rstrip(): val for key, val in sub.items()}
    return out


def _walk_into(out: dict[str, Any], prefix: str, value: Any) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _walk_into(out, f"{prefix}.{k}", v)
    else:
        out[prefix] = value


def _shown(value: Any) -> str:
    return value if value == "(unset)" else json.dumps(value)
