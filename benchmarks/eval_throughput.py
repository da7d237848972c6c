"""Retrieval-evaluation throughput and peak memory on a 10,000-item gallery (clean evaluate()).

What :func:`robustmm.evaluate` does with a gallery (read from the code, and what this measures):
item embeddings are computed batch by batch under ``no_grad`` and moved to the CPU (N x D floats);
the class prompts and the captions are embedded once each; :func:`robustmm.metrics.t2x_ranks` and
:func:`~robustmm.metrics.x2t_ranks` score similarities in chunks of 4096 rows, so no N x M matrix
is ever held at once. What can still dominate memory is the dataset itself: an eager SynthScenes
split holds every rendered tensor, while ``lazy=True`` keeps only the scene parameters and
renders each batch on demand. Both are measured, each in a fresh child process so one's peak
cannot hide the other's:

* ``build`` -- making the dataset (rendering, for eager), its time and resident-memory growth;
* ``evaluate`` -- ``robustmm.evaluate(enc, data, modality=...)``: items/s and peak memory growth
  over the resident memory just before it (sampled from /proc every 5 ms; ``ru_maxrss`` is also
  given), and ``torch.cuda.max_memory_allocated`` on GPU;
* ``metrics_only`` -- the peak of the retrieval metrics alone on random unit embeddings of the
  same shapes (N items, 5N captions): the share of the evaluate peak the ranking chunks take.

Each child loads the model and runs a small warm-up evaluation on other items (another seed)
first, so neither variant pays for kernel warm-up or model loading.

    python benchmarks/eval_throughput.py                    # TinyBind image, 10,000 items, eager + lazy
    python benchmarks/eval_throughput.py --variants lazy --modality audio
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from _common import add_common, emit, machine_info, rounded, setup, stdout_to_stderr

log = logging.getLogger("benchmark.eval")
MB = 2**20


def _rss() -> int:
    """Current resident set size in bytes (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _maxrss() -> int:
    """Peak resident set size so far, in bytes (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRSS:
    """Samples the resident set size in a background thread; ``peak`` is the largest seen."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One variant (eager or lazy) in this process."""
    import robustmm
    from robustmm.cost import count_passes
    from robustmm.data.synthscenes import synthscenes
    from robustmm.metrics import retrieval_metrics

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    enc = robustmm.load_encoder(args.model, device=dev)
    mods = (args.modality,)
    warm = synthscenes(n=min(64, args.n), seed=99, split="warmup", modalities=mods)
    robustmm.evaluate(enc, warm, modality=args.modality, batch_size=args.batch_size, progress=False)

    lazy = args.child == "lazy"
    rss0, t0 = _rss(), time.perf_counter()
    data = synthscenes(n=args.n, seed=0, split="train", modalities=mods, lazy=lazy)
    build_s, rss_build = time.perf_counter() - t0, _rss()
    tensor_mb = sum(t.numel() * t.element_size() for t in data.tensors.values()) / MB

    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    rss1, maxrss1 = _rss(), _maxrss()
    with PeakRSS() as peak, count_passes() as passes:  # counting is a few integer adds per batch
        t1 = time.perf_counter()
        res = robustmm.evaluate(enc, data, modality=args.modality, batch_size=args.batch_size, progress=False)
        if cuda:
            torch.cuda.synchronize(dev)
        eval_s = time.perf_counter() - t1
    out: dict[str, Any] = {
        "variant": args.child,
        "n": len(data),
        "captions": sum(len(c) for c in data.captions),
        "build": {"seconds": round(build_s, 3), "rss_growth_mb": round((rss_build - rss0) / MB, 1),
                  "tensor_mb": round(tensor_mb, 1)},
        "evaluate": {"seconds": round(eval_s, 3), "items_per_s": round(len(data) / eval_s, 1),
                     "peak_rss_growth_mb": round((peak.peak - rss1) / MB, 1),
                     "ru_maxrss_growth_mb": round(max(0, _maxrss() - maxrss1) / MB, 1),
                     "rss_before_mb": round(rss1 / MB, 1)},
        "end_to_end_items_per_s": round(len(data) / (build_s + eval_s), 1),
        "passes_per_item": {"forward": round(passes.forward / len(data), 3),
                            "backward": round(passes.backward / len(data), 3),
                            "texts": round(passes.text / len(data), 3)},
        "metrics": {k: rounded(v) for k, v in res.metrics["clean"].items()},
    }
    if cuda:
        out["evaluate"]["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(dev) / MB, 1)

    # the ranking chunks alone, on random unit embeddings of the same shapes
    g = torch.Generator().manual_seed(0)
    n, m, d = len(data), out["captions"], enc.embed_dim
    items = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(m, d, generator=g), dim=-1)
    owner = torch.arange(n).repeat_interleave(m // n) if m % n == 0 else torch.randint(0, n, (m,), generator=g)
    rss2 = _rss()
    with PeakRSS() as peak2:
        t2 = time.perf_counter()
        retrieval_metrics(items, texts, owner)
        metrics_s = time.perf_counter() - t2
    out["metrics_only"] = {"seconds": round(metrics_s, 3), "peak_rss_growth_mb": round((peak2.peak - rss2) / MB, 1),
                           "embeddings_mb": round((items.numel() + texts.numel()) * 4 / MB, 1)}
    return out


def parent(args: argparse.Namespace) -> dict[str, Any]:
    """Run each variant in a fresh child process and collect their JSON."""
    results = {}
    for variant in args.variants:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--n", str(args.n),
               "--model", args.model, "--modality", args.modality, "--batch-size", str(args.batch_size),
               "--device", args.device, "--seed", str(args.seed)]
        if args.threads is not None:
            cmd += ["--threads", str(args.threads)]
        if args.verbose:
            cmd.append("-v")
        log.info("running %s", " ".join(cmd))
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, check=False)
        if p.returncode != 0:
            raise SystemExit(f"child {variant} failed with status {p.returncode}")
        results[variant] = json.loads(p.stdout.strip().splitlines()[-1])
    out: dict[str, Any] = {
        "benchmark": "eval_throughput",
        "config": {"model": args.model, "modality": args.modality, "n": args.n, "batch_size": args.batch_size,
                   "variants": args.variants, "quick": args.quick, "task": "clean evaluate(): zero-shot + retrieval both ways"},
        "machine": machine_info(args.device),
        "variants": results,
    }
    if "eager" in results and "lazy" in results:
        e, z = results["eager"], results["lazy"]
        out["same_metrics"] = e["metrics"] == z["metrics"]
        out["lazy_vs_eager"] = {
            "peak_memory_mb": {
                "eager_build_plus_eval": round(e["build"]["rss_growth_mb"] + e["evaluate"]["peak_rss_growth_mb"], 1),
                "lazy_build_plus_eval": round(z["build"]["rss_growth_mb"] + z["evaluate"]["peak_rss_growth_mb"], 1),
            },
            "end_to_end_items_per_s": {"eager": e["end_to_end_items_per_s"], "lazy": z["end_to_end_items_per_s"]},
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tinybind")
    ap.add_argument("--modality", default="image")
    ap.add_argument("--n", type=int, default=10000, help="gallery size (default 10,000)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--variants", nargs="+", choices=["eager", "lazy"], default=["eager", "lazy"])
    ap.add_argument("--child", choices=["eager", "lazy"], default=None, help=argparse.SUPPRESS)
    add_common(ap)
    args = ap.parse_args()
    if args.quick:
        args.n = min(args.n, 64)
    setup(args)
    with stdout_to_stderr():
        result = child(args) if args.child else parent(args)
    if not args.child:
        result["config"]["threads"] = args.threads
    emit(result)


if __name__ == "__main__":
    main()
