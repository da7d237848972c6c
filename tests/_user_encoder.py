"""A user's own tiny model, named in tests as ``_user_encoder:build`` (module:function).

Image, audio and point-cloud towers with random fixed weights (no global RNG touched), and a
character-trigram text encoder: tiny, offline and deterministic.
"""
from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F
from torch import nn

from robustmm.encoders import ModuleEncoder, image_preprocess

DIM = 32


def _init(module: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return module


class AudioTower(nn.Module):
    """Any-length waveform -> 128 pooled absolute amplitudes -> linear."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(128, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool1d(x.abs()[:, None], 128)[:, 0])


class PointTower(nn.Module):
    """(N, P, 6) points -> per-point MLP, max-pooled."""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x).amax(dim=1)


def trigram_text(texts: list[str]) -> torch.Tensor:
    """Hashed character trigrams -> a fixed random projection (the "text model")."""
    out = torch.zeros(len(texts), 256)
    for i, t in enumerate(texts):
        t = f"  {t.lower()} "
        for j in range(len(t) - 2):
            out[i, zlib.crc32(t[j: j + 3].encode()) % 256] += 1.0
    proj = torch.randn(256, DIM, generator=torch.Generator().manual_seed(7))
    return out @ proj


def build(**kw) -> ModuleEncoder:
    """The user's model: image (16 px), audio and point-cloud towers, trigram text."""
    towers = {
        "image": _init(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, DIM)), 1),
        "audio": _init(AudioTower(), 2),
        "pointcloud": _init(PointTower(), 3),
    }
    return ModuleEncoder(towers, text=trigram_text, preprocess={"image": image_preprocess(16)}, name="user-tiny")
