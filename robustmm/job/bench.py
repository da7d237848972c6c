"""`robustmm bench`: one model (optionally behind one defense) through a protocol, as one leaderboard entry.

The protocol (:mod:`robustmm.job.bench_protocol`) fixes the items, budgets and attacks. The bench
runs one cell per modality and measurement, through the job's machinery: results go to
``WORK/results.jsonl`` as each cell finishes (:func:`~robustmm.records.append_jsonl`), the work
folder is locked for the run (:class:`~robustmm.outdir.FolderLock`), ``--resume`` skips the cells
already there after checking the folder was started with the same model, defense, protocol and seed
(``WORK/bench.json``), and under ``torchrun`` the ranks share the cells exactly as `robustmm run`
does (:func:`~robustmm.job.parallel.run_parallel`; rank 0 alone writes). At the end the records
are folded into the entry (:func:`build_entry`): a model card, every number, its cost and the
provenance, checked against ``robustmm/protocols/entry.schema.json`` before it is written.

Cells (keys ``MODEL|MODALITY|WHAT``):

* ``bench-worst-curve``: at every eps of the modality's grid, the per-item worst case of a nested
  PGD sweep and the protocol's ensemble parts (APGD-CE, APGD-T; each on the items still robust),
  as the job's headline (:func:`~robustmm.evaluation.worst_curve.worst_case_curve`). Against an
  input transform that is non-differentiable or randomized every attack is made adaptive
  (BPDA / EOT, :func:`~robustmm.job.cells.input_defenses.adaptive_for`).
* ``bench-certified``: for a smoothing defense and a protocol that asks, certified accuracy at the
  protocol's radii (Cohen et al.) with the protocol's Monte Carlo settings.

A modality that the defense does not cover (an image-only transform on audio) is measured on the
bare tower, which is what the defended system runs there, and marked ``defended: false``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from .. import distributed as dist
from ..errors import RobustMMError
from ..outdir import check_writable_dir
from ..persist import atomic_write_text
from ..records import Result, load_results, read_jsonl
from .bench_entry import build_entry, check_entry
from .bench_protocol import Protocol, load_protocol, verify_items
from .config import JobConfig, RunConfig
from .context import JobContext
from .registry import Cell
from .runner import locked_folder, on_lead, run_cells

log = logging.getLogger(__name__)

FINGERPRINT = "bench.json"
RESULTS = "results.jsonl"


@dataclasses.dataclass
class BenchRequest:
    """What `robustmm bench` was asked: the model, its defense, the protocol and where to write."""

    model: str
    out: str
    defense: str | None = None  # "NAME,key=value,..."
    protocol: str = "mm-v1"
    work: str | None = None  # the resumable work folder (default: OUT minus .json, plus .work)
    resume: bool = False
    overwrite: bool = False
    seed: int | None = None  # default: the protocol's
    device: str = "cpu"
    progress: bool = True
    command: str = ""


def parse_defense(spec: str | None) -> tuple[str | None, dict[str, Any]]:
    """``"jpeg,quality=75"`` as ``("jpeg", {"quality": 75})`` (values as JSON, else strings)."""
    if spec is None or not spec.strip():
        return None, {}
    name, *pairs = [p.strip() for p in spec.split(",")]
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise RobustMMError(f"--defense {spec!r}: {pair!r} is not KEY=VALUE (write NAME,key=value,...)")
        try:
            settings[key.strip()] = json.loads(value)
        except ValueError:
            settings[key.strip()] = value
    return name, settings


def work_folder(req: BenchRequest) -> Path:
    """Where the bench keeps its records: ``--work``, else the entry's path with ``.work`` for ``.json``."""
    if req.work:
        return Path(req.work)
    out = Path(req.out)
    return out.with_name((out.name[:-5] if out.name.endswith(".json") else out.name) + ".work")


class BenchContext(JobContext):
    """A :class:`JobContext` whose model is the (possibly defended) encoder built by the bench."""

    def __init__(self, config: JobConfig, build: Any, **kw: Any):
        super().__init__(config, **kw)
        self._build = build
        self._model: Any = None
        self.training_info: Any = None

    def encoder(self, name: str | None = None) -> Any:
        """The bench's model (built once by ``build``) for no name, else a registered encoder."""
        if name is not None and name != self.model_name:
            return super().encoder(name)
        if self._model is None:
            self._model = self._build()
        return self._model


def build_model(req: BenchRequest, protocol: Protocol, device: str) -> tuple[Any, Any, dict[str, Any] | None]:
    """(bare encoder, model to benchmark, defense block) for the request.

    A trained defense is trained on the protocol dataset's ``train`` split (``train_n`` items,
    default 200, a bench setting taken out of the defense's settings)."""
    from ..data.registry import load_dataset
    from ..defenses.registry import defend, defense_family
    from ..encoders.registry import load_encoder

    bare = load_encoder(req.model, device=device)
    name, settings = parse_defense(req.defense)
    if name is None:
        return bare, bare, None
    family = defense_family(name)
    block: dict[str, Any] = {"name": name, "kind": family.kind, "settings": dict(settings)}
    data = None
    if family.trained:
        train_n = int(settings.pop("train_n", 200))
        first = protocol.modality(protocol.modalities[0])
        data = load_dataset(first["dataset"], split="train", n=train_n)
        block["trained_on"] = {"dataset": first["dataset"], "split": "train", "n": train_n}
    model = defend(bare, name, data=data, **settings)
    info = getattr(model, "training_info", None)
    if info is not None:
        block["training_info"] = json.loads(json.dumps(info, default=str))
    return bare, model, block


