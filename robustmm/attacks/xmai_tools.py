"""Helpers around XMAI: undoing insertions, caption similarity, relative drops, ground-truth
attribute words and the per-slot min-max normalisation of its score terms."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import BudgetError, RobustMMError
from ..text.substitutes import MASK, SubstituteGenerator, split_token, split_words
from .meaning_guard import MeaningGuard

__all__ = ["PromptBank", "attribute_vocabulary", "caption_similarity", "check_settings", "ground_truth_attributes",
           "ground_truth_words", "is_head_noun", "is_noun", "minmax", "near_words", "relative_drop", "remove_insertions",
           "slot_candidates"]


def remove_insertions(edited: str, insertions: Sequence[tuple[int, str]]) -> str:
    """Undo XMAI: drop the tokens at the recorded insertion positions (of the edited caption)."""
    words = split_words(edited)
    drop = {i for i, _ in insertions}
    return " ".join(w for i, w in enumerate(words) if i not in drop)


def caption_similarity(encoder: Any, original: Sequence[Any], edited: Sequence[Any]) -> float:
    """Mean cosine similarity between original and edited captions under the frozen text encoder.

    ``original`` and ``edited`` are parallel lists of strings or of per-item caption lists.
    """
    def flat(xs: Sequence[Any]) -> list[str]:
        return [c for x in xs for c in ([x] if isinstance(x, str) else x)]

    a, b = flat(original), flat(edited)
    if len(a) != len(b):
        raise RobustMMError(f"caption_similarity: {len(a)} original vs {len(b)} edited captions")
    if not a:
        raise RobustMMError("caption_similarity: no captions")
    with torch.no_grad():
        ea, eb = encoder.encode_text(a).float(), encoder.encode_text(b).float()
    return float((F.normalize(ea, dim=-1) * F.normalize(eb, dim=-1)).sum(-1).mean())


def relative_drop(result: Any, key: str = "t2x_MRR") -> float | None:
    """(clean - attacked) / clean of one metric of an evaluate() result (None if clean is 0)."""
    metrics = result.metrics if hasattr(result, "metrics") else result
    clean = (metrics.get("clean") or {}).get(key)
    adv = (metrics.get("attacked") or {}).get(key)
    if clean is None or adv is None or clean == 0:
        return None
    return (clean - adv) / clean


def ground_truth_words(attrs: Any) -> list[str]:
    """Every string value (recursively) of an item's ground-truth attribute record."""
    if isinstance(attrs, str):
        return [attrs.lower()]
    if isinstance(attrs, Mapping):
        return [w for v in attrs.values() for w in ground_truth_words(v)]
    if isinstance(attrs, (list, tuple)):
        return [w for v in attrs for w in ground_truth_words(v)]
    return []


def minmax(v: torch.Tensor) -> torch.Tensor:
    """Min-max normalise a score over the candidates of one slot (the reference implementation's
    rule: when all are equal the minimum is taken as 0, so equal non-zero scores become 1)."""
    hi, lo = v.max(), v.min()
    if hi == lo:
        lo = torch.zeros_like(lo)
    return (v - lo) / torch.clamp(hi - lo, min=1e-12)


class PromptBank:
    """Unit prompt embeddings of words under one encoder's ``encode_text``, computed once each.

    ``words(ws)`` embeds bare attribute words (the mean over ``templates``); ``objects(ws, noun)``
    embeds ``object_template.format(w, noun)``. The bank holds its encoder, so a cache can never be
    reused by another model that happens to get the same ``id()``.
    """

    def __init__(self, encoder: Any, templates: Sequence[str], object_template: str):
        self.encoder = encoder
        self.templates = tuple(templates)
        self.object_template = object_template
        self._cache: dict[tuple[str, str, str], torch.Tensor] = {}

    def words(self, words: Sequence[str]) -> torch.Tensor:
        """(len(words), D) unit embeddings of bare words (mean over the templates)."""
        return self._embed("word", words, "")

    def objects(self, words: Sequence[str], noun: str) -> torch.Tensor:
        """(len(words), D) unit embeddings of ``object_template.format(word, noun)``."""
        return self._embed("object", words, noun)

    def max_similarity(self, words: Sequence[str], others: Sequence[str]) -> torch.Tensor:
        """(len(words),) each word's highest similarity to any of ``others`` (zeros if none)."""
        if not others:
            return torch.zeros(len(words))
        return (self.words(words) @ self.words(others).T).amax(1)

    def _embed(self, kind: str, words: Sequence[str], noun: str) -> torch.Tensor:
        missing = [w for w in dict.fromkeys(words) if (kind, noun, w) not in self._cache]
        if missing:
            if kind == "word":
                prompts = [t.format(w) for w in missing for t in self.templates]
                per = len(self.templates)
            else:
                prompts = [self.object_template.format(w, noun) for w in missing]
                per = 1
            with torch.no_grad():
                emb = self.encoder.encode_text(prompts).float().cpu().reshape(len(missing), per, -1).mean(1)
            for w, e in zip(missing, F.normalize(emb, dim=-1)):
                self._cache[(kind, noun, w)] = e
        if not words:
            return torch.zeros(0, getattr(self.encoder, "embed_dim", 1))
        return torch.stack([self._cache[(kind, noun, w)] for w in words])


