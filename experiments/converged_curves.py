"""The default job's zero-shot robustness curves measured with converged attacks.

For every modality and every eps of its default grid (the job's ``[pgd]`` curve), on the job's
attacked items (the first ``--n`` = 300 SynthScenes test items) and seed:

* ``pgd-10``: the job's own nested PGD-10 CE curve (``robustness_curve``, batch 250), which the
  README's vulnerability table reports;
* ``apgd-ce``: APGD-CE, ``--apgd-steps`` iterations, every item attacked at this eps;
* ``apgd-t``: APGD on the targeted DLR loss over ``--targets`` classes, every item at this eps;
* ``worst``: per item, robust only if it survives every example above **and** the APGD examples
  made at every smaller eps of the grid (they lie inside this ball too; PGD-10's are nested
  already), scored by :func:`robustmm.evaluation.worst_case.worst_case`, so the curve cannot rise;
* ``worst_this_eps``: the same without the smaller-eps examples.

APGD-CE and APGD-T are the ensemble's parts (``build_attack("ensemble", version="standard",
steps=...)``) with early stopping on: an item leaves at its first breaking iterate, which changes
the returned example but never the verdict. Every record is appended to ``OUT/results.jsonl`` when
its modality finishes (``--resume`` skips finished modalities); the JSON and Markdown tables and
the plot are rewritten from all records at the end.

    python experiments/converged_curves.py --threads 1 --out runs/converged_curves
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

import robustmm
from robustmm.attacks import build_attack
from robustmm.attacks.base import Attack
from robustmm.evaluation import evaluate, robustness_curve
from robustmm.evaluation.worst_case import RecordingAttack, worst_case
from robustmm.evaluation.worst_curve import SweepRecorder, nested_examples
from robustmm.modalities import CONTINUOUS_MODALITIES, get_modality
from robustmm.persist import atomic_write_bytes, atomic_write_text
from robustmm.records import Result, append_jsonl, read_jsonl
from robustmm.report.plots.worst_case import plot_worst_case_curves
from robustmm.report.tables import markdown_table

log = logging.getLogger("converged_curves")

COLUMNS = ("pgd-10", "apgd-ce", "apgd-t", "worst", "worst_this_eps")
ROOT = Path(__file__).resolve().parent.parent


def apgd_parts(modality: str, eps: float, args: argparse.Namespace) -> dict[str, Attack]:
    """APGD-CE and APGD-T at ``eps``, the ensemble's parts (early stopping on), resolved."""
    ens = build_attack("ensemble", attacks=["apgd-ce", "apgd-t"], version="standard", eps=eps,
                       steps=args.apgd_steps, seed=args.seed).resolve(modality)
    return {label: (p.replace(n_target_classes=args.targets) if label == "apgd-t" else p).resolve(modality)
            for label, p in ens.parts}


def tag(r: Result, column: str, eps: float, wall_s: float) -> Result:
    """``r`` with the table column, budget and wall time it belongs to in ``extra``."""
    r.extra.update({"column": column, "eps": eps, "wall_s": round(wall_s, 2)})
    return r


def run_modality(enc: Any, data: Any, modality: str, args: argparse.Namespace) -> list[Result]:
    """Every record of one modality: the nested PGD-10 curve, APGD-CE and APGD-T at each eps, and
    the two per-item worst cases."""
    grid = sorted(get_modality(modality).eps_grid)
    kw = {"batch_size": args.batch_size, "seed": args.seed, "progress": False}
    rec = SweepRecorder(build_attack("pgd", steps=args.pgd_steps))
    curve = robustness_curve(enc, data, modality=modality, attack=rec, **kw)
    pgd_x = nested_examples(rec.store, grid, data.get(modality, torch.arange(len(data))))
    out: list[Result] = []
    earlier: dict[str, torch.Tensor] = {}
    fmt = get_modality(modality).format_eps
    for eps, pgd_r in zip(grid, curve):
        results, examples = {"pgd-10": tag(pgd_r, "pgd-10", eps, pgd_r.timing_s)}, {"pgd-10": pgd_x[eps]}
        for label, atk in apgd_parts(modality, eps, args).items():
            recorder = RecordingAttack(atk)
            t0 = time.perf_counter()
            r = evaluate(enc, data, modality=modality, attack=recorder, **kw)
            results[label] = tag(r, label, eps, time.perf_counter() - t0)
            examples[label] = recorder.stacked(len(data))
        here = worst_case(enc, data, modality=modality, examples=examples, results=results, batch_size=args.batch_size)
        worst = worst_case(enc, data, modality=modality, examples=examples | earlier, results=results,
                           batch_size=args.batch_size)
        for r, names in ((worst, [*examples, *earlier]), (here, list(examples))):
            r.attack = {"name": "worst-case", "eps": eps, "norm": pgd_r.attack.get("norm"), "of": names}
        earlier |= {f"{k}@{fmt(eps)}": v for k, v in examples.items() if k != "pgd-10"}
        out += [*results.values(), tag(worst, "worst", eps, 0.0), tag(here, "worst_this_eps", eps, 0.0)]
        log.info("%s %s: %s", modality, fmt(eps), {k: round(top1(r), 3) for k, r in
                                                    (*results.items(), ("worst", worst), ("this eps", here))})
    return out


def top1(r: Result, part: str = "attacked") -> float:
    return float(r.metrics[part]["zeroshot_top1"])


