"""Naive vs adaptive attacks on the three broken input defenses, beside the undefended model (one
JSON object).

TinyBind, SynthScenes test images, eps ``--eps``/255 (L-inf). The attack is APGD (``--steps``).
Per defense:

* ``naive`` -- the attack differentiates the defended model as it is (rounding and JPEG give no
  gradient, random resize-and-pad a new model at every call);
* ``adaptive`` -- BPDA for bit-depth and JPEG (bit-depth: the identity in the backward pass;
  JPEG: its differentiable soft-JPEG stand-in), EOT over k draws for random resize-and-pad (APGD
  treats an item's k draws as one item), for each k of ``--eot-samples`` at ``--eot-steps``, and
  each ``K,STEPS`` of ``--eot-more`` (``--pgd-reference``: also EOT PGD, whose tiled copies stay
  identical); each of those once per ``--eot-draws`` mode (the defense's own draws, or systematic
  samples of the draws it declares: ``stratified`` fresh per step, ``fixed`` the same), per
  ``--eot-smooth`` gradient blur (translation-invariant attack) and per ``--eot-reduction`` (the
  draws' mean loss, or ``softmin``: ``-log mean_t exp(-CE_t)``, the expected accuracy's own loss).

A randomized defense that declares its draws (random resize-and-pad: 506) is also scored exactly,
averaged over all of them with their probabilities (``over_all_draws``; ``--no-exact`` skips it),
and ``--floor M`` attacks the model with its randomness fixed to each of M systematic draws
(white-box APGD, scored on that draw): what an attacker who knew the draw in advance reaches, a
floor (up to APGD's slack) for any one example per item over the random draws.

Attacks on deterministic models stop early (their verdicts are the full run's); on the randomized
one they do not (an item broken in one draw is not broken for good). Random resize-and-pad draws
one transform per call for the whole batch, so one scoring pass is one draw: its robust top-1 is
the mean over ``--draws`` scoring passes (min and max beside it). ``gap`` is the best adaptive
robust top-1 minus the undefended model's under the same attack; the target is at most 0.10.

    python benchmarks/input_defenses_adaptive.py --threads 1 --n 64 > docs/performance/input_defenses.json
    python benchmarks/input_defenses_adaptive.py --threads 1 --n 64 --defenses random-resize-pad --eot-samples 16 \
        --eot-more --eot-draws random stratified --floor 11 > docs/performance/input_defenses_rrp_eot.json
    python benchmarks/input_defenses_adaptive.py --threads 1 --n 64 --defenses random-resize-pad --eot-samples 16 \
        --eot-more --eot-draws random --eot-reduction mean softmin --floor 0   # input_defenses_rrp_softmin.json
"""
from __future__ import annotations

import argparse
import time
from typing import Any

from _common import add_common, execute, machine_info, rounded


