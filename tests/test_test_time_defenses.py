"""Test-time defenses (CLIPure-Cos, counterattacks, InvGC): what each does to an embedding, that an
adaptive attacker gets a gradient through its optimisation, that the encoder stays frozen, and one-line
errors for bad settings."""
import pytest
import torch
import torch.nn.functional as F

import robustmm
from robustmm.attacks import BPDA, EOT, PGD
from robustmm.encoders.clipure import PurifiedEncoder, purify_cosine
from robustmm.encoders.counterattack import CounterattackEncoder
from robustmm.encoders.invgc import InvGCEncoder, hubness, invgc_adjust, k_occurrence
from robustmm.encoders.straight_through import bpda
from robustmm.errors import RobustMMError
from robustmm.modalities import CONTINUOUS_MODALITIES


@pytest.fixture(scope="module")
def enc():
    return robustmm.load_encoder("tinybind")


@pytest.fixture(scope="module")
def data():
    return robustmm.load_dataset("synthscenes", split="test", n=4)


@pytest.fixture(scope="module")
def train():
    return robustmm.load_dataset("synthscenes", split="train", n=16)


@pytest.mark.parametrize("modality", CONTINUOUS_MODALITIES)
def test_clipure_raises_the_cosine_to_the_null_text(enc, data, modality):
    pure = robustmm.defend(enc, "clipure", steps=5)
    x = data.get(modality, slice(None))
    with torch.no_grad():
        before = enc.encode(modality, x) @ pure.anchor
        after = pure.encode(modality, x) @ pure.anchor
    assert bool((after > before + 0.1).all()), (before, after)
    torch.testing.assert_close(pure.anchor, enc.encode_text(["a photo of a ."])[0])


def test_purify_cosine_unrolled_gradient_differs_from_first_order():
    z = F.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), dim=-1).requires_grad_(True)
    anchor = F.normalize(torch.ones(8), dim=0)
    target = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    grads = []
    for create_graph in (True, False):
        out = purify_cosine(z, anchor, steps=4, step_size=0.1, momentum=0.9, create_graph=create_graph)
        (g,) = torch.autograd.grad((out * target).sum(), z)
        grads.append(g)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    assert not torch.allclose(grads[0], grads[1]), "the unrolled steps add second-order terms"


def test_clipure_adaptive_attack_gets_a_gradient_and_moves_the_input(enc, data):
    pure = robustmm.defend(enc, "clipure", steps=3)
    task = data.tasks["image"]
    x = data.get("image", slice(None)).clone().requires_grad_(True)
    logits = pure.encode("image", x) @ pure.class_embeddings(task.prompts()).T
    F.cross_entropy(logits, task.labels).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    x_adv = PGD(eps=4 / 255, steps=2)(pure, data.get("image", slice(None)), modality="image", labels=task.labels,
                                      classnames=task.classnames)
    assert (x_adv - data.get("image", slice(None))).abs().max() > 0


