"""Metrics on embeddings: zero-shot top-k, retrieval R@K and MRR in both directions, ASR.

All functions take L2-normalised embeddings and return plain floats in [0, 1]. Retrieval follows
the CLIP_benchmark convention: an item (image, audio clip, ...) counts as retrieved for
X->text if *any* of its captions is in the top K; text->X ranks items for every caption.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

KS: tuple[int, ...] = (1, 5, 10)


def zeroshot_correct(emb: torch.Tensor, class_emb: torch.Tensor, labels: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Boolean (N,) -- whether the true class is among the k most similar class embeddings.

    Ties count against the sample: a collapsed embedding (all classes equally similar) is wrong,
    never "correct by tie-breaking".
    """
    logits = emb @ class_emb.T
    labels = labels.to(logits.device)
    true = logits.gather(1, labels[:, None])
    others_at_least = (logits >= true).sum(1) - 1
    return others_at_least < k


def zeroshot_metrics(emb: torch.Tensor, class_emb: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return {
        "zeroshot_top1": zeroshot_correct(emb, class_emb, labels, 1).float().mean().item(),
        "zeroshot_top5": zeroshot_correct(emb, class_emb, labels, 5).float().mean().item(),
    }


def caption_owner(captions: Sequence[Sequence[str]]) -> tuple[list[str], torch.Tensor]:
    """Flatten per-item captions: (texts, owner) where ``owner[j]`` is the item of caption j."""
    texts, owner = [], []
    for i, caps in enumerate(captions):
        texts.extend(caps)
        owner.extend([i] * len(caps))
    return texts, torch.tensor(owner, dtype=torch.long)


def t2x_ranks(item_emb: torch.Tensor, text_emb: torch.Tensor, owner: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """For each caption, the 1-based rank of its item among all items (ties count against)."""
    chunk = chunk or max(1, 2**25 // max(1, item_emb.shape[0]))
    ranks = []
    owner = owner.to(item_emb.device)
    for s in range(0, text_emb.shape[0], chunk):
        sims = text_emb[s : s + chunk] @ item_emb.T  # (c, N)
        own = owner[s : s + chunk]
        true = sims.gather(1, own[:, None])
        ranks.append((sims >= true).sum(1))  # includes the item itself -> 1-based
    return torch.cat(ranks)


def x2t_ranks(item_emb: torch.Tensor, text_emb: torch.Tensor, owner: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """For each item, the 1-based rank of its best-ranked caption among all captions (ties count against).

    Items are processed in chunks sized so a chunk's similarity matrix stays near 32M entries.
    """
    chunk = chunk or max(1, 2**25 // max(1, text_emb.shape[0]))
    ranks = []
    owner = owner.to(item_emb.device)
    n = item_emb.shape[0]
    for s in range(0, n, chunk):
        sims = item_emb[s : s + chunk] @ text_emb.T  # (c, M)
        idx = torch.arange(s, min(s + chunk, n), device=item_emb.device)
        is_own = owner[None, :] == idx[:, None]
        best_true = sims.masked_fill(~is_own, float("-inf")).amax(1, keepdim=True)
        ranks.append((sims.masked_fill(is_own, float("-inf")) >= best_true).sum(1) + 1)
    return torch.cat(ranks)


def rank_metrics(ranks: torch.Tensor, prefix: str, ks: Sequence[int] = KS) -> dict[str, float]:
    out = {f"{prefix}_R@{k}": (ranks <= k).float().mean().item() for k in ks}
    out[f"{prefix}_MRR"] = (1.0 / ranks.float()).mean().item()
    return out


def retrieval_metrics(item_emb: torch.Tensor, text_emb: torch.Tensor, owner: torch.Tensor) -> dict[str, float]:
    """text->X and X->text R@1/5/10 and MRR."""
    return rank_metrics(t2x_ranks(item_emb, text_emb, owner), "t2x") | rank_metrics(
        x2t_ranks(item_emb, text_emb, owner), "x2t"
    )


def attack_success_rate(clean_correct: torch.Tensor, adv_correct: torch.Tensor) -> float | None:
    """Fraction of samples correct before the attack that are wrong after it (None if none correct)."""
    n = int(clean_correct.sum())
    if n == 0:
        return None
    return (clean_correct & ~adv_correct).sum().item() / n