def covers(model: Any, modality: str, x: torch.Tensor) -> bool:
    """Whether ``model`` accepts ``modality`` (an image-only input transform refuses audio)."""
    try:
        with torch.no_grad():
            model.encode(modality, x[:1])
    except RobustMMError:
        return False
    return True


def ensemble_parts(protocol: Protocol, model: Any, modality: str, eps: float, seed: int) -> dict[str, Any]:
    """The protocol's ensemble at ``eps`` for ``modality``: the standard version's parts with its
    steps, targets and queries, made adaptive against a non-differentiable or randomized defense."""
    from ..attacks import build_attack

    ens_cfg = protocol.data["ensemble"]
    ens = build_attack("ensemble", attacks=list(ens_cfg["attacks"]), version="standard", eps=eps,
                       steps=int(ens_cfg["steps"]), seed=seed, early_stop=True).resolve(modality)
    out = {}
    for label, part in ens.parts:
        if label == "apgd-t":
            part = part.replace(n_target_classes=int(ens_cfg["targets"]))
        if label == "square" and "n_queries" in ens_cfg:
            part = part.replace(n_queries=int(ens_cfg["n_queries"]))
        out[label] = adaptive(model, part.resolve(modality), protocol)
    return out


def adaptive(model: Any, attack: Any, protocol: Protocol) -> Any:
    """``attack`` made adaptive (BPDA and/or EOT) when ``model`` declares steps that need it."""
    from ..encoders.straight_through import declared
    from .cells.input_defenses import adaptive_for

    if declared(model, "bpda_steps") or getattr(model, "randomized", False):
        return adaptive_for(model, attack, eot_samples=int(protocol.data["ensemble"].get("eot_samples", 4)))
    return attack


def run_worst(ctx: BenchContext, protocol: Protocol, modality: str) -> list[Result]:
    """The ``bench-worst-curve`` cell of ``modality``: clean and worst-case robust accuracy per eps."""
    from ..attacks import build_attack
    from ..evaluation import robustness_curve
    from ..evaluation.worst_curve import SweepRecorder, nested_examples, worst_case_curve

    data = ctx.bench_data(modality)
    model = ctx.encoder() if ctx.defended[modality] else ctx.bare
    grid = protocol.eps_grid(modality)
    steps = int(protocol.data["ensemble"]["pgd_steps"])
    rec = SweepRecorder(adaptive(model, build_attack("pgd", steps=steps, seed=ctx.seed), protocol))
    robustness_curve(model, data, modality=modality, attack=rec, eps_grid=grid, **ctx.kw())
    pgd_x = nested_examples(rec.store, grid, data.get(modality, torch.arange(len(data))))
    out = worst_case_curve(model, data, modality=modality, pgd_examples=pgd_x, pgd_label=f"pgd-{steps}", grid=grid,
                           attacks=lambda eps: ensemble_parts(protocol, model, modality, eps, ctx.seed), **ctx.kw())
    for r in out:
        r.extra["bench"] = {"what": "worst-curve", "defended": ctx.defended[modality]}
    return out


def run_certified(ctx: BenchContext, protocol: Protocol, modality: str) -> list[Result]:
    """The ``bench-certified`` cell: certified accuracy of the smoothing defense at the protocol's radii."""
    from ..api import certify

    cfg = protocol.data["certification"]
    data = ctx.bench_data(modality)
    r = certify(ctx.encoder(), data, modality=modality, n=min(int(cfg["n_items"]), len(data)), n0=int(cfg["n0"]),
                draws=int(cfg["draws"]), alpha=float(cfg["alpha"]), radii=protocol.modality(modality)["certification_radii"],
                retrieval=False, seed=ctx.seed, progress=ctx.progress, batch_size=int(cfg.get("batch_size", 32)))
    assert isinstance(r, Result)
    r.extra["bench"] = {"what": "certified", "defended": True}
    return [r]


def is_smoothing(model: Any) -> bool:
    """Whether ``model`` is a randomized-smoothing defense (it certifies)."""
    from ..encoders.smoothed import SmoothedEncoder

    return isinstance(model, SmoothedEncoder)


def bench_cells(ctx: BenchContext, protocol: Protocol) -> list[tuple[str, Cell]]:
    """Every cell of the bench, modality by modality (certification only for a smoothing defense)."""
    plan = [("bench", Cell(ctx.key(m, "bench-worst-curve"), lambda m=m: run_worst(ctx, protocol, m)))
            for m in protocol.modalities]
    if protocol.data["certification"].get("enabled", True) and ctx.smoothing:
        plan += [("bench", Cell(ctx.key(m, "bench-certified"), lambda m=m: run_certified(ctx, protocol, m)))
                 for m in protocol.modalities if ctx.defended[m]]
    return plan


