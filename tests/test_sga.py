"""SGA and the word-substitute machinery: invariants on a random-init TinyBind, effect on the trained one."""
import json

import pytest
import torch

import robustmm
from robustmm.attacks import build_attack
from robustmm.attacks.meaning_guard import MeaningGuard
from robustmm.attacks.sga import SGA, attack_captions
from robustmm.errors import BudgetError, UnknownNameError
from robustmm.evaluation import iter_batches
from robustmm.modalities import get_modality
from robustmm.text.substitutes import (
    MASK,
    STOP_WORDS,
    EmbeddingNeighbourSubstitutes,
    SubstituteGenerator,
    load_vocabulary,
    replace_core,
    split_token,
    split_words,
)

VOCAB = load_vocabulary(n=120) + ["blue", "green", "yellow", "purple", "square", "circle", "ring", "tiny", "huge"]


@pytest.fixture(scope="module")
def enc(rand_encoder):
    return rand_encoder


@pytest.fixture(scope="module")
def data():
    return robustmm.load_dataset("synthscenes", split="test", n=4, modalities=("image", "video", "audio"))


@pytest.fixture(scope="module")
def gen(enc):
    return EmbeddingNeighbourSubstitutes(enc, VOCAB)


def batch_of(data, modality="image", n=4, captions=2):
    """A small batch; only the first ``captions`` captions per item (text embedding dominates the cost)."""
    b = next(iter_batches(data, modality, n, None))
    return b.replace(captions=[c[:captions] for c in b.captions])


def changed_words(a: str, b: str) -> int:
    wa, wb = split_words(a), split_words(b)
    assert len(wa) == len(wb)
    return sum(x != y for x, y in zip(wa, wb))


# -- substitutes ---------------------------------------------------------------------------------
def test_vocabulary_and_tokens():
    words = load_vocabulary()
    assert 1000 <= len(words) <= 10000 and all(w.isalpha() and w.islower() for w in words)
    assert split_token('"star."') == ('"', "star", '."')
    assert replace_core("Star,", "moon") == "Moon,"
    assert " ".join(split_words("a  b c.")) == "a  b c."


def test_embedding_neighbours(gen):
    assert isinstance(gen, SubstituteGenerator)
    words = split_words("a large red circle.")
    subs = gen.candidates(words, 2, 5)
    assert 0 < len(subs) <= 5 and "red" not in subs and not set(subs) & STOP_WORDS
    assert gen.candidates(words, 3, 3) == gen.candidates(words, 3, 3)  # deterministic, cached
    assert gen.candidates(["a", MASK, "circle"], 1, 3) == []  # no context model: no insertions


# -- SGA -----------------------------------------------------------------------------------------
def test_registered_and_described():
    att = build_attack("sga", eps=2 / 255)
    assert isinstance(att, SGA) and att.perturbs == ("x", "captions")
    d = att.describe()
    assert d["eps"] == pytest.approx(2 / 255) and d["step_size"] == pytest.approx(0.5 / 255)
    assert d["steps"] == 10 and d["scales"] == [1.0, 0.5, 0.75, 1.25, 1.5] and d["max_words"] == 1
    json.dumps(d)
    other = att.with_eps(4 / 255)
    assert other.eps == pytest.approx(4 / 255) and other.describe()["step_size"] == pytest.approx(1 / 255)
    assert att.eps == pytest.approx(2 / 255)
    default = build_attack("sga")  # eps=None: the modality's middle eps, filled in by resolve
    assert default.eps is None and default.describe()["step_size"] == "eps/4"
    for modality in ("image", "audio", "pointcloud"):
        r = default.resolve(modality)
        assert r.eps == get_modality(modality).middle_eps and r.norm == "linf"
        assert r.describe()["step_size"] == pytest.approx(r.eps / 4)
    with pytest.raises(BudgetError):
        SGA(eps=-1)


def test_sga_image_invariants(enc, data, gen):
    batch = batch_of(data)
    x0, caps0 = batch.x.clone(), [list(c) for c in batch.captions]
    modes = {n: m.training for n, m in enc.named_modules()}
    att = SGA(eps=2 / 255, steps=3, k=5, substitutes=gen, seed=5)
    adv = att(enc, batch)
    assert torch.equal(batch.x, x0) and batch.captions == caps0  # input untouched
    assert {n: m.training for n, m in enc.named_modules()} == modes
    assert all(p.grad is None for p in enc.parameters())
    delta = (adv.x - batch.x).abs().max().item()
    assert 0 < delta <= 2 / 255 + 1e-6
    assert float(adv.x.min()) >= 0 and float(adv.x.max()) <= 1
    assert [len(c) for c in adv.captions] == [len(c) for c in batch.captions]
    n_changed = [changed_words(a, b) for ca, cb in zip(batch.captions, adv.captions) for a, b in zip(ca, cb)]
    assert max(n_changed) <= 1 and sum(n_changed) > 0
    again = SGA(eps=2 / 255, steps=3, k=5, substitutes=gen, seed=5)(enc, batch)  # same seed -> same output
    assert torch.equal(again.x, adv.x) and again.captions == adv.captions


def test_sga_eps_zero_keeps_x(enc, data, gen):
    batch = batch_of(data, n=3)
    adv = SGA(eps=0.0, steps=2, substitutes=gen)(enc, batch)
    assert torch.equal(adv.x, batch.x)


