"""robustmm PGD vs torchattacks PGD on the same zero-shot classifier, same data, same steps.

Both attacks differentiate the same encoder through the same zero-shot logits
(``logit_scale * encode(x) @ class_emb.T``, cross-entropy on the true class), with the same
budget, step size and number of steps and no random start, over the same batches; so they compute
(up to floating-point rounding) the same adversarial examples and the timing difference is pure
framework overhead. torchattacks attacks a :class:`~robustmm.attacks.torchattacks_adapter.ZeroShotClassifier`
built once outside the timed region (its class embeddings precomputed); robustmm's PGD is called
with a :class:`~robustmm.Batch` as in :func:`robustmm.evaluate` and binds its objective (class
embeddings from the prompts) inside every call, as it does in real use.

Also timed: the raw cost, ``steps`` x (forward + backward to the input) of the same encoder on the
same batches with the same loss -- what any PGD must pay. Reported:

* ``time_ratio`` = robustmm / torchattacks (target <= 1.05)
* ``overhead_vs_raw`` = robustmm / raw - 1 (target <= 0.10)
* robust top-1 of both, and how far apart their adversarial examples are.

Timing is interleaved per batch: for every batch the three run back to back, in an order that
rotates with the batch and the repeat, after one warm-up pass of each. Both ratios are medians of
the per-batch paired ratios (robust to a shared machine's drift, which easily moves a whole
multi-second pass by 20%); the per-repeat totals, their medians and the quartiles of the paired
ratios are reported too.

``--amp`` runs all three under ``torch.autocast(device_type, dtype=torch.bfloat16)``. This works
with robustmm PGD unchanged: the input ``x`` stays float32, autocast lowers the encoder's matmuls
and convolutions, the embedding/logits/loss come back in float32 (cross-entropy autocasts to
float32) and the gradient w.r.t. the float32 input is float32, so steps and projections are exact.

    python benchmarks/pgd_vs_torchattacks.py                          # TinyBind image, CPU
    python benchmarks/pgd_vs_torchattacks.py --model open_clip:ViT-B-32@none --device cuda --amp
    python benchmarks/pgd_vs_torchattacks.py --quick                  # a few items, 2 steps
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
from typing import Any

import torch
import torch.nn.functional as F
from _common import add_common, execute, machine_info, passes_per_item, rounded, summary, timed

log = logging.getLogger("benchmark.pgd")


def _robust_top1(clf: Any, adv: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        logits = torch.cat([clf(clf.from_raw(a)) for a in adv.split(256)])
    return (logits.argmax(1) == labels).float().mean().item()


def _step_size(args: argparse.Namespace, eps: float, norm: str) -> float:
    """--step-size, else eps/4 for L-inf and 2.5 eps / steps for L2."""
    if args.step_size is not None:
        return args.step_size
    return eps / 4 if norm == "linf" else 2.5 * eps / max(args.steps, 1)


def _batches(args: argparse.Namespace, data: Any, x_all: torch.Tensor, device: torch.device) -> list[Any]:
    """The items in batches of --batch-size, on ``device``, with labels and class prompts."""
    from robustmm.batch import Batch

    task = data.task(args.modality)
    prompts = task.prompts()
    batches = []
    for s in range(0, len(data), args.batch_size):
        idx = torch.arange(s, min(s + args.batch_size, len(data)))
        batches.append(Batch(modality=args.modality, x=x_all[idx].to(device), captions=[list(data.captions[i]) for i in idx],
                             labels=task.labels[idx].to(device), prompts=prompts, index=idx))
    return batches


def _interleaved(args: argparse.Namespace, fns: dict[str, Any], batches: list[Any], advs: dict[str, list[Any]],
                 device: torch.device) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Time every function on every batch, --repeats times: per function the total of each repeat,
    and the per-batch paired ratios robustmm/torchattacks and robustmm/raw; ``advs`` gets the outputs.
    Interleaved per batch, in rotating order, so machine drift (a shared CPU's other tenants,
    thermal state) hits the three alike."""
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in fns}
    pairs: dict[str, list[float]] = {"robustmm/torchattacks": [], "robustmm/raw": []}
    for r in range(args.repeats):
        total = dict.fromkeys(fns, 0.0)
        for i, b in enumerate(batches):
            k = (r + i) % len(names)
            t_b: dict[str, float] = {}
            for name in names[k:] + names[:k]:
                t, res = timed(lambda name=name, b=b: fns[name](b), device)
                t_b[name] = t
                total[name] += t
                advs[name][i] = res
            pairs["robustmm/torchattacks"].append(t_b["robustmm"] / t_b["torchattacks"])
            pairs["robustmm/raw"].append(t_b["robustmm"] / t_b["raw"])
        for name in names:
            times[name].append(total[name])
        log.info("repeat %d: %s", r, {k: round(v, 3) for k, v in total.items()})
    return times, pairs


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torchattacks

    import robustmm
    from robustmm.attacks.pgd import PGD, resolve_norm
    from robustmm.attacks.torchattacks_adapter import ZeroShotClassifier, as_4d
    from robustmm.batch import Batch
    from robustmm.data.synthscenes import synthscenes
    from robustmm.modalities import get_modality

    device = torch.device(args.device)
    spec = get_modality(args.modality)
    eps = spec.middle_eps if args.eps is None else args.eps
    norm = resolve_norm(args.norm, spec)
    step = _step_size(args, eps, norm)
    lo, hi = spec.domain
    width = hi - lo

    enc = robustmm.load_encoder(args.model, device=device)
    data = synthscenes(n=args.n, seed=2, split="test", modalities=(args.modality,))
    task = data.task(args.modality)
    prompts = task.prompts()
    unit = (lo, hi) != (0.0, 1.0)
    x_all = data.get(args.modality, torch.arange(len(data)))
    clf = ZeroShotClassifier(enc, args.modality, prompts, logit_scale=args.logit_scale,
                             input_range="unit" if unit else "raw",
                             sample_shape=x_all.shape[1:] if x_all.dim() != 4 else None).eval()
    class_emb = clf.class_emb
    batches = _batches(args, data, x_all, device)
    labels = task.labels.to(device)

    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.amp else contextlib.nullcontext
    pgd = PGD(eps=eps, norm=norm, steps=args.steps, step_size=step, random_start=False, loss="ce",
              logit_scale=args.logit_scale)
    ta_cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    ta = ta_cls(clf, eps=eps / width, alpha=step / width, steps=args.steps, random_start=False)
    ta.set_device(device)

    def robustmm_pgd(b: Batch) -> torch.Tensor:
        with amp():
            return pgd(enc, b).x

    def torchattacks_pgd(b: Batch) -> torch.Tensor:
        with amp():
            adv01 = ta(as_4d(clf.from_raw(b.x)), b.labels)
            return clf.to_raw(adv01.reshape(b.x.shape))

    def raw_fwd_bwd(b: Batch) -> None:
        """steps x (encode + zero-shot CE + gradient w.r.t. the input), nothing else."""
        with amp():
            for _ in range(args.steps):
                xa = b.x.detach().requires_grad_(True)
                emb = enc.encode(args.modality, xa, validate=False)
                loss = F.cross_entropy(args.logit_scale * emb @ class_emb.to(emb.dtype).T, b.labels, reduction="sum")
                torch.autograd.grad(loss, xa)

    fns = {"robustmm": robustmm_pgd, "torchattacks": torchattacks_pgd, "raw": raw_fwd_bwd}
    advs: dict[str, list[Any]] = {k: [None] * len(batches) for k in fns}
    for fn in fns.values():  # warm-up: kernels, allocator, autotuning, text caches
        for _ in range(args.warmup):
            for b in batches:
                fn(b)
    passes = {name: passes_per_item(fn, batches[0], clf if name == "torchattacks" else None)  # untimed
              for name, fn in fns.items()}
    times, pairs = _interleaved(args, fns, batches, advs, device)
    out = {k: torch.cat(v) for k, v in advs.items() if k != "raw"}

    # diagnostic: robustmm binds its objective per call (class embeddings from the prompts); with an
    # encoder that has no text cache (open_clip, HF) this is a text-tower forward per batch
    setup_times = []
    for _ in range(max(args.repeats, 1)):
        with amp():
            t, _ = timed(lambda: enc.class_embeddings(prompts), device)
        setup_times.append(t)
    setup_s = summary(setup_times)["median_s"]

    adv_r, adv_t = out["robustmm"], out["torchattacks"]
    x_dev = torch.cat([b.x for b in batches])
    delta_r, delta_t = (adv_r - x_dev).flatten(1), (adv_t - x_dev).flatten(1)
    dn = (lambda d: d.abs().amax(1)) if norm == "linf" else (lambda d: d.norm(dim=1))
    med = {k: summary(v)["median_s"] for k, v in times.items()}
    ratio = statistics.median(pairs["robustmm/torchattacks"])
    overhead = statistics.median(pairs["robustmm/raw"]) - 1
    return {
        "benchmark": "pgd_vs_torchattacks",
        "config": {"model": args.model, "modality": args.modality, "n": len(data), "batch_size": args.batch_size,
                   "steps": args.steps, "eps": eps, "norm": norm, "step_size": step, "random_start": False,
                   "loss": "ce", "logit_scale": args.logit_scale, "amp": "bfloat16" if args.amp else None,
                   "repeats": args.repeats, "warmup": args.warmup, "quick": args.quick,
                   "torchattacks_class": ta_cls.__name__},
        "machine": machine_info(str(device)) | {"torchattacks": torchattacks.__version__},
        "robustmm": summary(times["robustmm"]) | {"items_per_s": rounded(len(data) / med["robustmm"], 1)},
        "torchattacks": summary(times["torchattacks"]) | {"items_per_s": rounded(len(data) / med["torchattacks"], 1)},
        "raw_fwd_bwd": summary(times["raw"]) | {"per_step_s": rounded(med["raw"] / max(args.steps, 1), 5)},
        "objective_setup": {"class_embeddings_per_call_s": setup_s, "calls_per_run": len(batches),
                            "share_of_robustmm": rounded(setup_s * len(batches) / med["robustmm"])},
        "passes_per_item": passes,
        "time_ratio": rounded(ratio),
        "overhead_vs_raw": rounded(overhead),
        "ratio_of_median_totals": {"robustmm/torchattacks": rounded(med["robustmm"] / med["torchattacks"]),
                                   "robustmm/raw": rounded(med["robustmm"] / med["raw"])},
        "paired_ratio_quartiles": {k: [rounded(q) for q in statistics.quantiles(v, n=4)] if len(v) > 1 else v
                                   for k, v in pairs.items()},
        "targets": {"time_ratio_max": 1.05, "overhead_vs_raw_max": 0.10},
        "meets_targets": {"time_ratio": ratio <= 1.05, "overhead_vs_raw": overhead <= 0.10},
        "clean_top1": rounded(_robust_top1(clf, x_dev, labels)),
        "robust_top1": {"robustmm": rounded(_robust_top1(clf, adv_r, labels)),
                        "torchattacks": rounded(_robust_top1(clf, adv_t, labels))},
        "adv_agreement": {"max_abs_diff": float((adv_r - adv_t).abs().max()),
                          "frac_elements_equal": rounded((adv_r == adv_t).float().mean().item(), 6),
                          "max_delta_norm": {"robustmm": float(dn(delta_r).max()), "torchattacks": float(dn(delta_t).max())}},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tinybind", help="any robustmm model name (default tinybind)")
    ap.add_argument("--modality", default="image")
    ap.add_argument("--n", type=int, default=512, help="items attacked per repeat (default 512)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--eps", type=float, default=None, help="budget in the modality's unit (default: its middle eps)")
    ap.add_argument("--norm", default=None, choices=["linf", "l2"], help="default: the modality's norm")
    ap.add_argument("--step-size", type=float, default=None, help="default: eps/4 (linf), 2.5*eps/steps (l2)")
    ap.add_argument("--logit-scale", type=float, default=100.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--amp", action="store_true", help="run everything under torch.autocast(bfloat16)")
    add_common(ap)
    args = ap.parse_args()
    if args.quick:
        args.n, args.batch_size, args.steps, args.repeats = min(args.n, 8), min(args.batch_size, 4), min(args.steps, 2), 1
    execute(args, run)


if __name__ == "__main__":
    main()
