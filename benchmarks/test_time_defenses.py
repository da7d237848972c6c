"""Test-time defenses (CLIPure-Cos, counterattacks, InvGC) scored naive, adaptive and per-item worst case
(one JSON object; ``--out`` also writes it to a file).

TinyBind on SynthScenes test, every continuous modality, at the smallest and the middle eps of each
modality's grid; PGD (``--steps``) is the attack. Per defense, modality and eps:

* ``naive`` -- the examples are made on the undefended encoder and scored on the defended one
  (``robustmm.evaluate(defended, ..., source=bare)``): the published evaluations' setting (CLIPure's
  AutoAttack did not differentiate through the purification; the counterattack paper's PGD-10 was
  made on the undefended CLIP);
* ``adaptive`` -- the attack differentiates the defended encoder end to end: through CLIPure's
  unrolled latent steps (``create_graph``), through the counterattack's unrolled PGD with BPDA for
  its sign and its tau threshold and EOT (``--eot``) over its random start, through InvGC's
  neighbour subtraction;
* ``worst_case`` -- per item, the most damaging of the naive example, the adaptive one and the
  clean input (``robustmm.evaluate(..., worst_case=[...])``).

``clean`` is the defended model's clean score and ``bare`` the undefended model's (clean, and under
white-box PGD at the same eps). CLIPure and the counterattack are scored by zero-shot top-1 (PGD's
zero-shot CE loss); InvGC by retrieval recall@1 (PGD's caption loss, the zero-shot task dropped so
the worst case picks by retrieval), with the k-occurrence skewness (hubness) of the clean gallery.

    OMP_NUM_THREADS=1 python benchmarks/test_time_defenses.py --threads 1 --n 64 --out docs/results/test_time_defenses.json

(docs/results/test_time_defenses.json merges runs of this command split by ``--defenses``,
``--modalities`` and ``--budgets``, run side by side on a shared machine; its ``commands`` list them.)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import add_common, execute, machine_info, rounded

DEFENSES = ("clipure", "counterattack", "invgc")


def _made_on(inner: Any, source: Any) -> Any:
    """``inner`` made on ``source`` whatever encoder it is handed: the naive examples inside a worst case."""
    from robustmm.attacks.base import AttackWrapper

    class MadeOn(AttackWrapper):
        def wrap(self, new_inner: Any) -> Any:
            return _made_on(new_inner, source)

        def __call__(self, encoder: Any, batch: Any) -> Any:
            return self.inner(source, batch)

        def describe(self) -> dict[str, Any]:
            return self.inner.describe() | {"made_on": "bare encoder"}

    return MadeOn(inner)


def _score(result: Any, key: str, attacked: bool = True) -> float | None:
    block = (result.metrics or {}).get("attacked" if attacked else "clean") or {}
    return rounded(block.get(key))


def _build(name: str, enc: Any, train: Any, modality: str, args: argparse.Namespace) -> Any:
    import robustmm

    if name == "clipure":
        return robustmm.defend(enc, "clipure", steps=args.clipure_steps)
    if name == "counterattack":
        return robustmm.defend(enc, "counterattack", data=train, modality=modality, steps=args.ttc_steps)
    return robustmm.defend(enc, "invgc", data=train, modality=modality, bank_n=args.bank_n, beta=args.beta,
                          beta_query=args.beta_query, k=args.k)


def _adaptive(name: str, pgd: Any, args: argparse.Namespace) -> Any:
    from robustmm.attacks import BPDA, EOT

    return EOT(BPDA(pgd), samples=args.eot) if name == "counterattack" else pgd


def _cell(name: str, defended: Any, enc: Any, data: Any, modality: str, eps: float, args: argparse.Namespace) -> dict[str, Any]:
    """One (defense, modality, eps) row: clean, bare white-box, naive, adaptive, worst case."""
    import robustmm
    from robustmm.attacks import PGD

    retrieval = name == "invgc"
    pgd = PGD(eps=eps, steps=args.steps, loss="caption" if retrieval else "ce")
    keys = ("t2x_R@1", "x2t_R@1") if retrieval else ("zeroshot_top1",)
    kw = {"modality": modality, "n": args.n, "batch_size": args.batch_size, "seed": args.seed, "progress": False}
    t0 = time.perf_counter()
    bare = robustmm.evaluate(enc, data, attack=pgd, **kw)
    naive = robustmm.evaluate(defended, data, attack=pgd, source=enc, **kw)
    _, adaptive, worst = robustmm.evaluate(defended, data, attack=_made_on(pgd, enc),
                                           worst_case=[_adaptive(name, pgd, args)], **kw)
    row: dict[str, Any] = {"defense": name, "modality": modality, "eps": rounded(eps, 6), "metric": keys[0]}
    for k in keys:
        suffix = "" if k == keys[0] else f"_{k}"
        row |= {f"clean{suffix}": _score(naive, k, False), f"naive{suffix}": _score(naive, k),
                f"adaptive{suffix}": _score(adaptive, k), f"worst_case{suffix}": _score(worst, k),
                f"bare_clean{suffix}": _score(bare, k, False), f"bare_attacked{suffix}": _score(bare, k)}
    row["broken_by"] = (worst.extra or {}).get("broken_by")
    row["time_s"] = rounded(time.perf_counter() - t0, 1)
    return row


def _hubness(defended: Any, enc: Any, data: Any, modality: str, k: int) -> dict[str, float]:
    import torch

    from robustmm.encoders.invgc import hubness

    x = data.get(modality, slice(None))
    with torch.no_grad():
        texts = enc.encode_text([c[0] for c in data.captions])
        return {"bare": rounded(hubness(texts, enc.encode(modality, x), k)),
                "invgc": rounded(hubness(texts, defended.encode(modality, x), k))}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import robustmm
    from robustmm.modalities import get_modality

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1]).stdout.strip() or None
    enc = robustmm.load_encoder("tinybind")
    data = robustmm.load_dataset("synthscenes", split="test", n=args.n)
    train = robustmm.load_dataset("synthscenes", split="train", n=args.train_n)
    no_task = dataclasses.replace(data, tasks={})
    rows, hub = [], {}
    for modality in args.modalities:
        grid = get_modality(modality).eps_grid
        budgets = [b for b, which in ((grid[0], "smallest"), (grid[len(grid) // 2], "middle")) if which in args.budgets]
        budgets = budgets[:1] if args.quick else budgets
        for name in args.defenses:
            defended = _build(name, enc, train, modality, args)
            if name == "invgc":
                hub[modality] = _hubness(defended, enc, data, modality, args.hub_k)
            for eps in budgets:
                rows.append(_cell(name, defended, enc, no_task if name == "invgc" else data, modality, eps, args))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    out = {
        "command": "python benchmarks/test_time_defenses.py " + " ".join(sys.argv[1:]),
        "commit": commit,
        "machine": machine_info(args.device),
        "settings": {"n": args.n, "steps": args.steps, "eot_samples": args.eot, "clipure_steps": args.clipure_steps,
                     "counterattack_steps": args.ttc_steps, "train_n": args.train_n,
                     "invgc": {"beta": args.beta, "beta_query": args.beta_query, "k": args.k, "bank_n": args.bank_n}},
        "hubness_k_occurrence_skew": hub,
        "rows": rows,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common(ap)
    ap.add_argument("--n", type=int, default=100, help="SynthScenes test items")
    ap.add_argument("--train-n", type=int, default=256, help="training items (counterattack threshold, InvGC banks)")
    ap.add_argument("--steps", type=int, default=10, help="PGD steps of every attack")
    ap.add_argument("--eot", type=int, default=2, help="EOT draws of the adaptive attack on the counterattack")
    ap.add_argument("--clipure-steps", type=int, default=10)
    ap.add_argument("--ttc-steps", type=int, default=2)
    ap.add_argument("--beta", type=float, default=0.1, help="InvGC gallery-bank weight")
    ap.add_argument("--beta-query", type=float, default=0.5, help="InvGC query-bank weight")
    ap.add_argument("--k", type=int, default=10, help="InvGC neighbours (LocalAdj)")
    ap.add_argument("--bank-n", type=int, default=256)
    ap.add_argument("--hub-k", type=int, default=10, help="k of the k-occurrence skewness")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--modalities", nargs="+", default=["image", "video", "audio", "depth", "thermal", "pointcloud"])
    ap.add_argument("--defenses", nargs="+", default=list(DEFENSES), choices=DEFENSES)
    ap.add_argument("--budgets", nargs="+", default=["smallest", "middle"], choices=["smallest", "middle"],
                    help="which eps of each modality's grid")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    if args.quick:
        args.n, args.train_n, args.steps, args.bank_n, args.modalities = 8, 16, 1, 16, args.modalities[:1]
    execute(args, run)


if __name__ == "__main__":
    main()
