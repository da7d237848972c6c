"""Peak memory of EOT-APGD against the number of draws k: the draws are folded as they come
(``attacks/eot_reduction.DrawFold``), so k = 16 should need about what k = 1 needs, not k input-sized
gradients more (one JSON object).

Each (k, reduction) runs in a fresh process (``--one``), on the same video items behind the
randomized random-resize-pad defense, and reports its peak resident memory above what the loaded
model and data already take, next to the size of one input batch:

    python benchmarks/eot_memory.py --n 200 --draws 1 16 > docs/performance/eot_memory.json
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import add_common, execute, machine_info


def one(n: int, k: int, reduction: str, steps: int, modality: str) -> dict[str, Any]:
    """Peak RSS (MB) of one EOT-APGD run, above the loaded model and data, and its wall time."""
    import torch

    torch.set_num_threads(1)
    from robustmm.attacks import build_attack
    from robustmm.attacks.eot import EOT
    from robustmm.data.registry import load_dataset
    from robustmm.encoders.input_transforms import defend
    from robustmm.encoders.registry import load_encoder
    from robustmm.evaluation import iter_batches

    enc = load_encoder("tinybind")
    data = load_dataset("synthscenes", split="test", n=n)
    prompts = data.tasks[modality].prompts()
    batch = next(iter_batches(data, modality, n, prompts))
    enc.class_embeddings(prompts)
    defended = defend(enc, "random-resize-pad")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.manual_seed(0)
    attack = EOT(build_attack("apgd", eps=4 / 255, steps=steps), samples=k, reduction=reduction)
    t0 = time.perf_counter()
    adv = attack(defended, batch)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"k": k, "reduction": reduction, "input_batch_mb": round(batch.x.numel() * 4 / 2**20, 1),
            "peak_above_loaded_mb": round((peak - base) / 1024, 1), "wall_s": round(wall, 1),
            "checksum": float(adv.x.double().sum())}


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for reduction in args.reductions:
        for k in args.draws:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--one", str(k), reduction, "--n", str(args.n),
                   "--steps", str(args.steps), "--modality", args.modality]
            p = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if p.returncode != 0:
                raise SystemExit(f"k={k} {reduction}: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")
            rows.append(json.loads(p.stdout))
    return {"benchmark": "eot_memory", "modality": args.modality, "n": args.n, "steps": args.steps,
            "defense": "random-resize-pad", "attack": "EOT APGD-CE 4/255", "runs": rows, "machine": machine_info("cpu")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common(ap)
    ap.add_argument("--n", type=int, default=200, help="items (one batch)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--modality", default="video")
    ap.add_argument("--draws", type=int, nargs="+", default=[1, 16], help="values of k")
    ap.add_argument("--reductions", nargs="+", default=["mean", "softmin"])
    ap.add_argument("--one", nargs=2, metavar=("K", "REDUCTION"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.n, int(args.one[0]), args.one[1], args.steps, args.modality)))
        return
    if args.quick:
        args.n, args.steps, args.draws = 8, 1, [1, 2]
    execute(args, run)


if __name__ == "__main__":
    main()
