"""PGD's overhead over the raw forward + backward loop it is made of: same encoder, batch and steps.

Every variant attacks the same batches of the same encoder for the same number of steps, with the
same zero-shot cross-entropy (``logit_scale * encode(x) @ class_emb.T``) at the modality's middle
eps, L-inf, step eps/4, and ends with the embedding of its adversarial input that an evaluation
scores (:func:`robustmm.evaluate` embeds what the attack returns): each variant is timed as
evaluate uses it, attack plus that embedding.

* ``raw`` -- the floor, written plainly here: ``steps`` x (forward + loss + backward to the input +
  sign step + clamp to the ball and the domain), from the clean input, last iterate returned and
  embedded once (no grad) for the evaluation.
* ``raw_again`` -- ``raw`` a second time: an A/A pair, so ``raw_again / raw`` is the noise level
  of a paired ratio on this machine at this moment.
* ``raw_defaults`` -- what PGD's defaults must pay, written plainly: the ``raw`` loop plus the
  seeded per-item random start (drawn with robustmm's ``random_delta``, so the outputs can be
  compared bit for bit), best-iterate tracking (inputs and their embeddings) and one no-grad
  forward of the final iterate, whose embedding is the evaluation's: ``steps`` + 1 forwards, as ``raw``.
* ``robustmm`` -- ``PGD()`` at its defaults (random start, ``keep_best``), called with a Batch as
  :func:`robustmm.evaluate` calls it (checks, objective binding and all), then the embedding
  evaluate uses (:func:`robustmm.evaluation.runner.adv_embedding`): the one PGD hands back.
* ``robustmm_reembed`` -- the same ``PGD()``, its returned input embedded again as evaluate did
  before PGD handed the kept iterate's embedding back: ``steps`` + 2 forwards, the before of the
  hand-back, measured in the same run.
* ``robustmm_plain`` -- ``PGD(random_start=False, keep_best=False)`` then evaluate's embedding (a
  forward): exactly ``raw``'s algorithm, so ``robustmm_plain / raw - 1`` is pure framework overhead.
* ``torchattacks`` -- ``torchattacks.PGD(random_start=False)`` (if installed) on a
  ``ZeroShotClassifier`` built outside the timed region, then the evaluation's forward: ``raw``'s
  algorithm too.

``passes_per_item`` gives each variant's model passes per item (forward, backward; counted with
:func:`robustmm.cost.count_passes` at ``Encoder.encode``, the torchattacks classifier included),
the unit that compares across machines.

Timing: one warm-up pass of each, then ``repeats`` passes; in each pass every batch runs every
variant back to back in an order that rotates with the batch and the pass, and each reported
overhead is the median of the per-batch paired ratios ``variant / raw - 1`` (robust to a shared
machine's drift), with its quartiles. On CPU the overheads are computed on the process's CPU time
(``time.process_time``, all threads), which a loaded machine's other tenants barely move, and
also on wall-clock time (``overhead_vs_raw_wall``), which they move by tens of percent; run with
``--threads 1``. On GPU only wall-clock time (synchronised) is meaningful. ``identical`` checks
that the variants meant to compute the same thing do, bit for bit.

A second, nearly noise-free estimate (CPU only): ``outside_passes`` is, per variant, the CPU time a
run spends outside the encoder's forward passes (``encode``) and the backward passes
(``torch.autograd.grad``), as a fraction of the time inside them -- the overhead over the raw
forward + backward cost measured within each run, so drift between runs cancels. It counts the
loss, the step, the projection and all bookkeeping; robustmm's defaults count keep_best's extra
forward as a pass (``passes_per_run`` says how many of each). ``extra_forward`` is the CPU time of
one no-grad forward of the batch over the steps' forward + backward time (the re-embedding
``robustmm_reembed`` makes last). From these, ``overhead_vs_raw_in_run`` estimates the same quantity
as ``overhead_vs_raw`` without the run-to-run noise, assuming a pass costs the same in every variant
(they run the same kernels on the same values): for a variant with ``k`` more forward calls per
batch than ``raw``, ``(1 + k * extra_forward) * (1 + outside[variant]) / (1 + outside[raw]) - 1``.

    python benchmarks/pgd_overhead.py --threads 1 > docs/performance/pgd_overhead.json
    python benchmarks/pgd_overhead.py --threads 1 --modalities image --repeats 9
    python benchmarks/pgd_overhead.py --quick
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from _common import add_common, execute, machine_info, rounded, summary, sync

import robustmm
from robustmm.attacks.ops import random_delta
from robustmm.attacks.pgd import PGD
from robustmm.attacks.torchattacks_adapter import ZeroShotClassifier, as_4d
from robustmm.batch import Batch
from robustmm.cost import count_passes
from robustmm.evaluation import iter_batches
from robustmm.evaluation.runner import adv_embedding
from robustmm.modalities import get_modality

TARGET = 0.03


def raw_pgd(enc: Any, b: Batch, class_emb: torch.Tensor, eps: float, step: float, steps: int, scale: float,
            defaults: bool = False, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain loop: ``steps`` x (forward, CE, backward, sign step, clamp), then the evaluation's
    no-grad forward of the last iterate; with ``defaults`` also the per-item random start and
    best-iterate tracking (inputs and embeddings), the final iterate's forward giving the
    evaluation's embedding. The step and the clamps work in place in the gradient, as a careful
    hand-written loop would: the floor. Returns (adversarial input, its embedding)."""
    lo, hi = get_modality(b.modality).domain
    x = b.x
    rows = (-1, *[1] * (x.dim() - 1))

    def losses(xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = enc.encode(b.modality, xa, validate=False)
        return F.cross_entropy(scale * emb @ class_emb.T, b.labels, reduction="none"), emb

    x_adv = x.clone()
    if defaults:
        start = random_delta(x, eps, "linf", seed=seed, index=torch.as_tensor(b.index)).add_(x)
        x_adv = start.sub_(x).clamp_(-eps, eps).add_(x).clamp_(lo, hi)
        best_x, best_loss = x_adv.clone(), torch.full((len(x),), float("-inf"), device=x.device)
        best_emb = None
    for _ in range(steps):
        xa = x_adv.detach().requires_grad_(True)
        loss, emb = losses(xa)
        (g,) = torch.autograd.grad(loss.sum(), xa)
        with torch.no_grad():
            if defaults:
                better = loss > best_loss
                torch.where(better, loss, best_loss, out=best_loss)
                torch.where(better.view(rows), xa, best_x, out=best_x)
                emb = emb.detach()
                best_emb = emb.clone() if best_emb is None else torch.where(better[:, None], emb, best_emb, out=best_emb)
            x_adv = g.sign_().mul_(step).add_(xa).sub_(x).clamp_(-eps, eps).add_(x).clamp_(lo, hi)
    with torch.no_grad():
        if not (defaults and steps):
            return x_adv.detach(), enc.encode(b.modality, x_adv, validate=False)
        loss, emb = losses(x_adv)
        better = loss > best_loss
        return torch.where(better.view(rows), x_adv, best_x), torch.where(better[:, None], emb, best_emb)


def timed2(fn: Any, device: str) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, result) of one call, synchronised on GPU."""
    sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    return time.perf_counter() - w0, time.process_time() - c0, out


class PassClock:
    """CPU time inside ``enc.encode`` and ``torch.autograd.grad`` while installed (a context)."""

    def __init__(self, enc: Any):
        self.enc, self.inside, self.last, self.calls = enc, 0.0, 0.0, {"encode": 0, "grad": 0}

    def _wrap(self, fn: Any, what: str) -> Any:
        def timed_call(*a: Any, **k: Any) -> Any:
            t0 = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                self.last = time.process_time() - t0
                self.inside += self.last
                self.calls[what] += 1
        return timed_call

    def __enter__(self) -> PassClock:
        self.grad = torch.autograd.grad
        self.enc.encode = self._wrap(self.enc.encode, "encode")  # an instance attribute shadows the method
        torch.autograd.grad = self._wrap(self.grad, "grad")
        return self

    def __exit__(self, *exc: Any) -> None:
        torch.autograd.grad = self.grad
        del self.enc.encode


def _ratios(times: dict[str, list[float]], base: str = "raw") -> dict[str, Any]:
    """Per variant: median and quartiles of the paired ratios ``variant / base - 1``, and the same
    ratio of the fastest runs (a second estimate: other tenants can only slow a run down)."""
    out = {}
    for name, ts in times.items():
        if name == base:
            continue
        r = [t / b - 1 for t, b in zip(ts, times[base])]
        q = statistics.quantiles(r, n=4) if len(r) > 1 else [r[0]] * 3
        out[name] = {"median": rounded(statistics.median(r)), "quartiles": [rounded(v) for v in q],
                     "of_fastest": rounded(min(ts) / min(times[base]) - 1)}  # interference only adds time
    return out


def _torchattacks_pgd(args: argparse.Namespace, enc: Any, modality: str, class_emb: torch.Tensor, x: torch.Tensor,
                      eps: float, step: float) -> Any:
    """torchattacks' PGD through the zero-shot classifier, as a function of a batch returning the
    adversarial inputs in the modality's domain; None when torchattacks is not installed."""
    try:
        import torchattacks
    except ImportError:
        return None
    lo, hi = get_modality(modality).domain
    clf = ZeroShotClassifier(enc, modality, class_emb, logit_scale=args.logit_scale,
                             input_range="raw" if (lo, hi) == (0.0, 1.0) else "unit",
                             sample_shape=x.shape[1:] if x.dim() != 4 else None).eval()
    ta = torchattacks.PGD(clf, eps=eps / (hi - lo), alpha=step / (hi - lo), steps=args.steps, random_start=False)

    def attack_and_embed(b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = clf.to_raw(ta(as_4d(clf.from_raw(b.x)), b.labels).reshape(b.x.shape))
        return x_adv, adv_embedding(enc, modality, b.replace(x=x_adv))

    return attack_and_embed


def _variants(args: argparse.Namespace, enc: Any, modality: str, class_emb: torch.Tensor, x: torch.Tensor,
              eps: float, step: float) -> dict[str, Any]:
    """Every variant as a function of a batch returning (adversarial input, the embedding of it an
    evaluation scores), in the order they are reported."""
    steps = args.steps
    pgd = PGD(eps=eps, norm="linf", steps=steps, step_size=step, seed=args.seed)
    plain = pgd.replace(random_start=False, keep_best=False)

    def evaluated(attack: Any, b: Batch, again: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        adv = attack(enc, b)  # then the embedding evaluate scores: handed back, or (again) a forward
        return adv.x, adv_embedding(enc, modality, adv.replace(embedded=None) if again else adv)

    fns = {
        "raw": lambda b: raw_pgd(enc, b, class_emb, eps, step, steps, args.logit_scale),
        "raw_again": lambda b: raw_pgd(enc, b, class_emb, eps, step, steps, args.logit_scale),
        "raw_defaults": lambda b: raw_pgd(enc, b, class_emb, eps, step, steps, args.logit_scale, True, args.seed),
        "robustmm": lambda b: evaluated(pgd, b),
        "robustmm_reembed": lambda b: evaluated(pgd, b, again=True),
        "robustmm_plain": lambda b: evaluated(plain, b),
    }
    ta_pgd = _torchattacks_pgd(args, enc, modality, class_emb, x, eps, step)
    if ta_pgd is not None:
        fns["torchattacks"] = ta_pgd
    return fns


def bench_modality(args: argparse.Namespace, enc: Any, data: Any, modality: str) -> dict[str, Any]:
    """Every variant on ``modality``'s batches, interleaved; overheads, timings, identity checks."""
    spec = get_modality(modality)
    eps, steps = spec.middle_eps, args.steps
    step = eps / 4
    prompts = data.tasks[modality].prompts()
    class_emb = enc.class_embeddings(prompts)
    batches = list(iter_batches(data, modality, args.batch_size, prompts))
    fns = _variants(args, enc, modality, class_emb, batches[0].x, eps, step)
    names = list(fns)
    for _ in range(args.warmup):
        for fn in fns.values():
            fn(batches[0])
    times: dict[str, list[float]] = {k: [] for k in names}  # the clock the overheads use
    walls: dict[str, list[float]] = {k: [] for k in names}
    totals: dict[str, list[float]] = {k: [] for k in names}
    cpu_clock = torch.device(args.device).type == "cpu"
    outside: dict[str, list[float]] = {k: [] for k in names}
    passes: dict[str, dict[str, int]] = {}
    per_item: dict[str, dict[str, float]] = {}
    final_fwd: list[float] = []
    advs: dict[str, list[torch.Tensor]] = {k: [] for k in names}
    embs: dict[str, list[torch.Tensor]] = {k: [] for k in names}
    for r in range(args.repeats):
        total = dict.fromkeys(names, 0.0)
        for i, b in enumerate(batches):
            k = (r + i) % len(names)
            for name in names[k:] + names[:k]:
                with PassClock(enc) as clock, count_passes() as counted:
                    wall, cpu, (adv, emb) = timed2(lambda name=name, b=b: fns[name](b), args.device)
                outside[name].append((cpu - clock.inside) / max(clock.inside, 1e-9))
                passes[name] = clock.calls
                per_item[name] = {"forward": counted.forward / len(b), "backward": counted.backward / len(b)}
                if name == "robustmm_reembed":  # its last call is evaluate's no-grad forward of the kept iterate
                    final_fwd.append(clock.last / max(clock.inside - clock.last, 1e-9))
                times[name].append(cpu if cpu_clock else wall)
                walls[name].append(wall)
                total[name] += cpu if cpu_clock else wall
                if r == 0:
                    advs[name].append(adv)
                    embs[name].append(emb)
        for name in names:
            totals[name].append(total[name])
    adv = {k: torch.cat(v) for k, v in advs.items()}
    emb = {k: torch.cat(v) for k, v in embs.items()}

    def same(a: str, b: str) -> dict[str, Any]:
        return {"bitwise": bool(torch.equal(adv[a], adv[b])), "max_abs_diff": float((adv[a] - adv[b]).abs().max()),
                "embedding_bitwise": bool(torch.equal(emb[a], emb[b]))}

    overhead = _ratios(times)
    in_run = None
    if cpu_clock:
        out = {k: statistics.median(v) for k, v in outside.items()}
        fwd = statistics.median(final_fwd)
        in_run = {k: rounded((1 + (passes[k]["encode"] - passes["raw"]["encode"]) * fwd) * (1 + out[k]) / (1 + out["raw"]) - 1)
                  for k in ("robustmm", "robustmm_reembed", "robustmm_plain")}
    return {
        "shape": list(batches[0].x.shape[1:]), "eps": eps, "step_size": step, "batches": len(batches),
        "clock": "process CPU time" if cpu_clock else "wall",
        "overhead_vs_raw": overhead,
        "overhead_vs_raw_defaults": {
            "robustmm": _ratios({"raw": times["raw_defaults"], "robustmm": times["robustmm"]})["robustmm"],
        },
        "overhead_vs_raw_wall": {k: v["median"] for k, v in _ratios(walls).items()},
        "outside_passes": {k: {"median": rounded(statistics.median(v)),
                               "quartiles": [rounded(q) for q in statistics.quantiles(v, n=4)] if len(v) > 1 else v}
                           for k, v in outside.items()} if cpu_clock else None,
        "extra_forward": rounded(statistics.median(final_fwd)) if cpu_clock else None,
        "passes_per_run": {k: {"forwards": v["encode"], "backwards": v["grad"]} for k, v in passes.items()},
        "passes_per_item": per_item,
        "totals": {k: summary(v) for k, v in totals.items()},
        "raw_per_step_s": rounded(statistics.median(totals["raw"]) / max(steps, 1) / len(data), 6),
        "identical": {"robustmm_plain=raw": same("robustmm_plain", "raw"),
                      "robustmm=raw_defaults": same("robustmm", "raw_defaults"),
                      "robustmm=robustmm_reembed": same("robustmm", "robustmm_reembed"),
                      **({"torchattacks=raw": same("torchattacks", "raw")} if "torchattacks" in adv else {})},
        "overhead_vs_raw_in_run": in_run,
        "before_after": {"before (evaluate embeds the kept iterate again)": overhead["robustmm_reembed"]["median"],
                         "after (PGD hands its embedding back)": overhead["robustmm"]["median"]},
        "meets_target": {"robustmm": overhead["robustmm"]["median"] <= TARGET,
                         "robustmm_plain": overhead["robustmm_plain"]["median"] <= TARGET,
                         **({f"{k}_in_run": v <= TARGET for k, v in in_run.items()} if in_run else {})},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    enc = robustmm.load_encoder(args.model, device=args.device)
    data = robustmm.load_dataset("synthscenes", split="test", n=args.n)
    load_before = os.getloadavg()
    res = {m: bench_modality(args, enc, data, m) for m in args.modalities}
    try:
        import torchattacks
        ta_version = torchattacks.__version__
    except ImportError:
        ta_version = None
    return {
        "benchmark": "pgd_overhead",
        "config": {"model": args.model, "n": args.n, "batch_size": args.batch_size, "steps": args.steps,
                   "norm": "linf", "eps": "middle eps", "step_size": "eps/4", "loss": "ce",
                   "logit_scale": args.logit_scale, "repeats": args.repeats, "warmup": args.warmup,
                   "seed": args.seed, "quick": args.quick},
        "machine": machine_info(args.device) | {"torchattacks": ta_version,
                                                "loadavg_1_5_15_before": [round(v, 2) for v in load_before],
                                                "loadavg_1_5_15_after": [round(v, 2) for v in os.getloadavg()]},
        "target": {"overhead_vs_raw_max": TARGET},
        "modalities": res,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tinybind")
    ap.add_argument("--modalities", default="image,audio,pointcloud", type=lambda s: s.split(","))
    ap.add_argument("--n", type=int, default=64, help="items attacked per pass (default 64)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--logit-scale", type=float, default=100.0)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=1)
    add_common(ap)
    args = ap.parse_args()
    if args.quick:
        args.n, args.batch_size, args.steps, args.repeats = 8, 4, 2, 2
    execute(args, run)


if __name__ == "__main__":
    main()
