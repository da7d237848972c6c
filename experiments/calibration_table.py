"""Calibration heads on every TinyBind modality: the measurement behind the README's calibration table.

For each modality, at the middle budget of its default grid: adversarial training examples are
made once on the frozen encoder (SynthScenes train, PGD-``--steps``, L-inf, step eps/4), every
objective's head is trained on that cache (regulariser ``--regulariser`` at the library's default
weight, which was chosen on val by ``experiments/select_consistency.py``), and each head is scored
on ``--split`` (test) with ``--eval-attack`` (PGD or APGD, zero-shot CE, ``--eval-steps``) under the
head-unaware threat (its examples made on the bare encoder) and the adaptive one, plus each
``--stronger`` attack (``pgd``, ``apgd`` = APGD-CE and/or ``apgd-t`` = APGD-T, ``--stronger-steps``
iterations, same eps; optionally with early stopping, which leaves its robust top-1 unchanged) run
both adaptively and head-unaware (its bare-encoder examples, the ones of the no-head column, made
without early stopping so they transfer at full strength, scored through the head), and the
per-item **worst case** over all of them (the defended model's
robust score). Rows where a head-unaware threat beats an adaptive one, or any threat beats the
worst case, are flagged (the adaptive attacks are not ranked against each other: which one is
stronger is what the table measures).

Next to them: the bare encoder's white-box robust accuracy -- the per-item worst case over the same
attacks (the scoring attack and every stronger one) on the bare encoder, so the head and no-head
numbers face the same attacker -- and a same-size head trained on clean data only with the *same*
regulariser. Optionally adaptive training (``--adaptive-every``) and the FARE fine-tuning baseline
(``--fare``, its val-selected budget; scored white-box on the tuned tower with the same attacks and
their per-item worst case) on chosen modalities, with wall times.

    python experiments/calibration_table.py --eval-attack apgd --eval-steps 50 --stronger pgd --stronger-steps 50 \
        --stronger-early-stop --out runs/calibration_table.json
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import robustmm
from robustmm.attacks import build_attack
from robustmm.attacks.base import Attack
from robustmm.defenses import calibrate, fare_finetune
from robustmm.defenses.calibrate import adversarial_embeddings
from robustmm.evaluation import evaluate
from robustmm.evaluation.threats import evaluate_threats, reusable, threat_flags
from robustmm.evaluation.worst_case import RecordingAttack, worst_case
from robustmm.modalities import get_modality
from robustmm.persist import atomic_write_text
from robustmm.report.tables import markdown_table

log = logging.getLogger("calibration_table")
STRONGER = ("pgd", "apgd", "apgd-t")


def top1(r: Any, part: str = "attacked") -> float:
    return r.metrics[part]["zeroshot_top1"]


def commit() -> str | None:
    """The checkout's commit (and whether it had local changes), recorded with the numbers."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + (" (with local changes)" if dirty else "")


def white_box(model: Any, data: Any, modality: str, attacks: dict[str, Attack]) -> tuple[dict[str, Any], Any]:
    """Each attack white-box on ``model`` and the per-item worst case over them (and the clean input).

    An attack is a :class:`RecordingAttack` or a memo around one (so the bare encoder's examples
    are reused as the head-unaware ones); its examples are copied right after its own run.
    """
    results, examples = {}, {}
    for name, att in attacks.items():
        rec = att if isinstance(att, RecordingAttack) else att.inner
        results[name] = evaluate(model, data, modality=modality, attack=att, progress=False)
        examples[name] = rec.stacked(len(data)).clone()
        log.info("%s white-box %s: %.4f", modality, name, top1(results[name]))
    return results, worst_case(model, data, modality=modality, examples=examples, results=results)


def build(name: str, eps: float, steps: int, modality: str, early_stop: bool = False) -> Attack:
    """A zero-shot attack at ``eps``, resolved for ``modality``: ``pgd`` or ``apgd`` (CE loss), or
    ``apgd-t`` (APGD on the targeted DLR loss over the top 3 classes: scale-invariant, so it is not
    fooled by a saturated softmax as CE can be); ``early_stop`` stops each item at its first breaking
    iterate (same robust top-1, less time)."""
    extra = {"early_stop": True} if early_stop else {}
    if name == "apgd-t":
        return build_attack("apgd", eps=eps, steps=steps, loss="dlr-targeted", n_target_classes=3,
                            **extra).resolve(modality)
    return build_attack(name, eps=eps, steps=steps, loss="ce", **extra).resolve(modality)


