"""TeCoA (robustmm.defenses.tecoa): supervised adversarial fine-tuning of one tower on the zero-shot
cross-entropy, registered as the defense family ``tecoa``; the loop it shares with FARE trains every
tower, and bad settings are one-line errors."""
import math

import pytest
import torch

import robustmm
from robustmm.attacks.losses import zeroshot_ce
from robustmm.defenses import tecoa_finetune
from robustmm.defenses.tecoa import TecoaObjective
from robustmm.encoders.base import Encoder
from robustmm.errors import RobustMMError
from robustmm.modalities import CONTINUOUS_MODALITIES, get_modality

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def train(synth_small):
    return synth_small.head(8)


def _adv_loss(enc, data, modality, eps):
    """Mean zero-shot CE of ``enc`` on fixed PGD examples (inner attack with a fixed seed)."""
    task = data.tasks[modality]
    x = data.get(modality, slice(None))
    class_emb = enc.class_embeddings(task.prompts())
    obj = TecoaObjective()
    xa = obj.inner(enc, modality, x, (class_emb, task.labels), {"eps": eps, "steps": 3, "step_size": None,
                                                               "norm": None}, torch.Generator().manual_seed(0))
    with torch.no_grad():
        return zeroshot_ce(enc.encode(modality, xa), class_emb, task.labels).mean().item()


def test_tecoa_lowers_its_loss_on_a_tiny_run(rand_encoder, train):
    eps = 2 / 255
    tuned = tecoa_finetune(rand_encoder, train, modality="image", epochs=3, lr=3e-4, batch_size=8, steps=2, eps=eps,
                           progress=False)
    assert _adv_loss(tuned, train, "image", eps) < _adv_loss(rand_encoder, train, "image", eps)
    info = tuned.training_info
    assert info["name"] == "tecoa" and info["attack"]["loss"] == "zero-shot-ce"
    assert info["final_loss"] < info["first_loss"]


def test_the_registered_family_builds_an_encoder(rand_encoder, train):
    assert "tecoa" in robustmm.list_defenses()
    assert "fine-tuning" in robustmm.list_defenses()["tecoa"]
    enc = robustmm.defend(rand_encoder, "tecoa", data=train, modality="audio", epochs=1, steps=2, batch_size=4,
                          progress=False)
    assert isinstance(enc, Encoder) and enc is not rand_encoder
    info = enc.training_info
    assert info["modality"] == "audio" and info["epochs"] == 1 and info["lr"] == 1e-4
    assert info["training_passes"] == len(train) * 1 * (2 + 1)
    assert info["trainable_params"] == info["tower_params"] and info["trainable_share"] == 1.0
    assert info["total_params"] == sum(p.numel() for p in rand_encoder.parameters())
    assert info["attack"]["eps"] == get_modality("audio").middle_eps and info["lora"] is None


@pytest.mark.parametrize("family", ["tecoa", "fare"])
@pytest.mark.parametrize("modality", CONTINUOUS_MODALITIES)
def test_every_tower_trains(rand_encoder, synth_small, family, modality):
    data = synth_small.head(4)
    before = {k: v.clone() for k, v in rand_encoder.state_dict().items()}
    tuned = robustmm.defend(rand_encoder, family, data=data, modality=modality, epochs=1, steps=1, batch_size=4,
                            lr=1e-2, progress=False)
    after = tuned.state_dict()
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    assert changed and all(k.startswith(f"towers.{modality}.") for k in changed)
    assert all(torch.equal(v, rand_encoder.state_dict()[k]) for k, v in before.items())  # the original untouched
    spec = get_modality(modality)
    assert tuned.training_info["attack"]["eps"] == spec.middle_eps
    assert math.isfinite(tuned.training_info["final_loss"])
    x = data.get(modality, torch.arange(2))
    with torch.no_grad():
        emb = tuned.encode(modality, x)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))


@pytest.mark.parametrize("settings, match", [
    ({"epochs": 0}, "epochs"),
    ({"lr": -1.0}, "lr"),
    ({"lr": "fast"}, "lr"),
    ({"batch_size": 0}, "batch_size"),
    ({"steps": -1}, "steps"),
    ({"eps": "four"}, "eps"),
    ({"eps": 4}, "did you mean 4/255"),
    ({"lora_rank": 0}, "lora_rank"),
    ({"lora_alpha": 4.0}, "lora_rank=r"),
    ({"lora_rank": 2, "lora_alpha": -1.0}, "lora_alpha"),
    ({"scale": 0}, "scale"),
    ({"modality": "smell"}, "smell"),
])
def test_bad_settings_are_one_line_errors(rand_encoder, train, settings, match):
    settings = {"modality": "image", "progress": False} | settings
    with pytest.raises(RobustMMError, match=match) as e:
        robustmm.defend(rand_encoder, "tecoa", data=train, **settings)
    assert "\n" not in str(e.value)


def test_missing_modality_or_data_names_the_fix(rand_encoder, train):
    with pytest.raises(RobustMMError, match="modality="):
        robustmm.defend(rand_encoder, "tecoa", data=train)
    with pytest.raises(RobustMMError, match="data="):
        robustmm.defend(rand_encoder, "tecoa", modality="image")


def test_eps_as_a_fraction_string(rand_encoder, train):
    tuned = tecoa_finetune(rand_encoder, train.head(4), modality="depth", eps="2/255", epochs=1, steps=1,
                           batch_size=4, progress=False)
    assert tuned.training_info["attack"]["eps"] == pytest.approx(2 / 255)
