"""The per-modality table: PGD-10, APGD-CE, APGD-T, Square and their worst-case ensemble.

For every continuous modality of the model, at the smallest and the middle eps of its default grid:
robust zero-shot top-1 on SynthScenes ``--split`` under PGD-10 (step eps/4, CE), APGD-CE, APGD-T
(targeted DLR over the top classes), Square (score-based, no gradients) and the ensemble of the
three (each part only on the items still robust), for the bare encoder and for a ``ce`` calibration
head attacked **adaptively** (the attacks differentiate through the head). The head is trained once
per modality at the middle eps (PGD-10 training examples on ``--n-train`` train scenes, the
library's default, val-selected regulariser) and scored at both budgets.

Each row says whether the ensemble is at most the minimum of its parts (it must be: every part is
per-item seeded and deterministic, so the ensemble breaks every item any part breaks). Records are
appended to ``OUT/results.jsonl`` per cell (``--resume`` skips finished cells); ``OUT/table.md``
and ``OUT/table.json`` are rewritten at the end.

    python experiments/adaptive_table.py --out runs/adaptive_table --n 200
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

import robustmm
from robustmm.attacks import build_attack
from robustmm.defenses import calibrate
from robustmm.modalities import CONTINUOUS_MODALITIES, get_modality
from robustmm.persist import atomic_write_text
from robustmm.records import Result, append_jsonl, read_jsonl
from robustmm.report.tables import markdown_table

log = logging.getLogger("adaptive_table")

PARTS = ("apgd-ce", "apgd-t", "square")
COLUMNS = ("pgd-10", *PARTS, "ensemble")


def attacks_for(modality: str, eps: float, args: argparse.Namespace) -> dict[str, object]:
    """The five attacks of one row, at ``eps`` (the ensemble's parts are the same settings as the
    standalone columns, so 'ensemble <= min of parts' is a like-for-like check)."""
    ens = build_attack("ensemble", attacks=list(PARTS), version="standard", eps=eps, steps=args.apgd_steps,
                       n_queries=args.queries, seed=args.seed).resolve(modality)
    parts = {label: p.replace(n_target_classes=args.targets) if label == "apgd-t" else p for label, p in ens.parts}
    ens = ens.replace(attacks=[parts[label] for label in PARTS])
    out = {"pgd-10": build_attack("pgd", eps=eps, steps=10, loss="ce", seed=args.seed)}
    for label in PARTS:
        out[label] = parts[label]
    out["ensemble"] = ens
    return out


def top1(r: Result) -> float:
    return float(r.metrics["attacked"]["zeroshot_top1"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tinybind")
    ap.add_argument("--modalities", nargs="*", default=None)
    ap.add_argument("--n", type=int, default=200, help="test items per cell")
    ap.add_argument("--n-train", type=int, default=1000, help="train scenes of the ce head")
    ap.add_argument("--apgd-steps", type=int, default=50, help="APGD-CE / APGD-T iterations")
    ap.add_argument("--queries", type=int, default=1000, help="Square's query budget")
    ap.add_argument("--targets", type=int, default=9, help="APGD-T's target classes")
    ap.add_argument("--split", default="test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default="runs/adaptive_table")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "results.jsonl"
    done: dict[str, dict] = {}
    if args.resume and jsonl.exists():
        done = {r.extra["cell"]: r.to_dict() for r in read_jsonl(jsonl) if "cell" in r.extra}
    elif jsonl.exists():
        jsonl.unlink()

    enc = robustmm.load_encoder(args.model)
    test = robustmm.load_dataset("synthscenes", split=args.split, n=args.n)
    rows = []
    for m in args.modalities or [m for m in enc.modalities if m in CONTINUOUS_MODALITIES]:
        spec = get_modality(m)
        budgets = sorted({spec.eps_grid[0], spec.middle_eps})
        heads = None
        for model_label in ("bare", "ce head (adaptive)"):
            for eps in budgets:
                row = {"modality": m, "model": model_label, "eps": spec.format_eps(eps)}
                for col, attack in attacks_for(m, eps, args).items():
                    key = f"{m}|{model_label}|{eps:g}|{col}"
                    if key not in done:
                        if model_label != "bare" and heads is None:
                            train = robustmm.load_dataset("synthscenes", split="train", n=args.n_train)
                            t0 = time.perf_counter()
                            heads = calibrate(enc, train, modality=m, objective="ce", seed=args.seed, progress=False,
                                              attack=build_attack("pgd", eps=spec.middle_eps, steps=10)).heads
                            log.info("%s: ce head trained in %.1f s", m, time.perf_counter() - t0)
                        model = enc if model_label == "bare" else enc.with_heads(heads)
                        t0 = time.perf_counter()
                        r = robustmm.evaluate(model, test, modality=m, attack=attack, seed=args.seed, progress=False)
                        r.extra.update({"cell": key, "wall_s": round(time.perf_counter() - t0, 2)})
                        append_jsonl(jsonl, [r])
                        done[key] = r.to_dict()
                        log.info("%s: top-1 %.3f (%.1f s)", key, top1(r), r.extra["wall_s"])
                    rec = done[key]
                    row[col] = float(rec["metrics"]["attacked"]["zeroshot_top1"])
                    row[f"{col}_s"] = rec["extra"]["wall_s"]
                row["clean"] = float(done[f"{m}|{model_label}|{eps:g}|pgd-10"]["metrics"]["clean"]["zeroshot_top1"])
                row["ensemble_le_min_parts"] = row["ensemble"] <= min(row[p] for p in PARTS) + 1e-9
                rows.append(row)
    headers = ["modality", "model", "eps", "clean", *COLUMNS, "ens <= min(parts)", "ensemble s / APGD-CE s"]
    table = markdown_table(headers, [[r["modality"], r["model"], r["eps"], r["clean"], *(r[c] for c in COLUMNS),
                                      "yes" if r["ensemble_le_min_parts"] else "**NO**",
                                      round(r["ensemble_s"] / max(r["apgd-ce_s"], 1e-9), 2)] for r in rows])
    atomic_write_text(out / "table.json", json.dumps({"args": vars(args), "rows": rows}, indent=1) + "\n")
    atomic_write_text(out / "table.md", table + "\n")
    print(table)


if __name__ == "__main__":
    main()
