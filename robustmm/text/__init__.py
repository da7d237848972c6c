"""Text tooling for the discrete text attacks (SGA's word swaps, XMAI's insertions): caption
tokens, stop-words, the built-in vocabulary, pluggable word-substitute generators, and the
attribute lexicon and edit counts that tell whether an edit changes what a caption says.

A base-layer package beside ``robustmm.encoders`` and ``robustmm.data``: it works on any object
with ``encode_text`` and imports nothing from the attacks.
"""
from .edits import attribute_change, caption_edit_stats, word_edits
from .lexicon import LEXICON, AttributeLexicon
from .substitutes import EmbeddingNeighbourSubstitutes, MaskedLMSubstitutes
from .words import (
    MASK,
    STOP_WORDS,
    SubstituteGenerator,
    is_stop_word,
    load_vocabulary,
    replace_core,
    split_token,
    split_words,
)

__all__ = [
    "LEXICON", "MASK", "STOP_WORDS", "AttributeLexicon", "EmbeddingNeighbourSubstitutes", "MaskedLMSubstitutes",
    "SubstituteGenerator", "attribute_change", "caption_edit_stats", "is_stop_word", "load_vocabulary", "replace_core",
    "split_token", "split_words", "word_edits",
]
