"""LanguageBind: tiny random-init checkpoints written in the official layout, loaded by name.

Each tower (image, video, audio, depth, thermal) is built from a LanguageBind-style config.json
(hidden 32, 2 layers, patch 8), saved (safetensors, pytorch_model.bin, or peft-LoRA keys), and
loaded through ``load_encoder("languagebind:MOD=/dir")``: the state dict must come back exactly
through the key mapping, the encoder must embed raw inputs to unit vectors with gradients on the
raw input, and PGD must lower the true-class similarity.
"""
from __future__ import annotations

import pytest
import torch
from _bind_checks import check_embeds_with_gradient, check_pgd_lowers_true_class_similarity
from _bind_tiny import write_languagebind
from _fixtures import char_tokenizer

from robustmm.encoders.languagebind_towers import LanguageBindModel
from robustmm.encoders.registry import list_encoders, load_encoder
from robustmm.errors import CheckpointError, MissingWeightsError, UnknownNameError

pytestmark = pytest.mark.usefixtures("one_thread")

MODS = ("image", "video", "audio", "depth", "thermal")


def raw(modality: str, n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shapes = {"image": (n, 3, 40, 48), "video": (n, 6, 3, 36, 40), "audio": (n, 8000),
              "depth": (n, 1, 36, 32), "thermal": (n, 1, 32, 40)}
    if modality == "audio":  # quiet tones + a little noise: an eps of 0.016 full scale is audible on them
        t = torch.arange(8000) / 16000.0
        f = 200.0 + 1800.0 * torch.rand(n, 1, generator=g)
        return 0.05 * torch.sin(2 * torch.pi * f * t) + 0.005 * torch.randn(n, 8000, generator=g)
    return torch.rand(*shapes[modality], generator=g)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    d = tmp_path_factory.mktemp("languagebind")
    sds = {}
    for i, m in enumerate(MODS):
        sds[m] = write_languagebind(d / f"LanguageBind_{m}", m, seed=i, lora=(m == "depth"), bin_file=(m == "thermal"))
    return d, sds


@pytest.fixture(scope="module")
def enc(folders):
    d, _ = folders
    return load_encoder("languagebind:" + ",".join(f"{m}={d}/LanguageBind_{m}" for m in MODS))


def test_listed():
    assert "languagebind" in list_encoders()


def test_state_dict_round_trip(enc, folders):
    """Every tensor of every tower comes back exactly (LoRA merged, position_ids dropped)."""
    _, sds = folders
    for m in MODS:
        tower = enc.tower(m).state_dict()
        for k, v in sds[m].items():
            if k.startswith(("vision_model.", "visual_projection.")):
                assert torch.equal(tower[k], v), (m, k)
    text = {"text_model." + k: v for k, v in enc.text_model.state_dict().items()}
    for k, v in text.items():
        assert torch.equal(v, sds["image"][k]), k  # the text tower of the first named checkpoint


def test_video_tower_has_temporal_attention(enc):
    sd = enc.tower("video").state_dict()
    assert sd["vision_model.encoder.layers.1.temporal_embedding"].shape == (1, 4, 32)
    assert sd["vision_model.encoder.layers.0.temporal_attn.q_proj.weight"].shape == (32, 32)
    assert "vision_model.encoder.layers.0.temporal_layer_norm1.weight" in sd
    frames = raw("video", 1)
    idx = torch.tensor([0, 5, 2, 3, 4, 1])  # a different temporal order of the sampled frames
    assert not torch.allclose(enc.encode("video", frames), enc.encode("video", frames[:, idx]), atol=1e-6)


def test_audio_tower_grid(enc):
    pos = enc.tower("audio")["vision_model"].embeddings.position_embedding.weight
    assert pos.shape == (2 * 6 + 1, 32)  # 16 mel bins x 48 frames in patches of 8, plus the class token


@pytest.mark.parametrize("modality", MODS)
def test_embeds_with_gradient_to_raw_input(enc, modality):
    check_embeds_with_gradient(enc, modality, raw(modality))


@pytest.mark.parametrize("loss", ["ce", "caption"])
@pytest.mark.parametrize("modality", MODS)
def test_pgd_lowers_true_class_similarity(enc, modality, loss):
    check_pgd_lowers_true_class_similarity(enc, modality, raw(modality, seed=1), loss)


def test_text_embedding_pools_at_end_of_text(enc):
    a, b = enc.encode_text(["a cat", "a cat on a mat"])
    assert torch.allclose(a.norm(), torch.tensor(1.0), atol=1e-5)
    assert not torch.allclose(a, b)
    again = enc.encode_text(["a cat"])  # padding in a batch does not change an embedding (causal mask)
    assert torch.allclose(again[0], a, atol=1e-5)


def test_same_architecture_as_transformers_clip():
    """The image tower + text tower compute what transformers' CLIPModel computes with the same weights."""
    from transformers import CLIPConfig, CLIPModel

    tok = char_tokenizer()
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, hidden_act="quick_gelu")
    cfg = CLIPConfig(text_config=dict(common, vocab_size=len(tok), max_position_embeddings=24,
                                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                                      pad_token_id=tok.pad_token_id),
                     vision_config=dict(common, image_size=32, patch_size=8), projection_dim=24)
    torch.manual_seed(0)
    ref = CLIPModel(cfg).eval()
    ours = LanguageBindModel.from_config({"text_config": cfg.text_config.to_dict(), "vision_config": cfg.vision_config.to_dict(),
                                          "projection_dim": 24}).eval()
    sd = {k: v for k, v in ref.state_dict().items() if not k.endswith("position_ids")}
    ours.load_state_dict(sd, strict=True)  # the same key names: the LanguageBind checkpoints are CLIP-shaped
    pixels = torch.randn(2, 3, 32, 32)
    ids = tok(["a dog", "two red cars"], padding=True, return_tensors="pt")
    with torch.no_grad():
        want_img = ref.get_image_features(pixel_values=pixels)
        want_txt = ref.get_text_features(**ids)
        want_img = want_img if isinstance(want_img, torch.Tensor) else want_img.pooler_output
        want_txt = want_txt if isinstance(want_txt, torch.Tensor) else want_txt.pooler_output
        assert torch.allclose(ours.encode_input(pixels), want_img, atol=1e-5)
        assert torch.allclose(ours.encode_ids(ids["input_ids"]), want_txt, atol=1e-5)


