"""XMAI (attribute insertion) and the masked-LM substitutes: invariants offline, effect on the trained TinyBind."""
import json

import pytest
import torch

import robustmm
from robustmm.attacks import build_attack
from robustmm.attacks.xmai import XMAI, caption_similarity, relative_drop, remove_insertions
from robustmm.encoders.text_minilm import minilm_path
from robustmm.errors import MissingWeightsError, RobustMMError
from robustmm.evaluation import iter_batches
from robustmm.text.substitutes import MASK, STOP_WORDS, MaskedLMSubstitutes, split_words


@pytest.fixture(scope="module")
def enc(rand_encoder):
    return rand_encoder


@pytest.fixture(scope="module")
def data():
    return robustmm.load_dataset("synthscenes", split="test", n=4, modalities="image")


def batch_of(data, n=4, captions=2):
    b = next(iter_batches(data, "image", n, None))
    return b.replace(captions=[c[:captions] for c in b.captions])


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory):
    """A tiny random-weight BERT masked LM on the MiniLM tokenizer, saved locally (exercises the code path)."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    d = tmp_path_factory.mktemp("mlm")
    tok = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertForMaskedLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return MaskedLMSubstitutes(d)


def check_only_insertions(xmai, batch, edited, insertions):
    n_ins = 0
    for caps, eds, inss in zip(batch.captions, edited, insertions):
        assert len(caps) == len(eds) == len(inss)
        for cap, ed, ins in zip(caps, eds, inss):
            assert remove_insertions(ed, ins) == cap  # only words were inserted
            words = split_words(ed)
            for i, w in ins:
                assert words[i] == w and w not in STOP_WORDS
                assert xmai.is_noun(words[i + 1])  # right before an object noun
                assert w != words[i + 1].strip(".,").lower()
            n_ins += len(ins)
    return n_ins


def test_registered_and_described():
    att = build_attack("xmai")
    assert isinstance(att, XMAI) and att.perturbs == ("captions",)
    d = att.describe()
    assert d["lambdas"] == [1.0, 5.0, 5.0] and d["k"] == 3 and d["attributes"].startswith("detected")
    json.dumps(d)


def test_inserts_attributes_before_nouns_only(enc, data):
    batch = batch_of(data)
    caps0, x0 = [list(c) for c in batch.captions], batch.x.clone()
    xmai = XMAI()
    edited, insertions = xmai.edit(enc, batch)
    assert check_only_insertions(xmai, batch, edited, insertions) > 0
    assert batch.captions == caps0 and torch.equal(batch.x, x0)
    adv = xmai(enc, batch)
    assert adv.captions == edited and torch.equal(adv.x, batch.x)  # deterministic, x untouched
    assert all(p.grad is None for p in enc.parameters())


def test_configurable_nouns_and_max_insertions(enc, data):
    batch = batch_of(data, n=2)
    xmai = XMAI(nouns=["circle", "star"], max_insertions=1)
    edited, insertions = xmai.edit(enc, batch)
    check_only_insertions(xmai, batch, edited, insertions)
    for inss, eds in zip(insertions, edited):
        for ins, ed in zip(inss, eds):
            assert len(ins) <= 1
            for i, _ in ins:
                assert split_words(ed)[i + 1].strip(".,") in ("circle", "star", "circles", "stars")


def test_ground_truth_attributes(enc, data):
    batch = batch_of(data)
    xmai = XMAI(use_ground_truth=True).fit(enc, data)
    x_emb = enc.encode("image", batch.x).detach()
    attrs = xmai.detected_attributes(enc, x_emb, index=batch.index)
    main = data.attributes[0]["objects"][0]
    assert main["color"] in attrs[0] or main["size"] in attrs[0]
    edited, insertions = xmai.edit(enc, batch)
    check_only_insertions(xmai, batch, edited, insertions)
    with pytest.raises(RobustMMError):
        XMAI(use_ground_truth=True).edit(enc, batch)  # no ground truth given


def test_caption_similarity_and_relative_drop(enc):
    assert caption_similarity(enc, [["a red circle."]], [["a red circle."]]) == pytest.approx(1.0, abs=1e-5)
    s = caption_similarity(enc, ["a red circle."], ["a red wooden circle."])
    assert 0.5 < s < 1.0
    assert relative_drop({"clean": {"t2x_MRR": 0.8}, "attacked": {"t2x_MRR": 0.6}}) == pytest.approx(0.25)


def test_masked_lm_substitutes(tiny_mlm, enc, data):
    words = split_words("a large red circle next to a tiny blue star.")
    subs = tiny_mlm.candidates(words, 2, 5)
    assert len(subs) == 5 and all(w.isalpha() and w != "red" and w not in STOP_WORDS for w in subs)
    ins = words[:3] + [MASK] + words[3:]
    assert len(tiny_mlm.candidates(ins, 3, 3)) == 3
    lp = tiny_mlm.plausibility(ins, 3, ["big", "wooden"])
    assert len(lp) == 2 and all(v < 0 for v in lp)
    batch = batch_of(data, n=2)
    xmai = XMAI(substitutes=tiny_mlm)
    assert xmai.describe()["plausibility"] == "masked-LM probability"
    edited, insertions = xmai.edit(enc, batch)
    assert check_only_insertions(xmai, batch, edited, insertions) > 0


def test_masked_lm_needs_local_weights(tmp_path):
    with pytest.raises(MissingWeightsError, match="masked-LM head"):
        MaskedLMSubstitutes(minilm_path())  # a sentence encoder: no MLM head
    with pytest.raises(MissingWeightsError):
        MaskedLMSubstitutes(tmp_path / "nothing-here")


def test_xmai_lowers_t2x_mrr_on_trained_tinybind(trained):
    enc = trained
    test = robustmm.load_dataset("synthscenes", split="test", n=32, modalities="image")
    test.captions = [c[:3] for c in test.captions]  # text embedding dominates the cost on CPU
    res = robustmm.evaluate(enc, test, modality="image", attack=XMAI(meaning_guard="off"), progress=False)
    assert res.metrics["attacked"]["t2x_MRR"] < res.metrics["clean"]["t2x_MRR"]
    assert relative_drop(res) > 0.02  # the published attack
    assert res.metrics["caption_edits"]["attribute_change_rate"] > 0.5  # ... mostly by contradicting the caption
    guarded = robustmm.evaluate(enc, test, modality="image", attack=XMAI(), progress=False)
    assert 0 < relative_drop(guarded) < relative_drop(res)  # weaker, and it says what the scene shows
    assert guarded.metrics["caption_edits"]["attribute_changes"] == 0


# -- the meaning guard ---------------------------------------------------------------------------
def test_xmai_never_inserts_a_category_the_caption_has_by_default(enc, data):
    from robustmm.text.edits import caption_edit_stats
    from robustmm.text.lexicon import LEXICON

    batch = batch_of(data, captions=3)
    off_edited, _ = XMAI(meaning_guard="off").edit(enc, batch)
    assert caption_edit_stats(batch.captions, off_edited)["attribute_changes"] > 0  # "a large red *blue* circle"
    xmai = build_attack("xmai")  # the default: guarded
    edited, insertions = xmai.edit(enc, batch)
    assert check_only_insertions(xmai, batch, edited, insertions) > 0  # it still inserts (materials, textures...)
    for caps, inss in zip(batch.captions, insertions):
        for cap, ins in zip(caps, inss):
            has = LEXICON.caption_categories(split_words(cap))
            assert all(not LEXICON.value_categories(w) & has for _, w in ins), (cap, ins)
    stats = caption_edit_stats(batch.captions, edited)
    assert stats["attribute_changes"] == 0 and stats["new_attributes"] > 0
    floor, _ = XMAI(min_similarity=1.0).edit(enc, batch)
    assert floor == batch.captions  # no insertion keeps the caption's embedding identical


def test_xmai_guard_settings_and_record(enc, data):
    att = build_attack("xmai")
    assert att.describe()["meaning_guard"]["mode"] == "strict"
    off = att.replace(meaning_guard="off")
    assert off.settings()["meaning_guard"] == "off" and off.describe()["meaning_guard"]["categories"] == []
    test = data.subset(list(range(2)))
    test.captions = [c[:2] for c in test.captions]
    res = robustmm.evaluate(enc, test, modality="image", attack=att, progress=False)
    edits = res.metrics["caption_edits"]
    assert edits["captions"] == 4 and edits["edits"] > 0 and edits["attribute_changes"] == 0
    json.dumps(res.to_dict())


def test_report_names_the_attribute_changing_edits(enc, data):
    """The report's attack table says how many of a caption attack's final edits change an attribute word."""
    from robustmm.report.markdown import render

    test = data.subset(list(range(2)))
    test.captions = [c[:2] for c in test.captions]
    res = robustmm.evaluate(enc, test, modality="image", attack=build_attack("xmai", meaning_guard="off"),
                            progress=False)
    edits = res.metrics["caption_edits"]
    assert edits["edits"] > 0
    assert f"attribute-changing edits {edits['attribute_changes']}/{edits['edits']}" in render([res])
