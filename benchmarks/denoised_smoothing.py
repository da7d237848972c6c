"""Denoised smoothing on every continuous modality: noise head vs denoiser (MSE, consistency), certified.

For each modality, at its smaller default sigma (robustmm.evaluation.certification.DEFAULT_SIGMAS),
three base classifiers are trained on the train split and put under randomized smoothing:

* ``noise-head`` -- a ``ce`` calibration head trained on embeddings of noisy inputs;
* ``denoiser-mse`` -- the modality's denoiser (robustmm.encoders.denoiser_archs) trained with MSE;
* ``denoiser-consistency`` -- that MSE denoiser fine-tuned with the classification-consistency
  objective of Salman et al. 2020 (the frozen zero-shot classifier's clean prediction as target).

Each is certified on the first ``--val-items`` val items (the variant kept is the one with the
highest certified top-1 at the modality's second reference radius on val) and on the first
``--items`` test items (the reported numbers). SmoothAdv attacks the kept variant on the first
``--attack-items`` test items: a certified item that the attack flips is a violation.

Prints one JSON object and writes it to ``--out`` (docs/results/denoised_smoothing.json); each
finished modality is also kept in ``--work``/records.jsonl so ``--resume`` continues a killed run.

    OMP_NUM_THREADS=1 python benchmarks/denoised_smoothing.py --threads 1
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import add_common, execute, machine_info, rounded

import robustmm
from robustmm.defenses.denoiser import train_denoiser
from robustmm.defenses.noise_heads import noise_calibrate
from robustmm.evaluation.certification import DEFAULT_SIGMAS, certify_dataset, reference_radii
from robustmm.modalities import CONTINUOUS_MODALITIES
from robustmm.persist import atomic_write_text

ORDER = ("video", "thermal", "depth", "pointcloud", "audio", "image")
VARIANTS = ("noise-head", "denoiser-mse", "denoiser-consistency")
TARGET = 0.5


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not recorded"


def _train(variant: str, enc: Any, train: Any, val: Any, modality: str, sigma: float, args: argparse.Namespace,
           cert: dict[str, Any], cache: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """(encoder, heads, training report) of one variant; the MSE denoiser is reused as the consistency init."""
    t0 = time.perf_counter()
    if variant == "noise-head":
        cal = noise_calibrate(enc, train, modality=modality, sigma=sigma, draws=args.head_draws,
                              epochs=args.head_epochs, seed=args.seed, progress=False)
        n = len(train)
        info = {"n_train": n, "draws": args.head_draws, "epochs": args.head_epochs,
                "passes": n * args.head_draws, "passes_note": "encoder forwards (items x draws); the head "
                f"then trains {args.head_epochs} epochs on the cached embeddings"}
        return enc, cal, info | {"seconds": round(time.perf_counter() - t0, 1)}
    common = {"modality": modality, "sigma": sigma, "width": args.width, "depth": args.depth, "seed": args.seed,
              "batch_size": args.batch_size}
    if "mse" not in cache:
        cache["mse"] = train_denoiser(enc, train, objective="mse", epochs=args.mse_epochs, lr=args.lr, **common)
    if variant == "denoiser-mse":
        return cache["mse"], None, dict(cache["mse"].training_info)
    # consistency: continue from the MSE denoiser; with several epoch totals, each continues the
    # previous one and the total is chosen on val (certified top-1 at r2; ties: fewer epochs)
    totals = sorted(set(args.consistency_epochs))
    best, best_score, on_val, prev, done = None, -1.0, {}, cache["mse"], 0
    r2 = f"{cert['radii'][1]:g}"
    for total in totals:
        prev = train_denoiser(enc, train, objective="consistency", epochs=total - done, lr=args.lr / 4, init=prev,
                              **common)
        done = total
        if len(totals) > 1:
            score = certify_dataset(prev, val, n0=args.val_n0, n=args.val_draws, **cert).metrics["certified"]["top1"][r2]
            on_val[str(total)] = rounded(score, 3)
            if (score or 0.0) > best_score:
                best, best_score = prev, score or 0.0
        else:
            best = prev
    info = dict(best.training_info) | {"consistency_epochs": totals[0] if len(totals) == 1 else None}
    if on_val:
        info |= {"consistency_epochs_on_val_r2": on_val,
                 "consistency_epochs": int(max(on_val, key=lambda k: (on_val[k] or 0.0, -int(k))))}
    return best, None, info


def _scores(res: Any, radii: list[float]) -> dict[str, Any]:
    cert = res.metrics["certified"]
    return {"certified_top1": {f"{r:g}": rounded(cert["top1"][f"{r:g}"], 3) for r in [0.0, *radii]},
            "clean_top1_smoothed": rounded(res.metrics["clean"]["zeroshot_top1"], 3),
            "base_top1": rounded(res.metrics["clean"]["base_zeroshot_top1"], 3),
            "abstain": rounded(cert["abstain"], 3), "seconds": round(res.timing_s, 1)}


def run_modality(modality: str, enc: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Train, select on val and certify on test the three variants of one modality."""
    sigma = DEFAULT_SIGMAS[modality][0]
    radii = list(reference_radii(modality))
    r2 = f"{radii[1]:g}"
    train = robustmm.load_dataset("synthscenes", split="train", n=args.n_train, modalities=(modality,))
    val = robustmm.load_dataset("synthscenes", split="val", n=args.val_items, modalities=(modality,))
    test = robustmm.load_dataset("synthscenes", split="test", n=args.items, modalities=(modality,))
    cert = {"modality": modality, "sigma": sigma, "alpha": args.alpha, "radii": radii, "retrieval": False,
            "progress": False, "seed": args.seed, "batch_noise": args.batch_noise}
    out: dict[str, Any] = {"sigma": sigma, "radii": radii, "variants": {}}
    cache: dict[str, Any] = {}
    built = {}
    for variant in VARIANTS:
        model, heads, info = _train(variant, enc, train, val, modality, sigma, args, cert, cache)
        built[variant] = (model, heads)
        v = certify_dataset(model, val, heads=heads, n0=args.val_n0, n=args.val_draws, **cert)
        t = certify_dataset(model, test, heads=heads, n0=args.n0, n=args.draws, **cert)
        out["variants"][variant] = _scores(t, radii) | {
            "val_certified_top1_r2": rounded(v.metrics["certified"]["top1"][r2], 3), "training": info}
        print(f"{modality} {variant}: test r2 {out['variants'][variant]['certified_top1'][r2]}", file=sys.stderr,
              flush=True)
    kept = max(VARIANTS, key=lambda k: (out["variants"][k]["val_certified_top1_r2"] or 0.0))
    model, heads = built[kept]
    sadv = certify_dataset(model, test.head(args.attack_items), heads=heads, n0=args.n0, n=args.draws,
                           smoothadv={"steps": args.attack_steps, "m": args.attack_m, "n": args.attack_n,
                                      "alpha": args.alpha}, **cert)
    emp = sadv.metrics["empirical"]
    best_head = out["variants"]["noise-head"]["certified_top1"][r2] or 0.0
    best_den = max(out["variants"][k]["certified_top1"][r2] or 0.0 for k in VARIANTS[1:])
    out |= {"kept": kept, "kept_by": f"val certified top-1 at r2 = {r2}",
            "kept_certified_top1_r2": out["variants"][kept]["certified_top1"][r2],
            "denoiser_minus_noise_head_r2": round(best_den - best_head, 3),
            "target_r2_reached": (out["variants"][kept]["certified_top1"][r2] or 0.0) >= TARGET,
            "smoothadv_on_kept": {"items": args.attack_items, "top1": emp["top1"], "violations": emp["violations"]}}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        args.items, args.val_items, args.n_train, args.draws, args.val_draws = 4, 4, 16, 32, 16
        args.n0, args.val_n0, args.mse_epochs, args.consistency_epochs, args.head_epochs = 8, 8, 1, [1, 2], 2
        args.attack_items, args.attack_steps = 2, 1
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    records = work / "records.jsonl"
    done: dict[str, Any] = {}
    made_by = {"commit": _commit(), "command": _command()}
    provenance: dict[str, Any] = {}
    if args.resume and records.exists():
        for line in records.read_text().splitlines():
            rec = json.loads(line)
            done[rec["modality"]] = rec["result"]
            provenance[rec["modality"]] = {k: rec.get(k, "not recorded") for k in ("commit", "command")}
    elif records.exists():
        records.unlink()
    enc = robustmm.load_encoder(args.model, device=args.device)
    results: dict[str, Any] = {}
    for modality in [m for m in ORDER if m in args.modalities]:
        if modality not in done:
            t0 = time.perf_counter()
            done[modality] = run_modality(modality, enc, args) | {"wall_s": round(time.perf_counter() - t0, 1)}
            provenance[modality] = made_by
            with records.open("a") as f:
                f.write(json.dumps({"modality": modality, "result": done[modality]} | made_by) + "\n")
        results[modality] = done[modality]
        doc = _document(args, results, provenance)
        if args.out and not args.quick:
            atomic_write_text(Path(args.out), json.dumps(doc, indent=1) + "\n")
    doc = _document(args, results, provenance)
    if args.unfinished_log:
        doc["unfinished"] = _unfinished(args.unfinished_log, set(results))
        if args.out and not args.quick:
            atomic_write_text(Path(args.out), json.dumps(doc, indent=1) + "\n")
    return doc


