"""BERT-Attack style word substitution guided by embeddings: SGA's text steps.

Each caption's words are ranked by importance (how much the caption's similarity to its guide
embedding drops when the word is removed); the substitutes of the most important word are tried
and the one that lowers the similarity most is kept if it lowers it at all. Only
``encode_text`` of the attacked encoder is used. A :class:`~robustmm.attacks.meaning_guard.MeaningGuard`
drops the substitutes that would change what the caption says before they are tried.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from ..text.embed import embed_texts
from ..text.substitutes import STOP_WORDS, SubstituteGenerator, is_stop_word, replace_core, split_token, split_words
from .meaning_guard import MeaningGuard

__all__ = ["attack_captions"]


def attack_captions(
    encoder: Any,
    captions: Sequence[Sequence[str]],
    guide: torch.Tensor,
    generator: SubstituteGenerator,
    *,
    k: int = 10,
    max_words: int = 1,
    stop_words: Iterable[str] = STOP_WORDS,
    guard: MeaningGuard | None = None,
) -> list[list[str]]:
    """BERT-Attack style word substitution guided by one embedding per item.

    Args:
        encoder: anything with ``encode_text``.
        captions: per item, its captions.
        guide: (N, D) unit embeddings; the captions of item i are pushed away from ``guide[i]``.
        generator: proposes ``k`` substitutes per word.
        max_words: words changed per caption, at most.
        guard: refuses meaning-changing substitutes (None: none refused). Refused proposals are
            replaced by the generator's next ones, so each word still gets up to ``k`` tries; a
            similarity floor is checked against the original caption's embedding.
    Returns:
        New per-item caption lists (same shape as ``captions``); each caption keeps its word
        count and differs from the original in at most ``max_words`` words.
    """
    stop = frozenset(stop_words)
    guard = guard or MeaningGuard("off")
    guide = guide.float().cpu()
    flat = [(i, c) for i, caps in enumerate(captions) for c in caps]
    words = [split_words(c) for _, c in flat]
    owner = [i for i, _ in flat]
    if not flat or max_words <= 0:
        return [list(c) for c in captions]

    originals, base, order = _importance_order(encoder, [c for _, c in flat], words, guide[owner], stop)
    categories = [guard.caption_categories(ws) for ws in words]
    current = [list(ws) for ws in words]
    cur_sim = base.clone()
    changes = [0] * len(flat)
    ptr = [0] * len(flat)
    while True:
        active = [c for c in range(len(flat)) if changes[c] < max_words and ptr[c] < len(order[c])]
        if not active:
            break
        texts: list[str] = []
        slots: list[tuple[int, int, list[str], int]] = []  # caption, position, substitutes, offset
        for c in active:
            pos = order[c][ptr[c]]
            ptr[c] += 1
            original = split_token(current[c][pos])[1].lower()
            proposed = [s for s in generator.candidates(current[c], pos, guard.proposals(k))
                        if s.lower() != original and s.lower() not in stop]
            subs = guard.filter(current[c][pos], proposed, categories[c])[:k]
            if not subs:
                continue
            slots.append((c, pos, subs, len(texts)))
            for s in subs:
                ws = list(current[c])
                ws[pos] = replace_core(ws[pos], s)
                texts.append(" ".join(ws))
        if not texts:
            continue
        emb = embed_texts(encoder, texts)
        for c, pos, subs, off in slots:
            subs, cand_emb = guard.keep_similar(subs, emb[off : off + len(subs)], originals[c])
            if not subs:
                continue  # no substitute keeps the caption close enough to the original
            sims = cand_emb @ guide[owner[c]]
            best = int(sims.argmin())
            if float(sims[best]) < float(cur_sim[c]):
                current[c][pos] = replace_core(current[c][pos], subs[best])
                cur_sim[c] = sims[best]
                changes[c] += 1

    out: list[list[str]] = [[] for _ in captions]
    for c, i in enumerate(owner):
        out[i].append(" ".join(current[c]))
    return out


def _importance_order(encoder: Any, texts: list[str], words: list[list[str]], guides: torch.Tensor,
                      stop: frozenset[str]) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """Per caption: its embedding, its similarity to its guide (``guides``: one row per caption) and
    the positions of its non-stop words, most important first (importance: how much the similarity
    drops when the word is removed)."""
    eligible = [[j for j, w in enumerate(ws) if not is_stop_word(w, stop)] for ws in words]
    variants = [" ".join(ws[:j] + ws[j + 1 :]) for ws, el in zip(words, eligible) for j in el]
    emb = embed_texts(encoder, texts + variants)
    originals = emb[: len(texts)]
    base = (originals * guides).sum(-1)
    var_sims = (emb[len(texts) :].reshape(-1, emb.shape[-1]) if variants else emb[:0])
    order: list[list[int]] = []
    o = 0
    for n_c, el in enumerate(eligible):
        drops = base[n_c] - (var_sims[o : o + len(el)] @ guides[n_c])
        o += len(el)
        order.append([el[j] for j in torch.argsort(drops, descending=True, stable=True).tolist()])
    return originals, base, order