def test_max_words_two(enc, data, gen):
    batch = batch_of(data, n=2)
    guide = enc.encode("image", batch.x).detach()
    out = attack_captions(enc, batch.captions, guide, gen, k=5, max_words=2)
    assert max(changed_words(a, b) for ca, cb in zip(batch.captions, out) for a, b in zip(ca, cb)) <= 2
    assert attack_captions(enc, batch.captions, guide, gen, max_words=0) == batch.captions


@pytest.mark.parametrize("modality", ["video", "audio"])
def test_other_modalities_within_eps(enc, data, gen, modality):
    batch = batch_of(data, modality, n=2)
    eps = 2 / 255 if modality == "video" else 0.004
    adv = SGA(eps=eps, steps=2, substitutes=gen)(enc, batch)  # video: per-frame scales; audio: none
    assert adv.x.shape == batch.x.shape
    assert (adv.x - batch.x).abs().max().item() <= eps + 1e-6


def test_l2_budget(enc, data, gen):
    batch = batch_of(data, n=2)
    adv = SGA(eps=0.5, steps=2, norm="l2", substitutes=gen, max_words=0)(enc, batch)
    assert (adv.x - batch.x).flatten(1).norm(dim=1).max().item() <= 0.5 + 1e-4


def test_sga_lowers_retrieval_on_trained_tinybind(trained):
    enc = trained
    test = robustmm.load_dataset("synthscenes", split="test", n=20, modalities="image")
    test.captions = [c[:2] for c in test.captions]  # text embedding dominates the cost on CPU
    att = SGA(vocabulary=VOCAB)
    res = robustmm.evaluate(enc, test, modality="image", attack=att, progress=False)
    clean, adv = res.metrics["clean"], res.metrics["attacked"]
    assert adv["x2t_R@1"] < clean["x2t_R@1"] and adv["t2x_R@1"] < clean["t2x_R@1"]
    assert res.metrics["asr_detail"]["t2x_R@1"] > 0.2


# -- the meaning guard ---------------------------------------------------------------------------
class ColourSubstitutes:
    """Proposes other colours for every word, and one neutral word last: the SynthScenes failure
    (the nearest neighbours of a colour word are colours) made certain."""

    def candidates(self, words, position, k):
        return [w for w in ("blue", "green", "yellow", "purple", "cyan", "painted") if w != words[position]][:k]


def colour_swaps(original, edited):
    from robustmm.text.edits import caption_edit_stats

    return caption_edit_stats(original, edited)["by_category"].get("colour", 0)


def test_sga_never_changes_an_attribute_by_default(enc, data):
    batch = batch_of(data, n=4, captions=3)
    guide = enc.encode("image", batch.x).detach()
    off = attack_captions(enc, batch.captions, guide, ColourSubstitutes(), k=6, guard=MeaningGuard("off"))
    assert colour_swaps(batch.captions, off) > 0  # unguarded, the colour proposals win somewhere
    from robustmm.text.edits import caption_edit_stats

    adv = SGA(eps=2 / 255, steps=1, k=6, substitutes=ColourSubstitutes())(enc, batch)  # the default: strict
    assert caption_edit_stats(batch.captions, adv.captions)["attribute_changes"] == 0
    category = SGA(eps=2 / 255, steps=1, k=6, substitutes=ColourSubstitutes(), meaning_guard="category")(enc, batch)
    assert colour_swaps(batch.captions, category.captions) == 0  # "red" -> "painted" may remain
    for new_caps in (adv.captions, category.captions):
        for caps, advs in zip(batch.captions, new_caps):
            for cap, new in zip(caps, advs):
                changed = {split_token(b)[1].lower() for a, b in zip(split_words(cap), split_words(new)) if a != b}
                assert changed <= {"painted"}  # only the neutral word ever goes in
    floor = SGA(eps=2 / 255, steps=1, k=6, substitutes=ColourSubstitutes(), meaning_guard="off", min_similarity=1.0)
    assert floor(enc, batch).captions == batch.captions  # no edit keeps the caption identical


def test_sga_guard_settings_recorded():
    att = build_attack("sga")
    assert att.settings()["meaning_guard"] == "strict" and att.settings()["min_similarity"] is None
    d = att.describe()["meaning_guard"]
    assert d["mode"] == "strict" and "colour" in d["categories"]
    off = att.replace(meaning_guard="off", min_similarity=0.8)
    assert off.describe()["meaning_guard"] == {"mode": "off", "min_similarity": 0.8, "categories": []}
    json.dumps(off.describe())
    with pytest.raises(UnknownNameError):
        SGA(meaning_guard="loose")


def test_sga_result_records_attribute_changes(enc, data):
    test = data.subset(list(range(3)))
    test.captions = [c[:2] for c in test.captions]
    res = robustmm.evaluate(enc, test, modality="image", progress=False,
                            attack=SGA(eps=2 / 255, steps=1, k=6, substitutes=ColourSubstitutes(), meaning_guard="off"))
    edits = res.metrics["caption_edits"]
    assert edits["captions"] == 6 and edits["edits"] >= edits["attribute_changes"] > 0
    assert edits["attribute_change_rate"] == pytest.approx(edits["attribute_changes"] / edits["edits"])
    assert json.loads(json.dumps(res.to_dict()))["metrics"]["caption_edits"] == edits


def test_sga_takes_any_64_bit_seed(enc, data):
    """A job's [run] seed may be up to 2**63 - 1; SGA's per-batch generator must take it (it overflowed)."""
    res = robustmm.evaluate(enc, data.subset([0, 1]), modality="image",
                            attack=build_attack("sga", seed=2**63 - 1, steps=1), progress=False)
    assert res.metrics["attacked"] is not None
