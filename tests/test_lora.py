"""LoRA adapters (robustmm.encoders.lora) and the lora_rank option of adversarial fine-tuning: only the
adapters train, the base weights stay as they were, the trainable share is reported, and a merged
model saves and loads like the base encoder."""
import pytest
import torch
from torch import nn

from robustmm.defenses import fare_finetune, tecoa_finetune
from robustmm.encoders.lora import LoRALinear, add_lora, lora_layers, merge_lora
from robustmm.encoders.tinybind import TinyBind
from robustmm.errors import RobustMMError

pytestmark = pytest.mark.usefixtures("one_thread")

MODALITY = "image"


def test_lora_linear_starts_as_the_base_layer_and_scales_by_alpha_over_r():
    base = nn.Linear(6, 5)
    layer = LoRALinear(base, rank=2, alpha=4, generator=torch.Generator().manual_seed(0))
    x = torch.randn(3, 6)
    assert torch.equal(layer(x), base(x))  # B starts at zero
    assert layer.scale == 2.0 and layer.lora_A.shape == (2, 6) and layer.lora_B.shape == (5, 2)
    assert not base.weight.requires_grad and layer.lora_A.requires_grad and layer.lora_B.requires_grad
    with torch.no_grad():
        layer.lora_B.normal_()
    expected = x @ (base.weight + layer.lora_B @ layer.lora_A * 2.0).T + base.bias
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer.merged()(x), expected)


def test_add_lora_adapts_every_linear_and_freezes_the_rest():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 4), nn.GELU(), nn.Linear(4, 3))
    params = add_lora(net, 2)
    assert len(lora_layers(net)) == 2 and len(params) == 4
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in params}
    assert sum(p.numel() for p in params) == 2 * (8 + 4) + 2 * (4 + 3)
    assert merge_lora(net) == 2 and not lora_layers(net)
    assert isinstance(net[2], nn.Linear) and isinstance(net[4], nn.Linear)


@pytest.mark.parametrize("rank", [0, -1, 2.5, True, "8"])
def test_bad_rank_is_a_one_line_error(rank):
    with pytest.raises(RobustMMError, match="lora_rank") as e:
        add_lora(nn.Linear(3, 3), rank)
    assert "\n" not in str(e.value)


def test_a_module_without_linear_layers_is_a_one_line_error():
    with pytest.raises(RobustMMError, match="no nn.Linear") as e:
        add_lora(nn.Conv2d(1, 1, 3), 2)
    assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def train(synth_small):
    return synth_small.head(8)


@pytest.fixture(scope="module")
def unmerged(rand_encoder, train):
    return tecoa_finetune(rand_encoder, train, modality=MODALITY, epochs=2, lr=1e-2, batch_size=4, steps=1,
                          lora_rank=2, lora_merge=False, progress=False)


def test_lora_trains_only_the_adapters_and_leaves_base_weights(rand_encoder, unmerged):
    base_sd = rand_encoder.state_dict()
    tuned_sd = unmerged.state_dict()
    adapters = {k for k in tuned_sd if "lora_" in k}
    assert adapters and all(k.startswith(f"towers.{MODALITY}.") for k in adapters)
    for k, v in tuned_sd.items():  # every base weight, wrapped or not, has its original value
        if k in adapters:
            continue
        original = k.replace(".base.", ".") if k.replace(".base.", ".") in base_sd else k
        assert torch.equal(v, base_sd[original]), k
    assert any(not torch.equal(tuned_sd[k], torch.zeros_like(tuned_sd[k])) for k in adapters if "lora_B" in k)
    assert not any(p.requires_grad for p in unmerged.parameters())


def test_trainable_share_is_reported(rand_encoder, unmerged):
    info = unmerged.training_info
    tower = rand_encoder.tower(MODALITY)
    linears = [m for m in tower.modules() if isinstance(m, nn.Linear)]
    expected = sum(2 * (m.in_features + m.out_features) for m in linears)
    assert info["trainable_params"] == expected
    assert info["tower_params"] == sum(p.numel() for p in tower.parameters())
    assert info["trainable_share"] == pytest.approx(expected / info["tower_params"], abs=1e-6)
    assert 0 < info["trainable_share"] < 0.1
    assert info["lora"] == {"rank": 2, "alpha": 2.0, "layers": len(linears), "merged": False}


def test_merged_update_is_low_rank_and_saves_like_the_base(rand_encoder, train, tmp_path):
    tuned = fare_finetune(rand_encoder, train, modality=MODALITY, epochs=2, lr=1e-2, batch_size=4, steps=1,
                          lora_rank=2, progress=False)
    assert tuned.training_info["lora"]["merged"] is True
    base_sd, tuned_sd = rand_encoder.state_dict(), tuned.state_dict()
    assert set(tuned_sd) == set(base_sd)
    changed = [k for k in base_sd if not torch.equal(base_sd[k], tuned_sd[k])]
    assert changed and all(k.startswith(f"towers.{MODALITY}.proj.") and k.endswith(".weight") for k in changed)
    for k in changed:
        assert torch.linalg.matrix_rank(tuned_sd[k] - base_sd[k], atol=1e-5) <= 2
    tuned.save(tmp_path / "tuned")
    loaded = TinyBind.load(tmp_path / "tuned", text_tower=rand_encoder.text_tower).freeze()
    x = train.get(MODALITY, torch.arange(4))
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(MODALITY, x), tuned.encode(MODALITY, x))
