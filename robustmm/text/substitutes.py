"""Pluggable word-substitute generators for discrete text attacks (SGA's text step, XMAI).

A generator proposes replacement words for one slot of a tokenised caption::

    gen.candidates(words, position, k) -> list[str]

``words`` is the caption split on spaces (:func:`split_words`), ``position`` the slot, ``k`` the
number of candidates wanted. A slot holding the placeholder :data:`MASK` asks for words to
*insert* there (XMAI); other slots ask for substitutes of the word there (BERT-Attack).

Two generators ship:

* :class:`MaskedLMSubstitutes` -- a transformers masked LM (the BERT-Attack / XMAI recipe),
  loaded from local files only; nothing is ever downloaded, a missing model is a
  :class:`~robustmm.errors.MissingWeightsError`.
* :class:`EmbeddingNeighbourSubstitutes` -- the offline fallback: the words nearest to the target
  word in the victim's own text-embedding space, over a vocabulary (default: 6000 common English
  words shipped in ``robustmm/assets/words_en.json``, taken from the all-MiniLM-L6-v2 tokenizer's
  vocab.txt). It has no context model, so it cannot propose insertions (returns ``[]`` for MASK).

Example::

    from robustmm.text import EmbeddingNeighbourSubstitutes, split_words
    gen = EmbeddingNeighbourSubstitutes(encoder)
    words = split_words("a large red circle.")
    gen.candidates(words, 2, k=5)        # e.g. ['blue', 'green', 'yellow', 'pink', 'orange']
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import MissingWeightsError
from .words import (
    MASK,
    STOP_WORDS,
    SubstituteGenerator,
    is_stop_word,
    is_word,
    load_vocabulary,
    replace_core,
    split_token,
    split_words,
)

log = logging.getLogger(__name__)

__all__ = [
    "MASK",
    "STOP_WORDS",
    "SubstituteGenerator",
    "MaskedLMSubstitutes",
    "EmbeddingNeighbourSubstitutes",
    "load_vocabulary",
    "split_words",
    "split_token",
    "replace_core",
    "is_stop_word",
]


# =============================================================================================
# Offline fallback: nearest neighbours in the text encoder's space
# =============================================================================================
class EmbeddingNeighbourSubstitutes:
    """Substitutes = the vocabulary words nearest to the target word under ``encoder.encode_text``.

    Each vocabulary word and each queried word is embedded on its own (one-word "sentences"); the
    vocabulary embeddings are computed once, lazily, and cached on the CPU. Context is ignored,
    so insertion slots (:data:`MASK`) get no candidates.

    Args:
        encoder: anything with ``encode_text(list[str]) -> (N, D)`` unit vectors.
        vocabulary: candidate words (default: the built-in 6000-word list). Non-words and
            stop-words are dropped, case is folded, duplicates removed.
        stop_words: words never proposed.
        batch_size: texts per ``encode_text`` call when embedding the vocabulary.

    Example::

        gen = EmbeddingNeighbourSubstitutes(robustmm.load_encoder("tinybind"))
        gen.candidates(["a", "red", "star."], 1, k=3)
    """

    def __init__(
        self,
        encoder: Any,
        vocabulary: Sequence[str] | None = None,
        *,
        stop_words: Iterable[str] = STOP_WORDS,
        batch_size: int = 1024,
    ):
        self.encoder = encoder
        self.stop_words = frozenset(stop_words)
        words = load_vocabulary() if vocabulary is None else list(vocabulary)
        seen: dict[str, None] = {}
        for w in words:
            w = str(w).strip().lower()
            if w and is_word(w) and w not in self.stop_words:
                seen.setdefault(w, None)
        self.vocabulary: list[str] = list(seen)
        if not self.vocabulary:
            raise ValueError("EmbeddingNeighbourSubstitutes: the vocabulary has no usable words")
        self._index = {w: i for i, w in enumerate(self.vocabulary)}
        self.batch_size = batch_size
        self._emb: torch.Tensor | None = None

    @property
    def embeddings(self) -> torch.Tensor:
        """(V, D) unit embeddings of the vocabulary (computed on first use, then cached)."""
        if self._emb is None:
            with torch.no_grad():
                chunks = [
                    self.encoder.encode_text(self.vocabulary[i : i + self.batch_size]).float().cpu()
                    for i in range(0, len(self.vocabulary), self.batch_size)
                ]
            self._emb = torch.nn.functional.normalize(torch.cat(chunks), dim=-1)
            log.debug("embedded a %d-word substitute vocabulary", len(self.vocabulary))
        return self._emb

    def neighbours(self, word: str, k: int) -> list[tuple[str, float]]:
        """The ``k`` vocabulary words most similar to ``word`` (itself excluded), with cosines."""
        w = word.lower()
        with torch.no_grad():
            q = self.encoder.encode_text([w]).float().cpu()[0]
        sims = self.embeddings @ q
        if w in self._index:
            sims[self._index[w]] = float("-inf")
        k = min(k, len(self.vocabulary) - (w in self._index))
        if k <= 0:
            return []
        top = torch.topk(sims, k)
        return [(self.vocabulary[i], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist())]

    def candidates(self, words: list[str], position: int, k: int) -> list[str]:
        target = words[position]
        if target == MASK:
            return []
        core = split_token(target)[1]
        if not core:
            return []
        return [w for w, _ in self._cached_neighbours(core.lower(), k)]

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - the cache lives as long as the generator
    def _cached_neighbours(self, word: str, k: int) -> tuple[tuple[str, float], ...]:
        return tuple(self.neighbours(word, k))

    def __repr__(self) -> str:
        return f"EmbeddingNeighbourSubstitutes({getattr(self.encoder, 'name', '?')}, {len(self.vocabulary)} words)"


# =============================================================================================
# Masked language model (local files only)
# =============================================================================================
class MaskedLMSubstitutes:
    """Substitutes from a masked language model (BERT-Attack, XMAI), loaded from local files only.

    Args:
        model_dir_or_id: a local folder or a Hugging Face id already in the local cache. Nothing
            is downloaded; a model that is not available locally, or one without a trained
            masked-LM head (e.g. a sentence-embedding checkpoint), raises
            :class:`~robustmm.errors.MissingWeightsError`.
        mask_target: for substitution slots, whether the target word is replaced by the mask
            token before prediction (default False: BERT-Attack feeds the unmasked sentence, so
            predictions stay close to the original word).
        device: where the model runs (default CPU).
        stop_words: words never proposed.
        pool: how many top tokens are inspected before filtering down to ``k`` words.

    Example::

        gen = MaskedLMSubstitutes("/models/bert-base-uncased")
        gen.candidates(split_words("a girl on a chair"), 1, k=3)
        gen.candidates(["a", MASK, "girl"], 1, k=3)            # words to insert before "girl"
        gen.plausibility(["a", MASK, "girl"], 1, ["little", "tall"])   # log-probabilities
    """

    def __init__(
        self,
        model_dir_or_id: str | Path,
        *,
        mask_target: bool = False,
        device: str | torch.device | None = None,
        stop_words: Iterable[str] = STOP_WORDS,
        pool: int = 64,
    ):
        from transformers import AutoModelForMaskedLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.source = str(model_dir_or_id)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.source, local_files_only=True)
            self.model, info = AutoModelForMaskedLM.from_pretrained(
                self.source, local_files_only=True, output_loading_info=True
            )
        except (OSError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise MissingWeightsError(
                f"masked LM {self.source!r} is not available locally (nothing is downloaded): {first}"
            ) from None
        finally:
            hf_logging.set_verbosity(verbosity)
        missing = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
        if missing:
            raise MissingWeightsError(
                f"{self.source!r} has no trained masked-LM head (missing {', '.join(missing[:3])}); "
                "use a masked-LM checkpoint such as bert-base-uncased"
            )
        if self.tokenizer.mask_token is None or not getattr(self.tokenizer, "is_fast", False):
            raise MissingWeightsError(f"{self.source!r}: needs a fast tokenizer with a mask token")
        self.device = torch.device(device or "cpu")
        self.model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.mask_target = mask_target
        self.stop_words = frozenset(stop_words)
        self.pool = pool

    @torch.no_grad()
    def _log_probs(self, words: list[str], position: int, mask: bool) -> torch.Tensor:
        """(vocab,) log-probabilities at the first sub-token of slot ``position``."""
        words = list(words)
        if mask or words[position] == MASK:
            words[position] = self.tokenizer.mask_token
        enc = self.tokenizer(words, is_split_into_words=True, truncation=True, max_length=128, return_tensors="pt")
        word_ids = enc.word_ids(0)
        if position not in word_ids:
            raise ValueError(f"slot {position} was truncated away (caption too long)")
        tok = word_ids.index(position)
        logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits[0, tok]
        return torch.log_softmax(logits.float(), dim=-1).cpu()

    def candidates(self, words: list[str], position: int, k: int) -> list[str]:
        original = split_token(words[position])[1].lower()
        lp = self._log_probs(words, position, self.mask_target)
        out: list[str] = []
        for i in torch.topk(lp, min(self.pool + k, lp.numel())).indices.tolist():
            w = self.tokenizer.convert_ids_to_tokens(i)
            if not isinstance(w, str) or w.startswith("##") or not is_word(w):
                continue
            w = w.lower()
            if w == original or w in self.stop_words or w in out:
                continue
            out.append(w)
            if len(out) == k:
                break
        return out

    def plausibility(self, words: list[str], position: int, candidates: Sequence[str]) -> list[float]:
        """Masked-LM log-probability of each candidate word at slot ``position`` (first sub-token)."""
        lp = self._log_probs(words, position, True)
        out = []
        for c in candidates:
            ids = self.tokenizer(c, add_special_tokens=False)["input_ids"]
            out.append(float(lp[ids[0]]) if ids else float("-inf"))
        return out

    def __repr__(self) -> str:
        return f"MaskedLMSubstitutes({self.source!r})"
