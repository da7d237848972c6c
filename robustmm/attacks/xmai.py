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

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..batch import Batch
from ..errors import BudgetError, RobustMMError
from ..text.substitutes import MASK, STOP_WORDS, SubstituteGenerator, split_token, split_words
from .base import Attack, register_attack
from .ops import frozen

log = logging.getLogger(__name__)

__all__ = [
    "XMAI",
    "DEFAULT_ATTRIBUTES",
    "DEFAULT_NOUNS",
    "DEFAULT_TEMPLATES",
    "caption_similarity",
    "relative_drop",
    "remove_insertions",
]

#: the default attribute vocabulary, by kind
DEFAULT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "white", "black", "gray",
               "brown", "pink", "golden", "silver", "dark", "pale"),
    "size": ("tiny", "small", "little", "large", "big", "huge", "giant", "tall", "short", "long", "wide", "thin"),
    "material": ("wooden", "metal", "plastic", "glass", "stone", "paper", "leather", "rubber", "ceramic",
                 "cotton", "concrete", "steel"),
    "texture": ("smooth", "rough", "striped", "spotted", "shiny", "matte", "fluffy", "furry", "glossy",
                "dotted", "soft", "hard"),
    "state": ("old", "new", "broken", "empty", "full", "wet", "dry", "dirty", "clean", "open", "closed",
              "bright", "round", "flat", "hollow", "solid"),
}

#: prompts used to embed an attribute word for zero-shot attribute scoring
DEFAULT_TEMPLATES: tuple[str, ...] = ("a {} object.", "something {}.")

#: common object nouns (COCO-like) plus geometric shape nouns; plurals are matched too
DEFAULT_NOUNS: tuple[str, ...] = tuple(dict.fromkeys((
    "person", "man", "woman", "girl", "boy", "child", "kid", "baby", "people", "player", "dog", "cat",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "bird", "animal", "car", "bus",
    "truck", "bike", "bicycle", "motorcycle", "train", "plane", "airplane", "boat", "chair", "table",
    "bed", "couch", "sofa", "bench", "desk", "ball", "kite", "umbrella", "bag", "backpack", "suitcase",
    "hat", "shirt", "jacket", "dress", "shoe", "cup", "mug", "bottle", "glass", "plate", "bowl", "book",
    "phone", "laptop", "computer", "keyboard", "television", "tv", "clock", "vase", "lamp", "tree",
    "flower", "plant", "house", "building", "door", "window", "wall", "fence", "sign", "pizza", "cake",
    "sandwich", "apple", "banana", "orange", "box", "toy", "skateboard", "surfboard", "board", "frisbee",
    "racket", "bat", "road", "street", "field", "beach", "shape", "object", "thing", "item",
    "circle", "square", "triangle", "star", "cross", "ring", "rectangle", "polygon", "dot", "line",
)))


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


def _gt_words(attrs: Any) -> list[str]:
    """Every string value (recursively) of an item's ground-truth attribute record."""
    if isinstance(attrs, str):
        return [attrs.lower()]
    if isinstance(attrs, Mapping):
        return [w for v in attrs.values() for w in _gt_words(v)]
    if isinstance(attrs, (list, tuple)):
        return [w for v in attrs for w in _gt_words(v)]
    return []


def _minmax(v: torch.Tensor) -> torch.Tensor:
    """Min-max normalise a score over the candidates of one slot (the reference implementation's
    rule: when all are equal the minimum is taken as 0, so equal non-zero scores become 1)."""
    hi, lo = v.max(), v.min()
    if hi == lo:
        lo = torch.zeros_like(lo)
    return (v - lo) / torch.clamp(hi - lo, min=1e-12)


