"""Choose the FARE baseline's learning rate on SynthScenes ``val`` (seed 1), never on test.

For each learning rate of the grid the modality tower is FARE-tuned (:func:`robustmm.defenses.fare_finetune`,
inner PGD-``--train-steps`` towards the frozen original's clean embedding) on SynthScenes train,
then scored on **val** white-box (the attacker sees the tuned weights; zero-shot CE PGD-``--steps``).
The selected rate maximises robust top-1 among those whose clean top-1 stays within
``--clean-floor`` of the bare encoder (first in grid order on ties). The benchmark
``benchmarks/calibration_vs_fare.py`` then measures test once with the selected budget.

    python experiments/select_fare.py --out runs/select_fare.json
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import robustmm
from robustmm.attacks import build_attack
from robustmm.defenses import fare_finetune
from robustmm.evaluation import evaluate
from robustmm.persist import atomic_write_text

log = logging.getLogger("select_fare")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tinybind")
    ap.add_argument("--modality", default="image")
    ap.add_argument("--lrs", nargs="*", type=float, default=[3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3],
                    help="the grid of learning rates")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--n-train", type=int, default=512)
    ap.add_argument("--n-val", type=int, default=100)
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--clean-floor", type=float, default=0.05)
    ap.add_argument("--out", default="runs/select_fare.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    m = args.modality
    enc = robustmm.load_encoder(args.model)
    train = robustmm.load_dataset("synthscenes", split="train", n=args.n_train, modalities=(m,))
    val = robustmm.load_dataset("synthscenes", split="val", n=args.n_val, modalities=(m,))
    attack = build_attack("pgd", steps=args.steps, loss="ce")
    bare = evaluate(enc, val, modality=m, attack=attack, progress=False)
    bare_clean = bare.metrics["clean"]["zeroshot_top1"]
    rows = [{"lr": None, "clean": round(bare_clean, 4), "robust": round(bare.metrics["attacked"]["zeroshot_top1"], 4)}]
    for lr in args.lrs:
        tuned = fare_finetune(enc, train, modality=m, epochs=args.epochs, lr=lr, steps=args.train_steps,
                              batch_size=args.batch_size, progress=False)
        rep = tuned.training_info
        r = evaluate(tuned, val, modality=m, attack=attack, progress=False)
        rows.append({"lr": lr, "clean": round(r.metrics["clean"]["zeroshot_top1"], 4),
                     "robust": round(r.metrics["attacked"]["zeroshot_top1"], 4), "train_s": rep["train_s"],
                     "steps": rep["steps"], "final_loss": rep["final_loss"]})
        log.info("%s", rows[-1])
    tuned_rows = rows[1:]
    eligible = [r for r in tuned_rows if r["clean"] >= bare_clean - args.clean_floor] or tuned_rows
    best = max(eligible, key=lambda r: r["robust"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({"config": vars(args), "rows": rows, "selected_lr": best["lr"]}, indent=1) + "\n")
    log.info("selected lr %g on val: %s", best["lr"], best)


if __name__ == "__main__":
    main()
