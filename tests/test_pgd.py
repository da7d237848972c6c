"""PGD invariants on every continuous modality, with a tiny random-init TinyBind (offline, CPU).

The random model's BatchNorm statistics are calibrated on the test items (a few forward passes
in train mode) so its embeddings respond to input changes as a trained model's do; otherwise a
freshly initialised network is nearly constant and every "loss goes up" check would be noise.
"""
from __future__ import annotations

import pytest
import torch
from _tiny import big_eps, first_batch, l2_eps, tiny_fixtures  # noqa: E402  (tests/ is on sys.path)

from robustmm.attacks import build_attack
from robustmm.attacks.losses import LOSSES, effective_loss, make_objective, resolve_loss
from robustmm.attacks.pgd import PGD, frozen
from robustmm.batch import Batch
from robustmm.data.synthscenes import synthscenes
from robustmm.encoders.base import NUMERIC_TOLERANCE
from robustmm.encoders.tinybind import ASSETS
from robustmm.errors import BudgetError, RobustMMError, UnknownNameError
from robustmm.evaluation import iter_batches
from robustmm.modalities import CONTINUOUS_MODALITIES, get_modality

pytestmark = pytest.mark.usefixtures("one_thread")

MODS = CONTINUOUS_MODALITIES
N = 8
STEPS = 3
HAVE_WEIGHTS = (ASSETS / "tinybind.safetensors").exists() and (ASSETS / "tinybind.json").exists()


data, enc = tiny_fixtures(N)


def batch_of(data, modality: str, labels: bool = True) -> Batch:
    b = first_batch(data, modality, N)
    return b if labels else b.replace(labels=None, prompts=None)