@register_attack("xmai")
class XMAI(Attack):
    """Cross-Modal Attribute Insertion: insert object-consistent, victim-misleading attribute words.

    Args:
        n_attributes: attributes detected per object (3): the attribute words ``a`` whose prompt
            ``object_template.format(a, noun)`` is most similar to the item's x embedding.
        k: candidates per slot from a masked LM (3, the paper's top-k).
        pool: candidates per slot in the offline fallback (8), see the module docstring.
        lambdas: (plausibility, attribute similarity, x-caption dissimilarity) weights; (1, 5, 5).
            Each term is min-max normalised over the slot's candidates before weighting, as in
            the reference implementation.
        attributes: the attribute vocabulary (a list, or a dict of lists by kind).
        templates: prompts that embed a bare attribute word (for word-to-word similarity).
        object_template: prompt with two ``{}`` (attribute, noun) for per-object attribute detection.
        nouns: object nouns to insert before (default :data:`DEFAULT_NOUNS`); plurals match too.
        substitutes: a generator that can fill :data:`~robustmm.text.substitutes.MASK` slots
            (e.g. :class:`~robustmm.text.substitutes.MaskedLMSubstitutes`); None = offline fallback.
        use_ground_truth: use the item's annotated attributes (from ``ground_truth`` or
            :meth:`fit`'s dataset: every string value of the record that is a vocabulary word)
            instead of detected ones; items are looked up by ``batch.index``.
        ground_truth: per-item attribute records (e.g. ``dataset.attributes``).
        max_insertions: insertions per caption at most (None: one before every matching noun).
        window: tokens before a noun whose words are not inserted again.
        stop_words: never inserted.

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
    ):
        if n_attributes < 1 or k < 1 or pool < 1 or window < 0 or (max_insertions is not None and max_insertions < 0):
            raise BudgetError("xmai: n_attributes, k, pool >= 1, window >= 0, max_insertions >= 0 required")
        if len(lambdas) != 3:
            raise BudgetError(f"xmai: lambdas must be (plausibility, attribute, dissimilarity), got {lambdas!r}")
        if attributes is None:
            attributes = DEFAULT_ATTRIBUTES
        vocab = [w for ws in attributes.values() for w in ws] if isinstance(attributes, Mapping) else list(attributes)
        self.stop_words = frozenset(stop_words)
        self.attributes: list[str] = list(dict.fromkeys(w.lower() for w in vocab if w.lower() not in self.stop_words))
        if not self.attributes:
            raise BudgetError("xmai: empty attribute vocabulary")
        if not templates or any(t.count("{}") != 1 for t in templates):
            raise BudgetError("xmai: templates must each contain one '{}'")
        if object_template.count("{}") != 2:
            raise BudgetError("xmai: object_template must contain two '{}' (attribute, noun)")
        self.templates = tuple(templates)
        self.object_template = object_template
        self.nouns = frozenset(n.lower() for n in (DEFAULT_NOUNS if nouns is None else nouns))
        self.n_attributes = int(n_attributes)
        self.k = int(k)
        self.pool = int(pool)
        self.lambdas = tuple(float(v) for v in lambdas)
        self.substitutes = substitutes
        self.use_ground_truth = bool(use_ground_truth)
        self.ground_truth = None if ground_truth is None else list(ground_truth)
        self.max_insertions = max_insertions
        self.window = int(window)
        self._cache: dict[tuple[int, str, str], torch.Tensor] = {}

    def fit(self, encoder: Any, dataset: Any) -> "XMAI":
        """With ``use_ground_truth``: remember ``dataset.attributes`` (the split being attacked)."""
        if self.use_ground_truth:
            if dataset.attributes is None:
                raise RobustMMError(f"xmai: dataset {dataset.name!r} has no ground-truth attributes")
            self.ground_truth = list(dataset.attributes)
        return self

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "eps": None,
            "n_attributes": self.n_attributes,
            "k": self.k,
            "pool": self.pool,
            "lambdas": list(self.lambdas),
            "attributes": "ground-truth" if self.use_ground_truth else "detected (zero-shot, per object)",
            "attribute_vocabulary": len(self.attributes),
            "object_template": self.object_template,
            "nouns": len(self.nouns),
            "substitutes": repr(self.substitutes) if self.substitutes is not None else "attribute vocabulary (offline fallback)",
            "plausibility": "masked-LM probability" if hasattr(self.substitutes, "plausibility") else "text-encoder similarity to the original caption",
            "max_insertions": self.max_insertions,
            "window": self.window,
        }

    # -- helpers ---------------------------------------------------------------------------
    def is_noun(self, token: str) -> bool:
        """Whether a caption token names an object (noun list, plurals included)."""
        w = split_token(token)[1].lower()
        if not w:
            return False
        return w in self.nouns or (w.endswith("s") and w[:-1] in self.nouns) or (w.endswith("es") and w[:-2] in self.nouns)

    def is_head_noun(self, words: Sequence[str], position: int) -> bool:
        """A noun token that is not itself a modifier of a following noun ("orange" in "orange circle")."""
        if not self.is_noun(words[position]):
            return False
        nxt = words[position + 1] if position + 1 < len(words) else ""
        ends_phrase = split_token(words[position])[2] != ""  # "circle," / "star." close the phrase
        return ends_phrase or not self.is_noun(nxt)

    def _prompt_embeddings(self, encoder: Any, kind: str, words: Sequence[str], noun: str = "") -> torch.Tensor:
        """(len(words), D) unit prompt embeddings, cached per encoder; kind "word" or "object"."""
        key = (id(encoder), kind, noun)
        missing = [w for w in dict.fromkeys(words) if key + (w,) not in self._cache]  # type: ignore[operator]
        if missing:
            if kind == "word":
                prompts = [t.format(w) for w in missing for t in self.templates]
                per = len(self.templates)
            else:
                prompts = [self.object_template.format(w, noun) for w in missing]
                per = 1
            with torch.no_grad():
                emb = encoder.encode_text(prompts).float().cpu().reshape(len(missing), per, -1).mean(1)
            for w, e in zip(missing, F.normalize(emb, dim=-1)):
                self._cache[key + (w,)] = e  # type: ignore[index]
        if not words:
            return torch.zeros(0, getattr(encoder, "embed_dim", 1))
        return torch.stack([self._cache[key + (w,)] for w in words])  # type: ignore[index]

    def attribute_embeddings(self, encoder: Any, words: Sequence[str]) -> torch.Tensor:
        """(len(words), D) unit embeddings of bare attribute words (mean over ``templates``)."""
        return self._prompt_embeddings(encoder, "word", words)

    def object_scores(self, encoder: Any, x_emb: torch.Tensor, noun: str) -> torch.Tensor:
        """(N, A) zero-shot scores of every vocabulary attribute for the object ``noun`` in each item."""
        return x_emb.float().cpu() @ self._prompt_embeddings(encoder, "object", self.attributes, noun).T

    def detected_attributes(self, encoder: Any, x_emb: torch.Tensor, noun: str = "object",
                            index: torch.Tensor | None = None) -> list[list[str]]:
        """Per item, the ``n_attributes`` attributes of its object ``noun``.

        Detected by zero-shot scoring of ``object_template.format(attribute, noun)`` against the x
        embeddings (N, D); with ``use_ground_truth`` the item's annotated attribute words.
        """
        if self.use_ground_truth:
            if self.ground_truth is None:
                raise RobustMMError("xmai: use_ground_truth=True needs ground_truth=... or fit(encoder, dataset) first")
            if index is None:
                raise RobustMMError("xmai: use_ground_truth=True needs batch.index to look items up")
            vocab = set(self.attributes)
            return [[w for w in dict.fromkeys(_gt_words(self.ground_truth[i])) if w in vocab][: self.n_attributes]
                    for i in index.tolist()]
        top = torch.topk(self.object_scores(encoder, x_emb, noun), min(self.n_attributes, len(self.attributes)), dim=1)
        return [[self.attributes[j] for j in row] for row in top.indices.tolist()]

    def _attribute_similarity(self, encoder: Any, cands: Sequence[str], attrs: Sequence[str]) -> torch.Tensor:
        if not attrs:
            return torch.zeros(len(cands))
        return (self.attribute_embeddings(encoder, cands) @ self.attribute_embeddings(encoder, attrs).T).amax(1)

    # -- the attack ------------------------------------------------------------------------
    def edit(self, encoder: Any, batch: Batch) -> tuple[list[list[str]], list[list[list[tuple[int, str]]]]]:
        """Edited captions and, per caption, the insertions ``(token index in the edited caption, word)``."""
        with frozen(encoder), torch.no_grad():
            x_emb = F.normalize(encoder.encode(batch.modality, batch.x).float().cpu(), dim=-1)
        la, lb, lc = self.lambdas
        mlm = self.substitutes
        flat = [(i, c) for i, caps in enumerate(batch.captions) for c in caps]
        words = [split_words(c) for _, c in flat]
        owner = [i for i, _ in flat]
        orig_emb = F.normalize(self._embed(encoder, [c for _, c in flat]), dim=-1) if flat else None
        per_noun: dict[str, tuple[torch.Tensor, list[list[str]]]] = {}  # noun -> (scores, detected)

        def detected(noun: str) -> tuple[torch.Tensor, list[list[str]]]:
            if noun not in per_noun:
                per_noun[noun] = (self.object_scores(encoder, x_emb, noun),
                                  self.detected_attributes(encoder, x_emb, noun, batch.index))
            return per_noun[noun]

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
                cands = self._candidates(encoder, words[c], pos, scores[i], attrs[i])
                if not cands:
                    continue
                jobs.append((c, pos, cands, attrs[i], len(texts)))
                texts.extend(" ".join(words[c][:pos] + [a] + words[c][pos:]) for a in cands)
            if not jobs:
                if all(cur >= len(ws) for cur, ws in zip(cursor, words)):
                    break
                continue
            emb = F.normalize(self._embed(encoder, texts), dim=-1)
            for c, pos, cands, attrs, off in jobs:
                e = emb[off : off + len(cands)]
                dissim = 1.0 - e @ x_emb[owner[c]]
                if mlm is not None and hasattr(mlm, "plausibility"):
                    ws = words[c][:pos] + [MASK] + words[c][pos:]
                    plaus = torch.tensor(mlm.plausibility(ws, pos, cands)).exp()  # type: ignore[attr-defined]
                else:
                    plaus = e @ orig_emb[c]  # type: ignore[index]
                attr_sim = self._attribute_similarity(encoder, cands, attrs)
                score = la * _minmax(plaus) + lb * _minmax(attr_sim) + lc * _minmax(dissim)
                best = cands[int(score.argmax())]
                words[c] = words[c][:pos] + [best] + words[c][pos:]
                insertions[c].append((pos, best))
                cursor[c] = pos + 2  # past the inserted word and its noun
        out: list[list[str]] = [[] for _ in batch.captions]
        ins: list[list[list[tuple[int, str]]]] = [[] for _ in batch.captions]
        for c, i in enumerate(owner):
            out[i].append(" ".join(words[c]))
            ins[i].append(insertions[c])
        return out, ins

    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        """A copy of ``batch`` whose captions carry the inserted attribute words."""
        encoder.check_modality(batch.modality)
        captions, _ = self.edit(encoder, batch)
        return batch.replace(captions=captions)

    def _candidates(self, encoder: Any, words: list[str], pos: int, scores: torch.Tensor, attrs: list[str]) -> list[str]:
        """Candidate words for the slot before ``words[pos]`` (exclusions applied)."""
        noun = split_token(words[pos])[1].lower()
        near = {split_token(w)[1].lower() for w in words[max(0, pos - self.window) : pos + 2]}

        def keep(ws: Iterable[str]) -> list[str]:
            return [w for w in dict.fromkeys(ws) if w not in self.stop_words and w != noun and w not in near]

        if self.substitutes is not None:
            slot = words[:pos] + [MASK] + words[pos:]
            proposed = keep(w.lower() for w in self.substitutes.candidates(slot, pos, self.k + len(near)))
            if proposed:
                return proposed[: self.k]
        # offline fallback: rank the vocabulary by the caption-free part of the XMAI score
        _, lb, lc = self.lambdas
        pre = lb * _minmax(self._attribute_similarity(encoder, self.attributes, attrs)) + lc * _minmax(1.0 - scores)
        ranked = [self.attributes[j] for j in torch.argsort(pre, descending=True).tolist()]
        return keep(ranked)[: self.pool]

    @staticmethod
    def _embed(encoder: Any, texts: list[str], chunk: int = 1024) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([encoder.encode_text(texts[i : i + chunk]).float().cpu() for i in range(0, len(texts), chunk)])
