"""Square attack: budget and domain on every modality, gradient-free, seeded, windows per layout."""
from __future__ import annotations

import pytest
import torch
from _tiny import big_eps, first_batch, l2_eps, predicted, tiny_fixtures  # noqa: E402  (tests/ is on sys.path)

from robustmm.attacks import build_attack
from robustmm.attacks.margin_losses import Scorer
from robustmm.attacks.square import Square
from robustmm.attacks.square_windows import bump, p_schedule, view, window
from robustmm.batch import Batch
from robustmm.data.synthscenes import synthscenes
from robustmm.errors import BudgetError, UnknownNameError
from robustmm.evaluation import iter_batches
from robustmm.modalities import CONTINUOUS_MODALITIES, get_modality

pytestmark = pytest.mark.usefixtures("one_thread")

N = 8
Q = 20


data, enc = tiny_fixtures(N)


def batch_of(data, enc, modality: str) -> Batch:
    """Labelled with the model's own predictions: every item robust at the clean input."""
    return predicted(enc, first_batch(data, modality, N))


def margins(enc, b: Batch, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return Scorer.of(enc, b, 100.0, x.device).score(enc.encode(b.modality, x), torch.arange(len(b)))


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("modality", CONTINUOUS_MODALITIES)
def test_within_budget_domain_and_it_lowers_the_margin(enc, data, modality, norm):
    b = batch_of(data, enc, modality)
    eps = big_eps(modality) if norm == "linf" else l2_eps(modality, b.x)
    adv = Square(eps=eps, norm=norm, n_queries=Q)(enc, b)
    d = (adv.x - b.x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert adv.x.shape == b.x.shape and (size <= eps * (1 + 1e-5) + 1e-6).all()
    assert size.max() > 0.5 * eps
    lo, hi = get_modality(modality).domain
    assert adv.x.min() >= lo and adv.x.max() <= hi
    assert margins(enc, b, adv.x).mean() < margins(enc, b, b.x).mean()


def test_never_calls_backward(enc, data, monkeypatch):
    b = batch_of(data, enc, "image")

    def boom(*_, **__):
        raise AssertionError("Square must not differentiate")

    monkeypatch.setattr(torch.Tensor, "backward", boom)
    monkeypatch.setattr(torch.autograd, "grad", boom)
    monkeypatch.setattr(torch.autograd, "backward", boom)
    seen = []
    original = type(enc)._encode

    def spy(self, modality, x):
        seen.append(torch.is_grad_enabled() or x.requires_grad)
        return original(self, modality, x)

    monkeypatch.setattr(type(enc), "_encode", spy)
    adv = Square(eps=big_eps("image"), n_queries=Q)(enc, b)
    assert not torch.equal(adv.x, b.x) and seen and not any(seen)


@pytest.mark.parametrize("modality", ["image", "audio", "pointcloud"])
def test_seeded_deterministic_untouched(enc, data, modality):
    b = batch_of(data, enc, modality)
    x0 = b.x.clone()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    a1 = Square(eps=big_eps(modality), n_queries=Q, seed=1)(enc, b).x
    a2 = Square(eps=big_eps(modality), n_queries=Q, seed=1)(enc, b).x
    a3 = Square(eps=big_eps(modality), n_queries=Q, seed=2)(enc, b).x
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)
    assert torch.equal(b.x, x0)
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())


def test_item_windows_do_not_depend_on_the_batch(enc, data):
    b = batch_of(data, enc, "thermal")
    atk = Square(eps=big_eps("thermal"), n_queries=Q, loss="embedding")
    full = atk(enc, b).x
    half = atk(enc, Batch("thermal", b.x[4:], b.captions[4:], b.labels[4:], b.prompts, b.index[4:])).x
    assert torch.allclose(full[4:], half, atol=1e-6)


def test_eps_zero_and_middle_eps(enc, data):
    b = batch_of(data, enc, "audio")
    adv = Square(eps=0.0, n_queries=Q)(enc, b)
    assert torch.equal(adv.x, b.x) and adv.x.data_ptr() != b.x.data_ptr()
    assert Square().resolve("audio").eps == get_modality("audio").middle_eps


def test_items_broken_at_the_clean_input_are_returned_unchanged(enc, data):
    b = batch_of(data, enc, "image")
    wrong = b.replace(labels=(b.labels + 1) % len(b.prompts))  # every item misclassified already
    assert torch.equal(Square(eps=big_eps("image"), n_queries=Q)(enc, wrong).x, b.x)