def table_rows(records: list[Result]) -> list[dict[str, Any]]:
    """One row per (modality, eps), modalities in the standard order, from tagged records."""
    cells = {(r.modality, r.extra["eps"], r.extra["column"]): r for r in records if "column" in (r.extra or {})}
    rows = []
    for m in [m for m in CONTINUOUS_MODALITIES if any(k[0] == m for k in cells)]:
        spec = get_modality(m)
        for eps in sorted({k[1] for k in cells if k[0] == m}):
            got = {c: cells.get((m, eps, c)) for c in COLUMNS}
            row: dict[str, Any] = {"modality": m, "eps": eps, "eps_label": spec.format_eps(eps), "unit": spec.eps_unit,
                                   "clean": top1(got["pgd-10"], "clean") if got["pgd-10"] else None}
            row |= {c: (top1(r) if r else None) for c, r in got.items()}
            row["seconds"] = {c: r.extra["wall_s"] for c, r in got.items() if r and c in COLUMNS[:3]}
            row["pgd_items_attacked"] = got["pgd-10"].extra.get("n_attacked") if got["pgd-10"] else None
            row["broken_by"] = got["worst"].extra.get("broken_by") if got["worst"] else None
            rows.append(row)
    return rows


def head_commit() -> str:
    """The checkout's HEAD commit (short), or '' outside git: recorded with every measured record."""
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def write_outputs(records: list[Result], args: argparse.Namespace, wall_s: float) -> str:
    """The JSON and Markdown tables and the plot, from every record; returns the Markdown table."""
    rows = table_rows(records)
    md = markdown_table(["modality", "eps", "clean", "pgd-10 (nested)", f"apgd-ce-{args.apgd_steps}",
                         f"apgd-t-{args.apgd_steps}", "worst", "worst, this eps alone"],
                        [[r["modality"], r["eps_label"], r["clean"], *(r[c] for c in COLUMNS)] for r in rows])
    commits = sorted({r.extra.get("commit", "") for r in records if "column" in (r.extra or {})})
    walls = {r.modality: r.extra.get("modality_wall_s") for r in records if "column" in (r.extra or {})}
    meta = {"args": vars(args), "commit": ", ".join(commits), "wall_s_this_invocation": round(wall_s, 1),
            "modality_wall_s": walls, "wall_s": round(sum(v or 0.0 for v in walls.values()), 1),
            "attack_seconds": round(sum(sum(r["seconds"].values()) for r in rows), 1), "rows": rows}
    docs = Path(args.docs)
    atomic_write_text(docs / "results" / "converged_curves.json", json.dumps(meta, indent=1) + "\n")
    atomic_write_text(docs / "results" / "converged_curves.md", md + "\n")
    shown = [r for r in records if (r.extra or {}).get("column") in ("pgd-10", "worst")]
    steps = args.apgd_steps
    for r in shown:
        r.extra["series"] = (f"PGD-{args.pgd_steps} CE, nested (the job's curve)" if r.extra["column"] == "pgd-10" else
                             f"per-item worst case: PGD-{args.pgd_steps}, APGD-CE-{steps}, APGD-T-{steps} "
                             f"({args.targets} targets), smaller-ε APGD examples")
    title = (f"{args.model}, SynthScenes test (first {args.n} items): "
             "zero-shot top-1 vs budget ε\n(budgets evenly spaced on the x-axis; “clean” = no attack on the same items)")
    pngs = [p for p in plot_worst_case_curves(shown, Path(args.out) / "robustness_converged", title=title)
            if p.suffix == ".png"]
    if pngs:
        atomic_write_bytes(docs / "robustness_converged.png", pngs[0].read_bytes())
    return md


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tinybind")
    ap.add_argument("--modalities", nargs="*", default=None, help="default: every continuous modality of the model")
    ap.add_argument("--n", type=int, default=300, help="test items (the job's attack_n)")
    ap.add_argument("--pgd-steps", type=int, default=10, help="the job's [pgd] steps")
    ap.add_argument("--apgd-steps", type=int, default=50, help="APGD-CE / APGD-T iterations")
    ap.add_argument("--targets", type=int, default=3, help="APGD-T's target classes")
    ap.add_argument("--batch-size", type=int, default=250, help="the job's [run] batch_size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default="runs/converged_curves", help="records and the full-size plot (PNG + SVG)")
    ap.add_argument("--docs", default=str(ROOT / "docs"), help="writes results/converged_curves.{json,md} and "
                                                                "robustness_converged.png under it")
    ap.add_argument("--resume", action="store_true", help="skip the modalities already in OUT/results.jsonl")
    args = ap.parse_args(argv)
    for name in ("n", "pgd_steps", "apgd_steps", "targets", "batch_size"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for m in args.modalities or []:
        if get_modality(m).name not in CONTINUOUS_MODALITIES:
            ap.error(f"--modalities: {m} is not a continuous modality ({', '.join(CONTINUOUS_MODALITIES)})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "results.jsonl"
    records = [Result.from_dict(d) for d in read_jsonl(jsonl)] if args.resume else []
    if not args.resume and jsonl.exists():
        jsonl.unlink()
    enc = robustmm.load_encoder(args.model)
    data = robustmm.load_dataset("synthscenes", split="test", n=args.n)
    commit = head_commit()
    done = {r.modality for r in records if (r.extra or {}).get("column") == "worst"}
    for m in args.modalities or [m for m in enc.modalities if m in CONTINUOUS_MODALITIES]:
        if m in done:
            log.info("%s: in %s already; skipped", m, jsonl)
            continue
        t0 = time.perf_counter()
        new = run_modality(enc, data, m, args)
        for r in new:
            r.extra |= {"modality_wall_s": round(time.perf_counter() - t0, 1), "commit": commit}
        append_jsonl(jsonl, new)
        records += new
        log.info("%s done in %.1f s", m, time.perf_counter() - t0)
    print(write_outputs(records, args, time.perf_counter() - t_start))


if __name__ == "__main__":
    main()