# -- budget, domain, copies ------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("modality", MODS)
def test_within_budget_and_domain(enc, data, modality, norm):
    b = batch_of(data, modality)
    eps = big_eps(modality) if norm == "linf" else l2_eps(modality, b.x)
    adv = PGD(eps=eps, norm=norm, steps=STEPS)(enc, b)
    assert adv.x.shape == b.x.shape and adv.x.dtype == b.x.dtype
    d = (adv.x - b.x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert (size <= eps * (1 + 1e-5) + 1e-6).all(), (size.max().item(), eps)
    assert size.max() > 0.5 * eps  # it really moved
    lo, hi = get_modality(modality).domain
    assert adv.x.min() >= lo and adv.x.max() <= hi
    assert adv.captions is b.captions and adv.labels is b.labels and adv.index is b.index


@pytest.mark.parametrize("modality", MODS)
def test_eps_zero_is_an_exact_copy(enc, data, modality):
    b = batch_of(data, modality)
    adv = PGD(eps=0.0, steps=STEPS)(enc, b)
    assert torch.equal(adv.x, b.x) and adv.x is not b.x
    assert adv.x.data_ptr() != b.x.data_ptr()


@pytest.mark.parametrize("modality", MODS)
def test_input_not_mutated(enc, data, modality):
    b = batch_of(data, modality)
    x0, labels0, caps0 = b.x.clone(), b.labels.clone(), [list(c) for c in b.captions]
    PGD(eps=big_eps(modality), steps=STEPS, early_stop=True)(enc, b)
    PGD(eps=big_eps(modality), steps=STEPS, norm="l2")(enc, b)
    assert torch.equal(b.x, x0) and torch.equal(b.labels, labels0) and b.captions == caps0


@pytest.mark.parametrize("modality", MODS)
def test_seed_reproducible(enc, data, modality):
    b = batch_of(data, modality)
    eps = big_eps(modality)
    a1 = PGD(eps=eps, steps=STEPS, seed=1)(enc, b).x
    a2 = PGD(eps=eps, steps=STEPS, seed=1)(enc, b).x
    a3 = PGD(eps=eps, steps=STEPS, seed=2)(enc, b).x
    assert torch.equal(a1, a2)
    assert not torch.equal(a1, a3)


@pytest.mark.determinism
def test_random_start_does_not_depend_on_batch_composition(enc, data, test_batch_size):
    """An item gets the same start in any batch: seeded per item and elementwise, so exact (the
    steps that follow run the encoder on other batch shapes, so they would agree only within
    NUMERIC_TOLERANCE)."""
    b = batch_of(data, "image")
    k = max(1, min(test_batch_size, len(b) - 1))
    atk = PGD(eps=big_eps("image"), steps=0, seed=3)  # steps=0: just the random start
    full = atk(enc, b).x
    part = atk(enc, Batch("image", b.x[k:], b.captions[k:], b.labels[k:], b.prompts, b.index[k:])).x
    assert torch.equal(full[k:], part)


def test_frozen_restores_on_error(enc):
    params = list(enc.parameters())
    params[0].requires_grad_(True)
    try:
        with pytest.raises(RuntimeError):
            with frozen(enc):
                assert not params[0].requires_grad and not enc.training
                raise RuntimeError("boom")
        assert params[0].requires_grad
    finally:
        enc.freeze()


# -- the objective really goes up -------------------------------------------------------------------
@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("modality", MODS)
def test_loss_goes_up(enc, data, modality, loss):
    b = batch_of(data, modality)
    atk = PGD(eps=big_eps(modality), steps=STEPS, loss=loss, seed=0)
    out = atk.run(enc, b)
    assert out.loss == loss and out.forwards == (STEPS + 1) * N  # keep_best: one forward of the final iterate
    # the same objective (same random target classes: same seed, drawn first) on clean and adversarial
    obj = make_objective(loss, enc, b, target=None, generator=torch.Generator().manual_seed(0))
    idx = torch.arange(N)
    with torch.no_grad():
        clean = obj(enc.encode(modality, b.x), idx)
        adv = obj(enc.encode(modality, out.batch.x), idx)
    assert clean.shape == adv.shape == (N,)
    assert adv.mean() > clean.mean(), (loss, clean.mean().item(), adv.mean().item())


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_targeted_flag_and_explicit_targets(enc, data, modality):
    b = batch_of(data, modality)
    out = PGD(eps=big_eps(modality), steps=STEPS, targeted=True, target=5).run(enc, b)
    assert out.loss == "ce-targeted"
    obj = make_objective("ce-targeted", enc, b, target=5)
    assert torch.equal(obj.labels, torch.full((N,), 5))
    caps = PGD(eps=big_eps(modality), steps=STEPS, loss="caption", targeted=True, target="a tiny blue ring.")
    assert caps.run(enc, b).loss == "caption-targeted"


@pytest.mark.parametrize("modality", ["video", "pointcloud"])
def test_label_free_fallback_to_caption_loss(enc, data, modality):
    b = batch_of(data, modality, labels=False)
    out = PGD(eps=big_eps(modality), steps=STEPS).run(enc, b)
    assert out.loss == "caption"
    assert effective_loss("ce", True, b) == "caption-targeted"
    assert not torch.equal(out.batch.x, b.x)


@pytest.mark.parametrize("modality", ["image", "audio"])
@pytest.mark.determinism
def test_keep_best_returns_the_most_damaging_iterate(enc, data, modality):
    """keep_best (the default) scores >= the last iterate on every item, > on some; False is plain PGD."""
    b = batch_of(data, modality)
    kw = {"eps": big_eps(modality), "steps": 4, "step_size": big_eps(modality), "seed": 3}  # big steps overshoot
    best, last = PGD(**kw).run(enc, b), PGD(**kw, keep_best=False).run(enc, b)
    obj = make_objective("ce", enc, b, target=None, generator=torch.Generator().manual_seed(3))
    idx = torch.arange(N)
    with torch.no_grad():
        l_best, l_last = obj(enc.encode(modality, best.batch.x), idx), obj(enc.encode(modality, last.batch.x), idx)
    assert (l_best >= l_last - 1e-5).all()
    assert (l_best > l_last + 1e-6).any()
    torch.testing.assert_close(best.loss_best, l_best, **NUMERIC_TOLERANCE)  # recomputed outside the loop
    torch.testing.assert_close(best.loss_last, l_last, **NUMERIC_TOLERANCE)
    assert last.loss_best is None and last.forwards == 4 * N
    assert "keep_best" not in PGD(keep_best=False).describe() and PGD().describe()["keep_best"] is True


def test_early_stop_freezes_broken_samples(enc, data):
    b = batch_of(data, "audio")
    out = PGD(eps=big_eps("audio"), steps=6, early_stop=True).run(enc, b)
    assert out.stopped.any()
    assert out.forwards < 6 * N
    d = (out.batch.x - b.x).abs().amax(1)
    assert (d <= big_eps("audio") + 1e-6).all()


# -- validation ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{"eps": -0.1}, {"eps": float("nan")}, {"eps": float("inf")}, {"steps": -1},
                                    {"steps": 2.5}, {"step_size": -1.0}, {"step_size": 0.0}, {"eps": "big"}])
