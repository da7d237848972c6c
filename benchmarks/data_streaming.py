"""Streaming a class folder: decode throughput and peak memory, against a plain PIL loop.

Writes ``--side`` x ``--side`` PNGs into class folders under ``--dir`` (1k and 10k items by
default), then, each in a fresh process so that peak memory is that run's own:

* ``stream-wN``: ``load_dataset("imagefolder:DIR,size=SIDE,workers=N")`` and every item read in
  batches of ``--batch-size`` through ``dataset.get`` (what ``evaluate`` does), N worker processes;
* ``pil-loop``: the loop a user writes first: ``Image.open`` -> ``convert("RGB")`` -> tensor, every
  item kept in a list and stacked (memory grows with the folder).

Reported per run: items/s over the full pass (dataset construction, which probes every file's
header, timed apart) and peak RSS in MB (``ru_maxrss``) of the main process and of the largest
child (its RSS counts pages shared with the parent, so it is an upper bound). Each (mode, size)
runs ``--repeats`` times; the medians are compared. ``main_peak_growth`` is the main process's
peak at the largest size over the smallest, minus 1: within 10 % is flat. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import add_common, execute, machine_info


def write_folder(root: Path, n: int, side: int, classes: int = 10) -> Path:
    """``n`` PNGs of ``side`` px in ``classes`` class folders (kept when already complete)."""
    import numpy as np
    from PIL import Image

    done = root / ".complete"
    if done.is_file() and done.read_text() == f"{n} {side}":
        return root
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class_{i % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
    done.write_text(f"{n} {side}")
    return root


def peak_mb() -> dict[str, float]:
    """Peak RSS so far of this process and of its largest finished child, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {"main_peak_mb": round(own, 1), "worker_peak_mb": round(child, 1)}


def one_run(mode: str, folder: Path, side: int, batch_size: int) -> dict[str, Any]:
    """One measured pass in this process (called in a child process by :func:`run`)."""
    import torch

    t0 = time.perf_counter()
    if mode == "pil-loop":
        import numpy as np
        from PIL import Image

        paths = sorted(str(p) for p in folder.glob("*/*.png"))
        t1 = time.perf_counter()
        items = []
        for p in paths:
            with Image.open(p) as im:
                items.append(torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1))
        total = float(torch.stack(items).sum())
        n = len(paths)
    else:
        import robustmm

        workers = int(mode.split("-w")[1])
        data = robustmm.load_dataset(f"imagefolder:{folder},size={side},workers={workers}")
        t1 = time.perf_counter()
        n, total = len(data), 0.0
        for s in range(0, n, batch_size):
            total += float(data.get("image", torch.arange(s, min(s + batch_size, n))).sum())
    t2 = time.perf_counter()
    return {"mode": mode, "items": n, "setup_s": round(t1 - t0, 3), "decode_s": round(t2 - t1, 3),
            "items_per_s": round(n / (t2 - t1), 1), "checksum": round(total, 1), **peak_mb()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [100, 200] if args.quick else args.sizes
    modes = ["pil-loop", "stream-w0", f"stream-w{args.workers}"]
    runs = []
    for n in sizes:
        folder = write_folder(Path(args.dir) / f"n{n}_s{args.side}", n, args.side)
        for repeat in range(args.repeats):
            for mode in modes:
                cmd = [sys.executable, __file__, "--one", mode, str(folder), "--side", str(args.side),
                       "--batch-size", str(args.batch_size)]
                env = {**os.environ, "OMP_NUM_THREADS": str(args.threads or 1)}
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
                runs.append({**json.loads(out.stdout.strip().splitlines()[-1]), "repeat": repeat})
                print(runs[-1], file=sys.stderr)
    by = {}
    for mode in modes:
        for n in sizes:
            mine = [r for r in runs if r["mode"] == mode and r["items"] == n]
            by[(mode, n)] = {k: statistics.median(r[k] for r in mine) for k in ("items_per_s", "main_peak_mb", "worker_peak_mb")}
    lo, hi = min(sizes), max(sizes)
    flat = {m: round(by[(m, hi)]["main_peak_mb"] / by[(m, lo)]["main_peak_mb"] - 1.0, 4) for m in modes}
    stream = f"stream-w{args.workers}"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    return {
        "benchmark": "data_streaming",
        "command": "python benchmarks/data_streaming.py " + " ".join(sys.argv[1:]),
        "commit": commit,
        "config": {"sizes": sizes, "repeats": args.repeats, "side": args.side, "batch_size": args.batch_size,
                   "workers": args.workers, "format": "PNG, RGB noise, 10 class folders", "quick": args.quick},
        "machine": machine_info("cpu"),
        "median_of_repeats": {f"{m} {n}": v for (m, n), v in by.items()},
        "runs": runs,
        "main_peak_growth": {f"{m} {lo}->{hi}": v for m, v in flat.items()},
        "flat_within_10pct": {m: abs(v) <= 0.10 for m, v in flat.items()},
        "throughput_vs_pil_loop": {f"{m} at {hi}": round(by[(m, hi)]["items_per_s"] / by[("pil-loop", hi)]["items_per_s"], 3)
                                   for m in modes if m != "pil-loop"},
        "note": f"{stream}: {args.workers} DataLoader worker processes per batch; "
                "pil-loop keeps every item, as a naive loader does",
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        ap = argparse.ArgumentParser()
        ap.add_argument("--one", nargs=2)
        ap.add_argument("--side", type=int)
        ap.add_argument("--batch-size", type=int)
        a = ap.parse_args()
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        print(json.dumps(one_run(a.one[0], Path(a.one[1]), a.side, a.batch_size)))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="/tmp/robustmm_data_streaming", help="where the PNG folders are written")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per (mode, size); medians are reported")
    add_common(ap)
    execute(ap.parse_args(), run)


if __name__ == "__main__":
    main()
