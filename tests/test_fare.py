"""fare_finetune on a tiny model: what it trains, what it leaves alone, and that the tuned copy is
scored like any encoder (its robust accuracy is measured by evaluate)."""
import math

import pytest
import torch

import robustmm
from robustmm.attacks import build_attack
from robustmm.defenses import fare_finetune
from robustmm.errors import RobustMMError

pytestmark = pytest.mark.usefixtures("one_thread")

MODALITY = "image"


@pytest.fixture(scope="module")
def train(synth_small):
    return synth_small.head(8)


@pytest.fixture(scope="module")
def tuned(rand_encoder, train):
    before = {k: v.clone() for k, v in rand_encoder.state_dict().items()}
    attack = build_attack("pgd", eps=8 / 255, steps=1)  # only its budget is used
    model = fare_finetune(rand_encoder, train, modality=MODALITY, attack=attack, epochs=1, lr=1e-2,
                          batch_size=4, seed=3, progress=False)
    return model, model.training_info, before


def test_the_original_is_untouched(rand_encoder, tuned):
    model, _, before = tuned
    assert model is not rand_encoder
    after = rand_encoder.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert not rand_encoder.training and not any(p.requires_grad for p in rand_encoder.parameters())


def test_only_the_modality_towers_weights_change(rand_encoder, tuned):
    model, _, before = tuned
    tuned_sd = model.state_dict()
    assert set(tuned_sd) == set(before)
    changed = {k for k, v in before.items() if not torch.equal(v, tuned_sd[k])}
    assert changed, "no weight moved"
    assert all(k.startswith(f"towers.{MODALITY}.") for k in changed), sorted(changed)[:5]
    buffers = {n for n, _ in model.named_buffers()}
    assert not changed & buffers, "BatchNorm statistics must stay frozen"
    weights = {n for n, _ in model.tower(MODALITY).named_parameters()}
    assert {k.removeprefix(f"towers.{MODALITY}.") for k in changed} <= weights


def test_the_tuned_copy_is_frozen_and_reported(rand_encoder, tuned, train):
    model, report, _ = tuned
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert report["name"] == "fare" and report["modality"] == MODALITY and report["epochs"] == 1
    assert report["steps"] == math.ceil(len(train) / 4) == 2
    assert report["trainable_params"] == sum(p.numel() for p in rand_encoder.tower(MODALITY).parameters())
    assert report["attack"]["eps"] == pytest.approx(8 / 255) and report["attack"]["steps"] == 1
    assert math.isfinite(report["first_loss"]) and math.isfinite(report["final_loss"])


def test_robust_accuracy_of_the_tuned_model_is_measured(rand_encoder, tuned, synth_small):
    model, _, _ = tuned
    test = synth_small.subset(torch.arange(8, 16))
    x = test.get(MODALITY, torch.arange(4))
    with torch.no_grad():
        assert not torch.allclose(model.encode(MODALITY, x), rand_encoder.encode(MODALITY, x), atol=1e-5)
        a = test.get("audio", torch.arange(4))  # another tower: the same function as before
        assert torch.equal(model.encode("audio", a), rand_encoder.encode("audio", a))  # same weights, same batch
    res = robustmm.evaluate(model, test, modality=MODALITY, attack=build_attack("pgd", eps=8 / 255, steps=2),
                            progress=False)
    assert res.n == 8 and res.attack["eps"] == pytest.approx(8 / 255) and res.threat == "white-box"
    robust = res.metrics["attacked"]["zeroshot_top1"]
    asr = res.metrics["asr"]
    assert 0.0 <= robust <= 1.0 and (asr is None or 0.0 <= asr <= 1.0)
    task = test.task(MODALITY)  # the clean score is the tuned model's own zero-shot accuracy
    with torch.no_grad():
        logits = model.encode(MODALITY, test.get(MODALITY, torch.arange(8))) @ model.class_embeddings(task.prompts()).T
    assert res.metrics["clean"]["zeroshot_top1"] == pytest.approx((logits.argmax(1) == task.labels).float().mean().item())


def test_same_seed_same_tuned_weights(rand_encoder, train, tuned):
    model, _, _ = tuned
    again = fare_finetune(rand_encoder, train, modality=MODALITY, attack=build_attack("pgd", eps=8 / 255, steps=1),
                          epochs=1, lr=1e-2, batch_size=4, seed=3, progress=False)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())


def test_bad_arguments(rand_encoder, train):
    with pytest.raises(RobustMMError, match="epochs"):
        fare_finetune(rand_encoder, train, modality=MODALITY, epochs=0, progress=False)
    with pytest.raises(RobustMMError):
        fare_finetune(rand_encoder, train, modality="smell", epochs=1, progress=False)


def test_the_report_counts_parameters_and_passes(rand_encoder, tuned, train):
    _, report, _ = tuned
    tower = sum(p.numel() for p in rand_encoder.tower(MODALITY).parameters())
    assert report["tower_params"] == tower and report["trainable_share"] == 1.0
    assert report["total_params"] == sum(p.numel() for p in rand_encoder.parameters())
    assert report["training_passes"] == len(train) * 1 * (1 + 1)  # items x epochs x (attack steps + 1)
    assert report["lora"] is None


def test_fare_with_lora_trains_only_adapters(rand_encoder, train):
    model = fare_finetune(rand_encoder, train, modality="pointcloud", epochs=1, lr=1e-2, batch_size=4, steps=1,
                          lora_rank=4, lora_merge=False, progress=False)
    report = model.training_info
    assert report["lora"]["rank"] == 4 and not report["lora"]["merged"]
    assert 0 < report["trainable_share"] < 0.05
    names = {n for n, _ in model.tower("pointcloud").named_parameters()}
    assert any("lora_A" in n for n in names)
    base = rand_encoder.tower("pointcloud").state_dict()
    for k, v in model.tower("pointcloud").state_dict().items():
        if "lora_" not in k:
            assert torch.equal(v, base[k.replace(".base.", ".")]), k
