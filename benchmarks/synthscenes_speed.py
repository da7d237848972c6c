"""Time SynthScenes generation: N scenes with all six modalities, printed as one JSON object.

Usage: ``python benchmarks/synthscenes_speed.py [--n 10000] [--seed 0] [--modalities image,audio]``.
The project's budget is 10,000 scenes with every modality in under 60 s on a 2-core CPU, with
peak memory under ~3 GB (reported as ``peak_rss_mb`` where the platform gives it).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robustmm.data.synthscenes import ALL_MODALITIES, synthscenes  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modalities", default=",".join(ALL_MODALITIES))
    args = ap.parse_args()
    mods = tuple(m for m in args.modalities.split(",") if m)
    t0 = time.perf_counter()
    ds = synthscenes(n=args.n, seed=args.seed, split="bench", modalities=mods)
    seconds = time.perf_counter() - t0
    nbytes = sum(t.numel() * t.element_size() for t in ds.tensors.values())
    print(json.dumps({
        "n": len(ds),
        "modalities": list(mods),
        "seconds": round(seconds, 3),
        "scenes_per_s": round(len(ds) / seconds, 1),
        "tensor_mb": round(nbytes / 2**20, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
