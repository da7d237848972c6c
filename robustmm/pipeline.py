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
from .evaluation import evaluate
from .persist import atomic_write_text
from .records import Result, append_jsonl, read_jsonl
from .report.tables import summary_csv

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
    validate_config(base, str(path))
    return base


#: keys a job may set that the default config leaves out
OPTIONAL_KEYS: dict[str, set[str]] = {"run": {"root"}, "report": {"examples"}}


def validate_config(config: dict[str, Any], source: str = "config") -> None:
    """Fail before any work on what a typo would otherwise break minutes into a run: unknown
    sections and keys (with "did you mean"), model, dataset, modality and objective names."""
    from .data.registry import check_dataset_name
    from .defenses.objectives import parse_objective
    from .encoders.registry import check_model_name
    from .errors import UnknownNameError
    from .modalities import get_modality

    base = default_config()
    for section, values in config.items():
        if section not in base and section not in OPTIONAL_KEYS:
            raise UnknownNameError(f"section of {source}", f"[{section}]", {f"[{k}]" for k in (*base, *OPTIONAL_KEYS)})
        if not isinstance(values, dict):
            raise RobustMMError(f"{source}: [{section}] must be a table of keys, got {values!r}")
        known = set(base.get(section, {})) | OPTIONAL_KEYS.get(section, set())
        for key in values:
            if key not in known:
                raise UnknownNameError(f"key of [{section}] in {source}", key, known)
    run = config["run"]
    names = [run["model"], *config.get("sga", {}).get("transfer_to", [])]
    if config.get("checks", {}).get("surrogate"):
        names.append(config["checks"]["surrogate"])
    for name in names:
        check_model_name(name)
    check_dataset_name(run["dataset"])
    modalities = list(run["modalities"]) + list(config.get("calibration", {}).get("modalities") or []) + \
        list(config.get("checks", {}).get("modalities") or [])
    modalities += [config[s]["modality"] for s in ("patch", "sga", "xmai") if "modality" in config.get(s, {})]
    for m in modalities:
        get_modality(m)
    for obj in config.get("calibration", {}).get("objectives", []):
        parse_objective(obj)


@dataclass
class Cell:
    """One unit of work: ``key`` identifies it in results.jsonl for --resume."""

    key: str
    run: Callable[[], list[Result]]


