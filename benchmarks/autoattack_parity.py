"""robustmm's standard ensemble (APGD-CE, APGD-T, FAB-T, Square) vs AutoAttack ``standard`` on the
same items: robust top-1 per eps.

Both sides attack the same zero-shot classifier (TinyBind, ``logit_scale * cos`` logits against the
SynthScenes class-prompt centers; :class:`~robustmm.attacks.torchattacks_adapter.ZeroShotClassifier`)
on the first ``--n`` SynthScenes test items:

* ``torchattacks``: ``torchattacks.AutoAttack(version="standard", n_classes=10)`` (9 target classes
  for APGD-T and FAB-T, as AutoAttack's standard). torchattacks' own standard differs from the
  official one: its APGD, APGD-T and FAB-T run their default 10 steps (official: 100) and Square
  rescales its p schedule to the query budget (official: ``resc_schedule=False``).
* ``torchattacks_official_settings`` (``--official-settings``): torchattacks' same four attacks
  (MultiAttack) at the official settings: 100 steps, 5000 queries, fixed Square schedule. This is
  the reference the target is checked against when present (else ``torchattacks``).
* ``autoattack``: the official package (``pip install git+https://github.com/fra31/auto-attack``),
  when it is importable; otherwise recorded as not installed.
* ``robustmm``: ``Ensemble(version="standard")`` (early stop on, as its default).

Image: the whole ensemble at each ``--eps`` (/255, L-inf). Audio: the APGD parts only (APGD-CE then
APGD-T; torchattacks' Square and FAB assume image-shaped inputs), on inputs mapped to [0, 1] for
torchattacks (budget halved: the waveform domain [-1, 1] is 2 wide). Robust top-1 is scored by the
same classifier for every side. The target: every robustmm number within 0.5 points of the reference (``reference`` in each row).

    python benchmarks/autoattack_parity.py --threads 2 --n 200 --official-settings \
        --write docs/performance/autoattack_parity.json
    python benchmarks/autoattack_parity.py --eps 1 --audio-eps --write img1.json   # one budget per process ...
    python benchmarks/autoattack_parity.py --merge img1.json img2.json --write docs/performance/autoattack_parity.json
    python benchmarks/autoattack_parity.py --quick
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import add_common, execute, machine_info, rounded

log = logging.getLogger("benchmark.autoattack")
ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.005  # robust top-1 within half a point


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _official() -> Any:
    try:
        from autoattack import AutoAttack  # the official package, never vendored
    except ImportError:
        return None
    return AutoAttack


def _torchattacks_standard(clf: Any, eps: float, args: argparse.Namespace, apgd_only: bool, official: bool) -> Any:
    """torchattacks' AutoAttack standard (``official``: its four attacks at the official settings;
    ``apgd_only``: APGD-CE then APGD-T at the official steps)."""
    import torchattacks

    if apgd_only:
        return torchattacks.MultiAttack([
            torchattacks.APGD(clf, norm="Linf", eps=eps, steps=args.steps, loss="ce", n_restarts=1, seed=args.seed),
            torchattacks.APGDT(clf, norm="Linf", eps=eps, steps=args.steps, n_classes=10, n_restarts=1, seed=args.seed)])
    if not official:
        return torchattacks.AutoAttack(clf, norm="Linf", eps=eps, version="standard", n_classes=10, seed=args.seed)
    return torchattacks.MultiAttack([
        torchattacks.APGD(clf, norm="Linf", eps=eps, steps=args.steps, loss="ce", n_restarts=1, seed=args.seed),
        torchattacks.APGDT(clf, norm="Linf", eps=eps, steps=args.steps, n_classes=10, n_restarts=1, seed=args.seed),
        torchattacks.FAB(clf, norm="Linf", eps=eps, steps=args.steps, multi_targeted=True, n_classes=10, n_restarts=1,
                         seed=args.seed),
        torchattacks.Square(clf, norm="Linf", eps=eps, n_queries=args.n_queries, n_restarts=1, seed=args.seed,
                            resc_schedule=False)])


def compare(enc: Any, data: Any, modality: str, eps: float, args: argparse.Namespace) -> dict[str, Any]:
    """Robust top-1 of every side at one budget (``eps`` in the modality's unit)."""
    from robustmm.attacks.ensemble import Ensemble
    from robustmm.attacks.torchattacks_adapter import ZeroShotClassifier, as_4d
    from robustmm.evaluation import iter_batches
    from robustmm.modalities import get_modality

    prompts = data.task(modality).prompts()
    apgd_only = modality != "image"
    shape = tuple(data.get(modality, slice(0, 1)).shape[1:])
    lo, hi = get_modality(modality).domain
    raw = ZeroShotClassifier(enc, modality, prompts).eval()
    unit = ZeroShotClassifier(enc, modality, raw.class_emb, input_range="unit", sample_shape=shape).eval()
    parts = ["apgd-ce", "apgd-t"] if apgd_only else None
    ours = Ensemble(parts, version="standard", eps=eps, norm="linf", seed=args.seed,
                    steps=args.steps, n_queries=args.n_queries)
    refs = {"torchattacks": _torchattacks_standard(unit, eps / (hi - lo), args, apgd_only, False)}
    if args.official_settings and not apgd_only:
        refs["torchattacks_official_settings"] = _torchattacks_standard(unit, eps / (hi - lo), args, False, True)
    official = _official()
    hits: dict[str, list[torch.Tensor]] = {"clean": [], "robustmm": [], **{k: [] for k in refs}}
    secs = {k: 0.0 for k in ("robustmm", *refs)}
    if official is not None and not apgd_only:
        hits["autoattack"], secs["autoattack"] = [], 0.0

    def correct(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return raw(x).argmax(1) == y

    for b in iter_batches(data, modality, args.batch_size, prompts):
        y = b.labels
        hits["clean"].append(correct(b.x, y))
        t = time.perf_counter()
        hits["robustmm"].append(correct(ours(enc, b).x, y))
        secs["robustmm"] += time.perf_counter() - t
        for name, ta in refs.items():
            t = time.perf_counter()
            adv = ta(as_4d(unit.from_raw(b.x)), y)
            secs[name] += time.perf_counter() - t
            hits[name].append(correct(unit.to_raw(adv).reshape(b.x.shape), y))
        if "autoattack" in hits:
            t = time.perf_counter()
            adversary = official(raw, norm="Linf", eps=eps, version="standard", device=str(b.x.device), seed=args.seed)
            adversary.verbose = False
            hits["autoattack"].append(correct(adversary.run_standard_evaluation(b.x, y, bs=len(y)), y))
            secs["autoattack"] += time.perf_counter() - t
        log.info("%s eps %g: batch of %d done", modality, eps, len(y))
    top1 = {k: torch.cat(v).float().mean().item() for k, v in hits.items()}
    ref = "torchattacks_official_settings" if "torchattacks_official_settings" in top1 else "torchattacks"
    ref = "autoattack" if "autoattack" in top1 else ref
    diff = top1["robustmm"] - top1[ref]
    return {"eps": eps, "clean_top1": rounded(top1["clean"]),
            "robust_top1": {k: rounded(v) for k, v in top1.items() if k != "clean"},
            "autoattack_installed": official is not None, "reference": ref,
            "diff_robustmm_minus_reference": rounded(diff), "within_half_point": abs(diff) <= TARGET + 1e-9,
            "time_s": {k: rounded(v, 1) for k, v in secs.items()},
            "robustmm_ran": ours.describe().get("ran"),
            "parts": ["apgd-ce", "apgd-t"] if apgd_only else ["apgd-ce", "apgd-t", "fab-t", "square"]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torchattacks

    import robustmm

    enc = robustmm.load_encoder(args.model, device=torch.device(args.device))
    data = robustmm.load_dataset("synthscenes", split="test", n=args.n)
    out: dict[str, Any] = {
        "benchmark": "autoattack_parity",
        "command": "python " + " ".join(sys.argv),
        "commit": _commit(),
        "config": {"model": args.model, "dataset": "synthscenes:test", "n": len(data), "batch_size": args.batch_size,
                   "norm": "linf", "steps": args.steps, "n_queries": args.n_queries, "n_target_classes": 9,
                   "seed": args.seed, "quick": args.quick, "official_settings": args.official_settings},
        "machine": machine_info(args.device) | {"torchattacks": torchattacks.__version__},
        "targets": {"robust_top1_diff_max": TARGET},
        "image": {}, "audio": {},
    }
    plan = [("image", e / 255, f"{e:g}/255") for e in args.eps] + [("audio", e, f"{e:g}") for e in args.audio_eps]
    for modality, eps, label in plan:
        t = time.perf_counter()
        out[modality][label] = compare(enc, data, modality, eps, args)
        log.warning("%s %s: %s (%.0f s)", modality, label, out[modality][label]["robust_top1"], time.perf_counter() - t)
        if args.write:  # a partial file survives an interrupted run
            _write(args.write, out | {"complete": False})
    rows = [r for m in ("image", "audio") for r in out[m].values()]
    out["meets_targets"] = {"all_within_half_point": all(r["within_half_point"] for r in rows)}
    out["complete"] = True
    if args.write:
        _write(args.write, out)
    return out


def merge(paths: list[str]) -> dict[str, Any]:
    """One JSON from the files of runs split by budget (one process per eps runs them in
    parallel): their rows side by side, each with its run's ``n``, and every run's command."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    out = {k: runs[0][k] for k in ("benchmark", "commit", "config", "machine", "targets")}
    out["commands"] = [r["command"] for r in runs]
    out["image"], out["audio"] = {}, {}
    for r in runs:
        for m in ("image", "audio"):
            for label, row in r[m].items():
                out[m][label] = {"n": r["config"]["n"], **row}
    rows = [row for m in ("image", "audio") for row in out[m].values()]
    out["config"] = {k: v for k, v in out["config"].items() if k != "n"} | {"n": sorted({row["n"] for row in rows})}
    out["meets_targets"] = {"all_within_half_point": all(row["within_half_point"] for row in rows)}
    out["complete"] = all(r.get("complete", False) for r in runs)
    return out


def _write(path: str, obj: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(obj, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tinybind")
    ap.add_argument("--n", type=int, default=200, help="items (default 200)")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--eps", type=float, nargs="*", default=[1.0, 2.0, 4.0], help="image budgets in /255")
    ap.add_argument("--audio-eps", type=float, nargs="*", default=[0.001, 0.002], help="audio budgets (full scale)")
    ap.add_argument("--steps", type=int, default=100, help="APGD / FAB iterations (AutoAttack: 100)")
    ap.add_argument("--n-queries", type=int, default=5000, help="Square queries (AutoAttack: 5000)")
    ap.add_argument("--official-settings", action="store_true",
                    help="torchattacks' four attacks with the official standard's FAB steps and Square schedule")
    ap.add_argument("--write", default=None, help="also write the JSON here (e.g. docs/performance/autoattack_parity.json)")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="run nothing: merge the files written by runs split by budget (--write them apart)")
    add_common(ap)
    args = ap.parse_args()
    if args.merge:
        merged = merge(args.merge)
        if args.write:
            _write(args.write, merged)
        sys.stdout.write(json.dumps(merged) + "\n")
        return
    if args.quick:
        args.n, args.batch_size, args.steps, args.n_queries = min(args.n, 6), 6, 2, 10
        args.eps, args.audio_eps = args.eps[:1], args.audio_eps[:1]
    execute(args, run)


if __name__ == "__main__":
    main()
