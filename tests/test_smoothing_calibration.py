"""Noise calibration and the denoiser on a tiny random TinyBind: heads trained for noise are
ordinary heads (saved, loaded, certified with), the noise is seeded per item, and the denoiser
starts as the identity and learns to remove noise."""
import pytest
import torch

from robustmm.defenses import load_heads
from robustmm.defenses.denoiser import train_denoiser
from robustmm.defenses.noise_heads import GaussianNoise, noise_calibrate, noisy_embeddings
from robustmm.encoders.denoiser import ConvDenoiser
from robustmm.evaluation import make_batch
from robustmm.evaluation.certification import certify_dataset


@pytest.mark.determinism
def test_gaussian_noise_is_seeded_per_item_and_stays_in_the_domain(synth_small, rand_encoder):
    idx = torch.arange(6)
    b = make_batch(synth_small, "audio", idx, None)
    a = GaussianNoise(0.3)(rand_encoder, b).x
    sub = GaussianNoise(0.3)(rand_encoder, make_batch(synth_small, "audio", idx[3:], None)).x
    assert torch.equal(a[3:], sub)  # an item's noise does not depend on its batch
    assert a.min() >= -1 and a.max() <= 1 and not torch.equal(a, b.x)
    assert not torch.equal(GaussianNoise(0.3, draw=1)(rand_encoder, b).x, a)  # another draw, another stream


def test_noise_heads_save_load_and_certify(tmp_path, synth_small, rand_encoder, one_thread):
    clean, noisy = noisy_embeddings(rand_encoder, synth_small, modality="audio", sigma=0.01, draws=2, progress=False)
    assert clean.shape == noisy.shape == (64, rand_encoder.embed_dim)
    assert torch.equal(clean[:32], clean[32:]) and not torch.equal(noisy[:32], noisy[32:])
    cal = noise_calibrate(rand_encoder, synth_small, modality="audio", sigma=0.01, draws=2, epochs=3, progress=False)
    assert cal.meta["noise"] == {"sigma": 0.01, "draws": 2} and cal.meta["n_train"] == 32
    assert cal.meta["attack"]["name"] == "gaussian-noise"
    cal.save(str(tmp_path / "h.safetensors"))
    heads, meta = load_heads(tmp_path / "h.safetensors", rand_encoder)
    x = synth_small.get("audio", [0, 1])
    with torch.no_grad():
        assert torch.allclose(rand_encoder.with_heads(heads).encode("audio", x),
                              rand_encoder.with_heads(cal.heads).encode("audio", x))
    res = certify_dataset(rand_encoder, synth_small, modality="audio", sigma=0.01, heads=(heads, meta), n0=4, n=16,
                          alpha=0.01, n_items=4, progress=False)
    assert res.defense["heads"]["noise"] == {"sigma": 0.01, "draws": 2}
    assert res.model.get("heads") == ["audio"]
    assert 0 <= res.metrics["certified"]["top1"]["0"] <= 1 and "x2t_R@1" in res.metrics["certified"]


def test_denoiser_starts_as_identity_and_learns(synth_small, rand_encoder, one_thread):
    x = synth_small.get("image", torch.arange(8))
    assert torch.equal(ConvDenoiser(3, width=8, depth=3)(x), x)
    den = train_denoiser(rand_encoder, synth_small, modality="image", sigma=0.2, epochs=4, width=8, depth=3, lr=5e-3)
    xn = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5))).clamp(0, 1)
    with torch.no_grad():
        assert (den.denoiser(xn) - x).square().mean() < (xn - x).square().mean()
        z = den.encode("image", xn)
    assert z.shape == (8, rand_encoder.embed_dim) and "denoiser" in den.info()
