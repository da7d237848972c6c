"""Input-transformation defenses: what each one does, what it marks, and that the
adaptive attack (BPDA for non-differentiable steps, EOT for randomness) takes back the robustness a
naive attack reports."""
import pytest
import torch

import robustmm
from robustmm.attacks import build_attack
from robustmm.attacks.bpda import BPDA
from robustmm.attacks.eot import EOT
from robustmm.encoders.input_transforms import build_defense, defend, list_defenses
from robustmm.errors import RobustMMError


def test_registry_lists_the_three_broken_defenses():
    assert {"bit-depth", "jpeg", "random-resize-pad"} <= set(list_defenses())
    with pytest.raises(RobustMMError, match="did you mean"):
        build_defense("jpg")
    with pytest.raises(RobustMMError):
        build_defense("bit-depth", bits=0)
    with pytest.raises(RobustMMError):
        build_defense("jpeg", quality=200)
    with pytest.raises(RobustMMError):
        build_defense("random-resize-pad", max_scale=0.5)
    with pytest.raises(RobustMMError):
        build_defense("jpeg", colour=True)


def test_bit_depth_rounds_onto_the_lattice_of_each_domain():
    t = build_defense("bit-depth", bits=2)
    x = torch.rand(2, 3, 8, 8)
    y = t.forward(x, "image")
    assert set(torch.unique(torch.round(y * 3)).tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert (y - x).abs().max() <= 1 / 6 + 1e-6
    a = torch.rand(2, 100) * 2 - 1
    ya = t.forward(a, "audio")  # domain [-1, 1]: levels -1, -1/3, 1/3, 1
    levels = torch.tensor([-1, -1 / 3, 1 / 3, 1.0])
    assert all(bool(torch.isclose(levels, v).any()) for v in torch.unique(ya))
    assert t.describe() == {"name": "bit-depth", "bits": 2, "marks": ["non-differentiable"]}


def test_jpeg_changes_images_keeps_shape_and_domain_and_refuses_audio():
    t = build_defense("jpeg", quality=10)
    x = torch.rand(2, 4, 3, 16, 16)  # video
    y = t.forward(x, "video")
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    assert (y - x).abs().mean() > 0.01
    g = build_defense("jpeg").forward(torch.rand(1, 1, 16, 16), "depth")
    assert g.shape == (1, 1, 16, 16)
    with pytest.raises(RobustMMError):
        t.check("audio")


def test_random_resize_pad_is_random_but_seeded():
    t = build_defense("random-resize-pad", max_scale=1.5)
    x = torch.rand(2, 3, 32, 32)
    torch.manual_seed(0)
    a = [t.forward(x, "image") for _ in range(4)]
    torch.manual_seed(0)
    b = [t.forward(x, "image") for _ in range(4)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert any(not torch.equal(a[0], p) for p in a[1:])
    assert t.describe()["marks"] == ["randomized"]


def test_naive_gradient_is_zero_and_bpda_gives_the_identity_gradient(rand_encoder):
    d = defend(rand_encoder, "bit-depth", bits=3)
    assert d.bpda_steps == ("bit-depth",)
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    (g,) = torch.autograd.grad(d.encode("image", x).sum(), x)
    assert torch.count_nonzero(g) == 0  # obfuscated: the naive attack gets no signal
    from robustmm.attacks.bpda import bpda

    with bpda():
        (g,) = torch.autograd.grad(d.encode("image", x).sum(), x)
    assert torch.count_nonzero(g) > 0
    jp = defend(rand_encoder, "jpeg")
    with bpda():
        (g,) = torch.autograd.grad(jp.encode("image", x).sum(), x)
    assert torch.count_nonzero(g) > 0


def test_bpda_needs_something_to_approximate(rand_encoder, synth_small):
    with pytest.raises(RobustMMError, match="nothing|no non-differentiable"):
        robustmm.evaluate(rand_encoder, synth_small.head(4), modality="image", attack=BPDA(build_attack("pgd", steps=1)),
                          progress=False)


@pytest.fixture(scope="module")
def trained():
    return robustmm.load_encoder("tinybind")


@pytest.fixture(scope="module")
def test32():
    return robustmm.load_dataset("synthscenes", split="test", n=32)


def _robust(model, data, attack):
    return robustmm.evaluate(model, data, modality="image", attack=attack, progress=False, batch_size=32).attacked(
        "zeroshot_top1")


@pytest.mark.parametrize("name, settings", [("bit-depth", {"bits": 5}), ("jpeg", {"quality": 75})])
def test_bpda_takes_back_what_the_naive_attack_reports(trained, test32, name, settings):
    d = defend(trained, name, **settings)
    pgd = build_attack("pgd", steps=10)
    naive, adaptive = _robust(d, test32, pgd), _robust(d, test32, BPDA(pgd))
    assert naive - adaptive >= 0.25  # the naive number is inflated


def test_eot_beats_the_single_draw_attack_on_random_resize_pad(trained, test32):
    d = defend(trained, "random-resize-pad")
    pgd = build_attack("pgd", steps=10)
    assert _robust(d, test32, EOT(pgd, samples=4)) <= _robust(d, test32, pgd)


def test_soft_jpeg_approximates_real_jpeg_better_than_the_identity():
    from robustmm.encoders.jpeg_surrogate import quant_table, soft_jpeg

    assert quant_table(50)[0, 0] == 16 and quant_table(100).max() == 1  # the IJG tables, libjpeg scaling
    x = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 30, 36), 5, 1, 2).requires_grad_(True)  # not multiples of 8
    real = build_defense("jpeg", quality=50).forward(x.detach(), "image")
    soft = soft_jpeg(x, 50)
    assert soft.shape == x.shape
    assert (soft - real).abs().mean() < 0.8 * (x.detach() - real).abs().mean()
    (g,) = torch.autograd.grad(soft.sum(), x)
    assert torch.isfinite(g).all() and torch.count_nonzero(g) > 0
    gray = soft_jpeg(torch.rand(1, 1, 16, 16), 75)
    assert gray.shape == (1, 1, 16, 16)
