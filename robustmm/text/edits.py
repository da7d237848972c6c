"""Which word edits of a text attack change what a caption says.

An edit is one word substituted, inserted or deleted (a word-level diff of the original and the
edited caption). It *changes an attribute* when

* it removes or replaces a value word of the lexicon ("red", "circle", "left") by anything but a
  synonym ("red" -> "blue", "red" -> "colored", "red" -> "wine", "circle" -> "circles"), or
* it adds a value word of a category the original caption already gives a value for ("a large
  red circle" -> "a large red *dark* circle", "a *square* with a red circle").

An added value of a category the caption does not mention ("a large red *wooden* circle") does
not contradict the caption and is counted apart, as a ``new_attribute``. The meaning guard of the
text attacks (:mod:`robustmm.attacks.meaning_guard`) uses the same rule, so the count of a
result measures what the guard lets through.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from typing import Any

from .lexicon import LEXICON, AttributeLexicon
from .words import split_token, split_words

__all__ = ["attribute_change", "caption_edit_stats", "word_edits"]


def word_edits(original: str, edited: str) -> Iterator[tuple[str | None, str | None]]:
    """The one-word edits turning ``original`` into ``edited``: ``(removed, added)`` pairs, None for
    the side an insertion or deletion lacks (words compared case- and punctuation-blind)."""
    a = [split_token(w)[1] for w in split_words(original) if split_token(w)[1]]
    b = [split_token(w)[1] for w in split_words(edited) if split_token(w)[1]]
    matcher = difflib.SequenceMatcher(a=[w.lower() for w in a], b=[w.lower() for w in b], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        removed, added = a[i1:i2], b[j1:j2]
        for k in range(max(len(removed), len(added))):
            yield (removed[k] if k < len(removed) else None, added[k] if k < len(added) else None)


def attribute_change(removed: str | None, added: str | None, caption_categories: frozenset[str],
                     lexicon: AttributeLexicon = LEXICON) -> frozenset[str]:
    """The categories whose content one edit changes (empty: the caption still says the same).

    ``caption_categories`` are the categories the *original* caption gives values for
    (:meth:`~robustmm.text.lexicon.AttributeLexicon.caption_categories`).
    """
    if removed is not None and added is not None and lexicon.same_value(removed, added):
        return frozenset()
    lost = lexicon.value_categories(removed) if removed is not None else frozenset()
    clash = lexicon.value_categories(added) & caption_categories if added is not None else frozenset()
    return lost | clash


def caption_edit_stats(original: Sequence[Sequence[str]], edited: Sequence[Sequence[str]],
                       lexicon: AttributeLexicon = LEXICON) -> dict[str, Any]:
    """Counts over every caption pair (per item, its original and edited captions, in order).

    Returns ``captions``, ``captions_edited``, ``edits`` (one-word edits), ``attribute_changes``
    (edits that change an attribute, see the module docstring), ``attribute_change_rate`` (of the
    edits; None without edits), ``by_category`` (attribute changes per category; an edit can count
    in two) and ``new_attributes`` (added values of a category the caption did not mention).
    """
    if len(original) != len(edited) or any(len(a) != len(b) for a, b in zip(original, edited)):
        raise ValueError("caption_edit_stats: original and edited captions differ in shape")
    n_caps = n_edited = n_edits = n_changes = n_new = 0
    by_category: dict[str, int] = {}
    for caps, eds in zip(original, edited):
        for cap, ed in zip(caps, eds):
            n_caps += 1
            if cap == ed:
                continue
            cats = lexicon.caption_categories(split_words(cap))
            edits = list(word_edits(cap, ed))
            n_edited += bool(edits)
            for removed, added in edits:
                n_edits += 1
                changed = attribute_change(removed, added, cats, lexicon)
                n_changes += bool(changed)
                for c in changed:
                    by_category[c] = by_category.get(c, 0) + 1
                if not changed and added is not None and lexicon.value_categories(added) - cats:
                    n_new += 1
    return {
        "captions": n_caps, "captions_edited": n_edited, "edits": n_edits, "attribute_changes": n_changes,
        "attribute_change_rate": n_changes / n_edits if n_edits else None,
        "by_category": dict(sorted(by_category.items())), "new_attributes": n_new,
    }
