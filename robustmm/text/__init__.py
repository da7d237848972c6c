"""Text tooling for the discrete text attacks (SGA's word swaps, XMAI's insertions): caption
tokens, stop-words, the built-in vocabulary and pluggable word-substitute generators.

A base-layer package beside ``robustmm.encoders`` and ``robustmm.data``: it works on any object
with ``encode_text`` and imports nothing from the attacks.
"""
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
    "MASK", "STOP_WORDS", "EmbeddingNeighbourSubstitutes", "MaskedLMSubstitutes", "SubstituteGenerator",
    "is_stop_word", "load_vocabulary", "replace_core", "split_token", "split_words",
]
