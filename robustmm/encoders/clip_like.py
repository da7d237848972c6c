"""What every CLIP-style adapter (open_clip, HF ``CLIPModel``) shares behind the Encoder contract.

A CLIP-like model has one image tower and one text tower. The adapter takes raw images in [0, 1]
of any size, preprocesses them differentiably (:class:`~robustmm.encoders.preprocess.ImagePreprocessor`),
casts them to the model's dtype and returns unit float32 embeddings; captions are checked and
encoded in chunks (so a text attack that scores thousands of candidates does not tokenise them
all at once). Subclasses say how to get raw features from their model:
:meth:`ClipLikeEncoder.image_features`, :meth:`ClipLikeEncoder.text_features`,
:meth:`ClipLikeEncoder.vision_tower` and :meth:`ClipLikeEncoder.text_info`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import Encoder, check_texts
from .preprocess import ImagePreprocessor

__all__ = ["ClipLikeEncoder", "TEXT_CHUNK"]

#: captions tokenised and encoded per forward pass of the text tower
TEXT_CHUNK = 256


class ClipLikeEncoder(Encoder):
    """Base of the CLIP adapters: image preprocessing, dtype handling, chunked text encoding.

    Args:
        model: the wrapped model (put in eval mode).
        preprocess: its raw-domain image preprocessing.
        tokenizer: its tokenizer (how it is called is the subclass's business).
        name, weights: recorded in results.
        family, architecture: recorded in :meth:`info` (e.g. ``open_clip`` / ``ViT-B-32``).
    """

    deterministic = True  # eval-mode encode draws nothing: a handed-back embedding equals a fresh one

    modalities = ("image",)

    def __init__(self, model: nn.Module, preprocess: ImagePreprocessor, tokenizer: Any, *, name: str,
                 weights: str, family: str, architecture: str):
        super().__init__()
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.name = name
        self.weights = weights
        self.family = family
        self.architecture = architecture

    # -- what a subclass provides ----------------------------------------------------------------
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """(N, D) unnormalised image features of preprocessed ``pixels`` (N, 3, S, S)."""
        raise NotImplementedError

    def text_features(self, texts: list[str]) -> torch.Tensor:  # pragma: no cover - abstract
        """(N, D) unnormalised text features of at most :data:`TEXT_CHUNK` captions."""
        raise NotImplementedError

    def vision_tower(self) -> nn.Module:  # pragma: no cover - abstract
        """The modules that map pixels to the image embedding (what defenses may tune)."""
        raise NotImplementedError

    def text_info(self) -> str:
        """How captions are tokenised, for :meth:`preprocess_info`."""
        return type(self.tokenizer).__name__

    # -- the Encoder contract ----------------------------------------------------------------------
    def model_dtype(self) -> torch.dtype:
        """The dtype of the model's parameters (pixels are cast to it; embeddings come back float32)."""
        for p in self.model.parameters():
            return p.dtype
        return torch.float32

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        pixels = self.preprocess(x.to(self.device)).to(self.model_dtype())
        return F.normalize(self.image_features(pixels).float(), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) unit float32 embeddings of ``texts``, :data:`TEXT_CHUNK` captions per pass."""
        texts = check_texts(texts)
        parts = [self.text_features(texts[i : i + TEXT_CHUNK]).float() for i in range(0, len(texts), TEXT_CHUNK)]
        return F.normalize(torch.cat(parts), dim=-1)

    def tower(self, modality: str) -> nn.Module:
        self.check_modality(modality)
        return self.vision_tower()

    def preprocess_info(self) -> dict[str, Any]:
        return self.preprocess.info() | {"text": self.text_info()}

    def info(self) -> dict[str, Any]:
        return super().info() | {"family": self.family, "architecture": self.architecture, "embed_dim": self.embed_dim}