def test_bad_budgets(kwargs):
    with pytest.raises(BudgetError):
        PGD(**kwargs)


def test_with_eps_negative_and_bad_names():
    with pytest.raises(BudgetError):
        PGD().with_eps(-1e-3)
    with pytest.raises(UnknownNameError):
        PGD(norm="l3")
    with pytest.raises(UnknownNameError):
        PGD(loss="hinge")
    with pytest.raises(UnknownNameError):
        resolve_loss("hinge")
    with pytest.raises(RobustMMError):
        PGD(loss="embedding", targeted=True)


def test_text_modality_rejected(enc, data):
    b = batch_of(data, "image").replace(modality="text")
    with pytest.raises(UnknownNameError):
        PGD(eps=0.01)(enc, b)


def test_invalid_input_rejected(enc, data):
    b = batch_of(data, "image")
    with pytest.raises(RobustMMError):
        PGD(eps=0.01)(enc, b.replace(x=b.x + 2.0))  # outside the domain


@pytest.mark.parametrize("modality", MODS)
def test_boundary_inputs_stay_inside(enc, data, modality):
    b = batch_of(data, modality)
    lo, hi = get_modality(modality).domain
    x = torch.where(torch.rand(b.x.shape, generator=torch.Generator().manual_seed(0)) < 0.5, lo, hi).to(b.x.dtype)
    for norm in ("linf", "l2"):
        eps = big_eps(modality) if norm == "linf" else l2_eps(modality, x)
        adv = PGD(eps=eps, norm=norm, steps=2)(enc, b.replace(x=x))
        assert adv.x.min() >= lo and adv.x.max() <= hi


def test_works_under_no_grad(enc, data):
    b = batch_of(data, "thermal")
    with torch.no_grad():
        adv = PGD(eps=big_eps("thermal"), steps=2)(enc, b)
    assert not torch.equal(adv.x, b.x)


# -- describe / registry / defaults -------------------------------------------------------------------
def test_describe_registry_and_defaults():
    atk = build_attack("pgd", eps=4 / 255, steps=10)
    assert isinstance(atk, PGD)
    d = atk.describe()
    for key in ("name", "eps", "norm", "steps", "step_size", "random_start", "loss", "targeted", "seed"):
        assert key in d
    assert d["name"] == "pgd" and d["eps"] == pytest.approx(4 / 255)
    r = PGD().resolve("audio")
    assert r.eps == get_modality("audio").middle_eps and r.norm == "linf"
    assert r.describe()["step_size"] == pytest.approx(r.eps / 4)
    eps, norm, step = PGD(norm="l2", eps=1.0, steps=10).budget("image")
    assert (eps, norm, step) == (1.0, "l2", pytest.approx(0.25))
    w = atk.with_eps(8 / 255)
    assert w.eps == pytest.approx(8 / 255) and w.steps == 10 and atk.eps == pytest.approx(4 / 255)


# -- trained TinyBind ----------------------------------------------------------------------------------
@pytest.mark.skipif(not HAVE_WEIGHTS, reason="trained TinyBind weights (robustmm/assets/tinybind.*) not built yet")
def test_pgd_breaks_trained_tinybind_every_modality():
    """At each modality's largest default budget, PGD at least halves zero-shot top-1."""
    import robustmm
    from robustmm.metrics import zeroshot_correct

    enc = robustmm.load_encoder("tinybind")
    n = 32
    ds = synthscenes(n, seed=2)
    for modality in MODS:
        b = next(iter_batches(ds, modality, n, ds.tasks[modality].prompts()))
        centers = enc.class_embeddings(b.prompts)
        adv = PGD(eps=big_eps(modality), steps=3)(enc, b)
        with torch.no_grad():
            clean = zeroshot_correct(enc.encode(modality, b.x), centers, b.labels).float().mean().item()
            robust = zeroshot_correct(enc.encode(modality, adv.x), centers, b.labels).float().mean().item()
        assert clean > 0.1, (modality, clean)  # well above chance (1/48, 1/12)
        assert robust < clean and robust <= 0.5 * clean, (modality, clean, robust)
