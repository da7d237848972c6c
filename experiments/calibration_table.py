"""Calibration heads on every TinyBind modality: the measurement behind issue 4's table.

For each modality, at the middle budget of its default grid: adversarial training examples are
made once on the frozen encoder (SynthScenes train, PGD-``--steps``, L-inf, step eps/4), every
objective's head is trained on that cache (regulariser ``--regulariser`` at the library's default
weight, which was chosen on val by ``experiments/select_consistency.py``), and each head is scored
on ``--split`` (test) with PGD-``--eval-steps`` under the head-unaware and the adaptive threat, plus
adaptive PGD-``--stronger-steps`` when given, and the per-item **worst case** over all of them (the
defended model's robust score). Rows where a weaker threat beats a stronger one are flagged. Next
to them: the bare encoder's white-box robust accuracy and a same-size head trained on clean data
only with the *same* regulariser. Optionally adaptive training (``--adaptive-every``) and the FARE
fine-tuning baseline (``--fare``, its val-selected budget) on chosen modalities, with wall times.

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
from robustmm.defenses.threats import evaluate_threats, reusable, threat_flags
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
    ap.add_argument("--steps", type=int, default=10, help="PGD steps of the training examples")
    ap.add_argument("--eval-steps", type=int, default=50, help="PGD steps of the scoring attack")
    ap.add_argument("--stronger-steps", type=int, default=0, help="also adaptive PGD with this many steps")
    ap.add_argument("--regulariser", default="supervised", help="supervised | label-free | none")
    ap.add_argument("--split", default="test")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--adaptive-every", type=int, default=0, help="also train adaptively (regenerate every K epochs)")
    ap.add_argument("--adaptive-modalities", nargs="*", default=["image"])
    ap.add_argument("--fare", nargs="*", default=[], help="modalities to run the FARE baseline on")
    ap.add_argument("--out", default="runs/calibration_table.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    enc = robustmm.load_encoder(args.model)
    train = robustmm.load_dataset("synthscenes", split="train", n=args.n_train)
    test = robustmm.load_dataset("synthscenes", split=args.split, n=args.n_test)
    rows, records = [], []
    for m in args.modalities or list(enc.modalities):
        spec = get_modality(m)
        attack = reusable(build_attack("pgd", eps=spec.middle_eps, steps=args.eval_steps, loss="ce").resolve(m))
        stronger = {f"pgd-{args.stronger_steps}": build_attack("pgd", eps=spec.middle_eps, steps=args.stronger_steps,
                                                                loss="ce")} if args.stronger_steps else None
        t0 = time.perf_counter()
        cache = adversarial_embeddings(enc, train, modality=m, attack=build_attack("pgd", eps=spec.middle_eps, steps=args.steps), progress=False)
        cache_s = time.perf_counter() - t0
        control = calibrate(enc, train, modality=m, objective="ce", regulariser=args.regulariser, epochs=args.epochs,
                            clean_only=True, embeddings=cache, progress=False)
        control_clean = top1(evaluate(enc.with_heads(control.heads), test, modality=m, progress=False), "clean")
        variants = [(obj, dict(objective=obj)) for obj in args.objectives]
        if args.adaptive_every and m in args.adaptive_modalities:
            best = args.objectives[0]
            variants.append((f"{best} (adaptive training)", dict(objective=best, adaptive_every=args.adaptive_every)))
        for label, kw in variants:
            cal = calibrate(enc, train, modality=m, epochs=args.epochs, attack=build_attack("pgd", eps=spec.middle_eps, steps=args.steps),
                            embeddings=None if kw.get("adaptive_every") else cache, regulariser=args.regulariser,
                            progress=False, **kw)
            bare, unaware, adaptive, *more = evaluate_threats(
                enc, cal, test, modality=m, attack=attack, stronger=stronger, progress=False,
                threats=("white-box", "head-unaware", "adaptive", "worst-case"))
            worst = more[-1]
            flags = [f.message() for f in threat_flags([unaware, adaptive, *more])]
            train_s = cal.meta["train_s"] + (cache_s if not kw.get("adaptive_every") else cal.meta["attack_s"])
            row = {"modality": m, "objective": label, "eps": spec.format_eps(spec.middle_eps),
                   "clean": top1(bare, "clean"), "clean_head": top1(unaware, "clean"), "clean_control": control_clean,
                   "robust_no_head": top1(bare), "head_unaware": top1(unaware), "adaptive": top1(adaptive),
                   "adaptive_stronger": top1(more[0]) if len(more) > 1 else None, "worst_case": top1(worst),
                   "flags": flags,
                   "head_train_s": round(cal.meta["train_s"], 2), "attack_cache_s": round(cache_s, 1),
                   "total_train_s": round(train_s, 1)}
            log.info("%s", row)
            rows.append(row)
            records += [r.to_dict() for r in (bare, unaware, adaptive, *more)]
        for fm in [m] if m in args.fare else []:
            tuned, rep = fare_finetune(enc, train, modality=fm, eps=spec.middle_eps, steps=args.steps, progress=False)
            r = evaluate(tuned, test, modality=fm, attack=attack.attack, progress=False)
            rows.append({"modality": fm, "objective": "FARE (fine-tune tower)", "eps": spec.format_eps(spec.middle_eps),
                         "clean": top1(r, "clean"), "clean_head": None, "clean_control": None,
                         "robust_no_head": top1(r), "head_unaware": None, "adaptive": top1(r),
                         "adaptive_stronger": None, "worst_case": top1(r), "flags": [],
                         "head_train_s": None, "attack_cache_s": None, "total_train_s": rep["train_s"]})
            log.info("%s", rows[-1])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({"rows": rows, "results": records}, indent=1) + "\n")
    headers = ["modality", "objective", "eps", "clean", "clean w/ head", "clean-control head", "robust, no head",
               "head-unaware", "adaptive", "adaptive (stronger)", "worst case", "train s (total)", "flag"]
    table = markdown_table(headers, [[r["modality"], r["objective"], r["eps"], r["clean"], r["clean_head"], r["clean_control"],
                                      r["robust_no_head"], r["head_unaware"], r["adaptive"], r["adaptive_stronger"],
                                      r["worst_case"], r["total_train_s"], "; ".join(r["flags"]) or ""] for r in rows])
    atomic_write_text(out.with_suffix(".md"), table + "\n")
    print(table)


if __name__ == "__main__":
    main()
