"""An encoder whose embeddings of some modalities pass through calibration heads."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .base import Encoder


class CalibratedEncoder(Encoder):
    """Wraps a frozen encoder; ``heads[modality]`` maps its embedding to a calibrated one.

    The text tower is untouched: calibrated embeddings live in the same space as the frozen
    text "semantic centers". Outputs are re-normalised to unit length.
    """

    def __init__(self, base: Encoder, heads: Mapping[str, nn.Module]):
        super().__init__()
        self.base = base
        self.heads = nn.ModuleDict(dict(heads))
        self.name = base.name
        self.modalities = base.modalities
        self.embed_dim = base.embed_dim
        self.weights = base.weights
        self.eval()  # a wrapper of frozen parts is frozen too (nn.Module starts in training mode)

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        z = self.base.encode(modality, x, validate=False)  # the outer encode() checked x
        if modality in self.heads:
            z = torch.nn.functional.normalize(self.heads[modality](z), dim=-1)
        return z

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return self.base.encode_text(texts)

    def preprocess_info(self) -> dict[str, Any]:
        return self.base.preprocess_info()

    def info(self) -> dict[str, Any]:
        out = self.base.info()
        out["heads"] = sorted(self.heads)
        return out
