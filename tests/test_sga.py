"""SGA and the word-substitute machinery: invariants on a random-init TinyBind, effect on the trained one."""
import json

import pytest
import torch

import robustmm
from robustmm.attacks import build_attack
from robustmm.attacks.sga import SGA, attack_captions
from robustmm.errors import BudgetError
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
