"""Calibration heads: identity at init, training over cached embeddings, persistence, frozen encoder."""
import pytest
import torch

import robustmm
from robustmm.attacks import build_attack
from robustmm.defenses import ResidualHead, calibrate, load_heads, parse_objective
from robustmm.errors import CheckpointError, RobustMMError, UnknownNameError
from robustmm.evaluation.threats import evaluate_threats


def test_head_is_identity_at_init():
    h = ResidualHead(16, 4)
    z = torch.randn(5, 16)
    assert torch.equal(h(z), z)


def test_parse_objective():
    assert parse_objective("ce") == {"ce": 1.0}
    assert parse_objective("ce + 0.5*l2+infonce") == {"ce": 1.0, "l2": 0.5, "infonce": 1.0}
    with pytest.raises(UnknownNameError, match="did you mean 'infonce'"):
        parse_objective("infonc")
    with pytest.raises(RobustMMError):
        parse_objective("ce**2")


@pytest.fixture(scope="module")
def small_cal(rand_encoder, synth_small):
    before = {k: v.clone() for k, v in rand_encoder.state_dict().items()}
    attack = build_attack("pgd", eps=4 / 255, steps=2)
    cal = calibrate(rand_encoder, synth_small, modality="thermal", objective="ce+l2", attack=attack, epochs=30,
                    batch_size=16, progress=False)
    return cal, before


@pytest.mark.parametrize("objective", ["ce", "l2", "infonce", "ce+0.5*l2", "infonce@label-free", "ce@none"])
def test_every_objective_trains_and_lowers_its_loss(rand_encoder, synth_small, objective):
    # cached embeddings stand in for an attack run: adversarial = clean + a fixed shift
    g = torch.Generator().manual_seed(0)
    clean = torch.nn.functional.normalize(torch.randn(len(synth_small), rand_encoder.embed_dim, generator=g), dim=-1)
    adv = torch.nn.functional.normalize(clean + 0.8 * torch.randn(1, rand_encoder.embed_dim, generator=g), dim=-1)
    cal = calibrate(rand_encoder, synth_small, modality="pointcloud", objective=objective, epochs=25, batch_size=16,
                    consistency_weight=0.0, embeddings=(clean, adv), progress=False)
    assert cal.meta["final_loss"] < 0.9 * cal.meta["first_epoch_loss"]


def test_encoder_is_bit_identical_after_calibration(rand_encoder, small_cal):
    cal, before = small_cal
    after = rand_encoder.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in rand_encoder.parameters())


def test_with_heads_changes_only_its_modality(rand_encoder, synth_small, small_cal):
    cal, _ = small_cal
    wrapped = rand_encoder.with_heads(cal.heads)
    x = synth_small.get("thermal", torch.arange(4))
    z = wrapped.encode("thermal", x)
    assert torch.allclose(z.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert not torch.allclose(z, rand_encoder.encode("thermal", x))
    a = synth_small.get("audio", torch.arange(4))
    assert torch.equal(wrapped.encode("audio", a), rand_encoder.encode("audio", a))


def test_save_load_and_mismatch_errors(tmp_path, rand_encoder, synth_small, small_cal):
    cal, _ = small_cal
    cal.save(str(tmp_path / "h.safetensors"))
    heads, meta = load_heads(tmp_path / "h.safetensors", rand_encoder)
    z = torch.randn(3, rand_encoder.embed_dim)
    assert torch.equal(heads["thermal"](z), cal.heads["thermal"](z))
    assert meta["objective"] == "ce+l2" and meta["encoder"] == rand_encoder.name and meta["attack"]["name"] == "pgd"

    class Other:
        name, embed_dim, modalities = "other-model", rand_encoder.embed_dim, rand_encoder.modalities

    with pytest.raises(CheckpointError, match="trained for encoder"):
        load_heads(tmp_path / "h.safetensors", Other())
    Other.name, Other.embed_dim = rand_encoder.name, 512
    with pytest.raises(CheckpointError, match="embed_dim"):
        load_heads(tmp_path / "h.safetensors", Other())
    w = tmp_path / "h.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_heads(w, rand_encoder)


def test_clean_only_control_and_adaptive(rand_encoder, synth_small):
    attack = build_attack("pgd", eps=4 / 255, steps=1)
    c = calibrate(rand_encoder, synth_small, modality="image", attack=attack, epochs=3, clean_only=True, progress=False)
    assert c.meta["clean_only"] and c.meta["attack_s"] >= 0
    a = calibrate(rand_encoder, synth_small, modality="image", attack=attack, epochs=4, adaptive_every=2, progress=False)
    assert a.meta["adaptive_every"] == 2
    with pytest.raises(RobustMMError):
        calibrate(rand_encoder, synth_small, modality="image", epochs=3, adaptive_every=2, clean_only=True)


def test_calibration_helps_head_unaware_on_trained_tinybind(trained):
    train = robustmm.load_dataset("synthscenes", split="train", n=512)
    test = robustmm.load_dataset("synthscenes", split="test", n=128)
    attack = build_attack("pgd", eps=4 / 255, steps=5)
    cal = calibrate(trained, train, modality="image", objective="ce", attack=attack, epochs=40, progress=False)
    bare, unaware, adaptive = evaluate_threats(trained, cal, test, modality="image", attack=attack, progress=False)
    assert unaware.threat == "head-unaware" and adaptive.threat == "adaptive"
    total = sum(p.numel() for p in trained.parameters()) + sum(p.numel() for p in trained.text_tower.parameters())
    assert cal.meta["trainable_params"] < 0.01 * total  # < 1% trainable, as in the paper
    assert unaware.metrics["attacked"]["zeroshot_top1"] > bare.metrics["attacked"]["zeroshot_top1"] + 0.1
    assert unaware.metrics["clean"]["zeroshot_top1"] >= bare.metrics["clean"]["zeroshot_top1"] - 0.05