class _Bench:
    """The loaded model, the batches and their class embeddings, and how each attack is scored."""

    def __init__(self, args: argparse.Namespace):
        import robustmm
        from robustmm.evaluation import iter_batches

        self.args = args
        self.enc = robustmm.load_encoder(args.model, device=args.device)
        data = robustmm.load_dataset("synthscenes", split="test", n=args.n)
        prompts = data.tasks["image"].prompts()
        self.batches = list(iter_batches(data, "image", args.batch_size, prompts))
        self.centers = self.enc.class_embeddings(prompts)
        self.eps = args.eps / 255

    def make(self, name: str, steps: int, early_stop: bool) -> Any:
        from robustmm.attacks import build_attack

        return build_attack(name, eps=self.eps, steps=steps, seed=self.args.seed, early_stop=early_stop)

    def top1(self, model: Any, xs: list[Any], draws: int) -> list[float]:
        """Zero-shot top-1 of ``model`` on the examples, once per draw of its randomness."""
        import torch

        from robustmm.metrics import zeroshot_correct

        torch.manual_seed(self.args.seed + 1)
        out = []
        with torch.no_grad():
            for _ in range(draws):
                hits = [zeroshot_correct(model.encode("image", x), self.centers, b.labels) for x, b in zip(xs, self.batches)]
                out.append(torch.cat(hits).float().mean().item())
        return out

    def expected(self, model: Any, xs: list[Any]) -> float | None:
        """Zero-shot top-1 averaged exactly over every draw a randomized model declares (None: it
        declares none): the number the ``--draws`` scoring passes estimate."""
        import torch

        from robustmm.metrics import zeroshot_correct

        support = getattr(model, "draw_support", lambda *_: [])("image", self.batches[0].x.shape)
        if not support:
            return None
        hits = 0.0
        with torch.no_grad():
            for p, d in support:
                hits += p * sum(float(zeroshot_correct(model.encode_draw("image", x, d), self.centers, b.labels).sum())
                                for x, b in zip(xs, self.batches))
        return hits / sum(len(b.x) for b in self.batches)

    def score(self, model: Any, attack: Any, draws: int) -> dict[str, Any]:
        import torch

        torch.manual_seed(self.args.seed)
        t0 = time.perf_counter()
        xs = [attack(model, b).x.detach() if attack is not None else b.x for b in self.batches]
        seconds = time.perf_counter() - t0
        accs = self.top1(model, xs, draws)
        row = {"robust_top1": rounded(sum(accs) / len(accs)), "time_s": rounded(seconds, 2)}
        if draws > 1:
            row |= {"draws": draws, "min": rounded(min(accs)), "max": rounded(max(accs))}
            exact = self.expected(model, xs) if self.args.exact else None
            if exact is not None:
                row["over_all_draws"] = rounded(exact)
        return row

    def fixed_draw_floor(self, defended: Any) -> dict[str, Any]:
        """APGD (``--steps``) on the model with its randomness fixed to each of ``--floor`` systematic
        draws, scored on that draw: what an attacker who knew the draw in advance reaches. Their mean
        bounds from below (up to APGD's own slack) what one example per item can reach over all draws."""
        from robustmm.attacks.eot_draws import systematic_sample
        from robustmm.attacks.views import EncoderView

        class FixedDraw(EncoderView):
            def __init__(self, base: Any, draw: Any):
                super().__init__(base)
                self.draw = draw

            def _encode(self, modality: str, x: Any) -> Any:
                return self.base.encode_draw(modality, x, self.draw)

        support = defended.draw_support("image", self.batches[0].x.shape)
        own = {}
        for i in systematic_sample([p for p, _ in support], self.args.floor, 0.5):
            fixed = FixedDraw(defended, support[i][1])
            own[str(support[i][1])] = self.score(fixed, self.make("apgd", self.args.steps, True), 1)["robust_top1"]
        return {"apgd_each": own, "mean": rounded(sum(own.values()) / len(own))}

    def adaptive(self, defended: Any, randomized: bool, draws: int) -> dict[str, Any]:
        """The adaptive attacks on one defense: EOT APGD runs (one per draw mode, blur, reduction and
        (k, steps)) on a randomized one, BPDA APGD on a deterministic one."""
        from robustmm.attacks.bpda import BPDA
        from robustmm.attacks.eot import EOT

        args = self.args
        adaptive: dict[str, Any] = {}
        if not randomized:
            adaptive[f"bpda apgd-{args.steps}"] = self.score(defended, BPDA(self.make("apgd", args.steps, True)), 1)
            return adaptive
        runs = [(k, args.eot_steps[0]) for k in args.eot_samples] + [(k_, s) for k_, s in args.eot_more]
        plan = [(m, sm, red, r) for m in args.eot_draws for sm in args.eot_smooth for r in runs for red in args.eot_reduction]
        for mode, smooth, red, (k, steps) in plan:
            how = (f" {mode}" if mode != "random" else "") + (f" smooth={smooth:g}" if smooth else "")
            how += f" {red}" if red != "mean" else ""
            eot = EOT(self.make("apgd", steps, False), k, draws=mode, smooth=smooth, seed=args.seed, reduction=red)
            adaptive[f"eot k={k}{how} apgd-{steps}"] = self.score(defended, eot, draws)
        if args.pgd_reference:  # EOT over tiled copies (PGD's steps keep them identical)
            k, steps = args.eot_samples[0], args.eot_steps[0]
            adaptive[f"eot k={k} pgd-{steps}"] = self.score(defended, EOT(self.make("pgd", steps, False), k), draws)
        return adaptive

    def defense_row(self, name: str, settings: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
        """Clean, naive and adaptive scores of one input defense, against the undefended ``base``."""
        from robustmm.encoders.input_transforms import build_defense, defend

        args = self.args
        transform = build_defense(name, **settings)
        defended = defend(self.enc, transform)
        draws = args.draws if transform.randomized else 1
        # a randomized model breaks an item in one draw, not for good: no early stopping on it
        stop = not transform.randomized
        row: dict[str, Any] = {"settings": settings, "clean": self.score(defended, None, draws),
                               f"naive apgd-{args.steps}": self.score(defended, self.make("apgd", args.steps, stop), draws)}
        adaptive = self.adaptive(defended, transform.randomized, draws)
        if args.floor and getattr(defended, "draw_support", lambda *_: [])("image", self.batches[0].x.shape):
            row["fixed_draws"] = self.fixed_draw_floor(defended)
        best = min(v["robust_top1"] for v in adaptive.values())
        row |= {"adaptive": adaptive, "best_adaptive": best, "gap_to_undefended": rounded(best - base["robust_top1"]),
                "within_10_points": best - base["robust_top1"] <= 0.10 + 1e-9}
        return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    bench = _Bench(args)
    base = bench.score(bench.enc, bench.make("apgd", args.steps, True), 1)
    out: dict[str, Any] = {
        "benchmark": "input_defenses_adaptive",
        "config": {"model": args.model, "modality": "image", "n": args.n, "batch_size": args.batch_size,
                   "eps_255": args.eps, "norm": "linf", "steps": args.steps, "eot_samples": args.eot_samples,
                   "eot_steps": args.eot_steps, "eot_more": args.eot_more, "eot_draws": args.eot_draws,
                   "eot_smooth": args.eot_smooth, "eot_reduction": args.eot_reduction, "score_draws": args.draws,
                   "seed": args.seed, "quick": args.quick},
        "machine": machine_info(args.device),
        "undefended": {"clean_top1": bench.score(bench.enc, None, 1)["robust_top1"], f"apgd-{args.steps}": base},
        "defenses": {},
    }
    plans = {"bit-depth": {"bits": args.bits}, "jpeg": {"quality": args.quality},
             "random-resize-pad": {"max_scale": args.max_scale}}
    for name, settings in plans.items():
        if name in args.defenses:
            out["defenses"][name] = bench.defense_row(name, settings, base)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tinybind")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--eps", type=float, default=4.0, help="budget in /255 (default 4)")
    ap.add_argument("--steps", type=int, default=50, help="APGD steps, naive and BPDA")
    ap.add_argument("--eot-samples", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--eot-steps", type=int, nargs=1, default=[50], help="APGD steps of the EOT runs over --eot-samples")
    ap.add_argument("--eot-more", type=lambda v: tuple(int(p) for p in v.split(",")), nargs="*", default=[(8, 100)],
                    metavar="K,STEPS", help="further EOT runs, k draws and steps each (default 8,100)")
    ap.add_argument("--eot-draws", nargs="+", default=["random"], choices=["random", "stratified", "fixed"],
                    help="EOT's draws, one run per mode: the defense's own (random), or systematic samples "
                         "of the draws it declares, fresh each step (stratified) or the same (fixed)")
    ap.add_argument("--eot-smooth", type=float, nargs="+", default=[0.0],
                    help="EOT's gradient blur in pixels, one run per value (0: off)")
    ap.add_argument("--eot-reduction", nargs="+", default=["mean"], choices=["mean", "softmin"],
                    help="how EOT folds its draws' losses, one run per value: their mean, or softmin "
                         "(-log mean exp(-loss): for CE, -log of the expected true-class probability)")
    ap.add_argument("--floor", type=int, default=11, metavar="M",
                    help="white-box APGD on M systematic draws of a randomized defense, each fixed (0: skip)")
    ap.add_argument("--no-exact", dest="exact", action="store_false",
                    help="skip the exact score over every declared draw (over_all_draws)")
    ap.add_argument("--pgd-reference", action="store_true",
                    help="also EOT PGD at the first k and step count (tiled copies)")
    ap.add_argument("--defenses", nargs="+", default=["bit-depth", "jpeg", "random-resize-pad"],
                    choices=["bit-depth", "jpeg", "random-resize-pad"])
    ap.add_argument("--draws", type=int, default=16, help="draws of a randomized defense when scoring")
    ap.add_argument("--bits", type=int, default=5)
    ap.add_argument("--quality", type=int, default=75)
    ap.add_argument("--max-scale", type=float, default=1.15)
    add_common(ap)
    args = ap.parse_args()
    if args.quick:
        args.n, args.steps, args.eot_samples, args.eot_steps, args.eot_more, args.draws = 8, 2, [2], [2], [(2, 3)], 2
        args.floor = min(args.floor, 2)
    execute(args, run)


if __name__ == "__main__":
    main()
