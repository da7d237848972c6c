"""The LanguageBind encoder: modality towers + one text tower behind the Encoder contract.

Each LanguageBind checkpoint carries one modality tower (``vision_model`` + ``visual_projection``)
and a copy of the frozen text tower. :class:`LanguageBindEncoder` keeps every modality tower it
is given and the text tower of one of them -- the official ``LanguageBind`` wrapper does the
same (the text tower was frozen while binding, so the copies agree). Raw inputs are turned into
tower inputs by differentiable torch transforms that follow the official processors:

==========  ================================================================================
image       Resize shorter side to 224 (bicubic) + center crop + OpenAI CLIP mean/std
video       ``num_frames`` (8) frames at linspace(0, T-1), each as an image
audio       16 kHz waveform -> Kaldi fbank (``num_mel_bins`` x ``target_length``, 3 chunks),
            see :mod:`robustmm.encoders.audio_features`
depth       1 = near -> metres -> DepthNorm(max_depth) -> 3 channels -> as an image
thermal     1 channel -> 3 channels -> as an image
==========  ================================================================================
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .audio_features import LanguageBindAudio
from .base import Encoder, check_texts
from .bind_preprocess import DepthToLanguageBind, GrayToRGB, ResizeCropNormalize, VideoFrames
from .languagebind_towers import LanguageBindModel, TowerConfig

__all__ = ["LanguageBindEncoder", "languagebind_preprocessor", "LANGUAGEBIND_MODALITIES"]

LANGUAGEBIND_MODALITIES = ("image", "video", "audio", "depth", "thermal")


class _Sequential(nn.Sequential):
    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m in self:
            out |= m.info() if hasattr(m, "info") else {}
        return out


def languagebind_preprocessor(modality: str, vision: TowerConfig, *, depth_range_m: float = 10.0,
                              audio_input_rate: int | None = None) -> nn.Module:
    """The raw-domain -> tower-input transform of a LanguageBind ``modality`` tower
    (``audio_input_rate``: the rate of the raw waveforms, default the tower's 16 kHz)."""
    extra = vision.extra
    frame = ResizeCropNormalize(vision.image_size)
    if modality == "image":
        return frame
    if modality == "video":
        return VideoFrames(vision.num_frames, frame)
    if modality == "thermal":
        return GrayToRGB(frame)
    if modality == "depth":
        return _Sequential(DepthToLanguageBind(float(extra.get("max_depth", 10.0)), depth_range_m), GrayToRGB(frame))
    if modality == "audio":
        return LanguageBindAudio(
            sample_rate=int(extra.get("audio_sample_rate", 16000)), input_rate=audio_input_rate,
            num_mel_bins=vision.image_size[0], target_length=vision.image_size[1],
            mean=float(extra.get("audio_mean", -4.2677393)), std=float(extra.get("audio_std", 4.5689974)),
        )
    raise ValueError(f"LanguageBind has no {modality!r} tower")


class LanguageBindEncoder(Encoder):
    """LanguageBind modality towers sharing one text tower.

    Args:
        models: modality -> a loaded :class:`LanguageBindModel` (its ``vision_model`` is that tower).
        tokenizer: the CLIP tokenizer of the checkpoints.
        text_from: which modality's checkpoint supplies the text tower (default: the first).
        depth_range_m: metres that raw depth 0 stands for (the dataset's far plane).
        audio_input_rate: sample rate of raw waveforms (default: the tower's 16 kHz; others are resampled).
        name, weights: recorded in results.
    """

    deterministic = True  # eval-mode encode draws nothing: a handed-back embedding equals a fresh one

    def __init__(self, models: Mapping[str, LanguageBindModel], tokenizer: Any, *, text_from: str | None = None,
                 depth_range_m: float = 10.0, audio_input_rate: int | None = None, name: str = "languagebind",
                 weights: str = "custom"):
        super().__init__()
        if not models:
            raise ValueError("LanguageBindEncoder needs at least one modality tower")
        text_from = text_from or next(iter(models))
        self.modalities = tuple(m for m in LANGUAGEBIND_MODALITIES if m in models)
        self.vision = nn.ModuleDict({m: nn.ModuleDict({"vision_model": mod.vision_model,
                                                        "visual_projection": mod.visual_projection})
                                     for m, mod in models.items()})
        self.logit_scale = nn.ParameterDict({m: mod.logit_scale for m, mod in models.items()})
        self.text_model = models[text_from].text_model
        self.text_projection = models[text_from].text_projection
        self.preprocess = nn.ModuleDict({m: languagebind_preprocessor(m, mod.vision_model.cfg, depth_range_m=depth_range_m,
                                                                      audio_input_rate=audio_input_rate)
                                         for m, mod in models.items()})
        self.tokenizer = tokenizer
        self.context_length = int(self.text_model.embeddings.position_embedding.num_embeddings)
        self.embed_dim = int(self.text_projection.out_features)
        self.text_from = text_from
        self.name, self.weights = name, weights

    def _dtype(self) -> torch.dtype:
        return self.text_projection.weight.dtype

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        tower = self.vision[modality]
        pixels = self.preprocess[modality](x.to(self.device).float()).to(self._dtype())
        z = tower["visual_projection"](tower["vision_model"](pixels))
        return F.normalize(z.float(), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        texts = check_texts(texts)
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.context_length,
                               return_tensors="pt")
        z = self.text_projection(self.text_model(batch["input_ids"].to(self.device)))
        return F.normalize(z.float(), dim=-1)

    def tower(self, modality: str) -> nn.Module:
        self.check_modality(modality)
        return self.vision[modality]

    def preprocess_info(self) -> dict[str, Any]:
        out: dict[str, Any] = {m: p.info() for m, p in self.preprocess.items() if hasattr(p, "info")}
        return out | {"text": f"{type(self.tokenizer).__name__}, max_length {self.context_length}, tower from {self.text_from}"}

    def info(self) -> dict[str, Any]:
        return super().info() | {"family": "languagebind", "embed_dim": self.embed_dim, "modalities": list(self.modalities)}
