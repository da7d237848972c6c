"""The library side of `robustmm calibrate`, `report` and `check-attack`: each checks its inputs
and its output path before any model is loaded, then does its work (the CLI only parses and prints)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..errors import RobustMMError
from ..outdir import check_writable_dir, check_writable_file
from ..persist import atomic_write_text
from ..records import Result
from . import arg_checks as checks

log = logging.getLogger(__name__)


def list_rows(what: str) -> dict[str, str]:
    """Name -> one-line description of the registered ``what`` (models, attacks, datasets,
    modalities, defenses = every defense family, cells = job cell kinds), for `robustmm list`."""
    from .. import list_attacks, list_datasets, list_encoders
    from ..defenses import list_defenses
    from ..modalities import MODALITIES
    from .registry import list_cell_kinds

    if what == "modalities":
        return {m: f"{s.description} domain {s.domain}, {s.norm}, eps grid "
                   + ", ".join(s.format_eps(e) for e in s.eps_grid) + f" ({s.eps_unit})" for m, s in MODALITIES.items()}
    listers = {"models": list_encoders, "attacks": list_attacks, "datasets": list_datasets, "defenses": list_defenses,
               "cells": list_cell_kinds}
    if what not in listers:
        raise RobustMMError(f"cannot list {what!r}; one of: {', '.join([*listers, 'modalities'])}")
    return dict(listers[what]())


def calibrate_command(*, model: str, data: str, split: str, root: str | None, n: int, modality: str, objective: str,
                      eps: float | str | None, steps: int | None, epochs: int, adaptive_every: int | None, clean_only: bool,
                      out: str, seed: int = 0, device: str = "cpu", progress: bool = True) -> Any:
    """Train calibration heads for one modality and save them to ``out`` (``steps`` None = 10 PGD
    steps); returns the Calibration. Every argument is checked before any model or data loads."""
    from ..data import load_dataset
    from ..defenses.calibrate import calibrate, default_attack
    from ..defenses.objectives import parse_objective
    from ..encoders import load_encoder
    from ..encoders.heads import heads_paths

    checks.check_input_modality(modality)
    for flag, value in (("--n", n), ("--epochs", epochs), ("--adaptive-every", adaptive_every)):
        checks.check_count(value, flag)
    checks.check_seed(seed)
    eps = (checks.check_budgets(eps, modality=modality) or [None])[0]
    steps = 10 if steps is None else steps
    default_attack(modality, True, eps=eps, steps=steps)  # the attack's own checks (steps >= 0), without a model
    if clean_only and (adaptive_every or eps is not None):
        raise RobustMMError(f"--clean-only trains on clean data: --{'adaptive-every' if adaptive_every else 'eps'} "
                            "would be ignored (they exclude each other)")
    parse_objective(objective)
    checks.check_out_text(out)
    checks.check_models(model=model)
    checks.check_data(data, root, split, n)
    checks.check_not_an_input(heads_paths(out), checks.input_paths(models=[model], root=root))
    check_writable_file(out, "--out")
    dataset = load_dataset(data, split=split, n=n, root=root)  # data errors before the model loads
    enc = load_encoder(model, device=device)
    attack = default_attack(modality, modality in dataset.tasks, eps=eps, steps=steps).replace(seed=seed)  # --seed: random starts
    cal = calibrate(enc, dataset, modality=modality, objective=objective, attack=attack, epochs=epochs,
                    adaptive_every=adaptive_every, clean_only=clean_only, seed=seed, progress=progress)
    cal.save(out)
    return cal


def report_command(paths: list[str], out: str | Path, latex: str | Path | None = None) -> list[Result]:
    """Read result files (each once, however often it is named) and write summary.csv, plots/,
    report.md, report.html and report.tex into ``out``, which may be neither empty nor hold an input; returns the results.

    ``latex``: a file that also gets report.tex's tables (a paper's ``tables.tex``); ``"-"`` means
    stdout, which the CLI prints from report.tex."""
    from ..records import load_results
    from .runner import REPORT_FILES, write_report

    checks.check_out_text(str(out))
    files: dict[Path, str] = {}
    for f in paths:
        if not Path(f).exists():
            raise RobustMMError(f"result file not found: {f}")
        files.setdefault(Path(f).resolve(), f)
    if len(files) < len(paths):
        log.info("%d result file(s) named more than once: each is read once", len(paths) - len(files))
    outs = [Path(out) / name for name in ("summary.csv", *REPORT_FILES)]
    if latex is not None and str(latex) != "-":
        checks.check_out_text(str(latex), "--latex")
        outs.append(Path(latex))
    checks.check_not_an_input(outs, [Path(f) for f in files.values()])
    check_writable_dir(out)
    if latex is not None and str(latex) != "-":
        check_writable_file(latex, "--latex file")
    paths = list(files.values())
    try:
        results = load_results(paths)
    except (ValueError, KeyError, TypeError) as e:
        raise RobustMMError(f"cannot read results: {e}") from None
    if not results:
        raise RobustMMError("no results in " + ", ".join(paths))
    write_report(results, out)
    if latex is not None and str(latex) != "-":
        atomic_write_text(Path(latex), (Path(out) / "report.tex").read_text(encoding="utf-8"))
    return results


def check_attack_command(*, model: str, data: str, split: str, root: str | None, n: int, modality: str, steps: int,
                         heads: str | None, surrogate: str | None, out: str | None, seed: int = 0,
                         device: str = "cpu", ensemble: str | None = "cheap") -> list[Any]:
    """Gradient-masking sanity checks of PGD on one model (optionally with heads, attacked
    adaptively), then the worst-case ensemble (version ``ensemble``; None skips it) and its checks:
    no weaker than any of its parts, Square not much stronger than APGD. Writes the checks as JSON
    to ``out`` when given; returns them."""
    from ..attacks import build_attack
    from ..data import load_dataset
    from ..encoders import load_encoder
    from ..evaluation.checks import checks_to_dict, sanity_checks

    checks.check_input_modality(modality)
    checks.check_count(n, "--n")
    checks.check_seed(seed)
    build_attack("pgd", steps=steps)  # the attack's own checks (steps >= 0), before any model loads
    if ensemble is not None:
        build_attack("ensemble", version=ensemble)  # an unknown version: "did you mean", before any model loads
    checks.check_out_text(out)
    checks.check_models(model=model, surrogate=surrogate)
    checks.check_data(data, root, split, n)
    checks.check_heads_file(heads, modality)
    if out is not None:
        checks.check_not_an_input([out], checks.input_paths(models=[model, surrogate], heads=heads, root=root))
        check_writable_file(out, "--out")
    dataset = load_dataset(data, split=split, n=n, root=root)  # data errors before the model loads
    enc = load_encoder(model, device=device)
    alt = load_encoder(surrogate, device=device) if surrogate else None
    if heads:
        from ..encoders.heads import load_heads

        loaded, _ = load_heads(heads, enc)
        alt, bare = alt or enc, enc
        enc = enc.with_heads(loaded)
        checks.check_defense_changes(bare, enc, dataset, modality)
    found = sanity_checks(enc, dataset, modality=modality, attack=build_attack("pgd", steps=steps, seed=seed),
                          surrogate=alt, seed=seed)
    if ensemble is not None:
        from ..evaluation import evaluate
        from ..evaluation.checks import check_metric, run_ensemble_checks

        ens = build_attack("ensemble", version=ensemble, seed=seed).resolve(modality)
        res = evaluate(enc, dataset, modality=modality, attack=ens, seed=seed, progress=False)
        score = float(res.metrics["attacked"][check_metric(dataset, modality)])
        more, _ = run_ensemble_checks(enc, dataset, modality=modality, ensemble=ens, ensemble_score=score, seed=seed,
                                      progress=False)
        found += more
    if out is not None:
        atomic_write_text(out, json.dumps(checks_to_dict(found), indent=2) + "\n")
    return found


def certify_command(*, model: str, data: str, split: str, root: str | None, n: int | None, modality: str,
                    sigma: float, heads: str | None, draws: int, n0: int, alpha: float, out: str,
                    radii: list[float] | None = None, smoothadv: int = 0, batch_size: int = 32, seed: int = 0,
                    device: str = "cpu", progress: bool = True) -> Result:
    """Certify one modality of a model by randomized smoothing (optionally behind heads) and write the
    record (``threat="certified"``) to ``out``. ``n`` counts items (as in every command), ``draws``
    the noise draws per item of the estimate, ``n0`` those of the class selection. Every argument,
    the output path and the dataset's zero-shot task are checked before any model is loaded;
    returns the record."""
    import math

    from ..data import load_dataset
    from ..encoders import load_encoder
    from ..encoders.smoothing_stats import check_smoothing_args
    from ..evaluation.certification import certify_dataset, classification_task
    from ..records import append_jsonl, write_json

    checks.check_input_modality(modality)
    checks.check_count(n, "--n")
    checks.check_count(draws, "--draws")
    checks.check_count(n0, "--n0")
    check_smoothing_args(sigma=sigma, n0=n0, n=draws, alpha=alpha)
    checks.check_count(batch_size, "--batch-size")
    checks.check_seed(seed)
    if radii is not None and not radii:
        raise RobustMMError("--radii needs at least one value")
    if any(not math.isfinite(r) or r < 0 for r in radii or []):
        raise RobustMMError(f"--radii must be finite and >= 0, got {radii}")
    if smoothadv < 0:
        raise RobustMMError(f"--smoothadv must be >= 0 items, got {smoothadv}")
    checks.check_heads_file(heads, modality)
    checks.check_out_text(out)
    checks.check_models(model=model)
    checks.check_data(data, root, split, n, "--n")
    checks.check_not_an_input([out], checks.input_paths(models=[model], heads=heads, root=root))
    check_writable_file(out, "--out")
    dataset = load_dataset(data, split=split, n=n, root=root)
    classification_task(dataset, modality)  # a modality without a zero-shot task: one line, before the model loads
    enc = load_encoder(model, device=device)
    loaded = None
    if heads:
        from ..encoders.heads import load_heads

        loaded = load_heads(heads, enc)
        checks.check_defense_changes(enc, enc.with_heads(loaded[0]), dataset, modality)
    attack = {"steps": 10, "m": 8, "n": draws, "alpha": alpha, "n_items": min(smoothadv, len(dataset))} if smoothadv else None
    result = certify_dataset(enc, dataset, modality=modality, sigma=sigma, n0=n0, n=draws, alpha=alpha, heads=loaded,
                             radii=radii, batch_size=batch_size, seed=seed, smoothadv=attack, progress=progress)
    if out.endswith(".jsonl"):  # a record per line, appended under a lock (as `robustmm eval` does)
        append_jsonl(out, [result])
    else:
        write_json(out, result)
    return result
