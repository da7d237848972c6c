"""Property-based tests (hypothesis): attack invariants on random inputs, and validation that
raises only robustmm's documented exceptions on random bad input."""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustmm.attacks import build_attack
from robustmm.batch import Batch
from robustmm.errors import RobustMMError
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


@FAST
@given(
    modality=st.sampled_from(["image", "audio", "pointcloud", "video"]),
    dims=st.lists(st.integers(0, 7), min_size=0, max_size=5),
    fill=st.sampled_from([0.5, float("nan"), float("inf"), -3.0, 7.0]),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.int64]),
)
def test_validation_raises_only_documented_errors(modality, dims, fill, dtype):
    x = torch.full(dims, fill if dtype.is_floating_point else 1, dtype=dtype) if dims else torch.tensor(fill)
    try:
        MODALITIES[modality].validate(x)
    except RobustMMError:
        pass  # the documented family (a ValueError subclass)


@FAST
@given(eps=st.one_of(st.floats(max_value=-1e-9), st.just(math.nan), st.just(math.inf)))
def test_bad_budgets_are_rejected(eps):
    with pytest.raises(RobustMMError):
        build_attack("pgd", eps=eps)


@FAST
@given(name=st.text(min_size=1, max_size=12))
def test_unknown_attack_names(name):
    try:
        build_attack(name)
    except RobustMMError as e:
        assert "unknown attack" in str(e)
