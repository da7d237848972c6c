"""Denoised smoothing on every continuous modality: the per-shape denoisers, their two training
objectives, the defense family, and a certificate of a denoised non-image model checked by SmoothAdv."""
import copy
import json

import pytest
import torch

import robustmm
from robustmm.data.synthscenes import synthscenes
from robustmm.defenses.denoiser import train_denoiser
from robustmm.encoders.denoiser import DenoisedEncoder
from robustmm.encoders.denoiser_archs import (
    ResidualDenoiser,
    build_denoiser,
    default_denoiser,
    list_denoisers,
    register_denoiser,
)
from robustmm.errors import RobustMMError
from robustmm.evaluation.certification import certify_dataset
from robustmm.modalities import CONTINUOUS_MODALITIES, get_modality

SIGMA = {"image": 0.12, "video": 0.12, "depth": 0.12, "thermal": 0.12, "audio": 0.01, "pointcloud": 0.02}
EXPECTED = {"image": "conv2d", "depth": "conv2d", "thermal": "conv2d", "video": "frame-conv2d", "audio": "conv1d",
            "pointcloud": "point-mlp"}


@pytest.fixture(scope="module")
def train_items():
    """16 training items with every modality."""
    return synthscenes(n=16, seed=5, split="train")


def _scrambled(den: torch.nn.Module) -> torch.nn.Module:
    """The denoiser with every weight random (a fresh one is the identity and shows nothing)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in den.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return den


# -- architectures ------------------------------------------------------------------------------
@pytest.mark.parametrize("modality", CONTINUOUS_MODALITIES)
def test_default_denoiser_is_chosen_by_the_modality_shape(modality):
    assert default_denoiser(modality) == EXPECTED[modality]
    assert set(EXPECTED.values()) <= set(list_denoisers())


@pytest.mark.parametrize("modality", CONTINUOUS_MODALITIES)
def test_build_denoiser_maps_shape_to_shape_and_stays_in_the_domain(synth_small, modality):
    lo, hi = get_modality(modality).domain
    x = synth_small.get(modality, torch.arange(3))
    fresh = build_denoiser(modality, width=4, depth=3)
    torch.testing.assert_close(fresh(x), x)  # zero-initialised last layer: the identity
    den = _scrambled(build_denoiser(modality, width=4, depth=3))
    noisy = (x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(lo, hi)
    with torch.no_grad():
        y = den(noisy)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    assert float(y.min()) >= lo and float(y.max()) <= hi
    assert not torch.allclose(y, noisy)  # the scrambled net does change its input
    get_modality(modality).validate(y)


def test_build_denoiser_video_is_frame_by_frame(synth_small):
    den = _scrambled(build_denoiser("video", width=4, depth=2))
    x = synth_small.get("video", torch.arange(2))
    frame = build_denoiser("image", "conv2d", width=4, depth=2)
    frame.load_state_dict(den.state_dict())
    torch.testing.assert_close(den(x)[:, 1], frame(x[:, 1]))


def test_build_denoiser_point_mlp_ignores_point_order(synth_small):
    den = _scrambled(build_denoiser("pointcloud", width=8, depth=3))
    x = synth_small.get("pointcloud", torch.arange(2))
    perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(den(x[:, perm]), den(x)[:, perm], atol=1e-5, rtol=1e-5)


def test_register_denoiser_adds_one_class():
    @register_denoiser("test-shrink", "shrinks waveforms towards 0 (test only)", lambda spec: spec.shape == (None,))
    class Shrink(ResidualDenoiser):
        def __init__(self, spec, width, depth):
            super().__init__(spec, width, depth)
            self.scale = torch.nn.Parameter(torch.tensor(-0.5))

        def residual(self, x):
            return self.scale * x

    from robustmm.encoders import denoiser_archs

    try:
        assert "test-shrink" in list_denoisers() and default_denoiser("audio") == "conv1d"  # earlier ones win
        den = build_denoiser("audio", "test-shrink")
        torch.testing.assert_close(den(torch.full((1, 8), 0.4)), torch.full((1, 8), 0.2))
    finally:
        denoiser_archs.unregister_denoiser("test-shrink")
    assert "test-shrink" not in list_denoisers()


# -- training -----------------------------------------------------------------------------------
def _noisy_mse(den: DenoisedEncoder, x: torch.Tensor, sigma: float, modality: str) -> tuple[float, float]:
    lo, hi = get_modality(modality).domain
    xn = (x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(9))).clamp(lo, hi)
    with torch.no_grad():
        return float((den.denoiser(xn) - x).square().mean()), float((xn - x).square().mean())


@pytest.mark.parametrize("modality, sigma", [("audio", 0.05), ("pointcloud", 0.1)])
def test_train_denoiser_mse_lowers_the_loss(rand_encoder, train_items, one_thread, modality, sigma):
    den = train_denoiser(rand_encoder, train_items, modality=modality, sigma=sigma, epochs=20, lr=5e-3, width=8,
                         depth=3, batch_size=8)
    after, identity = _noisy_mse(den, train_items.get(modality, torch.arange(16)), sigma, modality)
    assert after < 0.97 * identity
    info = den.training_info
    assert info["objective"] == "mse" and info["architecture"] == EXPECTED[modality]
    assert info["passes"] == 16 * 20 and info["final_loss"] < identity
    assert den.info()["denoiser"]["architecture"] == EXPECTED[modality]


def test_train_denoiser_consistency_changes_only_the_denoiser(rand_encoder, train_items, one_thread):
    enc = copy.deepcopy(rand_encoder)
    enc.requires_grad_(True)  # even an encoder left trainable is not trained
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    den = train_denoiser(enc, train_items, modality="audio", sigma=0.02, epochs=2, lr=1e-2, width=4, depth=2,
                         batch_size=8, objective="consistency")
    after = enc.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad and p.grad is None for p in enc.parameters())  # flags restored, no gradients left
    assert not enc.training
    fresh = build_denoiser("audio", width=4, depth=2)
    moved = [not torch.equal(a, b) for a, b in zip(den.denoiser.state_dict().values(), fresh.state_dict().values())]
    assert any(moved)  # the gradient reached the denoiser
    assert den.training_info["objective"] == "consistency"
    assert not any(p.requires_grad for p in den.denoiser.parameters())


def test_train_denoiser_consistency_gradient_flows_through_the_encoder_only_to_the_denoiser(rand_encoder, synth_small):
    den = build_denoiser("audio", width=4, depth=2)
    x = synth_small.get("audio", torch.arange(2))
    z = rand_encoder.encode("audio", den(x), validate=False)
    z.sum().backward()
    assert den.net[-1].weight.grad is not None and den.net[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in rand_encoder.parameters())


def test_train_denoiser_init_continues_a_trained_denoiser(rand_encoder, train_items, one_thread):
    mse = train_denoiser(rand_encoder, train_items, modality="pointcloud", sigma=0.05, epochs=1, width=4, depth=3)
    cons = train_denoiser(rand_encoder, train_items, modality="pointcloud", sigma=0.05, epochs=1, width=99, depth=9,
                          objective="consistency", init=mse)
    assert cons.denoiser is not mse.denoiser and cons.denoiser.width == 4  # a copy, with the init's shape
    assert cons.training_info["init"] == "mse" and cons.training_info["passes"] == 2 * 16


def test_defend_denoiser_every_modality_is_a_frozen_encoder(rand_encoder, train_items, synth_small, one_thread):
    for modality in CONTINUOUS_MODALITIES:
        enc = robustmm.defend(rand_encoder, "denoiser", data=train_items, modality=modality, sigma=SIGMA[modality],
                              epochs=1, width=4, depth=2, batch_size=8, objective="consistency")
        assert isinstance(enc, robustmm.Encoder) and not enc.training
        assert not any(p.requires_grad for p in enc.parameters())
        info = enc.info()
        assert json.loads(json.dumps(info)) == info and info["denoiser"]["architecture"] == EXPECTED[modality]
        x = synth_small.get(modality, torch.arange(2)).clone().requires_grad_(True)
        z = enc.encode(modality, x)
        assert z.shape == (2, enc.embed_dim)
        torch.testing.assert_close(z.norm(dim=-1), torch.ones(2))
        z.sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


# -- bad settings -------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    ({"objective": "l1"}, "objective must be one of mse, consistency"),
    ({"architecture": "conv1d"}, "does not fit 'image'.*use conv2d"),
    ({"architecture": "unet"}, "unknown denoiser architecture"),
    ({"width": 0}, "width must be an integer >= 1"),
    ({"depth": 1}, "depth must be an integer >= 2"),
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"lr": -1.0}, "lr must be"),
    ({"batch_size": 0}, "batch_size must be"),
    ({"sigma": 0.0}, "sigma"),
    ({"n_train": 0}, "n_train must be"),
    ({"logit_scale": 0.0}, "logit_scale"),
])
def test_train_denoiser_bad_settings_are_one_line_errors(rand_encoder, train_items, kw, match):
    args = {"modality": "image", "sigma": 0.1, "epochs": 1} | kw
    with pytest.raises(RobustMMError, match=match) as e:
        train_denoiser(rand_encoder, train_items, **args)
    assert "\n" not in str(e.value)


def test_train_denoiser_consistency_without_a_task_is_a_one_line_error(rand_encoder, train_items):
    data = train_items.subset(torch.arange(4))
    data.tasks.pop("audio")
    with pytest.raises(RobustMMError, match="needs a zero-shot task.*objective='mse'") as e:
        train_denoiser(rand_encoder, data, modality="audio", sigma=0.01, objective="consistency")
    assert "\n" not in str(e.value)


def test_train_denoiser_init_of_another_modality_is_a_one_line_error(rand_encoder, train_items):
    den = train_denoiser(rand_encoder, train_items, modality="pointcloud", sigma=0.05, epochs=1, width=4, depth=2)
    with pytest.raises(RobustMMError, match="init= must be a DenoisedEncoder of 'audio'") as e:
        train_denoiser(rand_encoder, train_items, modality="audio", sigma=0.01, init=den)
    assert "\n" not in str(e.value)


# -- a certificate of a denoised audio model, checked by the adaptive attack --------------------
def test_certify_denoised_audio_survives_smoothadv(trained, one_thread):
    train = synthscenes(n=64, seed=0, split="train", modalities=("audio",))
    test = synthscenes(n=6, seed=2, split="test", modalities=("audio",))
    den = train_denoiser(trained, train, modality="audio", sigma=0.01, epochs=3, width=8, depth=3, batch_size=16)
    res = certify_dataset(den, test, modality="audio", sigma=0.01, n0=16, n=200, alpha=0.001, radii=[0.004, 0.008],
                          retrieval=False, progress=False, smoothadv={"steps": 4, "m": 8, "n": 64})
    cert, emp = res.metrics["certified"], res.metrics["empirical"]
    assert cert["top1"]["0.008"] > 0  # something is certified, so the check below is not vacuous
    assert emp["violations"] == {"0": 0, "0.004": 0, "0.008": 0}
    for r in ("0", "0.004", "0.008"):
        assert emp["top1"][r] >= cert["top1"][r] - 1e-9