class Job:
    """Lazily loads models and data once, builds the cells of a config, runs them."""

    def __init__(self, config: dict[str, Any], *, quick: bool = False, device: str = "cpu", progress: bool = True,
                 out_dir: str | Path | None = None):
        self.config, self.quick, self.device, self.progress = config, quick, device, progress
        self.amp = bool(config["run"].get("amp", False))
        self.out_dir = None if out_dir is None else Path(out_dir)
        run = config["run"]
        self.n = int(run.get("quick_n", 200) if quick else run.get("n", 1000))
        self.attack_n = min(self.n, int(run.get("quick_attack_n", 100) if quick else run.get("attack_n", self.n)))
        self.seed = int(run.get("seed", 0))
        self.batch_size = int(run.get("batch_size", 128))
        self.model_name: str = run["model"]
        self.modalities: list[str] = list(run["modalities"])
        self._encoders: dict[str, Any] = {}
        self._datasets: dict[tuple[str, int], Any] = {}
        self.fitted_patch = None  # kept for the example gallery
        self._calibrations: dict[tuple[str, str], Any] = {}  # (modality, objective) -> Calibration

    def section(self, name: str) -> dict[str, Any]:
        return self.config.get(name, {})

    def enabled(self, name: str) -> bool:
        return bool(self.section(name).get("enabled", False))

    def pick(self, section: str, key: str, default: Any) -> Any:
        """``quick_KEY`` under --quick when present, else ``KEY``."""
        sec = self.section(section)
        return sec.get(f"quick_{key}", sec.get(key, default)) if self.quick else sec.get(key, default)

    def encoder(self, name: str | None = None):
        name = name or self.model_name
        if name not in self._encoders:
            self._encoders[name] = load_encoder(name, device=self.device)
        return self._encoders[name]

    def dataset(self, split: str | None = None, n: int | None = None):
        run = self.config["run"]
        split = split or run.get("split", "test")
        n = n or self.n
        if (split, n) not in self._datasets:
            self._datasets[(split, n)] = load_dataset(run["dataset"], split=split, n=n, root=run.get("root"))
        return self._datasets[(split, n)]

    @property
    def test(self):
        return self.dataset(n=self.n)

    @property
    def attacked(self):
        return self.dataset(n=self.attack_n)

    def attacked_for(self, section: str):
        """The attacked items, or fewer when the section sets its own ``n`` (costly text attacks)."""
        n = self.pick(section, "n", None)
        return self.dataset(n=min(int(n), self.attack_n)) if n else self.attacked

    def _kw(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "seed": self.seed, "progress": self.progress}

    # -- cells ----------------------------------------------------------------------------------
    def cells(self) -> list[Cell]:
        out: list[Cell] = []
        model = self.model_name
        if self.enabled("clean"):
            for m in self.modalities:
                out.append(Cell(f"{model}|{m}|clean", lambda m=m: [evaluate(self.encoder(), self.test, modality=m, **self._kw())]))
        if self.enabled("pgd"):
            for m in self.modalities:
                out.append(Cell(f"{model}|{m}|pgd-curve", lambda m=m: self._pgd_curve(m)))
            if self.section("pgd").get("retrieval", False):
                for m in self.modalities:
                    out.append(Cell(f"{model}|{m}|pgd-retrieval-curve", lambda m=m: self._retrieval_curve(m)))
        if self.enabled("patch"):
            m = self.section("patch").get("modality", "image")
            out.append(Cell(f"{model}|{m}|patch", lambda m=m: self._patch(m)))
        if self.enabled("sga"):
            m = self.section("sga").get("modality", "image")
            out.append(Cell(f"{model}|{m}|sga|white-box", lambda m=m: self._sga(m, None)))
            for alt in self.section("sga").get("transfer_to", []):
                out.append(Cell(f"{model}|{m}|sga|transfer:{alt}", lambda m=m, alt=alt: self._sga(m, alt)))
        if self.enabled("xmai"):
            m = self.section("xmai").get("modality", "image")
            out.append(Cell(f"{model}|{m}|xmai", lambda m=m: self._xmai(m)))
        if self.enabled("calibration"):
            cal = self.section("calibration")
            for m in cal.get("modalities") or self.modalities:
                for obj in cal.get("objectives", ["ce"]):
                    out.append(Cell(f"{model}|{m}|calibration:{obj}", lambda m=m, obj=obj: self._calibration(m, obj)))
                if cal.get("clean_control", True):
                    out.append(Cell(f"{model}|{m}|calibration:clean-control", lambda m=m: self._clean_control(m)))
        if self.enabled("checks"):  # after calibration: the calibrated checks reuse its heads
            chk = self.section("checks")
            cal = self.section("calibration")
            for m in chk.get("modalities") or self.modalities:
                out.append(Cell(f"{model}|{m}|checks", lambda m=m: self._checks(m, None)))
                if chk.get("calibrated", True) and self.enabled("calibration") and m in (cal.get("modalities") or self.modalities):
                    for obj in cal.get("objectives", ["ce"]):
                        out.append(Cell(f"{model}|{m}|checks:calibration:{obj}", lambda m=m, obj=obj: self._checks(m, obj)))
        return out

    def _amp(self, attack: Any) -> Any:
        """The attack under bfloat16 autocast when ``[run] amp`` (or ``run --amp``) is on."""
        if not self.amp:
            return attack
        from .attacks.amp import AutocastAttack

        return AutocastAttack(attack)

    def _pgd(self, modality: str, **kw: Any):
        from .attacks import build_attack

        return self._amp(build_attack("pgd", steps=int(self.pick("pgd", "steps", 10)), **kw))

    def _pgd_curve(self, modality: str) -> list[Result]:
        from .evaluation import robustness_curve

        return robustness_curve(self.encoder(), self.attacked, modality=modality, attack=self._pgd(modality), **self._kw())

    def _retrieval_curve(self, modality: str) -> list[Result]:
        """PGD on the caption loss (push the item away from its own captions), every item attacked
        at every eps: the retrieval curve a nested zero-shot sweep cannot give."""
        from .evaluation import naive_curve

        n = min(int(self.pick("pgd", "retrieval_n", 100)), self.attack_n)
        return naive_curve(self.encoder(), self.dataset(n=n), modality=modality,
                           attack=self._pgd(modality, loss="caption"), **self._kw())

    def _patch(self, modality: str) -> list[Result]:
        from .attacks import build_attack

        sec = self.section("patch")
        attack = build_attack("patch", modality=modality, area=float(sec.get("area", 0.03)),
                              epochs=int(sec.get("epochs", 5)), seed=self.seed)
        fit_data = self.dataset(sec.get("fit_split", "train"), int(self.pick("patch", "fit_n", 1000)))
        self._amp(attack).fit(self.encoder(), fit_data)  # fits ``attack`` itself
        self.fitted_patch = attack
        res = evaluate(self.encoder(), self.attacked, modality=modality, attack=self._amp(attack), **self._kw())
        if modality in self.attacked.tasks:  # fooling rate = zero-shot prediction changed
            res.extra["fooling_rate"] = attack.fooling_rate(self.encoder(), self.attacked, modality)
        res.extra["fit"] = fit_data.info()
        return [res]

    def _sga(self, modality: str, transfer_to: str | None) -> list[Result]:
        from .attacks import build_attack

        eps = float(self.section("sga").get("eps", 2 / 255))
        sga = self._amp(build_attack("sga", eps=eps, seed=self.seed))
        src = self.encoder()
        data = self.attacked_for("sga")
        if transfer_to is None:
            return [evaluate(src, data, modality=modality, attack=sga, **self._kw())]
        tgt = self.encoder(transfer_to)
        pgd = self._pgd(modality, eps=eps, loss="caption")
        return [evaluate(tgt, data, modality=modality, attack=a, source=src, **self._kw()) for a in (sga, pgd)]

    def _xmai(self, modality: str) -> list[Result]:
        from .attacks import build_attack
        from .attacks.memo import MemoAttack
        from .attacks.xmai import caption_similarity

        attack = MemoAttack(build_attack("xmai"))
        data = self.attacked_for("xmai")
        res = evaluate(self.encoder(), data, modality=modality, attack=attack, **self._kw())
        clean_mrr, adv_mrr = res.metrics["clean"]["t2x_MRR"], res.metrics["attacked"]["t2x_MRR"]
        res.extra["relative_t2x_MRR_drop"] = (clean_mrr - adv_mrr) / clean_mrr if clean_mrr else None
        edited = [caps for b in attack.outputs() for caps in b.captions]
        res.extra["caption_similarity"] = caption_similarity(self.encoder(), data.captions, edited)
        return [res]

    def _calibration_data(self):
        cal = self.section("calibration")
        return self.dataset(cal.get("train_split", "train"), int(self.pick("calibration", "train_n", 1000)))

    def _calibration(self, modality: str, objective: str) -> list[Result]:
        from .defenses.calibrate import calibrate, default_attack
        from .defenses.threats import evaluate_threats

        cal = self.section("calibration")
        steps = int(self.pick("calibration", "steps", 10))
        labelled = modality in self.attacked.tasks
        attack = self._amp(default_attack(modality, labelled, steps=steps))
        calib = calibrate(self.encoder(), self._calibration_data(), modality=modality, objective=objective, attack=attack,
                          epochs=int(cal.get("epochs", 60)), seed=self.seed, progress=self.progress)
        self._calibrations[(modality, objective)] = calib
        if self.out_dir is not None:
            calib.save(str(self.heads_path(modality, objective)))
        return evaluate_threats(self.encoder(), calib, self.attacked, modality=modality, attack=attack,
                                threats=("head-unaware", "adaptive"), **self._kw())

    def heads_path(self, modality: str, objective: str) -> Path:
        """Where the run keeps the heads of one calibration cell (``DIR/heads/MODEL-MODALITY-OBJ``)."""
        assert self.out_dir is not None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in objective)
        return self.out_dir / "heads" / f"{self.model_name.replace('/', '_')}-{modality}-{safe}.safetensors"

    def _checks(self, modality: str, objective: str | None) -> list[Result]:
        """Gradient-masking sanity checks (robustmm.checks) on the bare model, or on the model with
        the heads of one calibration cell (adaptive attack; head-unaware as the transfer check)."""
        from .attacks import build_attack
        from .checks import checks_result, sanity_checks

        sec = self.section("checks")
        n = min(int(self.pick("checks", "n", 100)), self.attack_n)
        data = self.dataset(n=n)
        bare = self.encoder()
        steps = tuple(int(s) for s in self.pick("checks", "steps", [1, 5, 20]))
        loss = "ce" if modality in data.tasks else "caption"  # scored by top-1, else by X->text R@1
        attack = self._amp(build_attack("pgd", steps=int(self.pick("pgd", "steps", 10)), loss=loss, seed=self.seed))
        defense = None
        if objective is None:
            target = bare
            alt = sec.get("surrogate", "")
            surrogate = self.encoder(alt) if alt else None
        else:
            calib = self._calibrations.get((modality, objective))
            if calib is None and self.out_dir is not None and self.heads_path(modality, objective).exists():
                from .defenses.calibrate import Calibration
                from .defenses.heads import load_heads

                heads, meta = load_heads(self.heads_path(modality, objective), bare)
                calib = Calibration(heads, meta)
            if calib is None:
                log.warning("no heads for %s/%s: run its calibration cell first", modality, objective)
                return []
            target, surrogate, defense = bare.with_heads(calib.heads), bare, calib.defense_block()
        t0 = time.perf_counter()
        checks = sanity_checks(target, data, modality=modality, attack=attack, surrogate=surrogate, steps=steps,
                               tolerance=float(sec.get("tolerance", 0.02)), seed=self.seed)
        return [checks_result(checks, target, data, modality=modality, attack=attack, defense=defense, seed=self.seed,
                              timing_s=time.perf_counter() - t0)]

    def _clean_control(self, modality: str) -> list[Result]:
        from .defenses.calibrate import calibrate

        cal = self.section("calibration")
        objective = cal.get("objectives", ["ce"])[0]
        calib = calibrate(self.encoder(), self._calibration_data(), modality=modality, objective=objective,
                          epochs=int(cal.get("epochs", 60)), clean_only=True, seed=self.seed, progress=self.progress)
        wrapped = self.encoder().with_heads(calib.heads)
        return [evaluate(wrapped, self.attacked, modality=modality, defense=calib.defense_block(), **self._kw())]


