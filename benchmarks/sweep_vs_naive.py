"""Nested robustness curve vs the naive one-evaluate-per-eps sweep: time and robust accuracy.

:func:`robustmm.evaluation.robustness_curve` attacks, at each budget (ascending), only the
items still robust at the previous one; :func:`~robustmm.evaluation.naive_curve` runs one full
:func:`robustmm.evaluate` per budget. Same encoder, data, attack (PGD, per-item seeded random
start) and grid; reported: both wall times, ``time_ratio`` = nested / naive (target <= 0.5), the
per-eps robust accuracy of both and whether they are identical, and how many items each attacks.

The robust accuracies need not be identical: an item the naive sweep breaks at a small eps but not
at a larger one (PGD is not monotone in eps) counts as broken in the nested curve, so nested
robust accuracy is <= naive at every eps -- the nested number is the tighter (more correct) one.

Both sweeps run after a warm-up (a clean evaluation of the same items, which also fills the text
tower's caption/prompt cache both sweeps then share); ``--order`` picks which runs first.

    python benchmarks/sweep_vs_naive.py                    # TinyBind image, n=200, default grid
    python benchmarks/sweep_vs_naive.py --modality audio --n 500
"""
from __future__ import annotations

import argparse
import logging
from typing import Any

from _common import add_common, execute, machine_info, rounded, timed

log = logging.getLogger("benchmark.sweep")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import robustmm
    from robustmm.attacks.pgd import PGD
    from robustmm.evaluation import naive_curve, robustness_curve
    from robustmm.modalities import get_modality

    spec = get_modality(args.modality)
    grid = list(spec.eps_grid if args.eps_grid is None else args.eps_grid)
    if args.quick:
        grid = sorted(grid)[:3]
    enc = robustmm.load_encoder(args.model, device=args.device)
    data = robustmm.load_dataset("synthscenes", split="test", n=args.n, modalities=(args.modality,))
    attack = PGD(steps=args.steps, seed=args.seed)
    kw = dict(modality=args.modality, attack=attack, eps_grid=grid, batch_size=args.batch_size, seed=args.seed,
              progress=False)

    t_warm, _ = timed(lambda: robustmm.evaluate(enc, data, modality=args.modality, batch_size=args.batch_size,
                                                progress=False), args.device)
    fns = {"nested": lambda: robustness_curve(enc, data, **kw), "naive": lambda: naive_curve(enc, data, **kw)}
    order = ["nested", "naive"] if args.order == "nested-first" else ["naive", "nested"]
    times, curves = {}, {}
    for name in order:
        times[name], curves[name] = timed(fns[name], args.device)
        log.info("%s sweep: %.1fs", name, times[name])

    def acc(r: Any) -> float:
        part = r.metrics["attacked"]
        return part["zeroshot_top1"] if "zeroshot_top1" in part else part["x2t_R@1"]

    nested = [acc(r) for r in curves["nested"]]
    naive = [acc(r) for r in curves["naive"]]
    eps_sorted = [r.attack["eps"] for r in curves["nested"]]
    ratio = times["nested"] / times["naive"]
    return {
        "benchmark": "sweep_vs_naive",
        "config": {"model": args.model, "modality": args.modality, "n": len(data), "steps": args.steps,
                   "batch_size": args.batch_size, "eps_grid": eps_sorted, "eps_unit": spec.eps_unit,
                   "attack": attack.describe(), "order": order, "quick": args.quick},
        "machine": machine_info(args.device),
        "warmup_clean_eval_s": round(t_warm, 3),
        "nested_s": round(times["nested"], 3),
        "naive_s": round(times["naive"], 3),
        "time_ratio": rounded(ratio),
        "target": {"time_ratio_max": 0.5},
        "meets_target": ratio <= 0.5,
        "criterion": curves["nested"][0].extra.get("criterion"),
        "robust": {"nested": [rounded(v) for v in nested], "naive": [rounded(v) for v in naive]},
        "identical": nested == naive,
        "max_abs_diff": rounded(max(abs(a - b) for a, b in zip(nested, naive))),
        "nested_le_naive": all(a <= b for a, b in zip(nested, naive)),
        "items_attacked": {"nested": [r.extra["n_attacked"] for r in curves["nested"]],
                           "naive": [r.extra["n_attacked"] for r in curves["naive"]]},
        # the records' own cost: passes per item of the dataset, each eps point's own (they sum to the sweep's)
        "passes_per_item": {name: {"forward": rounded(sum(r.cost["forward"] for r in curves[name]), 3),
                                   "backward": rounded(sum(r.cost["backward"] for r in curves[name]), 3)}
                            for name in ("nested", "naive")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tinybind")
    ap.add_argument("--modality", default="image")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--eps-grid", type=float, nargs="*", default=None, help="default: the modality's eps grid")
    ap.add_argument("--order", choices=["nested-first", "naive-first"], default="nested-first")
    add_common(ap)
    args = ap.parse_args()
    if args.quick:
        args.n, args.steps, args.batch_size = min(args.n, 8), min(args.steps, 1), min(args.batch_size, 8)
    execute(args, run)


if __name__ == "__main__":
    main()
