"""Attribute words by category (colour, shape, size, number, position, material, texture): what
a caption *says*, so that text attacks can be kept from changing it.

A general English lexicon, not any dataset's vocabulary: on SynthScenes the nearest substitutes
of "red" are other colours, and swapping one for another describes another scene. Each category
has *value* words ("red", "circle", "left") and *generic* words that name the category itself
("colour", "shape", "position"). Inflected forms are matched through a few suffix rules
(plurals, comparatives, "-ish": "circles", "bigger", "reddish"); a word can belong to several
categories ("gold" is a colour and a material). Small synonym groups ("big"/"large",
"grey"/"gray") mark the only swaps that keep the meaning: another form of the word is not one
("blue" -> "blues", "circle" -> "circles", "small" -> "smaller" change what is said, and SGA
finds exactly those once other colours are refused).

Example::

    LEXICON.categories("Reddish,")       # frozenset({'colour'})
    LEXICON.same_value("big", "large")   # True: synonyms
    LEXICON.caption_categories("a large red circle.".split())   # {'size', 'colour', 'shape'}
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .words import split_token

__all__ = ["AttributeLexicon", "DEFAULT_GENERIC", "DEFAULT_SYNONYMS", "DEFAULT_VALUES", "LEXICON"]

#: value words of each category (general English)
DEFAULT_VALUES: dict[str, str] = {
    "colour": "red orange yellow green cyan blue purple white black gray grey brown pink violet magenta indigo "
              "turquoise teal navy maroon crimson scarlet beige tan khaki ivory cream gold golden silver bronze "
              "copper olive lime aqua azure lavender lilac amber emerald ruby coral salmon peach mauve ochre "
              "charcoal dark light pale bright blond blonde colourless colorless multicoloured multicolored",
    "shape": "circle square triangle star cross ring rectangle oval ellipse diamond heart hexagon pentagon octagon "
             "polygon crescent arrow spiral sphere cube cone cylinder pyramid disc disk dot line arc semicircle "
             "trapezoid rhombus parallelogram prism torus round rounded circular rectangular triangular oblong "
             "spherical cubic cylindrical star-shaped",
    "size": "tiny small little large big huge giant gigantic enormous massive immense vast medium miniature mini "
            "minuscule micro wee petite compact tall short long wide narrow thin thick slim broad",
    "number": "zero one two three four five six seven eight nine ten eleven twelve dozen twenty hundred single "
              "pair couple both several many few multiple numerous lone sole "
              + " ".join(str(i) for i in range(21)),
    "position": "left right top bottom center centre middle central upper lower above below under over beneath "
                "underneath behind front back beside near far next inside outside leftmost rightmost topmost "
                "corner north south east west",
    "material": "wooden wood metal metallic plastic glass stone paper leather rubber ceramic cotton concrete steel "
                "iron brick marble wool woollen woolen silk cloth clay porcelain aluminium aluminum gold silver "
                "copper bronze",
    "texture": "smooth rough striped spotted shiny matte fluffy furry glossy dotted soft hard checkered plaid fuzzy "
               "bumpy textured patterned wrinkled grainy",
}

#: words that name a category without giving a value ("a coloured circle" says less than "a red circle")
DEFAULT_GENERIC: dict[str, str] = {
    "colour": "colour color coloured colored colourful colorful hue shade tint",
    "shape": "shape shaped form",
    "size": "size sized",
    "number": "number count amount",
    "position": "position location placed positioned side direction",
    "material": "material",
    "texture": "texture pattern",
}

#: swaps inside one group keep the meaning
DEFAULT_SYNONYMS: tuple[str, ...] = (
    "large big", "small little", "gray grey", "center centre middle", "colour color", "coloured colored",
    "colourful colorful", "disc disk", "huge enormous gigantic giant massive immense", "tiny minuscule",
    "aluminium aluminum", "woollen woolen", "colourless colorless", "multicoloured multicolored", "blond blonde",
)

_SUFFIXES = ("s", "es", "er", "est", "ish")
_ES_AFTER = ("s", "x", "z", "ch", "sh", "o")  # "crosses", "boxes": "stares" is not "star" + "es"


class AttributeLexicon:
    """Category lookup for caption words (any case, punctuation and simple inflections allowed).

    Args:
        values: per category, its value words (a list or a space-separated string).
        generic: per category, the words that name it without a value.
        synonyms: groups of words (lists or space-separated strings) whose swaps keep the meaning.
    """

    def __init__(self, values: Mapping[str, Sequence[str] | str] = DEFAULT_VALUES,
                 generic: Mapping[str, Sequence[str] | str] = DEFAULT_GENERIC,
                 synonyms: Iterable[Sequence[str] | str] = DEFAULT_SYNONYMS):
        self._values = _index(values)
        self._generic = _index(generic)
        self._group: dict[str, int] = {}
        for g, group in enumerate(synonyms):
            for w in _words(group):
                self._group[w] = g
        self.names: tuple[str, ...] = tuple(dict.fromkeys([*values, *generic]))

    def lemmas(self, word: str) -> frozenset[str]:
        """The lexicon entries ``word`` is a form of: itself if listed, else its listed stems."""
        w = split_token(word)[1].lower()
        if not w:
            return frozenset()
        if w in self._values or w in self._generic:
            return frozenset([w])
        return frozenset(s for s in _stems(w) if s in self._values or s in self._generic)

    def value_categories(self, word: str) -> frozenset[str]:
        """Categories of which ``word`` is a value ("red" -> colour; "colour" -> none)."""
        return frozenset(c for lemma in self.lemmas(word) for c in self._values.get(lemma, ()))

    def categories(self, word: str) -> frozenset[str]:
        """Categories ``word`` belongs to, as a value or as a generic word ("colour" -> colour)."""
        return self.value_categories(word) | frozenset(
            c for lemma in self.lemmas(word) for c in self._generic.get(lemma, ()))

    def same_value(self, a: str, b: str) -> bool:
        """Whether swapping ``a`` for ``b`` keeps the attribute: the same word (any case and
        punctuation) or two words of one synonym group; inflected forms are not the same value."""
        wa, wb = split_token(a)[1].lower(), split_token(b)[1].lower()
        return wa == wb or (wa in self._group and self._group[wa] == self._group.get(wb))

    def caption_categories(self, words: Iterable[str]) -> frozenset[str]:
        """The categories a caption gives a value for (its words' value categories)."""
        return frozenset(c for w in words for c in self.value_categories(w))

    def __repr__(self) -> str:
        return f"AttributeLexicon({', '.join(self.names)})"


def _words(group: Sequence[str] | str) -> list[str]:
    return (group.split() if isinstance(group, str) else [str(w) for w in group])


def _index(table: Mapping[str, Sequence[str] | str]) -> dict[str, frozenset[str]]:
    """word -> the categories listing it."""
    out: dict[str, set[str]] = {}
    for category, words in table.items():
        for w in _words(words):
            out.setdefault(w.lower(), set()).add(category)
    return {w: frozenset(cs) for w, cs in out.items()}


def _stems(word: str) -> list[str]:
    """Possible base forms of an inflected word: "bigger" -> big, "tinier" -> tiny, "larger" -> large."""
    out = []
    for suffix in _SUFFIXES:
        stem = word[: -len(suffix)]
        if not word.endswith(suffix) or len(stem) < 2 or (suffix == "es" and not stem.endswith(_ES_AFTER)):
            continue
        out += [stem, stem + "e"]
        if stem[-1] == stem[-2]:
            out.append(stem[:-1])
        if stem.endswith("i"):
            out.append(stem[:-1] + "y")
    return out


#: the default lexicon
LEXICON = AttributeLexicon()