def flags_of(unaware: list[Any], adaptive: list[Any], worst: Any) -> list[str]:
    """A head-unaware threat beating an adaptive attack, or any threat beating the worst case."""
    pairs = [(u, a) for u in unaware for a in adaptive] + [(t, worst) for t in (*unaware, *adaptive)]
    flags = [f for pair in pairs for f in threat_flags(list(pair))]
    return list(dict.fromkeys(f.message() for f in flags))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tinybind")
    ap.add_argument("--modalities", nargs="*", default=None)
    ap.add_argument("--objectives", nargs="*", default=["ce", "l2", "infonce"])
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=10, help="PGD steps of the training examples")
    ap.add_argument("--eval-attack", default="pgd", choices=STRONGER, help="the scoring attack (bare, head-unaware, adaptive)")
    ap.add_argument("--eval-steps", type=int, default=50, help="steps of the scoring attack")
    ap.add_argument("--stronger", nargs="*", default=["pgd"], choices=STRONGER,
                    help="stronger adaptive attacks run when --stronger-steps > 0 (apgd = APGD-CE, apgd-t = APGD-T)")
    ap.add_argument("--stronger-steps", type=int, default=0, help="steps of each --stronger attack (0: none)")
    ap.add_argument("--stronger-early-stop", action="store_true",
                    help="stronger attacks through a head or on FARE's tower stop items once broken "
                         "(on the bare encoder they run in full: its examples are the head-unaware transfers)")
    ap.add_argument("--regulariser", default="supervised", help="supervised | label-free | none")
    ap.add_argument("--consistency-weight", type=float, default=None,
                    help="the regulariser's weight (default: the library's, which the README table used)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--adaptive-every", type=int, default=0, help="also train adaptively (regenerate every K epochs)")
    ap.add_argument("--adaptive-modalities", nargs="*", default=["image"])
    ap.add_argument("--fare", nargs="*", default=[], help="modalities to run the FARE baseline on")
    ap.add_argument("--fare-lr", type=float, default=None, help="FARE's learning rate (default: the library's)")
    ap.add_argument("--out", default="runs/calibration_table.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = {**vars(args), "commit": commit()}
    log.info("config %s", config)

    enc = robustmm.load_encoder(args.model)
    train = robustmm.load_dataset("synthscenes", split="train", n=args.n_train)
    test = robustmm.load_dataset("synthscenes", split=args.split, n=args.n_test)
    main_name = f"{args.eval_attack}-{args.eval_steps}"
    stronger_names = [f"{s}-{args.stronger_steps}" for s in dict.fromkeys(args.stronger or [])
                      if args.stronger_steps and f"{s}-{args.stronger_steps}" != main_name]
    rows, records = [], []
    for m in args.modalities or list(enc.modalities):
        spec = get_modality(m)
        eps = spec.middle_eps
        attack = reusable(RecordingAttack(build(args.eval_attack, eps, args.eval_steps, m)))
        raw = {s: build(s.rsplit("-", 1)[0], eps, args.stronger_steps, m, args.stronger_early_stop)
               for s in stronger_names}
        # on the bare encoder without early stopping: its examples are also the head-unaware transfers
        bare = {s: reusable(RecordingAttack(build(s.rsplit("-", 1)[0], eps, args.stronger_steps, m)))
                for s in stronger_names}
        variants = [(obj, dict(objective=obj)) for obj in args.objectives]
        if variants and args.adaptive_every and m in args.adaptive_modalities:
            best = args.objectives[0]
            variants.append((f"{best} (adaptive training)", dict(objective=best, adaptive_every=args.adaptive_every)))
        if variants:  # no objectives: the FARE rows only
            t0 = time.perf_counter()
            cache = adversarial_embeddings(enc, train, modality=m, attack=build_attack("pgd", eps=eps, steps=args.steps),
                                           progress=False)
            cache_s = time.perf_counter() - t0
            bare_each, bare_worst = white_box(enc, test, m, {main_name: attack} | bare)
            records += [r.to_dict() for r in (*bare_each.values(), bare_worst)]
            control = calibrate(enc, train, modality=m, objective="ce", regulariser=args.regulariser, epochs=args.epochs,
                                consistency_weight=args.consistency_weight, clean_only=True, embeddings=cache,
                                progress=False)
            control_clean = top1(evaluate(enc.with_heads(control.heads), test, modality=m, progress=False), "clean")
        for label, kw in variants:
            cal = calibrate(enc, train, modality=m, epochs=args.epochs, attack=build_attack("pgd", eps=eps, steps=args.steps),
                            embeddings=None if kw.get("adaptive_every") else cache, regulariser=args.regulariser,
                            consistency_weight=args.consistency_weight, progress=False, **kw)
            _, unaware, adaptive, *more = evaluate_threats(
                enc, cal, test, modality=m, attack=attack, stronger=raw, transfer=bare, progress=False,
                threats=("white-box", "head-unaware", "adaptive", "worst-case"))
            worst = more[-1]
            more_adaptive = [r for r in more[:-1] if r.threat == "adaptive"]
            more_unaware = [r for r in more[:-1] if r.threat == "head-unaware"]
            flags = flags_of([unaware, *more_unaware], [adaptive, *more_adaptive], worst)
            train_s = cal.meta["train_s"] + (cache_s if not kw.get("adaptive_every") else cal.meta["attack_s"])
            row = {"modality": m, "objective": label, "eps": spec.format_eps(eps),
                   "clean": top1(bare_worst, "clean"), "clean_head": top1(unaware, "clean"), "clean_control": control_clean,
                   "robust_no_head": top1(bare_worst), "robust_no_head_each": {k: top1(r) for k, r in bare_each.items()},
                   "head_unaware": top1(unaware), "adaptive": top1(adaptive),
                   "head_unaware_stronger": {r.extra["stronger_attack"]: top1(r) for r in more_unaware},
                   "adaptive_stronger": {r.extra["stronger_attack"]: top1(r) for r in more_adaptive},
                   "worst_case": top1(worst), "broken_by": worst.extra["broken_by"], "flags": flags,
                   "head_train_s": round(cal.meta["train_s"], 2), "attack_cache_s": round(cache_s, 1),
                   "total_train_s": round(train_s, 1)}
            log.info("%s", row)
            rows.append(row)
            records += [r.to_dict() for r in (unaware, adaptive, *more)]
        for fm in [m] if m in args.fare else []:
            tuned = fare_finetune(enc, train, modality=fm, eps=eps, steps=args.steps, progress=False,
                                  **({"lr": args.fare_lr} if args.fare_lr else {}))
            rep = tuned.training_info
            each, fworst = white_box(tuned, test, fm, {main_name: RecordingAttack(attack.inner.inner)} |
                                     {s: RecordingAttack(a) for s, a in raw.items()})
            rows.append({"modality": fm, "objective": f"FARE (fine-tune tower, lr {rep['lr']:g})", "eps": spec.format_eps(eps),
                         "clean": top1(fworst, "clean"), "clean_head": None, "clean_control": None,
                         "robust_no_head": None, "robust_no_head_each": None, "head_unaware": None,
                         "head_unaware_stronger": None,
                         "adaptive": top1(each[main_name]),
                         "adaptive_stronger": {k: top1(r) for k, r in each.items() if k != main_name},
                         "worst_case": top1(fworst), "broken_by": fworst.extra["broken_by"], "flags": [],
                         "head_train_s": None, "attack_cache_s": None, "total_train_s": rep["train_s"],
                         "fare": {k: v for k, v in rep.items() if isinstance(v, (int, float, str))}})
            records += [r.to_dict() for r in (*each.values(), fworst)]
            log.info("%s", rows[-1])
        write(Path(args.out), config, rows, records, main_name, stronger_names)  # after every modality: a crash keeps them


def write(out: Path, config: dict[str, Any], rows: list[dict[str, Any]], records: list[dict[str, Any]],
          main_name: str, stronger_names: list[str]) -> None:
    """The JSON (config, rows, every Result) and the Markdown table next to it, both atomic."""
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({"config": config, "rows": rows, "results": records}, indent=1) + "\n")
    wb = " / ".join([main_name, *stronger_names])
    headers = ["modality", "objective", "eps", "clean", "clean w/ head", "clean-control head",
               f"robust, no head (worst of {wb})", f"head-unaware ({main_name})",
               *[f"head-unaware {s}" for s in stronger_names], f"adaptive {main_name}",
               *[f"adaptive {s}" for s in stronger_names], "worst case", "train s (total)", "flag"]

    table = markdown_table(headers, [[r["modality"], r["objective"], r["eps"], r["clean"], r["clean_head"],
                                      r["clean_control"], r["robust_no_head"], r["head_unaware"],
                                      *[(r.get("head_unaware_stronger") or {}).get(s) for s in stronger_names],
                                      r["adaptive"], *[(r["adaptive_stronger"] or {}).get(s) for s in stronger_names],
                                      r["worst_case"], r["total_train_s"], "; ".join(r["flags"]) or ""] for r in rows])
    atomic_write_text(out.with_suffix(".md"), table + "\n")


if __name__ == "__main__":
    main()
