"""The defense registry (robustmm.defenses.registry): every family listed, built by name as an Encoder."""
import pytest
import torch

import robustmm
from robustmm.encoders.calibrated import CalibratedEncoder
from robustmm.encoders.input_transforms import TransformedEncoder
from robustmm.encoders.input_transforms import list_defenses as list_transforms
from robustmm.encoders.smoothed import SmoothedEncoder
from robustmm.errors import RobustMMError, UnknownNameError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_list_defenses_covers_every_family():
    names = robustmm.list_defenses()
    assert {"calibration", "noise-heads", "denoiser", "fare", "smoothing"} <= set(names)
    assert set(list_transforms()) <= set(names)
    assert all(desc.startswith("[") for desc in names.values())


def test_cli_lists_every_family(capsys):
    from robustmm.cli import main

    assert main(["list", "defenses"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in robustmm.list_defenses())


def test_defend_builds_encoders(rand_encoder):
    assert isinstance(robustmm.defend(rand_encoder, "jpeg", quality=75), TransformedEncoder)
    assert isinstance(robustmm.defend(rand_encoder, "smoothing", sigma=0.1), SmoothedEncoder)


def test_defend_calibration_from_heads_file(rand_encoder, tmp_path):
    from robustmm.defenses import ResidualHead, save_heads

    head = ResidualHead(rand_encoder.embed_dim, 8)
    save_heads(tmp_path / "h.safetensors", {"audio": head}, {"encoder": rand_encoder.name})
    enc = robustmm.defend(rand_encoder, "calibration", heads=tmp_path / "h.safetensors")
    assert isinstance(enc, CalibratedEncoder) and set(enc.heads) == {"audio"}


def test_defend_errors_name_the_fix(rand_encoder):
    with pytest.raises(UnknownNameError, match="jpeg"):
        robustmm.defend(rand_encoder, "jpg")
    with pytest.raises(RobustMMError, match="data="):
        robustmm.defend(rand_encoder, "fare", modality="image")


@pytest.mark.parametrize("name, settings", [
    ("calibration", {"modality": "image", "epochs": 1, "progress": False,
                     "attack": robustmm.build_attack("pgd", eps=2 / 255, steps=1)}),
    ("fare", {"modality": "image", "epochs": 1, "steps": 1, "batch_size": 4, "progress": False}),
    ("tecoa", {"modality": "image", "epochs": 1, "steps": 1, "batch_size": 4, "lora_rank": 2, "progress": False}),
    ("denoiser", {"modality": "image", "sigma": 0.1, "epochs": 1, "width": 4, "depth": 2}),
])
def test_training_leaves_the_global_rng_alone(rand_encoder, synth_small, name, settings):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    robustmm.defend(rand_encoder, name, data=synth_small.head(4), **settings)
    assert torch.equal(torch.rand(3), expected)
