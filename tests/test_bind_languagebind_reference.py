"""Our LanguageBind towers against the PyPI package's own model classes, where they can be imported.

``import languagebind`` fails here (its ``__init__`` imports media processors that need torchaudio
and pytorchvideo), and its modeling code needs transformers < 5, peft and einops. This test loads
the package's ``modeling_*`` modules without running that ``__init__`` and compares embeddings of
random-init tiny models, weights copied through our key mapping (LoRA merged). It runs in the
``bind`` CI venv (``languagebind --no-deps``, transformers 4.57, peft, einops, accelerate) and is
skipped elsewhere.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import pytest
import torch

from robustmm.encoders.bind_checkpoint import load_exact, merge_lora
from robustmm.encoders.languagebind_towers import LanguageBindModel


def _package():
    spec = sys.modules["languagebind"].__spec__ if "languagebind" in sys.modules else importlib.util.find_spec("languagebind")
    missing = [m for m in ("peft", "einops") if importlib.util.find_spec(m) is None]
    import transformers

    if spec is None or missing or int(transformers.__version__.split(".")[0]) >= 5:
        pytest.skip("needs the languagebind package with transformers < 5, peft and einops (the bind CI venv)")
    if "languagebind" not in sys.modules:  # a bare package object: submodules import, __init__ does not run
        pkg = types.ModuleType("languagebind")
        pkg.__path__ = list(spec.submodule_search_locations or [])
        pkg.__spec__ = spec
        sys.modules["languagebind"] = pkg
    return lambda name: importlib.import_module(f"languagebind.{name}")


COMMON = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, hidden_act="gelu")
CASES = {
    "video": dict(add_time_attn=True, num_frames=4, lora_r=0),
    "video_vl_new": dict(add_time_attn=True, num_frames=4, lora_r=0, clip_type="vl_new"),
    "video_lora": dict(add_time_attn=True, num_frames=4, lora_r=2, lora_alpha=16),
    "audio": dict(num_mel_bins=16, target_length=48, lora_r=0),
    "audio_lora": dict(num_mel_bins=16, target_length=48, lora_r=2, lora_alpha=16),
    "depth_lora": dict(lora_r=2, lora_alpha=16, max_depth=10),
}


class _AnySize:
    """transformers 4.57's CLIPVisionEmbeddings rejects non-square inputs; the 4.3x the package was written for did not."""

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False


@pytest.mark.parametrize("case", list(CASES))
def test_matches_package_classes(case):
    mod = _package()
    kind = case.split("_")[0]
    cfg_mod, model_mod = mod(f"{kind}.configuration_{kind}"), mod(f"{kind}.modeling_{kind}")
    Config = getattr(cfg_mod, f"LanguageBind{kind.capitalize()}Config")
    Model = getattr(model_mod, f"LanguageBind{kind.capitalize()}")
    cfg = Config(text_config=dict(COMMON, vocab_size=100, max_position_embeddings=16),
                 vision_config=dict(COMMON, image_size=32, patch_size=8, **CASES[case]), projection_dim=24)
    for c in (cfg, cfg.vision_config, cfg.text_config):
        c._attn_implementation = "eager"
    torch.manual_seed(0)
    ref = Model(cfg).eval()
    ref.vision_model.embeddings.image_size = _AnySize()
    for name, p in ref.named_parameters():
        if "lora_B" in name:  # peft initialises B to zero; random B makes the merge matter
            torch.nn.init.normal_(p, std=0.1)
    sd = ref.state_dict()
    vc = cfg.vision_config.to_dict()
    patch = sd["vision_model.embeddings.patch_embedding.weight"]
    if patch.dim() == 5:
        vc |= {"embeddings_3d": True, "tube_size": int(patch.shape[2])}
    ours = LanguageBindModel.from_config({"text_config": cfg.text_config.to_dict(), "vision_config": vc, "projection_dim": 24})
    load_exact(ours.eval(), merge_lora(sd, float(vc["lora_alpha"]), int(vc["lora_r"])), case, ignore=("position_ids",))
    shape = {"video": (2, 3, 4, 32, 32), "audio": (2, 3, 16, 48)}.get(kind, (2, 3, 32, 32))
    x = torch.randn(*shape)
    ids = torch.tensor([[98, 5, 7, 99, 0, 0], [98, 9, 3, 4, 2, 99]])
    with torch.no_grad():
        want = ref.get_image_features(pixel_values=x)
        got = ours.encode_input(x.transpose(1, 2) if kind == "video" else x)  # ours takes (B, T, C, H, W)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        want_t = ref.get_text_features(input_ids=ids, attention_mask=torch.ones_like(ids))
        torch.testing.assert_close(ours.encode_ids(ids), want_t, atol=1e-5, rtol=0)