def test_label_free_scores(trained):
    d = synthscenes(16, seed=2)
    b = next(iter_batches(d, "audio", 16, None)).replace(labels=None, prompts=None)  # a retrieval-only batch
    eps = get_modality("audio").eps_grid[-1]
    sc = Scorer.of(trained, b, 100.0, b.x.device)
    rows = torch.arange(16)
    for loss in ("margin", "caption"):
        adv = Square(eps=eps, n_queries=30, loss=loss)(trained, b).x
        with torch.no_grad():
            assert sc.caption_margin(trained.encode("audio", adv), rows).mean() < sc.caption_margin(
                trained.encode("audio", b.x), rows).mean()
    adv = Square(eps=eps, n_queries=10, loss="embedding")(trained, b).x
    with torch.no_grad():
        assert (trained.encode("audio", adv) * trained.encode("audio", b.x)).sum(-1).mean() < 0.9999


def test_windows_per_layout():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 16, 16, generator=g)
    u = torch.tensor([[0.1, 0.9], [0.5, 0.5]])
    mask, pat = window(img, "image", 0.25, u, None)
    assert mask.shape == (2, 1, 16, 16) and (mask.flatten(1).sum(1) == 64).all()  # an 8 x 8 square
    assert torch.equal(pat != 0, mask.bool()) and torch.allclose(pat.flatten(1).norm(dim=1), torch.ones(2))
    video = view(torch.rand(2, 4, 3, 8, 8, generator=g), "video")
    assert video.shape == (2, 12, 8, 8)  # one square for all 4 frames x 3 colours
    audio = view(torch.rand(2, 100, generator=g), "audio")
    mask, _ = window(audio, "audio", 0.1, u, None)
    on = mask[0, 0, 0].nonzero().squeeze(1)
    assert len(on) == 10 and torch.equal(on, torch.arange(on[0], on[0] + 10))  # a run of samples
    pts = torch.rand(2, 50, 6, generator=g) * 2 - 1
    pview = view(pts, "pointcloud")
    mask, _ = window(pview, "pointcloud", 0.2, u, pview[:, :3, 0, :])
    chosen = mask[0, 0, 0].bool()
    assert int(chosen.sum()) == 10
    centre = pts[0, int(0.1 * 50), :3]
    dist = (pts[0, :, :3] - centre).norm(dim=1)
    assert dist[chosen].max() <= dist[~chosen].min()  # the nearest points to the centre
    assert torch.allclose(bump(4, 4).norm(), torch.tensor(1.0)) and (bump(4, 4)[:, :2] > 0).all()


def test_p_schedule():
    assert p_schedule(0, 10000, 0.8) == 0.8 and p_schedule(11, 10000, 0.8) == 0.4
    assert p_schedule(9000, 10000, 0.8) == 0.8 / 512
    assert p_schedule(1, 100, 0.8, rescale=True) == 0.2 and p_schedule(6, 100, 0.8, rescale=True) == 0.05


def test_p_schedule_default_keeps_the_reference_halving_points_at_any_budget():
    """AutoAttack's standard Square (5000 queries) halves after iterations 10, 50, 200, ..., 4000:
    the points do not move with the budget unless the schedule is rescaled."""
    fixed = [p_schedule(it, 5000, 0.8) for it in (10, 11, 50, 51, 200, 201, 4000, 4001, 4999)]
    assert fixed == [0.8, 0.4, 0.4, 0.2, 0.2, 0.1, 0.8 / 64, 0.8 / 128, 0.8 / 128]
    assert p_schedule(2001, 5000, 0.8, rescale=True) == 0.8 / 128  # 4002 of 10,000: two halvings earlier
    assert p_schedule(2001, 5000, 0.8) == 0.8 / 64
    assert [p_schedule(it, 10000, 0.8) for it in range(0, 10000, 37)] == \
        [p_schedule(it, 10000, 0.8, rescale=True) for it in range(0, 10000, 37)]  # the same at 10,000


def test_square_rescale_schedule_is_a_setting():
    assert Square().rescale_schedule is False and Square().settings()["rescale_schedule"] is False
    sq = Square(rescale_schedule=True)
    assert sq.replace(n_queries=10).rescale_schedule is True and sq.describe()["rescale_schedule"] is True


@pytest.mark.parametrize("kwargs, err", [({"n_queries": 0}, BudgetError), ({"n_queries": -5}, BudgetError),
                                         ({"n_queries": 2.5}, BudgetError), ({"loss": "dlr"}, UnknownNameError),
                                         ({"p_init": 0.0}, BudgetError), ({"eps": float("nan")}, BudgetError)])
def test_bad_settings(kwargs, err):
    with pytest.raises(err) as e:
        Square(**kwargs)
    assert "\n" not in str(e.value)


def test_registered():
    sq = build_attack("square", n_queries=7)
    assert isinstance(sq, Square) and sq.with_eps(0.1).eps == 0.1 and sq.describe()["n_queries"] == 7
