"""Calibration head on cached adversarial embeddings vs FARE fine-tuning: training time and robustness.

Same encoder, same training items, same budget:

* **head** -- :func:`robustmm.defenses.calibrate` with its defaults: one PGD pass over the training
  set on the frozen encoder (the cache), then ``--epochs`` of head training on cached embeddings.
  Timed end to end (the adversarial pass included).
* **FARE** -- :func:`robustmm.defenses.fare_finetune`: the modality tower fine-tuned so that its
  embedding of a PGD example (made against the tower being tuned, pushing away from the *frozen
  original's* clean embedding) matches the frozen tower's clean embedding; a PGD run per training
  step. Its budget (``--fare-epochs 4``, ``--fare-lr``) was chosen on val by
  ``experiments/select_fare.py``. Timed end to end.

Both are then scored on a test split with the same PGD (zero-shot CE loss, ``--test-steps``, a
converged attack) at the same eps: the bare encoder (white-box, the number to beat), the head under
the head-unaware threat (examples made on the bare encoder), the adaptive threat (the attacker
differentiates through the head) and their per-item worst case (the head's robust score), and the
FARE-tuned encoder white-box (its attacker sees the tuned weights, i.e. adaptive). Evaluation time
is reported separately and is not part of either training time.

    python benchmarks/calibration_vs_fare.py                    # TinyBind image, 1000 train / 300 test
    python benchmarks/calibration_vs_fare.py --modality audio --fare-epochs 2
"""
from __future__ import annotations

import argparse
import logging
from typing import Any

from _common import add_common, execute, machine_info, rounded, timed

log = logging.getLogger("benchmark.calibration")


def _top1(r: Any, part: str) -> float | None:
    block = r.metrics.get(part) or {}
    return rounded(block.get("zeroshot_top1"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    import robustmm
    from robustmm.attacks import build_attack
    from robustmm.defenses import calibrate, fare_finetune
    from robustmm.evaluation.threats import evaluate_threats
    from robustmm.modalities import get_modality

    spec = get_modality(args.modality)
    eps = spec.middle_eps if args.eps is None else args.eps
    enc = robustmm.load_encoder(args.model, device=args.device)
    mods = (args.modality,)
    train = robustmm.load_dataset("synthscenes", split="train", n=args.n_train, modalities=mods)
    test = robustmm.load_dataset("synthscenes", split="test", n=args.n_test, modalities=mods)
    # warm-up: kernels and the text tower's caption/prompt cache, so neither method pays for it
    robustmm.evaluate(enc, train.head(min(args.n_train, 64)), modality=args.modality, progress=False)
    with_grad_warmup = build_attack("pgd", eps=eps, steps=1)
    robustmm.evaluate(enc, train.head(min(args.n_train, 8)), modality=args.modality, attack=with_grad_warmup, progress=False)
    enc.encode_text([c for caps in train.captions for c in caps])

    head_attack = build_attack("pgd", eps=eps, steps=args.steps, loss="ce")
    head_s, cal = timed(lambda: calibrate(enc, train, modality=args.modality, objective=args.objective,
                                          attack=head_attack, epochs=args.epochs, seed=args.seed, progress=False),
                        args.device)
    log.info("head: %.1fs (attack %.1fs, train %.1fs)", head_s, cal.meta["attack_s"], cal.meta["train_s"])
    fare_s, tuned = timed(lambda: fare_finetune(enc, train, modality=args.modality, eps=eps, steps=args.steps,
                                                epochs=args.fare_epochs, lr=args.fare_lr,
                                                batch_size=args.fare_batch_size, seed=args.seed,
                                                progress=False), args.device)
    report = tuned.training_info
    log.info("FARE: %.1fs (%d steps)", fare_s, report["steps"])

    test_attack = build_attack("pgd", eps=eps, steps=args.test_steps, loss="ce").resolve(args.modality)
    threats = ("white-box", "head-unaware", "adaptive", "worst-case")
    eval_s, (bare, unaware, adaptive, worst) = timed(
        lambda: evaluate_threats(enc, cal, test, modality=args.modality, attack=test_attack, threats=threats,
                                 progress=False), args.device)
    fare_eval_s, fare_res = timed(
        lambda: robustmm.evaluate(tuned, test, modality=args.modality, attack=test_attack, progress=False), args.device)

    return {
        "benchmark": "calibration_vs_fare",
        "config": {"model": args.model, "modality": args.modality, "n_train": len(train), "n_test": len(test),
                   "eps": eps, "eps_unit": spec.eps_unit, "steps": args.steps, "test_steps": args.test_steps,
                   "objective": args.objective, "fare_inner": report["attack"], "fare_batch_size": args.fare_batch_size,
                   "head_epochs": args.epochs, "fare_epochs": args.fare_epochs, "fare_lr": args.fare_lr,
                   "test_attack": test_attack.describe(), "quick": args.quick},
        "machine": machine_info(args.device),
        "train_s": {"head_total": round(head_s, 2), "head_attack_pass": cal.meta["attack_s"],
                    "head_training": cal.meta["train_s"], "fare_total": round(fare_s, 2)},
        "speedup_head_vs_fare": rounded(fare_s / head_s, 2),
        "trainable_params": {"head": cal.meta["trainable_params"], "fare": report["trainable_params"]},
        "fare_steps": report["steps"],
        "clean_top1": {"bare": _top1(bare, "clean"), "head": _top1(unaware, "clean"), "fare": _top1(fare_res, "clean")},
        "robust_top1": {"bare_white_box": _top1(bare, "attacked"), "head_unaware": _top1(unaware, "attacked"),
                        "head_adaptive": _top1(adaptive, "attacked"), "head_worst_case": _top1(worst, "attacked"),
                        "fare_white_box": _top1(fare_res, "attacked")},
        "eval_s": {"threats": round(eval_s, 2), "fare": round(fare_eval_s, 2)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tinybind")
    ap.add_argument("--modality", default="image")
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--eps", type=float, default=None, help="default: the modality's middle eps")
    ap.add_argument("--steps", type=int, default=10, help="PGD steps of the training examples (head and FARE)")
    ap.add_argument("--test-steps", type=int, default=50, help="PGD steps of the test attack")
    ap.add_argument("--objective", default="ce")
    ap.add_argument("--epochs", type=int, default=60, help="head training epochs over the cache")
    ap.add_argument("--fare-epochs", type=int, default=4)
    ap.add_argument("--fare-lr", type=float, default=3e-4,
                    help="chosen on val by experiments/select_fare.py (the library default)")
    ap.add_argument("--fare-batch-size", type=int, default=32)
    add_common(ap)
    args = ap.parse_args()
    if args.quick:
        args.n_train, args.n_test = min(args.n_train, 16), min(args.n_test, 8)
        args.steps, args.epochs, args.fare_epochs = min(args.steps, 1), min(args.epochs, 2), 1
        args.test_steps = min(args.test_steps, 1)
    execute(args, run)


if __name__ == "__main__":
    main()
