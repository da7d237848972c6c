"""The base of the encoder views attack wrappers run on (autocast, EOT's tied copies and draws).

A view embeds through ``base`` with some change in ``_encode``; everything else -- name,
modalities, embedding size, weights, text embedding, towers, info -- is the wrapped encoder's, so
runners and records see the same model.
"""
from __future__ import annotations

from typing import Any

import torch

from ..encoders.base import Encoder

__all__ = ["EncoderView"]


class EncoderView(Encoder):
    """An :class:`Encoder` that forwards everything but ``_encode`` to ``base``."""

    def __init__(self, base: Encoder):
        super().__init__()
        self.base = base
        self.name, self.modalities, self.embed_dim, self.weights = base.name, base.modalities, base.embed_dim, base.weights

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return self.base.encode(modality, x, validate=False)

    def encode_text(self, texts: Any) -> torch.Tensor:
        return self.base.encode_text(texts)

    def tower(self, modality: str) -> torch.nn.Module:
        return self.base.tower(modality)

    def info(self) -> dict[str, Any]:
        return self.base.info()
