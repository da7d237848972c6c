"""Certified robustness by randomized smoothing on every TinyBind modality.

For each modality and each of its two default sigmas (robustmm.evaluation.certification.DEFAULT_SIGMAS):
certify the bare encoder, a noise-calibrated head (``ce``, ``--draws`` noise draws per training
item) and, for image, an MSE denoiser in front of the frozen encoder; report certified top-1 at
radius 0 and at the modality's reference radii, with SmoothAdv empirical accuracy beside each, and
certified X->text R@1. A separate "target" run repeats image at sigma 0.12 with the standard
settings (200 items, n0 = 64, n = 512). Every certified record is appended to
``OUT/results.jsonl`` as it is made (``--resume`` skips finished cells); ``OUT/table.md`` and
``OUT/table.json`` are rewritten at the end.

    python experiments/certify_table.py --out runs/certify
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

import robustmm
from robustmm.defenses import load_heads
from robustmm.defenses.denoiser import train_denoiser
from robustmm.defenses.noise_heads import noise_calibrate
from robustmm.evaluation.certification import DEFAULT_SIGMAS, certify_dataset
from robustmm.modalities import CONTINUOUS_MODALITIES
from robustmm.persist import atomic_write_text
from robustmm.records import Result, append_jsonl, read_jsonl

log = logging.getLogger("certify_table")


def cell_key(modality: str, sigma: float, variant: str, tag: str) -> str:
    return f"{tag}/{modality}/{sigma:g}/{variant}"


def markdown(rows: list[dict]) -> str:
    """One row per (modality, sigma, defense): certified top-1 at radius 0 and the reference radii r1 < r2 < r3
    with the SmoothAdv empirical accuracy in parentheses, then certified X->text R@1 at the same radii."""
    lines = ["| modality | sigma | defense | items | radii r1 / r2 / r3 | smoothed top-1 | cert. top-1 @0 (SmoothAdv) "
             "| @r1 | @r2 | @r3 | abstain | cert. x2t R@1 @0 / r1 / r2 / r3 | violations |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cert, emp = r["metrics"]["certified"], r["metrics"].get("empirical") or {}
        keys = [f"{x:g}" for x in cert["radii"]]
        cells = [f"{cert['top1'][k]:.3f}" + (f" ({emp['top1'][k]:.2f})" if k in emp.get("top1", {}) else "") for k in keys]
        x2t = " / ".join(f"{cert['x2t_R@1'][k]:.2f}" for k in keys) if "x2t_R@1" in cert else "—"
        viol = sum(emp.get("violations", {}).values()) if emp else "—"
        lines.append(f"| {r['modality']} | {r['defense']['sigma']:g} | {r['extra']['variant']} | {r['n']} | "
                     f"{' / '.join(keys[1:])} | {r['metrics']['clean']['zeroshot_top1']:.3f} | {' | '.join(cells)} | "
                     f"{cert['abstain']:.3f} | {x2t} | {viol} |")
    return "\n".join(lines) + "\n"


def render(out: Path, paths: list[Path]) -> None:
    """Write OUT/table.md and OUT/table.json from the records of ``paths`` (per-item lists dropped)."""
    rows = [r for p in paths for r in read_jsonl(p)]
    for r in rows:
        r.get("extra", {}).pop("per_item", None)
    order = {m: i for i, m in enumerate(CONTINUOUS_MODALITIES)}
    rows.sort(key=lambda r: (order.get(r["modality"], 99), r["defense"]["sigma"]))
    table = [r for r in rows if r["extra"]["tag"] == "table"]
    target = [r for r in rows if r["extra"]["tag"] == "target"]
    md = "## Certified top-1 (randomized smoothing)\n\n" + markdown(table)
    if target:
        md += "\n## Image, sigma 0.12, n0 = 64, n = 512, 200 items\n\n" + markdown(target)
    atomic_write_text(out / "table.md", md)
    atomic_write_text(out / "table.json", json.dumps(rows, indent=1) + "\n")
    log.info("wrote %s and %s", out / "table.md", out / "table.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tinybind")
    ap.add_argument("--modalities", nargs="*", default=list(CONTINUOUS_MODALITIES))
    ap.add_argument("--n-test", type=int, default=50)
    ap.add_argument("--n0", type=int, default=32)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--n-train", type=int, default=1000, help="training items of the table's noise heads")
    ap.add_argument("--target-n-train", type=int, default=2000, help="training items of the target run's head")
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--attack-items", type=int, default=20, help="items attacked by SmoothAdv per cell (the first ones)")
    ap.add_argument("--attack-steps", type=int, default=3)
    ap.add_argument("--attack-m", type=int, default=4)
    ap.add_argument("--attack-n", type=int, default=32, help="draws classifying each attacked input")
    ap.add_argument("--denoiser", nargs="*", default=["image"], help="modalities that also get an MSE denoiser")
    ap.add_argument("--denoiser-epochs", type=int, default=3)
    ap.add_argument("--no-target", action="store_true", help="skip the image sigma=0.12 run at n0=64, n=512, 200 items")
    ap.add_argument("--target-variants", nargs="*", default=["noise-head"], help="variants of the target run")
    ap.add_argument("--out", default="runs/certify")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--variants", nargs="*", default=None, help="only these defenses (bare, noise-head, denoiser)")
    ap.add_argument("--sigmas", nargs="*", type=float, default=None, help="only these sigmas")
    ap.add_argument("--also", nargs="*", default=[], help="more results.jsonl files to include in the table")
    ap.add_argument("--render-only", action="store_true", help="only rewrite table.md/json from the records")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "results.jsonl"
    if args.render_only:
        return render(out, [jsonl, *map(Path, args.also)])
    done = {r["extra"]["cell"] for r in read_jsonl(jsonl)} if args.resume else set()
    if not args.resume and jsonl.exists():
        jsonl.unlink()

    enc = robustmm.load_encoder(args.model)
    test = robustmm.load_dataset("synthscenes", split="test", n=max(args.n_test, 200))
    train = robustmm.load_dataset("synthscenes", split="train", n=max(args.n_train, args.target_n_train))
    sadv = {"steps": args.attack_steps, "m": args.attack_m, "n": args.attack_n, "alpha": args.alpha,
            "n_items": args.attack_items}

    jobs = [(m, s, args.n_test, args.n0, args.n, "table") for m in args.modalities for s in DEFAULT_SIGMAS[m]
            if args.sigmas is None or s in args.sigmas]
    if not args.no_target and "image" in args.modalities:
        jobs.insert(0, ("image", 0.12, 200, 64, 512, "target"))  # the standard-setting number comes first
    heads_cache: dict[tuple[str, float], object] = {}
    for modality, sigma, n_items, n0, n, tag in jobs:
        variants = ["bare", "noise-head"] + (["denoiser"] if modality in args.denoiser else [])
        if tag == "target":
            variants = args.target_variants
        variants = [v for v in variants if args.variants is None or v in args.variants]
        for variant in variants:
            key = cell_key(modality, sigma, variant, tag)
            if key in done:
                continue
            t0 = time.perf_counter()
            model, heads, train_s = enc, None, 0.0
            if variant == "noise-head":
                n_train = args.target_n_train if tag == "target" else args.n_train
                path = out / "heads" / f"{modality}-sigma{sigma:g}-n{n_train}.safetensors"
                if (modality, sigma, n_train) not in heads_cache:
                    if not path.exists():
                        cal = noise_calibrate(enc, train.head(n_train), modality=modality, sigma=sigma, draws=args.draws,
                                              epochs=args.epochs, progress=False)
                        cal.save(str(path))
                    heads_cache[(modality, sigma, n_train)] = load_heads(path, enc)  # the saved heads, as a user loads them
                heads = heads_cache[(modality, sigma, n_train)]
            elif variant == "denoiser":
                model = train_denoiser(enc, train, modality=modality, sigma=sigma, epochs=args.denoiser_epochs)
            train_s = time.perf_counter() - t0
            res: Result = certify_dataset(model, test, modality=modality, sigma=sigma, n0=n0, n=n, alpha=args.alpha,
                                          heads=heads, n_items=n_items, smoothadv=sadv, progress=False)
            res.extra.update(cell=key, variant=variant, tag=tag, train_s=round(train_s, 1))
            append_jsonl(jsonl, [res])
            c = res.metrics["certified"]["top1"]
            log.info("%s: certified %s (%.0fs)", key, json.dumps(c), time.perf_counter() - t0)

    render(out, [jsonl, *map(Path, args.also)])

if __name__ == "__main__":
    main()