@pytest.mark.parametrize("modality", ["image", "audio", "pointcloud"])
def test_counterattack_gradient_flows_through_the_unrolled_steps(enc, data, modality):
    ttc = robustmm.defend(enc, "counterattack", steps=2)
    x0 = data.get(modality, slice(None))
    target = F.normalize(torch.randn(len(x0), enc.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    grads = []
    for on in (False, True):
        x = x0.clone().requires_grad_(True)
        torch.manual_seed(0)  # the same random start both times
        with bpda(on):
            (ttc.encode(modality, x) * target).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        grads.append(x.grad)
    assert not torch.allclose(grads[0], grads[1]), "under BPDA the sign's stand-in adds second-order terms"


def test_counterattack_threshold_and_randomness(enc, data, train):
    x = data.get("image", slice(None))
    with torch.no_grad():
        bare = enc.encode("image", x)
        torch.manual_seed(0)
        never = CounterattackEncoder(enc, tau_thres=0.0).encode("image", x)  # tau_0 > 0: nothing counterattacked
        torch.manual_seed(0)
        always = CounterattackEncoder(enc).encode("image", x)
        torch.manual_seed(0)
        again = CounterattackEncoder(enc).encode("image", x)
    torch.testing.assert_close(never, bare)
    assert (always - bare).norm(dim=-1).min() > 1e-4
    torch.testing.assert_close(always, again)  # seeded by torch's global generator
    fitted = robustmm.defend(enc, "counterattack", data=train, modality="image", tau_quantile=0.5, fit_n=8)
    assert fitted.randomized and set(fitted.tau_thres) == {"image"} and fitted.tau_thres["image"] > 0
    assert fitted.training_info["tau_quantile"] == 0.5 and fitted.info()["defense"]["name"] == "counterattack"


def test_counterattack_adaptive_eot_bpda_attack_runs(enc, data):
    ttc = robustmm.defend(enc, "counterattack", steps=1)
    task = data.tasks["image"]
    x = data.get("image", slice(None))
    x_adv = EOT(BPDA(PGD(eps=1 / 255, steps=1)), samples=2)(ttc, x, modality="image", labels=task.labels,
                                                            classnames=task.classnames)
    assert x_adv.shape == x.shape and (x_adv - x).abs().max() <= 1 / 255 + 1e-6 and (x_adv - x).abs().max() > 0


@pytest.mark.parametrize("name", ["clipure", "counterattack", "invgc"])
def test_test_time_defense_leaves_encoder_weights_unchanged(enc, data, train, name):
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    kw = {"data": train, "modality": "image"} if name != "clipure" else {}
    defended = robustmm.defend(enc, name, **kw)
    task = data.tasks["image"]
    x = data.get("image", slice(None))
    attack = PGD(eps=2 / 255, steps=1, loss="caption" if name == "invgc" else "ce")
    attack(defended, x, modality="image", labels=task.labels, classnames=task.classnames,
           captions=[list(c) for c in data.captions])
    after = enc.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in defended.parameters()) and not defended.training


def _toy(n: int, gen: torch.Generator, mu: torch.Tensor) -> torch.Tensor:
    """Unit vectors around a shared direction: a high-dimensional cloud with hubs near its centre."""
    return F.normalize(torch.randn(n, mu.numel(), generator=gen) + 6.0 * mu, dim=-1)


def test_invgc_reduces_hubness_on_a_toy_bank():
    gen = torch.Generator().manual_seed(0)
    mu = F.normalize(torch.randn(64, generator=gen), dim=0)
    gallery, queries, bank, query_bank = (_toy(n, gen, mu) for n in (200, 400, 500, 500))
    assert k_occurrence(queries, gallery, 10).sum() == 400 * 10
    before = hubness(queries, gallery, 10)
    adjusted = invgc_adjust(gallery, bank, beta=0.0, k=10, query_bank=query_bank, beta_query=0.9, renormalize=False)
    after = hubness(queries, adjusted, 10)
    assert before > 1.0 and after < 0.75 * before, (before, after)


def test_invgc_encoder_adjusts_its_bank_modality_only(enc, data, train):
    inv = robustmm.defend(enc, "invgc", data=train, modality="audio", k=3, bank_n=8)
    assert isinstance(inv, InvGCEncoder) and inv.settings()["banks"] == {"audio": 8}
    with torch.no_grad():
        a, i = data.get("audio", slice(None)), data.get("image", slice(None))
        torch.testing.assert_close(inv.encode("image", i), enc.encode("image", i))
        za = inv.encode("audio", a)
        assert not torch.allclose(za, enc.encode("audio", a))
        torch.testing.assert_close(za.norm(dim=-1), torch.ones(len(a)))


@pytest.mark.parametrize("build, match", [
    (lambda e, t: robustmm.defend(e, "clipure", steps=0), "clipure steps must be an integer > 0"),
    (lambda e, t: robustmm.defend(e, "clipure", momentum=1.0), "momentum must be a number in"),
    (lambda e, t: robustmm.defend(e, "clipure", null_text=""), "null_text must be a non-empty string"),
    (lambda e, t: robustmm.defend(e, "clipure", data=t), "fits nothing: drop data="),
    (lambda e, t: robustmm.defend(e, "counterattack", eps=4), "exceeds the image domain"),
    (lambda e, t: robustmm.defend(e, "counterattack", eps={"smell": 0.1}), "names modality 'smell'"),
    (lambda e, t: robustmm.defend(e, "counterattack", modality="image"), "pass data=<split> too"),
    (lambda e, t: robustmm.defend(e, "counterattack", data=t), "pass modality="),
    (lambda e, t: robustmm.defend(e, "counterattack", data=t, modality="image", tau_thres=0.1), "not both"),
    (lambda e, t: robustmm.defend(e, "counterattack", data=t, modality="image", tau_quantile=1.5), "tau_quantile"),
    (lambda e, t: robustmm.defend(e, "invgc"), "needs its banks"),
    (lambda e, t: robustmm.defend(e, "invgc", data=t, modality="image", k=0), "invgc k must be an integer > 0"),
    (lambda e, t: robustmm.defend(e, "invgc", data=t, modality="image", weighting="max"), "weighting must be one of"),
    (lambda e, t: InvGCEncoder(e, {"image": torch.zeros(3, 5)}), r"must be a non-empty \(M, "),
])
def test_test_time_defense_settings_fail_in_one_line(enc, train, build, match):
    with pytest.raises(RobustMMError, match=match) as err:
        build(enc, train)
    assert "\n" not in str(err.value)


def test_purified_encoder_records_its_settings(enc):
    pure = PurifiedEncoder(enc, steps=2, modalities=("image",))
    assert pure.info()["defense"] == {"name": "clipure", "null_text": "a photo of a .", "steps": 2, "step_size": 0.02,
                                      "momentum": 0.9, "unroll": True, "modalities": ["image"]}
