"""Early stopping inside PGD and APGD vs their full-batch runs, per modality at its middle eps
(one JSON object).

With ``early_stop=True`` an item leaves the batch at the first iterate that already fools the
zero-shot classifier (that iterate is kept), so later steps are spent only on the items still
robust, as AutoAttack does. An item's verdict can only get harsher: for PGD it is counted broken
whenever full PGD breaks it at its last iterate, and also when it was broken at an earlier iterate
that full PGD walked away from; APGD already returns a broken iterate whenever it found one, so
its verdicts are the full run's (up to rounding). Both variants run on the same items, batches and
per-item random starts, interleaved per batch in rotating order so machine drift hits both alike.

    python benchmarks/early_stop.py --threads 2 --n 100 --steps 10 --batch-size 100 --repeats 2 \
        > docs/performance/early_stop.json
"""
from __future__ import annotations

import argparse
import statistics
from typing import Any

from _common import add_common, execute, machine_info, rounded, timed

import robustmm
from robustmm.attacks import build_attack
from robustmm.evaluation import iter_batches
from robustmm.metrics import zeroshot_correct
from robustmm.modalities import CONTINUOUS_MODALITIES, get_modality


def compare(enc: Any, data: Any, modality: str, attack: str, args: argparse.Namespace) -> dict[str, Any]:
    """Full vs early-stopped ``attack`` on ``modality``: median time over repeats, robust top-1."""
    prompts = data.tasks[modality].prompts()
    class_emb = enc.class_embeddings(prompts)
    variants = {"full": build_attack(attack, steps=args.steps, seed=args.seed).resolve(modality),
                "early_stop": build_attack(attack, steps=args.steps, seed=args.seed, early_stop=True).resolve(modality)}
    names = list(variants)
    batches = list(iter_batches(data, modality, args.batch_size, prompts))
    for b in batches[:1]:  # warm-up
        for atk in variants.values():
            atk(enc, b)
    totals: dict[str, list[float]] = {k: [] for k in names}
    robust = dict.fromkeys(names, 0)
    for r in range(args.repeats):
        t = dict.fromkeys(names, 0.0)
        for i, b in enumerate(batches):
            k = (r + i) % len(names)
            for name in names[k:] + names[:k]:
                dt, adv = timed(lambda atk=variants[name], b=b: atk(enc, b), args.device)
                t[name] += dt
                if r == 0:
                    emb = enc.encode(modality, adv.x).detach()
                    robust[name] += int(zeroshot_correct(emb, class_emb, b.labels).sum())
        for name in names:
            totals[name].append(t[name])
    med = {k: statistics.median(v) for k, v in totals.items()}
    return {"time_s": {k: rounded(v) for k, v in med.items()},
            "time_ratio_early_over_full": rounded(med["early_stop"] / med["full"]),
            "robust_top1": {k: rounded(v / len(data)) for k, v in robust.items()},
            "harsher_or_equal": robust["early_stop"] <= robust["full"]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    enc = robustmm.load_encoder(args.model, device=args.device)
    data = robustmm.load_dataset("synthscenes", split="test", n=args.n)
    out: dict[str, Any] = {"benchmark": "early_stop", "model": args.model, "n": args.n, "steps": args.steps,
                           "attacks": args.attacks, "batch_size": args.batch_size, "repeats": args.repeats,
                           "modalities": {}, "machine": machine_info(args.device)}
    for modality in args.modalities:
        spec = get_modality(modality)
        row: dict[str, Any] = {"eps": spec.format_eps(spec.middle_eps)}
        for attack in args.attacks:
            row[attack] = compare(enc, data, modality, attack, args)
        out["modalities"][modality] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common(ap)
    ap.add_argument("--model", default="tinybind")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modalities", nargs="+", default=list(CONTINUOUS_MODALITIES))
    ap.add_argument("--attacks", nargs="+", default=["pgd", "apgd"], choices=["pgd", "apgd"])
    args = ap.parse_args()
    if args.quick:
        args.n, args.steps, args.repeats, args.modalities = 16, 2, 1, ["image"]
    execute(args, run)


if __name__ == "__main__":
    main()
