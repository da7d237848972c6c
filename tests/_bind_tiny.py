"""Tiny random-init Bind checkpoints written to disk in the official layouts (for the Bind tests)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from _fixtures import char_tokenizer
from safetensors.torch import save_file

#: the embedding size of every tiny Bind checkpoint written here (LanguageBind's projection_dim,
#: ImageBind's out_embed_dim)
EMBED_DIM = 24


def tiny_languagebind_config(modality: str, vocab_size: int) -> dict:
    """A LanguageBind-style config.json with hidden 32, 2 layers, patch 8."""
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, hidden_act="gelu",
                  layer_norm_eps=1e-5)
    text = dict(common, vocab_size=vocab_size, max_position_embeddings=24, eos_token_id=vocab_size - 1,
                bos_token_id=vocab_size - 2, pad_token_id=vocab_size - 1)
    vision = dict(common, image_size=32, patch_size=8, num_channels=3, lora_r=0, lora_alpha=16)
    if modality == "video":
        vision |= dict(add_time_attn=True, num_frames=4)
    if modality == "audio":
        vision |= dict(num_mel_bins=16, target_length=48, audio_sample_rate=16000, audio_mean=-4.2677393,
                       audio_std=4.5689974)
    if modality == "depth":
        vision |= dict(max_depth=10)
    return {"model_type": "LanguageBind" + modality.capitalize(), "projection_dim": EMBED_DIM,
            "text_config": text, "vision_config": vision}


def as_peft_lora(sd: dict, rank: int = 2) -> dict:
    """Rewrite a state dict the way a peft-wrapped LoRA encoder saves it, with random LoRA factors
    on q/v; returns (the peft-style dict, the merged dict the loader must produce)."""
    g = torch.Generator().manual_seed(3)
    out, merged = {}, {}
    for k, v in sd.items():
        if k.startswith("vision_model.encoder.layers.") and k.endswith(("q_proj.weight", "v_proj.weight")):
            base = k[: -len(".weight")].replace("vision_model.encoder.", "vision_model.encoder.base_model.model.")
            a = torch.randn(rank, v.shape[1], generator=g) * 0.1
            b = torch.randn(v.shape[0], rank, generator=g) * 0.1
            out[base + ".base_layer.weight"] = v
            out[base + ".lora_A.default.weight"] = a
            out[base + ".lora_B.default.weight"] = b
            merged[k] = v + (16 / rank) * b @ a
        else:
            out[k.replace("vision_model.encoder.", "vision_model.encoder.base_model.model.")] = v
            merged[k] = v
    return out, merged


def write_languagebind(folder: Path, modality: str, seed: int = 0, *, lora: bool = False, bin_file: bool = False) -> dict:
    """Write config.json, weights and tokenizer files of a tiny LanguageBind checkpoint; returns its state dict."""
    from robustmm.encoders.languagebind_towers import LanguageBindModel

    folder.mkdir(parents=True, exist_ok=True)
    tok = char_tokenizer()
    cfg = tiny_languagebind_config(modality, len(tok))
    torch.manual_seed(seed)
    model = LanguageBindModel.from_config(cfg)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    stored, expected = sd, sd
    if lora:
        cfg["vision_config"]["lora_r"] = 2
        stored, expected = as_peft_lora(sd)
    stored = dict(stored) | {"vision_model.embeddings.position_ids": torch.arange(17)[None]}  # old transformers kept it
    (folder / "config.json").write_text(json.dumps(cfg))
    if bin_file:
        torch.save(stored, folder / "pytorch_model.bin")
    else:
        save_file(stored, str(folder / "model.safetensors"))
    tok.save_pretrained(str(folder))
    return expected


def tiny_imagebind_config():
    """The imagebind_huge structure with tiny branches (hidden 16-32, 2 blocks, small inputs)."""
    from robustmm.encoders.imagebind_model import BranchConfig, ImageBindConfig

    return ImageBindConfig(branches={
        "vision": BranchConfig(32, 2, 2, 8, 8, (32, 32)), "text": BranchConfig(32, 2, 2),
        "audio": BranchConfig(32, 2, 2, 16, 10, (64, 56)), "depth": BranchConfig(16, 2, 2, 8, 8, (32, 32)),
        "thermal": BranchConfig(32, 2, 2, 8, 8, (32, 32))}, out_embed_dim=EMBED_DIM, context_length=16)


def write_imagebind(path: Path, seed: int = 0, imu: bool = True) -> dict:
    """A tiny ImageBind checkpoint (torch.save of the state dict, as imagebind_huge.pth) + its JSON sidecar."""
    from robustmm.encoders.imagebind_model import ImageBindModel

    cfg = tiny_imagebind_config()
    torch.manual_seed(seed)
    sd = {k: v.detach().clone() for k, v in ImageBindModel(cfg).state_dict().items()}
    stored = dict(sd)
    if imu:  # the official file also holds the IMU branch, which is skipped
        stored["modality_trunks.imu.blocks.0.attn.in_proj_weight"] = torch.zeros(48, 16)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(stored, path)
    path.with_suffix(".json").write_text(json.dumps(cfg.to_dict()))
    return sd