def check_settings(n_attributes: int, k: int, pool: int, window: int, max_insertions: int | None,
                   lambdas: Sequence[float], templates: Sequence[str], object_template: str) -> None:
    """One-line :class:`BudgetError` for an XMAI setting out of range or a malformed prompt."""
    if n_attributes < 1 or k < 1 or pool < 1 or window < 0 or (max_insertions is not None and max_insertions < 0):
        raise BudgetError("xmai: n_attributes, k, pool >= 1, window >= 0, max_insertions >= 0 required")
    if len(lambdas) != 3:
        raise BudgetError(f"xmai: lambdas must be (plausibility, attribute, dissimilarity), got {lambdas!r}")
    if not templates or any(t.count("{}") != 1 for t in templates):
        raise BudgetError("xmai: templates must each contain one '{}'")
    if object_template.count("{}") != 2:
        raise BudgetError("xmai: object_template must contain two '{}' (attribute, noun)")


def attribute_vocabulary(attributes: Sequence[str] | Mapping[str, Sequence[str]], stop_words: frozenset[str]) -> list[str]:
    """The attribute words (a list, or lists by kind), lowercased, deduplicated, stop-words out."""
    vocab = [w for ws in attributes.values() for w in ws] if isinstance(attributes, Mapping) else list(attributes)
    out = list(dict.fromkeys(w.lower() for w in vocab if w.lower() not in stop_words))
    if not out:
        raise BudgetError("xmai: empty attribute vocabulary")
    return out


def ground_truth_attributes(records: Sequence[Any] | None, index: torch.Tensor | None, vocabulary: Sequence[str],
                            n: int) -> list[list[str]]:
    """Per item of ``index``, its first ``n`` annotated attribute words that are in ``vocabulary``."""
    if records is None:
        raise RobustMMError("xmai: use_ground_truth=True needs ground_truth=... or fit(encoder, dataset) first")
    if index is None:
        raise RobustMMError("xmai: use_ground_truth=True needs batch.index to look items up")
    vocab = set(vocabulary)
    return [[w for w in dict.fromkeys(ground_truth_words(records[i])) if w in vocab][:n] for i in index.tolist()]


def is_noun(token: str, nouns: frozenset[str]) -> bool:
    """Whether a caption token names an object of ``nouns`` (plurals in -s / -es included)."""
    w = split_token(token)[1].lower()
    if not w:
        return False
    return w in nouns or (w.endswith("s") and w[:-1] in nouns) or (w.endswith("es") and w[:-2] in nouns)


def is_head_noun(words: Sequence[str], position: int, nouns: frozenset[str]) -> bool:
    """A noun token that does not modify a following noun ("orange" in "orange circle" does)."""
    if not is_noun(words[position], nouns):
        return False
    nxt = words[position + 1] if position + 1 < len(words) else ""
    ends_phrase = split_token(words[position])[2] != ""  # "circle," / "star." close the phrase
    return ends_phrase or not is_noun(nxt, nouns)


def near_words(words: Sequence[str], position: int, window: int) -> set[str]:
    """The words within ``window`` tokens before the noun at ``position`` and 1 after it (lowercase)."""
    return {split_token(w)[1].lower() for w in words[max(0, position - window) : position + 2]}


def slot_candidates(words: Sequence[str], position: int, *, window: int, stop_words: frozenset[str],
                    guard: MeaningGuard, categories: frozenset[str], substitutes: SubstituteGenerator | None,
                    k: int, fallback: Callable[[], Sequence[str]], pool: int) -> list[str]:
    """Words to try before the noun at ``position``: the first ``k`` proposals of ``substitutes``
    (a generator that fills a :data:`~robustmm.text.substitutes.MASK` slot) or, without one or when
    none survive, the first ``pool`` of ``fallback()``. Left out: stop-words, the noun itself, words
    already near it (:func:`near_words`) and what the meaning guard refuses (``categories``: the
    categories the original caption gives values for). Lowercased, deduplicated, in order."""
    noun = split_token(words[position])[1].lower()
    near = near_words(words, position, window)

    def keep(proposals: Iterable[str]) -> list[str]:
        kept = [w for w in dict.fromkeys(p.lower() for p in proposals) if w not in stop_words and w != noun and w not in near]
        return guard.filter(None, kept, categories)

    if substitutes is not None:
        slot = [*words[:position], MASK, *words[position:]]
        proposed = keep(substitutes.candidates(slot, position, guard.proposals(k) + len(near)))
        if proposed:
            return proposed[:k]
    return keep(fallback())[:pool]