def test_missing_checkpoint_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError) as e:
        load_encoder("languagebind:audio", cache_dir=str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and "LanguageBind/LanguageBind_Audio_FT" in msg and "hf download" in msg
    with pytest.raises(MissingWeightsError, match="no LanguageBind checkpoint"):
        load_encoder("languagebind", cache_dir=str(tmp_path))
    with pytest.raises(MissingWeightsError, match="not found"):
        load_encoder(f"languagebind:{tmp_path}/nowhere")


def test_mismatched_checkpoint_and_bad_names(tmp_path, folders):
    d, _ = folders
    with pytest.raises(UnknownNameError):
        load_encoder("languagebind:smell")
    bad = tmp_path / "bad"
    write_languagebind(bad, "image")
    from safetensors.torch import load_file, save_file

    sd = load_file(str(bad / "model.safetensors"))
    sd.pop("visual_projection.weight")
    save_file(sd, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match="1 missing .*visual_projection"):
        load_encoder(f"languagebind:image={bad}")


def test_modality_read_from_folder(folders):
    d, _ = folders
    enc = load_encoder(f"languagebind:{d}/LanguageBind_audio")
    assert enc.modalities == ("audio",)
    assert load_encoder(f"languagebind:{d}/LanguageBind_video").modalities == ("video",)


def test_legacy_eos_token_id_pools_at_largest_id():
    """Old CLIP configs say eos_token_id = 2 (a real BPE token, '"'); pooling must use the largest id then."""
    from robustmm.encoders.languagebind_towers import TextTransformer, TowerConfig

    torch.manual_seed(0)
    cfg = TowerConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=50,
                      max_position_embeddings=8, eos_token_id=2)
    tower = TextTransformer(cfg).eval()
    ids = torch.tensor([[48, 2, 5, 49, 0, 0]])  # a '"' (id 2) before the real end-of-text (49, the largest)
    with torch.no_grad():
        full = tower.final_layer_norm(tower.encoder(tower.embeddings(ids), causal=True))
        torch.testing.assert_close(tower(ids), full[:, 3])
