"""Cross-Modal Attribute Insertion (XMAI, ACL 2023): insert attribute words before object nouns.

"a girl on a chair" -> "a little girl on a wooden chair". For every caption of an item, XMAI
finds the nouns that name objects (a configurable noun list; a noun directly followed by another
noun, like "orange" in "orange circle", counts as a modifier) and inserts one attribute word in
front of each, chosen to be plausible, consistent with the item's own attributes and, above all,
to pull the caption away from the item under the victim encoder. Only words are *inserted*:
deleting them gives back the original caption.

Per noun slot, each candidate word ``a`` gets

    score(a) = la * plausibility + lb * max_sim(a, detected attributes) + lc * (1 - cos(edited caption, x))

with ``(la, lb, lc) = (1, 5, 5)`` (the paper's setting), each term min-max normalised over the
slot's candidates first (as the reference implementation does), and the best candidate is
inserted.

* **Item attributes** are detected in the item itself by zero-shot attribute scoring, per
  object: for the noun ``n`` of the slot, every word ``a`` of an attribute vocabulary (colours,
  sizes, materials, textures, states) is scored by the similarity of the prompt
  ``"a {a} {n}."`` to the item's x embedding and the ``n_attributes`` best are kept (XMAI uses an
  object/attribute detector; a global embedding model can only be asked this way). Words are
  compared to each other through prompts ("a {} object.", "something {}.").
  ``use_ground_truth=True`` uses the dataset's annotated attributes instead (every string value
  of ``dataset.attributes[i]`` that is a vocabulary word).
* **Candidates**: with a masked LM (``substitutes=MaskedLMSubstitutes(...)``) the top-``k`` (3)
  words it proposes for a mask inserted before the noun; otherwise (the offline default) the
  ``pool`` (8) attribute-vocabulary words with the best caption-free score
  ``lb * max_sim(a, detected) + lc * (1 - cos("a {a} {n}.", x))`` (terms min-max normalised over
  the vocabulary), standing in for the masked LM's proposals. Stop-words, the noun
  itself and words already within ``window`` (3) tokens before or 1 after the noun are excluded.
* **Plausibility**: the masked LM's probability of the word in the slot when one is given;
  otherwise (fallback) the text encoder's cosine similarity between the edited and the original
  caption -- how little the insertion changes the caption's meaning.
* **Meaning guard** (:mod:`~robustmm.attacks.meaning_guard`; default ``"strict"``, ``"off"`` is
  the published attack): no word of a category the caption already gives a value for is inserted
  ("a large red *blue* circle"); a slot left with no candidate gets no insertion.

The victim is the encoder given to ``__call__`` (dissimilarity is measured there); transfer is
``evaluate(target, data, ..., attack=xmai, source=other)``.

Example::

    xmai = build_attack("xmai")
    res = robustmm.evaluate(enc, test, modality="image", attack=xmai)
    drop = relative_drop(res, "t2x_MRR")          # the paper reports ~15% on CLIP / COCO
    adv = xmai(enc, batch)
    caption_similarity(enc, batch.captions, adv.captions)   # the paper reports ~0.93
"""
from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..batch import Batch
from ..errors import RobustMMError
from ..text.attributes import DEFAULT_ATTRIBUTES, DEFAULT_NOUNS, DEFAULT_TEMPLATES
from ..text.embed import embed_texts
from ..text.substitutes import MASK, STOP_WORDS, SubstituteGenerator, split_token, split_words
from .base import Attack, register_attack
from .meaning_guard import MeaningGuard
from .ops import frozen
from .xmai_tools import (
    PromptBank,
    attribute_vocabulary,
    caption_similarity,
    check_settings,
    ground_truth_attributes,
    is_head_noun,
    is_noun,
    minmax,
    relative_drop,
    remove_insertions,
    slot_candidates,
)

__all__ = ["XMAI", "DEFAULT_ATTRIBUTES", "DEFAULT_NOUNS", "DEFAULT_TEMPLATES", "caption_similarity", "relative_drop",
           "remove_insertions"]

