"""Property-based tests (hypothesis): attack invariants on random inputs, and validation that
raises only robustmm's documented exceptions on random bad input."""
import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from robustmm.attacks import build_attack, list_attacks
from robustmm.batch import Batch
from robustmm.errors import InputShapeError, InputValueError, RobustMMError, UnknownNameError
from robustmm.modalities import MODALITIES

FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _batch(x, modality="image"):
    return Batch(modality=modality, x=x, captions=[["a red circle."]] * len(x), index=torch.arange(len(x)))


@FAST
@given(
    n=st.integers(1, 3),
    h=st.integers(8, 40),
    w=st.integers(8, 40),
    eps=st.floats(0, 0.1),
    norm=st.sampled_from(["linf", "l2"]),
    boundary=st.sampled_from([None, 0.0, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_pgd_stays_in_ball_and_domain(rand_encoder, n, h, w, eps, norm, boundary, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, h, w, generator=g)
    if boundary is not None:
        x[:, :, : h // 2] = boundary  # inputs exactly on the domain boundary stay inside
    before = x.clone()
    adv = build_attack("pgd", eps=eps, norm=norm, steps=2, loss="embedding", seed=seed)(rand_encoder, _batch(x)).x
    assert torch.equal(x, before)
    assert adv.shape == x.shape and torch.isfinite(adv).all()
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    d = (adv - x).flatten(1)
    if norm == "linf":
        assert d.abs().max() <= eps + 1e-6
    else:
        assert (d.norm(dim=1) <= eps + 1e-5).all()
    if eps == 0:
        assert torch.equal(adv, x)


def _expected_error(spec, x):
    """The error ``spec.validate(x)`` must raise on ``x`` (None: x is a valid batch), from the
    documented rules: a floating tensor of shape (N >= 1, *spec.shape) -- None dims free -- with
    no empty dim, finite values inside the domain."""
    if not torch.is_floating_point(x) or x.dim() == 0:
        return InputShapeError
    sample = tuple(x.shape[1:])
    if len(sample) != len(spec.shape) or any(w is not None and w != g for w, g in zip(spec.shape, sample)):
        return InputShapeError
    if x.numel() == 0:
        return InputShapeError
    if not torch.isfinite(x).all():
        return InputValueError
    lo, hi = spec.domain
    if float(x.min()) < lo or float(x.max()) > hi:
        return InputValueError
    return None


@FAST
@given(
    modality=st.sampled_from(["image", "audio", "pointcloud", "video"]),
    valid_shape=st.booleans(),
    sizes=st.lists(st.integers(0, 7), min_size=0, max_size=5),
    fill=st.sampled_from([0.5, float("nan"), float("inf"), -3.0, 7.0]),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.int64]),
)
def test_validation_raises_exactly_on_bad_input(modality, valid_shape, sizes, fill, dtype):
    """Valid batches pass; every invalid one raises the documented error for what is wrong."""
    spec = MODALITIES[modality]
    if valid_shape:  # the spec's own shape, free dims (and N) taken from ``sizes`` (0 = empty)
        free = iter(sizes + [3] * 6)
        dims = [next(free)] + [s if s is not None else next(free) for s in spec.shape]
    else:
        dims = sizes
    x = torch.full(dims, fill if dtype.is_floating_point else 1, dtype=dtype) if dims else torch.tensor(fill)
    expected = _expected_error(spec, x)
    if expected is None:
        spec.validate(x)
    else:
        with pytest.raises(expected):
            spec.validate(x)


@pytest.mark.parametrize("modality", ["image", "audio", "pointcloud", "video"])
def test_validation_accepts_a_valid_batch(modality):
    """The oracle above is not vacuous: a plain valid batch of every modality passes it and validate()."""
    spec = MODALITIES[modality]
    x = torch.full([2] + [s if s is not None else 4 for s in spec.shape], 0.5)
    assert _expected_error(spec, x) is None
    spec.validate(x)


@FAST
@given(eps=st.one_of(st.floats(max_value=-1e-9), st.just(math.nan), st.just(math.inf)))
def test_bad_budgets_are_rejected(eps):
    with pytest.raises(RobustMMError):
        build_attack("pgd", eps=eps)


@FAST
@given(name=st.text(min_size=1, max_size=12))
def test_unknown_attack_names(name):
    assume(name not in list_attacks())
    with pytest.raises(UnknownNameError, match="unknown attack"):
        build_attack(name)


def test_unknown_attack_name_suggests_the_close_one():
    with pytest.raises(UnknownNameError, match="did you mean 'pgd'"):
        build_attack("pgdd")


# -- every attack family, not only PGD -------------------------------------------------------------

WORDS = ["a", "the", "red", "small", "circle", "square", "on", "left", "of", "blue", "ring", "and", "two", "big",
         "green", "triangle", "near", "photo", "scene", "with"]


@FAST
@given(
    modality=st.sampled_from(["audio", "pointcloud", "depth"]),
    eps_pos=st.integers(0, 4),
    boundary=st.sampled_from([None, "low", "high"]),
    attack=st.sampled_from(["pgd", "noise"]),
    seed=st.integers(0, 2**16),
)
def test_other_domains_stay_in_ball_and_domain(rand_encoder, synth_small, modality, eps_pos, boundary, attack, seed):
    """Waveforms in [-1, 1], point clouds, depth maps: random start, steps and noise never leave
    the domain, even from inputs exactly on its boundary."""
    spec = MODALITIES[modality]
    x = synth_small.get(modality, torch.arange(2)).clone()
    lo, hi = spec.domain
    if boundary is not None:
        flat = x.view(-1)
        flat[: flat.numel() // 3] = lo if boundary == "low" else hi
    eps = [0.0, *spec.eps_grid][eps_pos]
    kw = {"steps": 2, "loss": "embedding"} if attack == "pgd" else {}
    adv = build_attack(attack, eps=eps, seed=seed, **kw)(rand_encoder, _batch(x, modality)).x
    assert adv.shape == x.shape and torch.isfinite(adv).all()
    assert adv.min() >= lo and adv.max() <= hi
    assert (adv - x).abs().max() <= eps + 1e-6
    if eps == 0:
        assert torch.equal(adv, x)


@pytest.fixture(scope="module")
def substitutes(rand_encoder):
    from robustmm.attacks.substitutes import EmbeddingNeighbourSubstitutes

    return EmbeddingNeighbourSubstitutes(rand_encoder, WORDS + ["yellow", "purple", "tiny", "huge"])


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    eps=st.floats(0, 8 / 255),
    boundary=st.sampled_from([None, 0.0, 1.0]),
    words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
)
def test_sga_stays_in_ball_domain_and_swaps_at_most_one_word(rand_encoder, substitutes, eps, boundary, words, seed):
    from robustmm.attacks.sga import SGA
    from robustmm.attacks.substitutes import split_words

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, 32, 32, generator=g)
    if boundary is not None:
        x[..., :16, :] = boundary
    caption = " ".join(words) + "."
    batch = Batch(modality="image", x=x, captions=[[caption]], index=torch.arange(1))
    adv = SGA(eps=eps, steps=1, k=3, substitutes=substitutes, seed=seed)(rand_encoder, batch)
    assert adv.x.min() >= 0 and adv.x.max() <= 1 and (adv.x - x).abs().max() <= eps + 1e-6
    new = adv.captions[0][0]
    assert len(split_words(new)) == len(split_words(caption))
    assert sum(a != b for a, b in zip(split_words(new), split_words(caption))) <= 1


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.sampled_from(WORDS + ["", "!!", "42", "ünïcode"]), min_size=0, max_size=10))
def test_xmai_only_inserts_words_into_any_caption(rand_encoder, words):
    from robustmm.attacks.xmai import XMAI, remove_insertions

    caption = " ".join(words)
    batch = Batch(modality="image", x=torch.rand(1, 3, 32, 32), captions=[[caption]], index=torch.arange(1))
    xmai = XMAI(n_attributes=2, k=2, pool=4)
    edited, insertions = xmai.edit(rand_encoder, batch)  # any caption, even an empty one, is edited
    ins = insertions[0][0]
    assert remove_insertions(edited[0][0], ins) == caption
    assert all(word in xmai.attributes for _, word in ins)  # only attribute words are inserted
    if words and xmai.is_noun(words[-1]):  # a final object noun is never a modifier: it gets a word
        assert ins, (caption, edited)


@FAST
@given(
    size=st.integers(1, 20),
    h=st.integers(20, 48),
    w=st.integers(20, 48),
    fill=st.sampled_from([None, 0.0, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_patch_paste_stays_in_domain_and_touches_only_its_square(size, h, w, fill, seed):
    from robustmm.attacks.patch import paste_patch

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 3, h, w, generator=g) if fill is None else torch.full((3, 3, h, w), fill)
    patch = torch.rand(3, size, size, generator=g)
    rows = torch.randint(0, h - size + 1, (3,), generator=g).tolist()
    cols = torch.randint(0, w - size + 1, (3,), generator=g).tolist()
    out = paste_patch(x, patch, rows, cols)
    assert out.min() >= 0 and out.max() <= 1
    for i, (r, c) in enumerate(zip(rows, cols)):
        assert torch.equal(out[i, :, r : r + size, c : c + size], patch)
        mask = torch.ones(h, w, dtype=torch.bool)
        mask[r : r + size, c : c + size] = False
        assert torch.equal(out[i][:, mask], x[i][:, mask])  # everything else bit-exact
