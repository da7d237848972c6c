"""Monte Carlo forward throughput of randomized smoothing vs the encoder's raw batched forward.

For each of ``--items`` test items, :meth:`SmoothedClassifier.sample_counts` draws ``--draws``
noisy copies (``--batch-noise`` per forward: noise generation, clamping, the embedding, the
zero-shot argmax and the counting), and the raw loop embeds the same number of inputs in batches
of the same size with ``encode(validate=False)``. The two run back to back on every item in
alternating order (paired timings, robust to drift on a shared machine); reported: inputs per
second of both and ``throughput_ratio`` = smoothing / raw, the median of the per-item ratios
(target >= 0.9).

    python benchmarks/smoothing_throughput.py --threads 2
"""
from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Any

import torch
from _common import add_common, execute, machine_info, rounded, sync

log = logging.getLogger("benchmark.smoothing")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import robustmm
    from robustmm.encoders.smoothed import SmoothedClassifier

    items, draws = (2, 64) if args.quick else (args.items, args.draws)
    enc = robustmm.load_encoder(args.model).to(args.device)
    data = robustmm.load_dataset("synthscenes", split="test", n=items)
    task = data.tasks[args.modality]
    sm = SmoothedClassifier(enc, args.modality, args.sigma, prompts=task.prompts(), batch_noise=args.batch_noise)
    x = data.get(args.modality, torch.arange(items)).to(args.device)
    rng = torch.Generator().manual_seed(args.seed)

    def raw(i: int) -> None:
        lo, hi = sm.spec.domain
        with torch.no_grad():
            for s in range(0, draws, args.batch_noise):
                k = min(args.batch_noise, draws - s)
                # the same number of distinct valid inputs, made outside the timed region's noise path
                enc.encode(args.modality, batch[i][s : s + k], validate=False)

    # raw inputs are noisy copies prepared in advance, so the raw loop times the forward alone
    batch = [(x[i].unsqueeze(0) + args.sigma * torch.randn((draws, *x.shape[1:]), generator=rng)).clamp(*sm.spec.domain)
             .to(args.device) for i in range(items)]
    sm.sample_counts(x[:1], min(draws, args.batch_noise))  # warm-up
    raw(0)
    t_sm, t_raw, ratios = [], [], []
    for i in range(items):
        pair = {}
        for name in (("sm", "raw") if i % 2 == 0 else ("raw", "sm")):
            sync(args.device)
            t0 = time.perf_counter()
            if name == "sm":
                sm.sample_counts(x[i : i + 1], draws, index=torch.tensor([i]))
            else:
                raw(i)
            sync(args.device)
            pair[name] = time.perf_counter() - t0
        t_sm.append(pair["sm"])
        t_raw.append(pair["raw"])
        ratios.append(pair["raw"] / pair["sm"])  # throughput ratio = time_raw / time_smoothing
    return {
        "benchmark": "smoothing_throughput",
        "model": args.model, "modality": args.modality, "sigma": args.sigma, "items": items, "draws_per_item": draws,
        "batch_noise": args.batch_noise,
        "smoothing_inputs_per_s": rounded(items * draws / sum(t_sm), 1),
        "raw_forward_inputs_per_s": rounded(items * draws / sum(t_raw), 1),
        "throughput_ratio": rounded(statistics.median(ratios)),
        "throughput_ratio_total": rounded(sum(t_raw) / sum(t_sm)),
        "target": ">= 0.9",
        "machine": machine_info(args.device),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(ap)
    ap.add_argument("--model", default="tinybind")
    ap.add_argument("--modality", default="image")
    ap.add_argument("--sigma", type=float, default=0.12)
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--draws", type=int, default=512)
    ap.add_argument("--batch-noise", type=int, default=256)
    execute(ap.parse_args(), run)


if __name__ == "__main__":
    main()
