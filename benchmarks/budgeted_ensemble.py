"""The budgeted ensemble against the standard one: robust accuracy and model passes, side by side.

For every modality at the smallest and the middle eps of its grid, both ensembles attack the same
SynthScenes test items of the TinyBind encoder (zero-shot top-1), through :func:`robustmm.evaluate`,
which records each attack's passes per item (:mod:`robustmm.cost`). One JSON object: per
(modality, eps) the robust top-1 of each, their difference in points, forward and backward passes
per item of each, the ratio of total passes (budgeted / standard), and whether the targets hold
(robust top-1 at most 0.5 points from the standard ensemble's and never more than that above it;
at most 1/5 of its passes).

    python benchmarks/budgeted_ensemble.py --threads 1 --n 100 --cache /tmp/budget_cache.json > budgeted.json
    python benchmarks/budgeted_ensemble.py --quick

``--cache FILE`` keeps every finished (modality, eps, ensemble) cell, so an interrupted run resumes
and ``--only standard`` / ``--only budget`` can run the two sides at different times.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import add_common, execute, machine_info

import robustmm
from robustmm.modalities import get_modality

MODALITIES = ("image", "video", "audio", "depth", "thermal", "pointcloud")
#: what "within" means: robust top-1 at most this many points from the standard ensemble's
POINTS = 0.5
#: the pass budget target (budgeted / standard)
RATIO = 0.2


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def _attack(kind: str, eps: float, args: argparse.Namespace) -> robustmm.Attack:
    if kind == "standard":
        kw: dict[str, Any] = {"version": "standard"}
        if args.quick:
            kw.update(steps=2, n_queries=10)
        return robustmm.build_attack("ensemble", eps=eps, seed=args.seed, **kw)
    kw = {"steps": 2, "target_steps": 2, "n_queries": 10} if args.quick else {}
    return robustmm.build_attack("ensemble-budget", eps=eps, seed=args.seed, **kw)


def _cell(enc: Any, data: Any, modality: str, eps: float, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = robustmm.evaluate(enc, data, modality=modality, attack=_attack(kind, eps, args), n=args.n,
                            batch_size=args.batch_size, seed=args.seed, progress=False)
    cost = res.cost or {}
    return {"robust_top1": res.attacked("zeroshot_top1"), "clean_top1": res.clean("zeroshot_top1"),
            "forward": cost.get("forward"), "backward": cost.get("backward"),
            "passes": (cost.get("forward") or 0) + (cost.get("backward") or 0),
            "ran": (res.attack or {}).get("ran"), "wall_s": round(time.perf_counter() - t0, 2)}


def _verdict(std: dict[str, Any], bud: dict[str, Any]) -> dict[str, Any]:
    gap = 100 * (bud["robust_top1"] - std["robust_top1"])
    ratio = bud["passes"] / std["passes"] if std["passes"] else None
    return {"points_above_standard": round(gap, 2), "pass_ratio": None if ratio is None else round(ratio, 4),
            "accuracy_ok": abs(gap) <= POINTS or gap < 0, "within_points": abs(gap) <= POINTS,
            "passes_ok": ratio is not None and ratio <= RATIO}


def _load(path: str | None) -> dict[str, Any]:
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}


def _save(path: str | None, cache: dict[str, Any]) -> None:
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(cache, f, indent=1)
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        args.n, args.modalities = 4, "image,audio"
    enc = robustmm.load_encoder("tinybind")
    data = robustmm.load_dataset("synthscenes", split="test", n=args.n)
    cache = _load(args.cache)
    kinds = ("standard", "budget") if args.only is None else (args.only,)
    rows = []
    for modality in args.modalities.split(","):
        grid = get_modality(modality).eps_grid
        for eps in (grid[0], grid[len(grid) // 2]):
            for kind in kinds:
                key = f"{modality}|{eps:.6g}|{kind}|{args.n}|{args.seed}"
                if key not in cache:
                    cache[key] = _cell(enc, data, modality, eps, kind, args)
                    _save(args.cache, cache)
                    print(f"{key}: {cache[key]}", file=sys.stderr)
            std = cache.get(f"{modality}|{eps:.6g}|standard|{args.n}|{args.seed}")
            bud = cache.get(f"{modality}|{eps:.6g}|budget|{args.n}|{args.seed}")
            row: dict[str, Any] = {"modality": modality, "eps": round(eps, 6), "standard": std, "budget": bud}
            if std and bud:
                row |= _verdict(std, bud)
            rows.append(row)
    done = [r for r in rows if "pass_ratio" in r]
    return {
        "benchmark": "budgeted_ensemble",
        "command": "python benchmarks/budgeted_ensemble.py " + " ".join(sys.argv[1:]),
        "commit": _commit(),
        "machine": machine_info(args.device),
        "n": args.n, "seed": args.seed, "targets": {"points": POINTS, "pass_ratio": RATIO},
        "rows": rows,
        "all_accuracy_ok": bool(done) and all(r["accuracy_ok"] for r in done) and len(done) == len(rows),
        "all_passes_ok": bool(done) and all(r["passes_ok"] for r in done) and len(done) == len(rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(ap)
    ap.add_argument("--n", type=int, default=100, help="test items per modality")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--modalities", default=",".join(MODALITIES))
    ap.add_argument("--only", choices=("standard", "budget"), default=None, help="run one side only")
    ap.add_argument("--cache", default=None, help="JSON file keeping finished cells (resume)")
    execute(ap.parse_args(), run)


if __name__ == "__main__":
    main()