def fingerprint(req: BenchRequest, protocol: Protocol, seed: int) -> dict[str, Any]:
    """What makes two bench runs the same job: model, defense, protocol hash and seed."""
    name, settings = parse_defense(req.defense)
    return {"model": req.model, "defense": None if name is None else {"name": name, "settings": settings},
            "protocol": protocol.describe(), "seed": seed}


def start_folder(work: Path, req: BenchRequest, fp: dict[str, Any]) -> list[str]:
    """Rank 0: refuse to clobber, clear (``--overwrite``) or list the finished cells (``--resume``)."""
    results = work / RESULTS
    stored = work / FINGERPRINT
    if results.exists() and not (req.resume or req.overwrite):
        raise RobustMMError(f"{results} exists: pass --resume to continue that bench or --overwrite to start again")
    if req.overwrite and results.exists():
        results.unlink()
    if req.resume and results.exists() and stored.exists():
        try:
            old = json.loads(stored.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise RobustMMError(f"{stored}: cannot read the bench this folder was started with ({e})") from None
        if differ := sorted(k for k in set(old) | set(fp) if old.get(k) != fp.get(k)):
            raise RobustMMError(f"--resume: {work} was started with another bench (differs in {', '.join(differ)}): "
                                "pass --overwrite to start again or choose another --work")
    atomic_write_text(stored, json.dumps(fp, indent=2) + "\n")
    return sorted({str(d.get("extra", {}).get("cell")) for d in read_jsonl(results)})


def run_bench(req: BenchRequest) -> dict[str, Any]:
    """Run ``req`` and write its entry (rank 0); returns the entry on every rank.

    Checks first (before any model loads): the protocol, the entry path, the work folder (locked
    for the run), the data against the protocol's item hashes."""
    if req.resume and req.overwrite:
        raise RobustMMError("--resume and --overwrite contradict each other: pick one")
    parse_defense(req.defense)
    protocol = load_protocol(req.protocol)
    seed = int(protocol.data["seed"] if req.seed is None else req.seed)
    work = work_folder(req)
    def checked() -> Path:
        folder = check_writable_dir(work, "bench work folder")
        check_writable_dir(Path(req.out).parent if str(Path(req.out).parent) else Path("."), "entry folder")
        return folder

    with locked_folder(checked, prefix="robustmm-bench") as (folder, scratch):
        return _bench_locked(req, protocol, seed, folder, scratch)


def _context(req: BenchRequest, protocol: Protocol, seed: int, out_dir: Path) -> BenchContext:
    first = protocol.modality(protocol.modalities[0])
    n = protocol.n_items()
    run = RunConfig(model=req.model, dataset=first["dataset"], split=first["split"], n=n, attack_n=n,
                    modalities=protocol.modalities, batch_size=int(protocol.data["batch_size"]), seed=seed)
    holder: dict[str, Any] = {}

    def build() -> Any:
        bare, model, block = build_model(req, protocol, req.device)
        holder.update(bare=bare, block=block)
        return model

    ctx = BenchContext(JobConfig(run=run, source=f"protocol {protocol.name}"), build, device=req.device,
                       progress=req.progress and dist.rank() == 0, out_dir=out_dir)
    model = ctx.encoder()
    ctx.bare, ctx.defense_block = holder["bare"], holder["block"]  # type: ignore[attr-defined]
    ctx.smoothing = is_smoothing(model)  # type: ignore[attr-defined]
    data = ctx.test
    verify_items(protocol, data)
    ctx.defended = {m: holder["block"] is not None and covers(model, m, data.get(m, torch.arange(1)))  # type: ignore[attr-defined]
                    for m in protocol.modalities}
    ctx.bench_data = lambda m: data.subset(protocol.item_ids(m))  # type: ignore[attr-defined]
    return ctx


def _bench_locked(req: BenchRequest, protocol: Protocol, seed: int, folder: Path, scratch: Path | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    fp = fingerprint(req, protocol, seed)
    done = set(on_lead(lambda: start_folder(folder, req, fp)))
    ctx = _context(req, protocol, seed, folder if scratch is None else scratch)
    plan = bench_cells(ctx, protocol)
    todo = [(k, c) for k, c in plan if c.key not in done]
    log.info("bench: %d cells, %d already done, %d to run", len(plan), len(plan) - len(todo), len(todo))
    results_path = folder / RESULTS

    run_cells(todo, ctx, results_path, label="robustmm bench")
    keys = {c.key for _, c in plan}

    def finish() -> dict[str, Any]:
        results = [r for r in load_results([results_path]) if r.extra.get("cell") in keys]
        entry = build_entry(req=req, protocol=protocol, seed=seed, bare=ctx.bare, model=ctx.encoder(),  # type: ignore[attr-defined]
                            defense=ctx.defense_block, defended=ctx.defended, results=results,  # type: ignore[attr-defined]
                            wall_s=time.perf_counter() - t0)
        check_entry(entry, req.out)
        atomic_write_text(req.out, json.dumps(entry, indent=1) + "\n")
        return entry

    return on_lead(finish)