def run_job(config: dict[str, Any], out_dir: str | Path, *, quick: bool = False, resume: bool = False,
            overwrite: bool = False, device: str = "cpu", progress: bool = True) -> list[Result]:
    """Run every cell of ``config`` into ``out_dir``; returns all results (old and new)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RobustMMError(f"output folder {out_dir} is a file")
    validate_config(config)
    results_path = out_dir / "results.jsonl"
    if results_path.exists() and not (resume or overwrite):
        raise RobustMMError(f"{results_path} exists: pass --resume to continue that run or --overwrite to start again")
    if overwrite and results_path.exists():
        results_path.unlink()
    job = Job(config, quick=quick, device=device, progress=progress, out_dir=out_dir)
    done = {d.get("extra", {}).get("cell") for d in read_jsonl(results_path)}
    cells = job.cells()
    todo = [c for c in cells if c.key not in done]
    log.info("%d cells, %d already done, %d to run", len(cells), len(cells) - len(todo), len(todo))
    from .progress import tqdm

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
    examples: list[str] = []
    if job.section("report").get("examples", True):
        from .report.examples import example_figures

        try:
            paths = example_figures(job.encoder(), job.dataset(n=min(job.n, 8)), out_dir / "plots",
                                    patch=job.fitted_patch, steps=int(job.pick("pgd", "steps", 10)), seed=job.seed)
            examples = [str(p.relative_to(out_dir)) for p in paths if p.suffix == ".png"]
        except Exception as e:  # a figure must never cost the results
            log.warning("example figures failed: %s", e)
    write_report(results, out_dir, extra_plots=examples)
    return results


def write_report(results: list[Result], out_dir: str | Path, extra_plots: list[str] | None = None) -> None:
    """summary.csv, plots/ and report.md for a list of results."""
    from .report.markdown import render

    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "summary.csv", summary_csv(results))
    plots: list[str] = []
    try:
        from .checks import is_checks
        from .report.plots import write_all_plots

        numbers = [r for r in results if not is_checks(r)]
        plots = [str(p.relative_to(out_dir)) for p in write_all_plots(numbers, out_dir / "plots") if p.suffix == ".png"]
    except ImportError:  # pragma: no cover - plots module is optional at import time
        log.warning("plots unavailable (robustmm.report.plots missing)")
    atomic_write_text(out_dir / "report.md", render(results, plots + list(extra_plots or [])))
