"""Caption words for the discrete text attacks: tokens, stop-words, the built-in vocabulary and
the substitute-generator protocol (see :mod:`robustmm.text.substitutes` for the generators).

Captions are split on single spaces (:func:`split_words`) so edits join back losslessly; a token
is split into leading punctuation, the word and trailing punctuation (:func:`split_token`).
"""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = [
    "MASK", "STOP_WORDS", "SubstituteGenerator", "VOCABULARY_FILE", "is_stop_word", "is_word", "load_vocabulary",
    "replace_core", "split_token", "split_words",
]

ASSETS = Path(__file__).resolve().parent.parent / "assets"
VOCABULARY_FILE = ASSETS / "words_en.json"

#: placeholder for an insertion slot: ``candidates(words, i, k)`` with ``words[i] == MASK``
MASK = "[MASK]"

#: a small English stop-word list (function words, pronouns, auxiliaries, spatial prepositions);
#: text attacks never pick these as targets or substitutes
STOP_WORDS: frozenset[str] = frozenset(
    """
    a about above across after again against all almost along already also although always am
    among an and another any anyone anything are around as at back be because been before behind
    being below beneath beside besides between beyond both but by can cannot could did do does
    doing done down during each either else enough even ever every everything except few for from
    further had has have having he her here hers herself him himself his how however i if in inside
    into is it its itself just least less let like may me might mine more most much must my myself
    near nearby neither never next no nobody none nor not nothing now of off on once one only onto
    or other others otherwise our ours ourselves out outside over own per plus quite rather same
    she should since so some someone something such than that the their theirs them themselves then
    there these they this those though through throughout thus to too toward towards under unless
    until up upon us very via was we well were what whatever when where whether which while who whom
    whose why will with within without would yet you your yours yourself yourselves
    """.split()
)

_TOKEN = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)
_WORD = re.compile(r"^[A-Za-z][A-Za-z'-]*$")


def split_words(caption: str) -> list[str]:
    """Split a caption on single spaces; ``" ".join(split_words(c)) == c`` always holds."""
    return caption.split(" ")


def split_token(token: str) -> tuple[str, str, str]:
    """``"star."`` -> ``("", "star", ".")``: leading punctuation, the word, trailing punctuation."""
    m = _TOKEN.match(token)
    assert m is not None  # the pattern matches every string
    return m.group(1), m.group(2), m.group(3)


def replace_core(token: str, word: str) -> str:
    """Replace the word inside ``token`` keeping its punctuation and (initial) capitalisation."""
    pre, core, post = split_token(token)
    if core[:1].isupper():
        word = word[:1].upper() + word[1:]
    return f"{pre}{word}{post}"


def is_word(token: str) -> bool:
    """Whether ``token`` is a plain word (letters, inner apostrophes and hyphens), the only kind
    of token the generators propose."""
    return bool(_WORD.match(token))


def is_stop_word(word: str, stop_words: Iterable[str] = STOP_WORDS) -> bool:
    """Whether the (bare, any-case) word is a stop-word or not a word at all."""
    w = split_token(word)[1].lower()
    return (not w) or (not _WORD.match(w)) or w in stop_words


@runtime_checkable
class SubstituteGenerator(Protocol):
    """Proposes words for one slot of a tokenised caption.

    ``candidates(words, position, k)`` returns at most ``k`` bare lowercase words, best first,
    never the word already at ``position`` and never a stop-word. ``words[position] == MASK``
    asks for words to insert at that slot (generators without a context model return ``[]``).
    """

    def candidates(self, words: list[str], position: int, k: int) -> list[str]: ...


@functools.lru_cache(maxsize=4)
def _read_vocabulary(path: str) -> tuple[str, ...]:
    doc = json.loads(Path(path).read_text())
    words = doc["words"] if isinstance(doc, dict) else doc
    return tuple(str(w) for w in words)


def load_vocabulary(path: str | Path | None = None, n: int | None = None) -> list[str]:
    """The built-in English word list (or a JSON list / ``{"words": [...]}`` file), first ``n`` words."""
    words = list(_read_vocabulary(str(VOCABULARY_FILE if path is None else Path(path))))
    return words if n is None else words[:n]
