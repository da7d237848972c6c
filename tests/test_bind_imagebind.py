"""ImageBind: the project's own architecture with the official parameter names, on tiny random-init checkpoints.

The full-size key set is pinned below to what facebookresearch/ImageBind's ``imagebind_huge()``
builds (checked once against the official code: the same 1218 non-IMU keys and shapes, and, on a
tiny configuration, the same embeddings to 1e-7 for every branch incl. 2-frame video clips).
"""
from __future__ import annotations

import pytest
import torch
from _bind_checks import check_embeds_with_gradient, check_pgd_lowers_true_class_similarity
from _bind_tiny import write_imagebind

from robustmm.encoders.imagebind_model import ImageBindModel
from robustmm.encoders.registry import list_encoders, load_encoder
from robustmm.errors import CheckpointError, MissingWeightsError

pytestmark = pytest.mark.usefixtures("one_thread")

MODS = ("image", "video", "audio", "depth", "thermal")

#: Shapes in the official imagebind_huge.pth (from ImageBind's imagebind_model.py, checked on the meta device).
HUGE_SHAPES = {
    "modality_preprocessors.vision.rgbt_stem.proj.1.weight": (1280, 3, 2, 14, 14),
    "modality_preprocessors.vision.pos_embedding_helper.pos_embed": (1, 257, 1280),
    "modality_preprocessors.vision.cls_token": (1, 1, 1280),
    "modality_preprocessors.text.pos_embed": (1, 77, 1024),
    "modality_preprocessors.text.mask": (77, 77),
    "modality_preprocessors.text.token_embedding.weight": (49408, 1024),
    "modality_preprocessors.audio.rgbt_stem.proj.weight": (768, 1, 16, 16),
    "modality_preprocessors.audio.rgbt_stem.norm_layer.weight": (768,),
    "modality_preprocessors.audio.pos_embedding_helper.pos_embed": (1, 229, 768),
    "modality_preprocessors.depth.depth_stem.proj.weight": (384, 1, 16, 16),
    "modality_preprocessors.depth.pos_embedding_helper.pos_embed": (1, 197, 384),
    "modality_preprocessors.thermal.rgbt_stem.proj.weight": (768, 1, 16, 16),
    "modality_trunks.vision.pre_transformer_layer.0.weight": (1280,),
    "modality_trunks.vision.blocks.31.attn.in_proj_weight": (3840, 1280),
    "modality_trunks.text.blocks.23.mlp.fc1.weight": (4096, 1024),
    "modality_trunks.audio.blocks.11.attn.bias_k": (1, 1, 768),
    "modality_trunks.depth.blocks.0.attn.bias_v": (1, 1, 384),
    "modality_trunks.thermal.blocks.0.norm_1.weight": (768,),
    "modality_heads.vision.2.weight": (1024, 1280),
    "modality_heads.text.proj.1.weight": (1024, 1024),
    "modality_heads.depth.2.weight": (1024, 384),
    "modality_postprocessors.text.1.log_logit_scale": (),
    "modality_postprocessors.audio.1.log_logit_scale": (),
}


def raw(modality: str, n: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if modality == "audio":  # 2 s at 16 kHz: 3 overlapping clips of 0.35 s feed the tiny 56-frame tower
        t = torch.arange(6000) / 16000.0
        f = 200.0 + 1800.0 * torch.rand(n, 1, generator=g)
        return 0.05 * torch.sin(2 * torch.pi * f * t) + 0.005 * torch.randn(n, 6000, generator=g)
    shapes = {"image": (n, 3, 40, 36), "video": (n, 10, 3, 32, 40), "depth": (n, 1, 36, 32), "thermal": (n, 1, 32, 36)}
    return torch.rand(*shapes[modality], generator=g)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("imagebind") / "imagebind_tiny.pth"
    return path, write_imagebind(path)


@pytest.fixture(scope="module")
def enc(ckpt):
    from robustmm.encoders.audio_features import ImageBindAudio

    e = load_encoder(f"imagebind:{ckpt[0]}")
    e.preprocess["audio"] = ImageBindAudio(num_mel_bins=64, target_length=56, clip_duration=0.35)  # the tiny tower's input
    return e


def test_listed():
    assert "imagebind" in list_encoders()


def test_huge_key_names_and_shapes():
    with torch.device("meta"):
        sd = ImageBindModel().state_dict()
    assert len(sd) == 1218  # every non-IMU tensor of imagebind_huge.pth
    for k, shape in HUGE_SHAPES.items():
        assert tuple(sd[k].shape) == shape, k


def test_state_dict_round_trip(enc, ckpt):
    _, sd = ckpt
    ours = enc.model.state_dict()
    assert set(ours) == set(sd)
    assert all(torch.equal(ours[k], v) for k, v in sd.items())


@pytest.mark.parametrize("modality", MODS)
def test_embeds_with_gradient_to_raw_input(enc, modality):
    check_embeds_with_gradient(enc, modality, raw(modality))


def test_video_is_two_frame_clips_of_the_vision_trunk(enc):
    pixels = enc.preprocess["video"](raw("video", 1))
    assert pixels.shape == (1, 5, 3, 2, 32, 32)  # 5 clips x (3 channels, 2 frames)
    still = raw("image", 1)[..., :32, :32]
    video = still[:, None].expand(1, 10, 3, 32, 32)  # a still video embeds like its frame
    torch.testing.assert_close(enc.encode("video", video), enc.encode("image", still), atol=1e-4, rtol=0)


@pytest.mark.parametrize("loss", ["ce", "caption"])
@pytest.mark.parametrize("modality", MODS)
def test_pgd_lowers_true_class_similarity(enc, modality, loss):
    check_pgd_lowers_true_class_similarity(enc, modality, raw(modality, seed=1), loss)


def test_missing_and_mismatched_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTMM_IMAGEBIND", str(tmp_path / "nowhere.pth"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingWeightsError) as e:
        load_encoder("imagebind")
    assert "\n" not in str(e.value) and "imagebind_huge.pth" in str(e.value) and "dl.fbaipublicfiles.com" in str(e.value)
    with pytest.raises(MissingWeightsError, match="not found"):
        load_encoder(f"imagebind:{tmp_path}/x.pth")
    bad = tmp_path / "bad.pth"
    sd = write_imagebind(bad)
    sd.pop("modality_heads.audio.2.weight")
    torch.save(sd, bad)
    with pytest.raises(CheckpointError, match="1 missing .*modality_heads.audio.2.weight"):
        load_encoder(f"imagebind:{bad}")
    (tmp_path / "evil.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError):
        load_encoder(f"imagebind:{tmp_path}/evil.pth")


def test_default_path(tmp_path, monkeypatch, ckpt):
    import shutil

    monkeypatch.setenv("ROBUSTMM_IMAGEBIND", str(tmp_path / "ib.pth"))
    shutil.copy(ckpt[0], tmp_path / "ib.pth")
    shutil.copy(ckpt[0].with_suffix(".json"), tmp_path / "ib.json")
    assert load_encoder("imagebind").weights == str(tmp_path / "ib.pth")
