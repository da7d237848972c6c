"""EOT's draw schedules (stratified / fixed samples of a declared support) and translation-invariant
gradient smoothing: the support of random resize-and-pad, systematic sampling, the drawn view, and
the attack invariants with the new options (budget, domain, determinism, eps = 0, loss goes up)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustmm.attacks import build_attack
from robustmm.attacks.eot import EOT
from robustmm.attacks.eot_draws import DrawnEncoder, smooth_gradient, systematic_sample
from robustmm.encoders.input_transforms import build_defense, defend
from robustmm.errors import BudgetError, RobustMMError
from robustmm.evaluation import iter_batches

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 4 / 255


def test_systematic_sample_is_stratified_and_unbiased():
    assert systematic_sample([0.5, 0.25, 0.25], 4, 0.3) == [0, 0, 1, 2]
    probs = torch.rand(37).tolist()
    total = sum(probs)
    for u in (0.0, 0.41, 0.999):
        picks = systematic_sample(probs, 11, u)
        counts = torch.bincount(torch.tensor(picks), minlength=37)
        want = torch.tensor(probs) / total * 11
        assert bool((counts >= want.floor() - 1e-9).all() and (counts <= want.ceil() + 1e-9).all())


def test_random_resize_pad_support_matches_its_draws():
    t = build_defense("random-resize-pad")
    x = torch.rand(2, 3, 64, 64)
    support = t.support(x.shape)
    assert len(support) == 506  # sizes 64..74, offsets (75 - size)**2 each
    assert abs(sum(p for p, _ in support) - 1) < 1e-9
    draws = {d for _, d in support}
    for seed in range(5):
        torch.manual_seed(seed)
        d = t.draw(x.shape)
        torch.manual_seed(seed)
        assert d in draws and torch.equal(t.forward(x, "image"), t.apply(x, "image", d))
    assert build_defense("bit-depth").support(x.shape) == []
    with pytest.raises(RobustMMError, match="declares no draws"):
        build_defense("bit-depth").apply(x, "image", None)


def test_smooth_gradient_blurs_the_backward_only():
    x = torch.rand(1, 1, 9, 9, requires_grad=True)
    y = smooth_gradient(x, 1.0)
    assert torch.equal(y, x)
    w = torch.zeros(1, 1, 9, 9)
    w[0, 0, 4, 4] = 1
    (g,) = torch.autograd.grad((y * w).sum(), x)
    assert abs(g.sum().item() - 1) < 1e-5 and g[0, 0, 4, 4] < 0.5 and g[0, 0, 4, 5] > 0.05
    assert torch.allclose(g[0, 0], g[0, 0].T) and g.argmax().item() == 40
    assert smooth_gradient(x, 0) is x
    with pytest.raises(RobustMMError, match="image-like"):
        smooth_gradient(torch.rand(4, 5, requires_grad=True), 1.0)


@pytest.fixture(scope="module")
def defended(rand_encoder):
    return defend(rand_encoder, "random-resize-pad")


@pytest.fixture(scope="module")
def batch(synth_small):
    data = synth_small.head(6)
    return next(iter_batches(data, "image", 6, data.tasks["image"].prompts()))


def test_drawn_view_cycles_a_fixed_sample_and_restarts(defended, batch, monkeypatch):
    seen = []
    orig = defended.encode_draw

    def spy(modality, x, draw):
        seen.append(draw)
        return orig(modality, x, draw)

    monkeypatch.setattr(defended, "encode_draw", spy)

    def run(view, calls=22):
        seen.clear()
        with torch.no_grad():
            for _ in range(calls):
                view.encode("image", batch.x)
        return list(seen)

    fixed = run(DrawnEncoder(defended, 11, "fixed", seed=3))
    assert fixed[:11] == fixed[11:] and len({d[0] for d in fixed[:11]}) == 11  # one draw per size
    view = DrawnEncoder(defended, 11, "stratified", seed=3)
    strat = run(view)
    assert strat[:11] != strat[11:] and len({d[0] for d in strat[11:]}) == 11
    view.restart()
    assert run(view) == strat


@pytest.mark.parametrize("attack, draws, smooth", [("apgd", "stratified", 0.0), ("pgd", "fixed", 1.0),
                                                   ("apgd", "random", 1.0)])
def test_eot_options_keep_the_attack_contract(defended, batch, attack, draws, smooth):
    eot = EOT(build_attack(attack, eps=EPS, steps=4, seed=1), samples=3, draws=draws, smooth=smooth)
    torch.manual_seed(0)
    a = eot(defended, batch).x
    torch.manual_seed(0)
    b = eot(defended, batch).x
    assert torch.equal(a, b)  # deterministic with the seed
    assert (a - batch.x).abs().max() <= EPS + 1e-6 and a.min() >= 0 and a.max() <= 1
    assert torch.equal(eot.with_eps(0)(defended, batch).x, batch.x)
    d = eot.describe()
    assert d["eot_samples"] == 3 and d.get("eot_draws", "random") == draws and d.get("eot_smooth", 0.0) == smooth

    def loss(x):  # the CE over the whole support: what a stratified EOT estimates
        centers = defended.class_embeddings(batch.prompts)
        with torch.no_grad():
            return sum(p * F.cross_entropy(100 * defended.encode_draw("image", x, dr) @ centers.T, batch.labels).item()
                       for p, dr in defended.draw_support("image", x.shape))

    assert loss(a) > loss(batch.x)


def test_eot_options_refuse_bad_settings(rand_encoder, batch):
    apgd = build_attack("apgd", eps=EPS, steps=2)
    with pytest.raises(RobustMMError, match="did you mean|EOT draws"):
        EOT(apgd, 4, draws="exhaustive")
    for bad in (-1, True, "2", 100):
        with pytest.raises(BudgetError, match="smooth"):
            EOT(apgd, 4, smooth=bad)
    with pytest.raises(RobustMMError, match="declares no draws"):
        EOT(apgd, 4, draws="fixed")(rand_encoder, batch)
    bit = defend(rand_encoder, "bit-depth")
    with pytest.raises(RobustMMError, match="declares no draws"):
        EOT(apgd, 4, draws="stratified")(bit, batch)
    assert EOT(apgd, 4, draws="fixed", smooth=0.5, seed=2).replace(steps=3).settings()["steps"] == 3
    wrapped = EOT(apgd, 4, draws="fixed", smooth=0.5, seed=2).with_eps(1 / 255)
    assert (wrapped.draws, wrapped.smooth, wrapped.seed) == ("fixed", 0.5, 2)
