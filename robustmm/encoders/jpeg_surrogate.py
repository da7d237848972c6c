"""A differentiable approximation of JPEG (Shin & Song, "JPEG-resistant adversarial images", 2017),
used as the BPDA stand-in of the ``jpeg`` input defense.

Each 8x8 block of each channel (RGB converted to YCbCr as in JPEG) goes through the 2-D DCT, is
divided by the IJG quantisation table at quality q, rounded with the cubic soft rounding
``r(z) = round(z) + (z - round(z))**3`` (the value is close to hard rounding; the gradient
``3 (z - round(z))**2`` is small for coefficients sitting on a quantisation level, which JPEG would
snap back, and large for those it would not), multiplied back and inverted. Chroma subsampling is
left out. Inputs are values in [0, 1] with 1 or 3 channels and any H, W (edges are padded to a
multiple of 8 by replication and cropped after).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: IJG base quantisation tables (ITU T.81, Annex K), luminance and chrominance
_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
         14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
         49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_CHROMA = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
           47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32


def quant_table(quality: int, chroma: bool = False) -> torch.Tensor:
    """The 8x8 IJG table scaled to ``quality`` (1..100) as libjpeg does."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    base = torch.tensor(_CHROMA if chroma else _LUMA, dtype=torch.float64)
    return ((base * scale + 50) // 100).clamp(1, 255).reshape(8, 8)


def _dct_matrix(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    k = torch.arange(8, dtype=torch.float64)
    m = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / 16) * math.sqrt(2 / 8)
    m[0] /= math.sqrt(2)
    return m.to(dtype=dtype, device=device)


def _soft_round(z: torch.Tensor) -> torch.Tensor:
    r = torch.round(z).detach()
    return r + (z - r) ** 3


_TO_YCC = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def soft_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Differentiable JPEG of ``x`` (..., C, H, W) with C in {1, 3}, values in [0, 1]."""
    shape = x.shape
    imgs = x.reshape(-1, *shape[-3:]) * 255.0
    n, c, h, w = imgs.shape
    ph, pw = (-h) % 8, (-w) % 8
    if ph or pw:
        imgs = F.pad(imgs, (0, pw, 0, ph), mode="replicate")
    to_ycc = _TO_YCC.to(imgs)
    if c == 3:
        imgs = torch.einsum("ij,njhw->nihw", to_ycc, imgs)
        imgs = imgs + torch.tensor([0.0, 128.0, 128.0], dtype=imgs.dtype, device=imgs.device)[None, :, None, None]
    hh, ww = imgs.shape[-2:]
    blocks = imgs.reshape(n, c, hh // 8, 8, ww // 8, 8).permute(0, 1, 2, 4, 3, 5) - 128.0
    d = _dct_matrix(imgs.dtype, imgs.device)
    coef = d @ blocks @ d.T
    tables = torch.stack([quant_table(quality, chroma=(i > 0 and c == 3)) for i in range(c)]).to(imgs)
    tables = tables[None, :, None, None]
    coef = _soft_round(coef / tables) * tables
    out = (d.T @ coef @ d + 128.0).permute(0, 1, 2, 4, 3, 5).reshape(n, c, hh, ww)
    if c == 3:
        out = out - torch.tensor([0.0, 128.0, 128.0], dtype=out.dtype, device=out.device)[None, :, None, None]
        out = torch.einsum("ij,njhw->nihw", torch.linalg.inv(to_ycc.double()).to(out), out)
    return (out[..., :h, :w] / 255.0).reshape(shape)
