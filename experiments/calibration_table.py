"""Calibration heads on every TinyBind modality: the measurement behind issue 4's table.

For each modality, at the middle budget of its default grid (PGD-10, L-inf, step eps/4):
adversarial training examples are made once on the frozen encoder (SynthScenes train), every
objective's head is trained on that cache, and each head is scored on SynthScenes test under the
head-unaware and the adaptive threat, next to the bare encoder's white-box robust accuracy and a
same-size head trained on clean data only. Optionally adaptive training (``--adaptive-every``) and
the FARE fine-tuning baseline (``--fare``) on chosen modalities, with wall times.

    python experiments/calibration_table.py --out runs/calibration_table.json
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import robustmm
from robustmm.attacks import build_attack
from robustmm.defenses import calibrate, fare_finetune
from robustmm.defenses.calibrate import adversarial_embeddings
from robustmm.defenses.threats import evaluate_threats, reusable
from robustmm.evaluation import evaluate
from robustmm.modalities import get_modality
from robustmm.persist import atomic_write_text
from robustmm.report.tables import markdown_table

log = logging.getLogger("calibration_table")


def top1(r, part="attacked"):
    return r.metrics[part]["zeroshot_top1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tinybind")
    ap.add_argument("--modalities", nargs="*", default=None)
    ap.add_argument("--objectives", nargs="*", default=["ce", "l2", "infonce"])
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--adaptive-every", type=int, default=0, help="also train adaptively (regenerate every K epochs)")
    ap.add_argument("--adaptive-modalities", nargs="*", default=["image"])
    ap.add_argument("--fare", nargs="*", default=[], help="modalities to run the FARE baseline on")
    ap.add_argument("--out", default="runs/calibration_table.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    enc = robustmm.load_encoder(args.model)
    train = robustmm.load_dataset("synthscenes", split="train", n=args.n_train)
    test = robustmm.load_dataset("synthscenes", split="test", n=args.n_test)
    rows, records = [], []
    for m in args.modalities or list(enc.modalities):
        spec = get_modality(m)
        attack = reusable(build_attack("pgd", eps=spec.middle_eps, steps=args.steps, loss="ce").resolve(m))
        t0 = time.perf_counter()
        cache = adversarial_embeddings(enc, train, modality=m, attack=build_attack("pgd", eps=spec.middle_eps, steps=args.steps), progress=False)
        cache_s = time.perf_counter() - t0
        control = calibrate(enc, train, modality=m, objective="ce", epochs=args.epochs, clean_only=True,
                            embeddings=cache, progress=False)
        control_clean = top1(evaluate(enc.with_heads(control.heads), test, modality=m, progress=False), "clean")
        variants = [(obj, dict(objective=obj)) for obj in args.objectives]
        if args.adaptive_every and m in args.adaptive_modalities:
            best = args.objectives[0]
            variants.append((f"{best} (adaptive training)", dict(objective=best, adaptive_every=args.adaptive_every)))
        for label, kw in variants:
            cal = calibrate(enc, train, modality=m, epochs=args.epochs, attack=build_attack("pgd", eps=spec.middle_eps, steps=args.steps),
                            embeddings=None if kw.get("adaptive_every") else cache, progress=False, **kw)
            bare, unaware, adaptive = evaluate_threats(enc, cal, test, modality=m, attack=attack, progress=False)
            train_s = cal.meta["train_s"] + (cache_s if not kw.get("adaptive_every") else cal.meta["attack_s"])
            row = {"modality": m, "objective": label, "eps": spec.format_eps(spec.middle_eps),
                   "clean": top1(bare, "clean"), "clean_head": top1(unaware, "clean"), "clean_control": control_clean,
                   "robust_no_head": top1(bare), "head_unaware": top1(unaware), "adaptive": top1(adaptive),
                   "head_train_s": round(cal.meta["train_s"], 2), "attack_cache_s": round(cache_s, 1),
                   "total_train_s": round(train_s, 1)}
            log.info("%s", row)
            rows.append(row)
            records += [r.to_dict() for r in (bare, unaware, adaptive)]
        for fm in [m] if m in args.fare else []:
            tuned, rep = fare_finetune(enc, train, modality=fm, attack=build_attack("pgd", eps=spec.middle_eps, steps=args.steps, loss="embedding"),
                                       epochs=1, progress=False)
            r = evaluate(tuned, test, modality=fm, attack=attack.attack, progress=False)
            rows.append({"modality": fm, "objective": "FARE (fine-tune tower)", "eps": spec.format_eps(spec.middle_eps),
                         "clean": top1(r, "clean"), "clean_head": None, "clean_control": None,
                         "robust_no_head": top1(r), "head_unaware": None, "adaptive": top1(r),
                         "head_train_s": None, "attack_cache_s": None, "total_train_s": rep["train_s"]})
            log.info("%s", rows[-1])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({"rows": rows, "results": records}, indent=1) + "\n")
    headers = ["modality", "objective", "eps", "clean", "clean w/ head", "clean-control head", "robust, no head",
               "head-unaware", "adaptive", "train s (total)"]
    table = markdown_table(headers, [[r["modality"], r["objective"], r["eps"], r["clean"], r["clean_head"], r["clean_control"],
                                      r["robust_no_head"], r["head_unaware"], r["adaptive"], r["total_train_s"]] for r in rows])
    atomic_write_text(out.with_suffix(".md"), table + "\n")
    print(table)


if __name__ == "__main__":
    main()
