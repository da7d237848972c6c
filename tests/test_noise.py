"""The random-noise control: only its own keywords, modality defaults by resolve, L2 noise on the sphere."""
import pytest
import torch

from robustmm.attacks.base import accepts, build_attack
from robustmm.attacks.noise import RandomNoise
from robustmm.attacks.ops import random_delta
from robustmm.batch import Batch
from robustmm.errors import RobustMMError, UnknownNameError
from robustmm.modalities import get_modality


def _batch(modality="audio", n=6):
    spec = get_modality(modality)
    shape = (n, 3, 16, 16) if modality == "image" else (n, 400)
    x = torch.rand(shape) * 0.2 + (0.4 if spec.domain[0] == 0 else -0.1)  # away from the domain's edges
    return Batch(modality, x, [["a"]] * n, index=torch.arange(10, 10 + n))


def test_unknown_keyword_is_a_one_line_error():
    with pytest.raises(UnknownNameError, match="setting of attack 'noise'") as e:
        build_attack("noise", steps=5)
    assert isinstance(e.value, RobustMMError) and "\n" not in str(e.value)
    assert not accepts("noise", "steps") and accepts("noise", "eps") and accepts("noise", "norm")
    with pytest.raises(TypeError):
        RandomNoise(steps=5)  # type: ignore[call-arg]


def test_settings_resolve_and_describe():
    noise = build_attack("noise", seed=3)
    assert noise.settings() == {"eps": None, "norm": None, "seed": 3}
    r = noise.resolve("audio")
    assert r.eps == get_modality("audio").middle_eps and r.norm == "linf"
    assert r.describe() == {"name": "noise", "eps": r.eps, "norm": "linf", "seed": 3}
    assert noise.with_eps(0.5).eps == 0.5 and noise.eps is None
    assert repr(noise.replace(norm="l2")) == "RandomNoise(eps=None, norm='l2', seed=3)"


@pytest.mark.parametrize("modality", ["audio", "image"])
def test_l2_noise_lies_on_the_sphere(modality):
    eps = 0.05 if modality == "audio" else 0.5
    b = _batch(modality)
    adv = RandomNoise(eps=eps, norm="l2", seed=1)(None, b)
    radius = (adv.x - b.x).flatten(1).norm(dim=1)
    assert torch.allclose(radius, torch.full_like(radius, eps), rtol=1e-4), radius  # not U(0, eps)
    assert torch.equal(RandomNoise(eps=eps, norm="l2", seed=1)(None, b).x, adv.x)  # seeded per item


def test_pgd_random_start_keeps_radii_inside_the_ball():
    x = torch.zeros(64, 100)
    start = random_delta(x, 1.0, "l2", seed=0, index=torch.arange(64))
    radius = start.norm(dim=1)
    assert (radius <= 1 + 1e-5).all() and radius.min() < 0.5  # PGD's random start: radius U(0, eps)
    assert torch.allclose(random_delta(x, 1.0, "l2", seed=0, index=torch.arange(64), sphere=True).norm(dim=1),
                          torch.ones(64), rtol=1e-5)
    batched = random_delta(x, 1.0, "l2", torch.Generator().manual_seed(0), sphere=True).norm(dim=1)
    assert torch.allclose(batched, torch.ones(64), rtol=1e-5)


def test_linf_noise_unchanged_within_the_ball():
    b = _batch("audio")
    adv = RandomNoise(eps=0.01, seed=2)(None, b)
    d = (adv.x - b.x).abs()
    assert d.max() <= 0.01 + 1e-7 and d.max() > 0.009