@register_attack("xmai")
class XMAI(Attack):
    """Cross-Modal Attribute Insertion: insert object-consistent, victim-misleading attribute words.

    Args (the module docstring has the method):
        n_attributes: attributes detected per object (3), by ``object_template.format(a, noun)``.
        k: candidates per slot from a masked LM (3); pool: in the offline fallback (8).
        lambdas: (plausibility, attribute similarity, x-caption dissimilarity) weights (1, 5, 5),
            each term min-max normalised over the slot's candidates (reference implementation).
        attributes: the attribute vocabulary (a list, or a dict of lists by kind).
        templates: prompts that embed a bare attribute word; object_template: two ``{}``
            (attribute, noun) for per-object attribute detection.
        nouns: object nouns to insert before (default :data:`DEFAULT_NOUNS`, plurals match too).
        substitutes: a generator that fills :data:`~robustmm.text.substitutes.MASK` slots (e.g.
            :class:`~robustmm.text.substitutes.MaskedLMSubstitutes`); None = offline fallback.
        use_ground_truth: the items' annotated attribute words (``ground_truth`` records, or
            :meth:`fit`'s dataset; looked up by ``batch.index``) instead of detected ones.
        max_insertions: per caption at most (None: one before every matching noun).
        window: tokens before a noun whose words are not inserted again; stop_words: never inserted.
        meaning_guard: "strict" (default), "category" or "off"; min_similarity: a cosine floor of
            the edited caption to the original (None: none); see :mod:`~robustmm.attacks.meaning_guard`.

    Example::

        xmai = XMAI()
        adv = xmai(encoder, batch)                # batch.captions with attribute words inserted
        edited, ins = xmai.edit(encoder, batch)   # plus [(token index, word), ...] per caption
    """

    perturbs = ("captions",)

    def __init__(
        self,
        n_attributes: int = 3,
        k: int = 3,
        *,
        pool: int = 8,
        lambdas: Sequence[float] = (1.0, 5.0, 5.0),
        attributes: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        object_template: str = "a {} {}.",
        nouns: Iterable[str] | None = None,
        substitutes: SubstituteGenerator | None = None,
        use_ground_truth: bool = False,
        ground_truth: Sequence[Any] | None = None,
        max_insertions: int | None = None,
        window: int = 3,
        stop_words: Iterable[str] = STOP_WORDS,
        meaning_guard: str = "strict",
        min_similarity: float | None = None,
    ):
        check_settings(n_attributes, k, pool, window, max_insertions, lambdas, templates, object_template)
        self.stop_words = frozenset(stop_words)
        self.attributes: list[str] = attribute_vocabulary(DEFAULT_ATTRIBUTES if attributes is None else attributes,
                                                          self.stop_words)
        self.templates = tuple(templates)
        self.object_template = object_template
        self.nouns = frozenset(n.lower() for n in (DEFAULT_NOUNS if nouns is None else nouns))
        self.n_attributes = int(n_attributes)
        self.k, self.pool = int(k), int(pool)
        self.lambdas = tuple(float(v) for v in lambdas)
        self.substitutes = substitutes
        self.use_ground_truth = bool(use_ground_truth)
        self.ground_truth = None if ground_truth is None else list(ground_truth)
        self.max_insertions = max_insertions
        self.window = int(window)
        self.guard = MeaningGuard(meaning_guard, min_similarity)
        self._prompts: PromptBank | None = None

    def fit(self, encoder: Any, dataset: Any) -> "XMAI":
        """With ``use_ground_truth``: remember ``dataset.attributes`` (the split being attacked)."""
        if self.use_ground_truth:
            if dataset.attributes is None:
                raise RobustMMError(f"xmai: dataset {dataset.name!r} has no ground-truth attributes")
            self.ground_truth = list(dataset.attributes)
        return self

    def settings(self) -> dict[str, Any]:
        return {
            "n_attributes": self.n_attributes, "k": self.k, "pool": self.pool, "lambdas": self.lambdas,
            "attributes": self.attributes, "templates": self.templates, "object_template": self.object_template,
            "nouns": self.nouns, "substitutes": self.substitutes, "use_ground_truth": self.use_ground_truth,
            "ground_truth": self.ground_truth, "max_insertions": self.max_insertions, "window": self.window,
            "stop_words": self.stop_words, "meaning_guard": self.guard.mode, "min_similarity": self.guard.min_similarity,
        }

    def describe(self) -> dict[str, Any]:
        mlm = self.substitutes
        return {
            "name": self.name, "eps": None, "n_attributes": self.n_attributes, "k": self.k, "pool": self.pool,
            "lambdas": list(self.lambdas),
            "attributes": "ground-truth" if self.use_ground_truth else "detected (zero-shot, per object)",
            "attribute_vocabulary": len(self.attributes), "object_template": self.object_template,
            "nouns": len(self.nouns),
            "substitutes": repr(mlm) if mlm is not None else "attribute vocabulary (offline fallback)",
            "plausibility": ("masked-LM probability" if hasattr(mlm, "plausibility")
                             else "text-encoder similarity to the original caption"),
            "max_insertions": self.max_insertions, "window": self.window, "meaning_guard": self.guard.describe(),
        }

    def is_noun(self, token: str) -> bool:
        """Whether a caption token names an object (noun list, plurals included)."""
        return is_noun(token, self.nouns)

    def is_head_noun(self, words: Sequence[str], position: int) -> bool:
        """A noun token that is not itself a modifier of a following noun ("orange" in "orange circle")."""
        return is_head_noun(words, position, self.nouns)

    def _bank(self, encoder: Any) -> PromptBank:
        """The prompt-embedding cache of ``encoder`` (held, so another model never reuses it)."""
        if self._prompts is None or self._prompts.encoder is not encoder:
            self._prompts = PromptBank(encoder, self.templates, self.object_template)
        return self._prompts

    def attribute_embeddings(self, encoder: Any, words: Sequence[str]) -> torch.Tensor:
        """(len(words), D) unit embeddings of bare attribute words (mean over ``templates``)."""
        return self._bank(encoder).words(words)

    def object_scores(self, encoder: Any, x_emb: torch.Tensor, noun: str) -> torch.Tensor:
        """(N, A) zero-shot scores of every vocabulary attribute for the object ``noun`` in each item."""
        return x_emb.float().cpu() @ self._bank(encoder).objects(self.attributes, noun).T

    def detected_attributes(self, encoder: Any, x_emb: torch.Tensor, noun: str = "object",
                            index: torch.Tensor | None = None) -> list[list[str]]:
        """Per item, the ``n_attributes`` attributes of its object ``noun``.

        Detected by zero-shot scoring of ``object_template.format(attribute, noun)`` against the x
        embeddings (N, D); with ``use_ground_truth`` the item's annotated attribute words.
        """
        if self.use_ground_truth:
            return ground_truth_attributes(self.ground_truth, index, self.attributes, self.n_attributes)
        top = torch.topk(self.object_scores(encoder, x_emb, noun), min(self.n_attributes, len(self.attributes)), dim=1)
        return [[self.attributes[j] for j in row] for row in top.indices.tolist()]

    # -- the attack ------------------------------------------------------------------------
    def edit(self, encoder: Any, batch: Batch) -> tuple[list[list[str]], list[list[list[tuple[int, str]]]]]:
        """Edited captions and, per caption, the insertions ``(token index in the edited caption, word)``."""
        with frozen(encoder), torch.no_grad():
            x_emb = F.normalize(encoder.encode(batch.modality, batch.x).float().cpu(), dim=-1)
        flat = [(i, c) for i, caps in enumerate(batch.captions) for c in caps]
        words = [split_words(c) for _, c in flat]
        owner = [i for i, _ in flat]
        cats = [self.guard.caption_categories(ws) for ws in words]  # what each original caption says
        orig_emb = F.normalize(embed_texts(encoder, [c for _, c in flat]), dim=-1) if flat else None

        @functools.cache
        def detected(noun: str) -> tuple[torch.Tensor, list[list[str]]]:  # per noun: (scores, detected)
            return self.object_scores(encoder, x_emb, noun), self.detected_attributes(encoder, x_emb, noun, batch.index)

        insertions: list[list[tuple[int, str]]] = [[] for _ in flat]
        cursor = [0] * len(flat)  # next token index to look for a noun at
        while True:  # one noun slot of every caption per round (insertions shift later slots)
            texts: list[str] = []
            jobs: list[tuple[int, int, list[str], list[str], int]] = []  # caption, pos, cands, attrs, offset
            for c in range(len(flat)):
                if self.max_insertions is not None and len(insertions[c]) >= self.max_insertions:
                    cursor[c] = len(words[c])
                    continue
                pos = next((p for p in range(cursor[c], len(words[c])) if self.is_head_noun(words[c], p)), None)
                if pos is None:
                    cursor[c] = len(words[c])
                    continue
                cursor[c] = pos + 1
                noun = split_token(words[c][pos])[1].lower()
                scores, attrs = detected(noun)
                i = owner[c]
                cands = self._candidates(encoder, words[c], pos, scores[i], attrs[i], cats[c])
                if not cands:
                    continue
                jobs.append((c, pos, cands, attrs[i], len(texts)))
                texts.extend(" ".join(words[c][:pos] + [a] + words[c][pos:]) for a in cands)
            if not jobs:
                if all(cur >= len(ws) for cur, ws in zip(cursor, words)):
                    break
                continue
            emb = F.normalize(embed_texts(encoder, texts), dim=-1)
            for c, pos, cands, attrs, off in jobs:
                cands, e = self.guard.keep_similar(cands, emb[off : off + len(cands)], orig_emb[c])  # type: ignore[index]
                if not cands:
                    continue  # no candidate keeps the caption close enough to the original: no insertion
                best = self._best_insertion(encoder, words[c], pos, cands, e, x_emb[owner[c]], orig_emb[c], attrs)  # type: ignore[index]
                words[c] = words[c][:pos] + [best] + words[c][pos:]
                insertions[c].append((pos, best))
                cursor[c] = pos + 2  # past the inserted word and its noun
        out: list[list[str]] = [[] for _ in batch.captions]
        ins: list[list[list[tuple[int, str]]]] = [[] for _ in batch.captions]
        for c, i in enumerate(owner):
            out[i].append(" ".join(words[c]))
            ins[i].append(insertions[c])
        return out, ins

    def _best_insertion(self, encoder: Any, words: list[str], pos: int, cands: list[str], cand_emb: torch.Tensor,
                        x_emb: torch.Tensor, orig_emb: torch.Tensor, attrs: list[str]) -> str:
        """The candidate with the highest XMAI score for the slot before ``words[pos]``: its plausibility
        there (masked-LM probability, or offline the edited caption's similarity to the original),
        its similarity to the item's detected ``attrs`` and its dissimilarity to the item's embedding
        ``x_emb``, each min-max scaled and weighted by ``lambdas``. ``cand_emb``: the edited captions'
        embeddings, one row per candidate."""
        la, lb, lc = self.lambdas
        mlm = self.substitutes
        dissim = 1.0 - cand_emb @ x_emb
        if mlm is not None and hasattr(mlm, "plausibility"):
            ws = words[:pos] + [MASK] + words[pos:]
            plaus = torch.tensor(mlm.plausibility(ws, pos, cands)).exp()  # type: ignore[attr-defined]
        else:
            plaus = cand_emb @ orig_emb
        attr_sim = self._bank(encoder).max_similarity(cands, attrs)
        score = la * minmax(plaus) + lb * minmax(attr_sim) + lc * minmax(dissim)
        return cands[int(score.argmax())]

    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        """A copy of ``batch`` whose captions carry the inserted attribute words."""
        encoder.check_modality(batch.modality)
        captions, _ = self.edit(encoder, batch)
        return batch.replace(captions=captions)

    def _candidates(self, encoder: Any, words: list[str], pos: int, scores: torch.Tensor, attrs: list[str],
                    cats: frozenset[str]) -> list[str]:
        """Candidate words for the slot before ``words[pos]`` (:func:`~.xmai_tools.slot_candidates`); the
        offline fallback ranks the vocabulary by the caption-free part of the XMAI score."""
        def ranked() -> list[str]:
            _, lb, lc = self.lambdas
            pre = lb * minmax(self._bank(encoder).max_similarity(self.attributes, attrs)) + lc * minmax(1.0 - scores)
            return [self.attributes[j] for j in torch.argsort(pre, descending=True).tolist()]

        return slot_candidates(words, pos, window=self.window, stop_words=self.stop_words, guard=self.guard,
                               categories=cats, substitutes=self.substitutes, k=self.k, fallback=ranked, pool=self.pool)
