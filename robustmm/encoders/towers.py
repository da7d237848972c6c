"""Small trainable towers that map one raw modality into TinyBind's 384-d text space.

Each tower takes raw-domain input (see ``robustmm.modalities``), applies its own fixed
preprocessing (resizing, centring, a log-spectrogram for audio) and returns an unnormalised
(N, D) vector; :class:`~robustmm.encoders.tinybind.TinyBind` normalises it.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnknownNameError
from ..modalities import get_modality


def _conv_block(cin: int, cout: int, double: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU()]
    if double:
        layers += [nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU()]
    return nn.Sequential(*layers)


class ConvBackbone(nn.Module):
    """Strided CNN + global average pool: (N, C, H, W) -> (N, widths[-1]).

    The first block is a single strided conv (cheap at full resolution); later blocks are doubled.
    """

    def __init__(self, in_channels: int, widths: list[int]):
        super().__init__()
        blocks, c = [], in_channels
        for i, w in enumerate(widths):
            blocks.append(_conv_block(c, w, double=i > 0))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.out_dim = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).mean((-2, -1))


def _mlp(din: int, dout: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(din, hidden), nn.GELU(), nn.Linear(hidden, dout))


class ImageTower(nn.Module):
    """Images, depth and thermal maps: resize to ``input_size``, standardise, CNN, MLP."""

    def __init__(self, in_channels: int, widths: list[int], embed_dim: int, input_size: int,
                 mean: float = 0.5, std: float = 0.25, hidden: int = 512):
        super().__init__()
        self.input_size, self.mean, self.std = input_size, mean, std
        self.backbone = ConvBackbone(in_channels, widths)
        self.proj = _mlp(self.backbone.out_dim, embed_dim, hidden)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.backbone(self.preprocess(x)))


class VideoTower(ImageTower):
    """Video (N, T, 3, H, W): per-frame CNN, mean + max over time, MLP."""

    def __init__(self, in_channels: int, widths: list[int], embed_dim: int, input_size: int, **kw: Any):
        super().__init__(in_channels, widths, embed_dim, input_size, **kw)
        self.proj = _mlp(2 * self.backbone.out_dim, embed_dim, kw.get("hidden", 512))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[:2]
        f = self.backbone(self.preprocess(x.flatten(0, 1))).reshape(n, t, -1)
        return self.proj(torch.cat([f.mean(1), f.amax(1)], dim=-1))


class AudioTower(nn.Module):
    """Waveforms (N, L): log-magnitude STFT (differentiable), CNN over (freq, time), MLP."""

    def __init__(self, widths: list[int], embed_dim: int, n_fft: int = 256, hop: int = 64, hidden: int = 512):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.backbone = ConvBackbone(1, widths)
        self.proj = _mlp(self.backbone.out_dim, embed_dim, hidden)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, return_complex=True)
        mag = spec.real.square() + spec.imag.square()
        return (torch.log(mag + 1e-4) + 4.0).unsqueeze(1) / 4.0  # (N, 1, F, T), roughly unit scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.backbone(self.preprocess(x)))


class PointTower(nn.Module):
    """Point clouds (N, P, 6): PointNet -- shared per-point MLP, max + mean pooling, MLP."""

    def __init__(self, widths: list[int], embed_dim: int, in_features: int = 6, hidden: int = 512):
        super().__init__()
        layers, c = [], in_features
        for w in widths:
            layers += [nn.Linear(c, w), nn.GELU()]
            c = w
        self.point_mlp = nn.Sequential(*layers)
        self.proj = _mlp(2 * c, embed_dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.point_mlp(x)
        return self.proj(torch.cat([f.amax(1), f.mean(1)], dim=-1))


class SplatPointTower(nn.Module):
    """Point clouds (N, P, 6) -> a soft top-down raster -> CNN.

    Every point is splatted onto a ``grid`` x ``grid`` raster of the x-y plane with a Gaussian
    kernel, carrying its density, height (z) and colour; the raster goes through the same CNN as
    images. Splatting is smooth in every coordinate, so gradients reach each point's position and
    colour (the attack surface of a point cloud), and the CNN sees shapes the way it does in images.
    """

    def __init__(self, widths: list[int], embed_dim: int, grid: int = 32, sigma: float | None = None, hidden: int = 512):
        super().__init__()
        self.grid = grid
        self.sigma = sigma or 2.0 / grid
        self.register_buffer("centers", torch.linspace(-1, 1, grid), persistent=False)
        self.backbone = ConvBackbone(6, widths)
        self.proj = _mlp(self.backbone.out_dim, embed_dim, hidden)

    def rasterize(self, x: torch.Tensor) -> torch.Tensor:
        # separable Gaussian weights: (N, P, G) along x and along y
        kx = torch.exp(-((x[..., 0:1] - self.centers) ** 2) / (2 * self.sigma**2))
        ky = torch.exp(-((x[..., 1:2] - self.centers) ** 2) / (2 * self.sigma**2))
        feats = torch.cat([torch.ones_like(x[..., :1]), x[..., 2:6]], dim=-1)  # density, z, r, g, b
        # raster[n, c, i, j] = sum_p ky[n,p,i] * feats[n,p,c] * kx[n,p,j], as one batched matmul
        n, p, g = ky.shape
        c = feats.shape[-1]
        a = (ky.unsqueeze(-1) * feats.unsqueeze(-2)).reshape(n, p, g * c)
        raster = torch.bmm(a.transpose(1, 2), kx).reshape(n, g, c, g).permute(0, 2, 1, 3)
        density = raster[:, :1]
        means = raster[:, 1:] / (density + 1e-3)
        return torch.cat([torch.log1p(density), means, density.clamp(max=1.0)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.backbone(self.rasterize(x)))


def build_tower(modality: str, cfg: dict[str, Any], embed_dim: int) -> nn.Module:
    """Build the tower for ``modality`` from its JSON config block."""
    widths = list(cfg["widths"])
    hidden = int(cfg.get("hidden", 512))
    if modality == "video":  # image-like frame by frame: a per-frame CNN pooled over time
        return VideoTower(3, widths, embed_dim, int(cfg["input_size"]), hidden=hidden)
    if get_modality(modality).image_like:
        return ImageTower(int(cfg["in_channels"]), widths, embed_dim, int(cfg["input_size"]), hidden=hidden)
    if modality == "audio":
        return AudioTower(widths, embed_dim, int(cfg.get("n_fft", 256)), int(cfg.get("hop", 64)), hidden=hidden)
    if modality == "pointcloud":
        if cfg.get("type") == "splat":
            return SplatPointTower(widths, embed_dim, int(cfg.get("grid", 32)), hidden=hidden)
        return PointTower(widths, embed_dim, hidden=hidden)
    towers = ("image", "video", "audio", "depth", "thermal", "pointcloud")
    raise UnknownNameError("modality with a TinyBind tower", modality, towers)


def default_tower_config(widths_scale: float = 1.0) -> dict[str, dict[str, Any]]:
    """The TinyBind tower recipe; ``widths_scale`` changes every width (tinybind-alt uses 0.75)."""

    def w(ws: list[int]) -> list[int]:
        return [max(8, int(round(v * widths_scale))) for v in ws]

    return {
        "image": {"in_channels": 3, "widths": w([32, 64, 128, 192]), "input_size": 64},
        "video": {"in_channels": 3, "widths": w([32, 64, 128]), "input_size": 32},
        "audio": {"widths": w([24, 48, 96, 160]), "n_fft": 256, "hop": 128},
        "depth": {"in_channels": 1, "widths": w([24, 48, 96, 160]), "input_size": 64},
        "thermal": {"in_channels": 1, "widths": w([24, 48, 96, 160]), "input_size": 64},
        "pointcloud": {"type": "splat", "grid": 32, "widths": w([32, 64, 128])},
    }
