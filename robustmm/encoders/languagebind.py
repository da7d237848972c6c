"""``languagebind:`` model names: LanguageBind checkpoints from the HF cache or local folders.

Names (modalities: image, video, audio, depth, thermal)::

    languagebind                     every tower whose checkpoint is in the HF cache (at least one)
    languagebind:audio               LanguageBind/LanguageBind_Audio_FT from the HF cache
    languagebind:audio,video         several towers (the text tower of the first)
    languagebind:/path/to/folder     a checkpoint folder; the modality is read from its config
    languagebind:depth=/path,image   explicit modality for a folder, mixed with hub towers

A checkpoint folder holds ``config.json`` (``text_config``, ``vision_config``,
``projection_dim``), ``model.safetensors`` or ``pytorch_model.bin`` and the CLIP tokenizer files
(``vocab.json``, ``merges.txt``). The towers are this project's own
(:mod:`robustmm.encoders.languagebind_towers`) with the official parameter names, loaded with
``load_state_dict(strict=True)`` after :func:`~robustmm.encoders.bind_checkpoint.merge_lora`.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, MissingWeightsError, RobustMMError, UnknownNameError
from .bind_checkpoint import find_weight_file, hub_snapshot, load_exact, merge_lora, read_weights
from .hub import first_line
from .languagebind_encoder import LANGUAGEBIND_MODALITIES, LanguageBindEncoder
from .languagebind_towers import LanguageBindModel
from .registry import register_encoder

logger = logging.getLogger(__name__)

__all__ = ["LANGUAGEBIND_REPOS", "load_languagebind", "load_languagebind_folder", "read_tokenizer", "infer_modality"]

#: The hub checkpoint of each modality (the fully fine-tuned audio and video towers).
LANGUAGEBIND_REPOS: dict[str, str] = {
    "image": "LanguageBind/LanguageBind_Image",
    "video": "LanguageBind/LanguageBind_Video_FT",
    "audio": "LanguageBind/LanguageBind_Audio_FT",
    "depth": "LanguageBind/LanguageBind_Depth",
    "thermal": "LanguageBind/LanguageBind_Thermal",
}


def _is_path(spec: str) -> bool:
    return spec.startswith(("/", ".", "~")) or os.path.isdir(spec)


def infer_modality(config: dict[str, Any], folder: Path) -> str:
    """The modality of a checkpoint folder: video/audio from the vision config, else the folder name."""
    vision = config.get("vision_config", {})
    if vision.get("add_time_attn"):
        return "video"
    if vision.get("num_mel_bins") and vision.get("target_length"):
        return "audio"
    name = folder.name.lower() if folder.name.lower() != "snapshots" else ""
    parts = [p.lower() for p in folder.parts[-4:]]
    for m in ("depth", "thermal", "image", "video", "audio"):
        if m in name or any(m in p for p in parts):
            return m
    raise RobustMMError(
        f"cannot tell the modality of the LanguageBind checkpoint {folder}; name it, e.g. languagebind:depth={folder}"
    )


def read_tokenizer(folder: Path) -> Any:
    """The CLIP tokenizer saved with a checkpoint (slow ``vocab.json`` + ``merges.txt``, or ``tokenizer.json``)."""
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    try:
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            return CLIPTokenizer.from_pretrained(str(folder))
        return CLIPTokenizerFast.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError) as e:
        raise MissingWeightsError(f"no CLIP tokenizer files in {folder}: {first_line(e)}") from None


def load_languagebind_folder(folder: str | os.PathLike[str], what: str = "languagebind") -> tuple[str, LanguageBindModel, dict]:
    """Read one checkpoint folder -> (modality, loaded model, config dict)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise MissingWeightsError(f"{what}: checkpoint folder not found: {folder}")
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise MissingWeightsError(f"{what}: no config.json in {folder}")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{what}: {cfg_path} is not valid JSON: {first_line(e)}") from None
    vision = config.get("vision_config", {})
    sd = merge_lora(read_weights(find_weight_file(folder)), float(vision.get("lora_alpha", 16)), int(vision.get("lora_r", 0)))
    patch = sd.get("vision_model.embeddings.patch_embedding.weight")
    if patch is not None and patch.dim() == 5:  # the "vl_new" video stem: Conv3d + per-frame class tokens
        config = {**config, "vision_config": {**vision, "embeddings_3d": True, "tube_size": int(patch.shape[2])}}
    model = LanguageBindModel.from_config(config)
    load_exact(model, sd, f"{what} ({folder})", ignore=("position_ids",))
    return infer_modality(config, folder), model, config


def _parse(spec: str) -> list[tuple[str | None, str | None]]:
    """``"audio,depth=/p,/q"`` -> [("audio", None), ("depth", "/p"), (None, "/q")]."""
    if not spec:
        return [(m, None) for m in LANGUAGEBIND_MODALITIES]
    out: list[tuple[str | None, str | None]] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        mod, eq, path = part.partition("=")
        if eq:
            out.append((mod.strip(), os.path.expanduser(path.strip())))
        elif _is_path(part):
            out.append((None, os.path.expanduser(part)))
        else:
            out.append((part, None))
    for mod, _ in out:
        if mod is not None and mod not in LANGUAGEBIND_MODALITIES:
            raise UnknownNameError("LanguageBind modality", mod, LANGUAGEBIND_MODALITIES)
    return out


@register_encoder("languagebind", "LanguageBind towers (image, video, audio, depth, thermal): languagebind[:MODALITY,...|:/dir]")
def load_languagebind(spec: str, *, cache_dir: str | None = None, depth_range_m: float = 10.0,
                      audio_input_rate: int | None = None) -> LanguageBindEncoder:
    """Build a :class:`LanguageBindEncoder` from hub ids (HF cache) and/or checkpoint folders
    (``audio_input_rate``: the raw waveforms' rate when not 16 kHz, e.g. 8000 for SynthScenes)."""
    name = f"languagebind:{spec}" if spec else "languagebind"
    parts = _parse(spec)
    models: dict[str, LanguageBindModel] = {}
    folders: dict[str, Path] = {}
    skipped: list[str] = []
    for mod, path in parts:
        if path is None:
            assert mod is not None
            try:
                folder = hub_snapshot(LANGUAGEBIND_REPOS[mod], cache_dir=cache_dir, what=f"{name} ({mod})")
            except MissingWeightsError:
                if spec:  # asked for by name: the one-line error stands
                    raise
                skipped.append(LANGUAGEBIND_REPOS[mod])
                continue
        else:
            folder = Path(path)
        found, model, _ = load_languagebind_folder(folder, name)
        mod = mod or found
        if mod in models:
            raise RobustMMError(f"{name}: two checkpoints for the {mod} tower")
        models[mod], folders[mod] = model, folder
    if not models:
        raise MissingWeightsError(
            f"{name}: no LanguageBind checkpoint in the HF cache; download at least one of "
            f"{', '.join(LANGUAGEBIND_REPOS.values())} (`hf download LanguageBind/LanguageBind_Audio_FT`)"
        )
    if skipped:
        logger.warning("%s: not in the HF cache, towers left out: %s", name, ", ".join(skipped))
    first = next(iter(models))
    tokenizer = read_tokenizer(folders[first])
    weights = ",".join(f"{m}={LANGUAGEBIND_REPOS[m] if str(folders[m]).find('/snapshots/') >= 0 else folders[m]}" for m in models)
    logger.info("loaded %s: towers %s", name, ", ".join(models))
    return LanguageBindEncoder(models, tokenizer, text_from=first, depth_range_m=depth_range_m,
                               audio_input_rate=audio_input_rate, name=name, weights=weights)
