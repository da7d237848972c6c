"""``robustmm zoo``: every registered defense family on every modality, audited adaptively.

For each (family, modality) pair :func:`robustmm.defenses.audit.audit_defense` builds and scores
the defended encoder; this module runs the pairs, writes the output folder and resumes it:

* ``records.jsonl``: every record (the project's format, checked on write), one line each;
* ``summary.json``: the settings, the command, commit and machine, and one row per pair;
* ``defense_zoo.md`` and ``defense_zoo.png``: the table and the figure (:mod:`robustmm.report.zoo`).

A pair whose audit raises an unexpected error is recorded with ``status="error"`` and its message
(the other pairs go on); ``--resume`` skips the pairs already in ``summary.json`` and retries those
that failed (a folder written with other settings is
refused, naming the differing keys). Everything is checked before the model loads: unknown
families or modalities, a family without an audit recipe, counts, and the output folder.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from ..defenses.audit import AuditConfig, AuditOutcome, audit_defense
from ..defenses.audit_recipes import audit_recipe
from ..defenses.registry import list_defenses
from ..errors import RobustMMError, UnknownNameError
from ..modalities import get_modality
from ..outdir import FolderLock, check_writable_dir
from ..persist import atomic_write_text
from ..records import append_jsonl
from . import arg_checks as checks

log = logging.getLogger(__name__)

SUMMARY_SCHEMA = "robustmm.zoo/1"
#: --quick: items, training items, attack steps, EOT draws, certified items
QUICK = {"n": 16, "n_train": 64, "n_val": 16, "steps": 3, "eot_samples": 2, "cert_n": 8, "cert_draws": 64}
#: the keys that must match for --resume
FINGERPRINT = ("model", "data", "n", "n_train", "n_val", "steps", "eot_samples", "targets", "cert_n", "cert_draws", "seed",
               "quick", "checks")


def pick_names(spec: str, known: list[str], kind: str) -> list[str]:
    """``all`` or a comma-separated list of ``known`` names (unknown: a "did you mean" error)."""
    if spec.strip() == "all":
        return list(known)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise RobustMMError(f"--{kind} is empty: give 'all' or a comma-separated list")
    for name in names:
        if name not in known:
            raise UnknownNameError(kind.rstrip("s"), name, known)
    return list(dict.fromkeys(names))


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10, check=False)
    except OSError:
        return "not recorded"
    return out.stdout.strip() or "not recorded"


def _machine() -> str:
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    return f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores, OMP_NUM_THREADS={threads}, " \
           f"python {platform.python_version()}"


def _load_summary(out: Path, settings: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    path = out / "summary.json"
    if not path.exists():
        return None
    if not resume:
        raise RobustMMError(f"{out} already holds a zoo run (summary.json): pass --resume to continue it, or another --out")
    try:
        old = json.loads(path.read_text())
    except ValueError as e:
        raise RobustMMError(f"{path} is not valid JSON ({e}); move it away to start afresh") from None
    differ = [k for k in FINGERPRINT if old.get("settings", {}).get(k) != settings.get(k)]
    if differ:
        raise RobustMMError(f"--resume: {out} was written with other settings ({', '.join(differ)}); "
                            "use the same ones or another --out")
    return old


def zoo_command(*, model: str = "tinybind", data: str = "synthscenes", defenses: str = "all", modalities: str = "all",
                n: int | None = None, n_train: int | None = None, n_val: int | None = None, steps: int | None = None,
                eot_samples: int | None = None, cert_n: int | None = None, cert_draws: int | None = None,
                targets: int = 3, checks_on: bool = True,
                out: str | Path = "runs/zoo", quick: bool = False, resume: bool = False, seed: int = 0,
                device: str = "cpu", command: str | None = None) -> dict[str, Any]:
    """Audit every chosen (family, modality) pair and write the output folder (see the module
    docstring); returns the summary. ``None`` counts take the defaults (``--quick``: :data:`QUICK`)."""
    families = pick_names(defenses, sorted(list_defenses()), "defenses")
    for f in families:
        audit_recipe(f)  # a family without a recipe: one line, before any work
    mods = pick_names(modalities, ["image", "video", "audio", "depth", "thermal", "pointcloud"], "modalities")
    for m in mods:
        get_modality(m)
    base = QUICK if quick else {"n": 64, "n_train": 256, "n_val": 64, "steps": 10, "eot_samples": 4, "cert_n": 32,
                                "cert_draws": 256}
    given = {"n": n, "n_train": n_train, "n_val": n_val, "steps": steps, "eot_samples": eot_samples, "cert_n": cert_n,
             "cert_draws": cert_draws}
    sizes = {k: base[k] if v is None else v for k, v in given.items()}
    for k, v in [*sizes.items(), ("targets", targets)]:
        checks.check_count(v, "--" + k.replace("_", "-"))
    checks.check_seed(seed)
    checks.check_models(model=model)
    checks.check_data(data, None, "test", sizes["n"])
    checks.check_data(data, None, "train", sizes["n_train"])
    checks.check_data(data, None, "val", sizes["n_val"])
    out = check_writable_dir(out, "--out")
    settings = {"model": model, "data": data, **sizes, "targets": targets, "seed": seed, "quick": quick, "checks": checks_on}
    old = _load_summary(out, settings, resume)
    cfg = AuditConfig(n=sizes["n"], steps=sizes["steps"], eot_samples=sizes["eot_samples"], targets=targets,
                      checks=checks_on, cert_n=sizes["cert_n"], cert_draws=sizes["cert_draws"], seed=seed, quick=quick)
    with FolderLock(out):
        return _run(out, cfg, settings, families, mods, old, device, command)


def _run(out: Path, cfg: AuditConfig, settings: dict[str, Any], families: list[str], mods: list[str],
         old: dict[str, Any] | None, device: str, command: str | None) -> dict[str, Any]:
    from ..data import load_dataset
    from ..encoders import load_encoder

    test = load_dataset(settings["data"], split="test", n=settings["n"])
    train = load_dataset(settings["data"], split="train", n=settings["n_train"])
    val = load_dataset(settings["data"], split="val", n=settings["n_val"])
    enc = load_encoder(settings["model"], device=device)
    summary: dict[str, Any] = old or {"schema": SUMMARY_SCHEMA, "settings": settings, "rows": [], "wall_s": 0.0}
    summary |= {"command": command or "robustmm zoo", "commit": _commit(), "machine": _machine()}
    summary["rows"] = [r for r in summary["rows"] if r.get("status") != "error"]  # --resume retries failed pairs
    done = {(r["defense"], r["modality"]) for r in summary["rows"]}
    todo = [(f, m) for f in families for m in mods if (f, m) not in done and m in enc.modalities]
    log.info("zoo: %d pairs to audit (%d already done)", len(todo), len(done))
    cache: dict[Any, Any] = {}  # the attacks on the bare model, made once per modality and eps
    for f, m in sorted(todo, key=lambda p: mods.index(p[1])):
        t0 = time.perf_counter()
        try:
            outcome = audit_defense(enc, f, m, train=train, val=val, test=test, config=cfg, naive_cache=cache)
        except Exception as e:  # noqa: BLE001 - one broken family must not lose the other pairs' hours
            log.exception("zoo: %s on %s failed", f, m)
            outcome = AuditOutcome([], {"defense": f, "modality": m, "status": "error",
                                        "reason": f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]})
        outcome.row["wall_s"] = round(time.perf_counter() - t0, 1)
        if outcome.results:
            append_jsonl(out / "records.jsonl", outcome.results)
        summary["rows"].append(outcome.row)
        summary["wall_s"] = round(summary.get("wall_s", 0.0) + outcome.row["wall_s"], 1)
        _write(out, summary, figure=False)
        log.warning("zoo: %s on %s: %s in %.0fs", f, m, outcome.row.get("status"), outcome.row["wall_s"])
    _write(out, summary, figure=True)
    return summary


def _write(out: Path, summary: dict[str, Any], *, figure: bool) -> None:
    from ..report.plots.style import save_figure
    from ..report.zoo import plot_zoo, zoo_markdown

    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")
    atomic_write_text(out / "defense_zoo.md", zoo_markdown(summary))
    if figure and any(r.get("status") == "ok" for r in summary["rows"]):
        save_figure(plot_zoo(summary), out / "defense_zoo")
