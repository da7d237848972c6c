"""The meaning guard of the text attacks: word edits (SGA's substitutions, XMAI's insertions) may
not change what the caption says.

On SynthScenes the nearest substitutes of a colour or shape word are other colours and shapes, so
without a guard a "successful" swap can describe another scene ("a large red circle" -> "a large
blue circle"). The guard works on attribute categories of a general English lexicon
(:mod:`robustmm.text.lexicon`: colour, shape, size, number, position, material, texture) and on an
optional similarity floor to the original caption. Modes:

* ``"off"`` -- every proposal may be used (the attacks as published);
* ``"category"`` -- refuse a same-category swap ("red" -> "blue", "red" -> "colored", "left" ->
  "right") and any word that adds a value of a category the original caption already has
  (inserting "dark" or "small" into "a large red circle"); synonyms ("big" -> "large") pass, other
  forms of the word do not ("circle" -> "circles", "small" -> "smaller");
* ``"strict"`` (the default) -- also refuse replacing an attribute value by a word outside its
  category ("red" -> "wine", "triangle" -> "mario"): every edit that
  :func:`robustmm.text.edits.attribute_change` counts is refused.

Why strict is the default: on SynthScenes with the trained TinyBind (100 test items, 500
captions), SGA under ``"category"`` still changed an attribute in 499 of its 500 word swaps -- it
replaced the colour or shape word by an unrelated one instead of another colour -- exactly as
many as with the guard off (``experiments/meaning_guard.py``). For insertions (XMAI) the two
modes are the same.

``min_similarity`` (None = no floor) also drops a candidate whose edited caption's text
embedding has a cosine below the floor to the original caption's. Results record how many final
edits still change an attribute (``metrics.caption_edits``, :func:`robustmm.text.edits.caption_edit_stats`).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from ..errors import BudgetError, UnknownNameError
from ..text.edits import attribute_change
from ..text.lexicon import LEXICON, AttributeLexicon
from ..text.words import split_token

__all__ = ["GUARD_MODES", "MeaningGuard"]

GUARD_MODES: tuple[str, ...] = ("off", "category", "strict")


class MeaningGuard:
    """Refuses the word edits that would change what a caption says (see the module docstring).

    Args:
        mode: "off", "category" or "strict" (default).
        min_similarity: a cosine floor between an edited caption and its original under the
            attacked text encoder (None: no floor).
        lexicon: the attribute categories (default: the built-in English lexicon).

    Example::

        guard = MeaningGuard()
        cats = guard.caption_categories("a large red circle.".split())
        guard.allows("red", "blue", cats)       # False: colour for colour
        guard.allows(None, "wooden", cats)      # True: the caption says nothing about material
    """

    def __init__(self, mode: str = "strict", min_similarity: float | None = None,
                 lexicon: AttributeLexicon = LEXICON):
        if mode not in GUARD_MODES:
            raise UnknownNameError("meaning_guard mode", str(mode), GUARD_MODES)
        if min_similarity is not None and not -1.0 <= float(min_similarity) <= 1.0:
            raise BudgetError(f"min_similarity must be a cosine in [-1, 1] or None, got {min_similarity}")
        self.mode = mode
        self.min_similarity = None if min_similarity is None else float(min_similarity)
        self.lexicon = lexicon

    @property
    def active(self) -> bool:
        """Whether the guard refuses anything at all."""
        return self.mode != "off" or self.min_similarity is not None

    def describe(self) -> dict[str, Any]:
        """The guard's block of an attack's record."""
        return {"mode": self.mode, "min_similarity": self.min_similarity,
                "categories": list(self.lexicon.names) if self.mode != "off" else []}

    def caption_categories(self, words: Iterable[str]) -> frozenset[str]:
        """The categories the original caption gives a value for."""
        return self.lexicon.caption_categories(words) if self.mode != "off" else frozenset()

    def allows(self, removed: str | None, added: str, caption_categories: frozenset[str]) -> bool:
        """Whether replacing ``removed`` by ``added`` (None: inserting ``added``) passes the lexical rule."""
        if self.mode == "off":
            return True
        if removed is not None and self.lexicon.same_value(removed, added):
            return True
        if self.mode == "strict":
            return not attribute_change(removed, added, caption_categories, self.lexicon)
        swap = removed is not None and bool(self.lexicon.categories(removed) & self.lexicon.categories(added))
        return not swap and not (self.lexicon.value_categories(added) & caption_categories)

    def filter(self, removed: str | None, candidates: Iterable[str], caption_categories: frozenset[str]) -> list[str]:
        """The candidates (substitutes of ``removed``, or insertions when None) the guard allows, in order."""
        core = None if removed is None else split_token(removed)[1]
        return [w for w in candidates if self.allows(core, w, caption_categories)]

    def proposals(self, k: int) -> int:
        """How many proposals to ask a generator for so that ``k`` usually survive the guard."""
        return k if self.mode == "off" else 3 * k

    def similar(self, candidates: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        """(C,) bool: which candidate caption embeddings (C, D) meet the floor against the original's (D,)."""
        if self.min_similarity is None:
            return torch.ones(candidates.shape[0], dtype=torch.bool)
        return (candidates.float() @ original.float()) >= self.min_similarity

    def keep_similar(self, candidates: Sequence[str], embeddings: torch.Tensor,
                     original: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        """The candidates whose edited-caption embeddings (C, D) meet the floor, with their rows."""
        ok = self.similar(embeddings, original)
        return [c for c, keep in zip(candidates, ok.tolist()) if keep], embeddings[ok]

    def __repr__(self) -> str:
        return f"MeaningGuard(mode={self.mode!r}, min_similarity={self.min_similarity!r})"