def _unfinished(logs: list[str], finished: set[str]) -> dict[str, Any]:
    """Test certified top-1 at r2 of the variants a run finished before it was stopped, read from
    its progress lines (``MODALITY VARIANT: test r2 X``), for the modalities with no full record."""
    out: dict[str, Any] = {}
    for log_path in logs:
        for line in Path(log_path).read_text().splitlines():
            head, _, value = line.partition(": test r2 ")
            parts = head.split()
            if value and len(parts) == 2 and parts[0] not in finished:
                out.setdefault(parts[0], {"source": log_path, "test_certified_top1_r2": {}})
                out[parts[0]]["test_certified_top1_r2"][parts[1]] = None if value == "None" else float(value)
    return out


def _command() -> str:
    return "OMP_NUM_THREADS=1 python " + " ".join(["benchmarks/denoised_smoothing.py", *sys.argv[1:]])


def _document(args: argparse.Namespace, results: dict[str, Any], provenance: dict[str, Any]) -> dict[str, Any]:
    """The JSON written and printed: settings, a summary row per modality, every number, and which
    command at which commit measured each modality (a run may be split over processes and resumed)."""
    commits = sorted({p["commit"] for p in provenance.values()})
    commands = sorted({p["command"] for p in provenance.values()})
    summary = {m: {"sigma": r["sigma"], "r2": r["radii"][1], "kept": r["kept"],
                   **{f"{v} @r2": r["variants"][v]["certified_top1"][f"{r['radii'][1]:g}"] for v in VARIANTS},
                   "target reached": r["target_r2_reached"]} for m, r in results.items()}
    return {
        "benchmark": "denoised_smoothing",
        "command": commands[0] if len(commands) == 1 else commands,
        "commit": commits[0] if len(commits) == 1 else ", ".join(commits),
        "measured_by": provenance,
        "machine": machine_info(args.device),
        "settings": {k: getattr(args, k) for k in ("model", "items", "n0", "draws", "alpha", "val_items", "val_n0",
                                                   "val_draws", "n_train", "head_draws", "head_epochs", "mse_epochs",
                                                   "consistency_epochs", "lr", "width", "depth", "batch_size", "batch_noise",
                                                   "attack_items", "attack_steps", "attack_m", "attack_n", "seed")},
        "settings_note": None if len(commands) <= 1 else "the modalities were measured by the commands in "
        "measured_by; settings above are the defaults of the assembling command, and each modality's own "
        "consistency epochs are in its denoiser-consistency training block",
        "target": f"certified top-1 >= {TARGET} at the second reference radius",
        "summary": summary,
        "results": results,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(ap)
    ap.add_argument("--model", default="tinybind")
    ap.add_argument("--modalities", nargs="*", default=list(CONTINUOUS_MODALITIES))
    ap.add_argument("--items", type=int, default=40, help="test items certified")
    ap.add_argument("--n0", type=int, default=24)
    ap.add_argument("--draws", type=int, default=200, help="estimation draws per test item")
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--val-items", type=int, default=20)
    ap.add_argument("--val-n0", type=int, default=8)
    ap.add_argument("--val-draws", type=int, default=64)
    ap.add_argument("--n-train", type=int, default=300)
    ap.add_argument("--head-draws", type=int, default=4)
    ap.add_argument("--head-epochs", type=int, default=30)
    ap.add_argument("--mse-epochs", type=int, default=5)
    ap.add_argument("--consistency-epochs", type=int, nargs="+", default=[1],
                    help="consistency epochs after the MSE ones; several totals: the one chosen on val is kept")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, default=24)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batch-noise", type=int, default=256, help="noisy copies per forward (memory; part of the "
                    "noise stream, so the draws change with it)")
    ap.add_argument("--attack-items", type=int, default=6)
    ap.add_argument("--attack-steps", type=int, default=3)
    ap.add_argument("--attack-m", type=int, default=4)
    ap.add_argument("--attack-n", type=int, default=32)
    ap.add_argument("--work", default="runs/denoised_smoothing")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--unfinished-log", nargs="*", default=[],
                    help="stderr logs of stopped runs: their finished variants go under 'unfinished'")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs/results/denoised_smoothing.json"))
    execute(ap.parse_args(), run)


if __name__ == "__main__":
    main()
