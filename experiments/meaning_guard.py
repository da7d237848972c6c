"""SGA and XMAI with the meaning guard off, "category" (the default) and "strict": what the guard
costs the attack and how many edits still change an attribute word.

    python experiments/meaning_guard.py --attack sga --guard category --n 100

prints one JSON object: the attack's retrieval scores and ASR, the caption similarity of its
edits, and ``metrics.caption_edits`` (edits, attribute changes by category, new attributes) on
the trained TinyBind, SynthScenes test split, image modality, every caption of each item.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import robustmm
from robustmm.attacks import build_attack
from robustmm.attacks.meaning_guard import GUARD_MODES
from robustmm.attacks.memo import MemoAttack
from robustmm.attacks.xmai import caption_similarity


def main() -> None:
    """Run one (attack, guard) cell and print its numbers as one JSON object."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--attack", choices=("sga", "xmai"), required=True)
    p.add_argument("--guard", choices=GUARD_MODES, default="category")
    p.add_argument("--min-similarity", type=float, default=None)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--eps", type=float, default=None, help="SGA's x budget (0: the text steps alone)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    enc = robustmm.load_encoder("tinybind")
    data = robustmm.load_dataset("synthscenes", split="test", n=args.n, modalities="image")
    kw = {"eps": args.eps} if args.attack == "sga" and args.eps is not None else {}
    attack = MemoAttack(build_attack(args.attack, meaning_guard=args.guard, min_similarity=args.min_similarity, **kw)
                        .resolve("image"))  # resolved first, so the memo that runs is the one read back
    t0 = time.perf_counter()
    res = robustmm.evaluate(enc, data, modality="image", attack=attack, progress=False)
    edited = [caps for b in attack.outputs() for caps in b.captions]
    m = res.metrics
    print(json.dumps({
        "attack": args.attack, "eps": res.attack.get("eps"), "guard": args.guard, "min_similarity": args.min_similarity,
        "n": args.n,
        "clean": {k: m["clean"][k] for k in ("t2x_R@1", "x2t_R@1", "t2x_MRR")},
        "attacked": {k: m["attacked"][k] for k in ("t2x_R@1", "x2t_R@1", "t2x_MRR")},
        "asr": m["asr"], "asr_detail": m["asr_detail"],
        "caption_similarity": caption_similarity(enc, data.captions, edited),
        "caption_edits": m["caption_edits"], "seconds": round(time.perf_counter() - t0, 1),
    }))


if __name__ == "__main__":
    main()
