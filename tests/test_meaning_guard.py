"""The meaning guard of the text attacks: the attribute lexicon, the guard's
rule and the count of edits that still change what a caption says. No encoder needed."""
import pytest
import torch

from robustmm.attacks.meaning_guard import GUARD_MODES, MeaningGuard
from robustmm.errors import BudgetError, UnknownNameError
from robustmm.text.edits import attribute_change, caption_edit_stats, word_edits
from robustmm.text.lexicon import LEXICON, AttributeLexicon

CAPTION = "a large red circle on a dark background."
CATS = LEXICON.caption_categories(CAPTION.split(" "))


def test_lexicon_categories_inflections_and_synonyms():
    assert CATS == {"size", "colour", "shape"}
    assert LEXICON.categories("Reddish,") == {"colour"} and LEXICON.categories("circles.") == {"shape"}
    assert LEXICON.value_categories("bigger") == {"size"} and LEXICON.value_categories("tinier") == {"size"}
    assert LEXICON.categories("colored") == {"colour"} and not LEXICON.value_categories("colored")  # generic
    assert LEXICON.categories("gold") == {"colour", "material"}
    assert not LEXICON.categories("scene") and not LEXICON.categories("stares")  # not "star" + "es"
    assert LEXICON.same_value("big", "Large,") and LEXICON.same_value("red", "Red.")
    assert not LEXICON.same_value("red", "blue") and not LEXICON.same_value("small", "tiny")
    assert not LEXICON.same_value("circle", "circles") and not LEXICON.same_value("big", "larger")  # another form
    custom = AttributeLexicon({"animal": "cat dog"}, {}, ["cat kitty"])
    assert custom.caption_categories(["two", "dogs"]) == {"animal"} and custom.names == ("animal",)


@pytest.mark.parametrize("removed, added, category, strict", [
    ("red", "blue", False, False),        # colour for colour
    ("red", "colored", False, False),     # a value for its generic word
    ("left", "right", False, False),
    ("background", "square", False, False),  # adds a second shape value
    (None, "blue", False, False),         # inserts a colour into a caption that has one
    (None, "dark", False, False),
    ("dark", "black", False, False),
    ("red", "wine", True, False),         # loses the colour: only strict refuses it
    ("red", "wooden", True, False),
    ("large", "big", True, True),         # synonyms
    ("circle", "circles", False, False),  # another form says another number
    ("blue", "blues", False, False),      # ... or another thing (what SGA found next)
    ("small", "smaller", False, False),
    ("background", "wall", True, True),
    (None, "wooden", True, True),         # the caption says nothing about material
])
def test_guard_rule(removed, added, category, strict):
    assert MeaningGuard("category").allows(removed, added, CATS) is category
    assert MeaningGuard().allows(removed, added, CATS) is strict  # strict is the default
    assert MeaningGuard("off").allows(removed, added, CATS) is True
    # strict refuses exactly what the edit count counts
    assert strict == (not attribute_change(removed, added, CATS))


def test_guard_settings_and_floor():
    assert GUARD_MODES == ("off", "category", "strict")
    assert MeaningGuard().mode == "strict" and MeaningGuard().active and not MeaningGuard("off").active
    assert MeaningGuard("off", 0.5).active
    with pytest.raises(UnknownNameError, match="did you mean 'strict'"):
        MeaningGuard("strct")
    with pytest.raises(BudgetError):
        MeaningGuard(min_similarity=1.5)
    d = MeaningGuard("strict", 0.9).describe()
    assert d["mode"] == "strict" and d["min_similarity"] == 0.9 and "colour" in d["categories"]
    assert MeaningGuard("category").filter("Red.", ["blue", "wine", "crimson", "ruby"], CATS) == ["wine"]
    assert MeaningGuard().filter("Red.", ["blue", "wine", "crimson", "ruby"], CATS) == []
    assert MeaningGuard().filter("scene", ["blue", "movie"], CATS) == ["movie"]
    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), dim=-1)
    kept, rows = MeaningGuard(min_similarity=0.5).keep_similar(["a", "b", "c"], emb, torch.tensor([1.0, 0.0]))
    assert kept == ["a", "b"] and torch.equal(rows, emb[:2])
    assert MeaningGuard().keep_similar(["a", "b", "c"], emb, torch.tensor([1.0, 0.0]))[0] == ["a", "b", "c"]


def test_word_edits_and_counts():
    assert list(word_edits("a large red circle.", "a large red wooden circle.")) == [(None, "wooden")]
    assert list(word_edits("A large red circle.", "a large Blue circle!")) == [("red", "Blue")]
    original = [[CAPTION] * 4]
    edited = [["a large blue circle on a dark background.",       # colour swap: changes
               "a large red wooden circle on a dark background.",  # new material: not a change
               CAPTION,
               "a big red circle on a dark wall."]]                 # synonym + neutral word
    stats = caption_edit_stats(original, edited)
    assert stats == {"captions": 4, "captions_edited": 3, "edits": 4, "attribute_changes": 1,
                     "attribute_change_rate": 0.25, "by_category": {"colour": 1}, "new_attributes": 1}
    assert caption_edit_stats(original, original)["attribute_change_rate"] is None
    with pytest.raises(ValueError):
        caption_edit_stats(original, [[CAPTION]])
