"""LanguageBind's towers in plain torch, with the parameter names and shapes of its checkpoints.

LanguageBind (PKU-YuanGroup) stores each modality as a CLIP-style model: ``text_model``,
``vision_model``, ``visual_projection``, ``text_projection`` and ``logit_scale``, written by the
transformers 4.3x CLIP code it forked. This module rebuilds that layout so that
``LanguageBindModel(cfg).load_state_dict(checkpoint)`` is exact, without the package (its media
imports need torchaudio/pytorchvideo) and without depending on how a given transformers release
nests its own CLIP modules (``CLIPTextModel`` dropped the ``text_model`` level in transformers 5):

* pre-norm transformer layers ``self_attn.{q,k,v,out}_proj``, ``layer_norm1``, ``mlp.fc1/fc2``,
  ``layer_norm2``; for video, per layer also ``temporal_embedding`` (1, T, D), ``temporal_attn``
  and ``temporal_layer_norm1`` (attention across the T frames of each patch position, before
  the spatial attention, as in ``modeling_video.py``);
* vision embeddings ``class_embedding``, ``patch_embedding`` (Conv2d, or Conv3d with a
  per-frame class embedding (T, D) for the ``vl_new`` video variant), ``position_embedding``
  over a (possibly non-square) patch grid -- audio spectrograms are 112 x 1036;
* ``pre_layrnorm`` (sic), ``post_layernorm``; the pooled output is the class token, averaged over
  frames for video; the text tower pools at the first end-of-text token.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError

__all__ = ["TowerConfig", "LanguageBindModel", "VisionTransformer", "TextTransformer"]

_ACTS = {"quick_gelu": lambda x: x * torch.sigmoid(1.702 * x), "gelu": F.gelu,
         "gelu_new": lambda x: F.gelu(x, approximate="tanh")}


@dataclass
class TowerConfig:
    """The fields of a LanguageBind ``text_config`` / ``vision_config`` the towers use."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    # vision
    image_size: tuple[int, int] = (224, 224)
    patch_size: int = 14
    num_channels: int = 3
    add_time_attn: bool = False
    num_frames: int = 1
    embeddings_3d: bool = False
    tube_size: int = 1
    # text
    vocab_size: int = 49408
    max_position_embeddings: int = 77
    eos_token_id: int = 49407
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TowerConfig":
        """Read an HF config sub-dict; audio towers take their grid from ``num_mel_bins`` x ``target_length``."""
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k not in ("image_size", "extra")}
        cfg = cls(**known, extra=dict(d))
        size = d.get("image_size", 224)
        if d.get("num_mel_bins") and d.get("target_length"):
            size = (int(d["num_mel_bins"]), int(d["target_length"]))
        cfg.image_size = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
        cfg.embeddings_3d = bool(d.get("embeddings_3d", d.get("clip_type") == "vl_new" and cfg.add_time_attn))
        if cfg.hidden_act not in _ACTS:
            raise CheckpointError(f"unsupported hidden_act {cfg.hidden_act!r} (known: {', '.join(_ACTS)})")
        return cfg

    @property
    def grid(self) -> tuple[int, int]:
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size


class Attention(nn.Module):
    """Multi-head attention with CLIP's projection names."""

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        d = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.heads, d // self.heads).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(y.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.act = _ACTS[cfg.hidden_act]
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Layer(nn.Module):
    """A pre-norm CLIP layer; with ``add_time_attn`` a temporal attention block runs first."""

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        d = cfg.hidden_size
        self.self_attn, self.mlp = Attention(cfg), MLP(cfg)
        self.layer_norm1 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.layer_norm2 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.t = cfg.num_frames if cfg.add_time_attn else 0
        if self.t:
            self.temporal_embedding = nn.Parameter(torch.randn(1, cfg.num_frames, d) * d ** -0.5)
            self.temporal_attn = Attention(cfg)
            self.temporal_layer_norm1 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        if self.t:
            bt, n, d = x.shape
            t = self.t
            h = x.reshape(bt // t, t, n, d).transpose(1, 2).reshape(-1, t, d)  # (b n) t d
            if t != 1:
                h = h + self.temporal_embedding[:, :t]
            h = h + self.temporal_attn(self.temporal_layer_norm1(h))
            x = h.reshape(bt // t, n, t, d).transpose(1, 2).reshape(bt, n, d)
        x = x + self.self_attn(self.layer_norm1(x), causal=causal)
        return x + self.mlp(self.layer_norm2(x))


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, causal=causal)
        return x


class VisionEmbeddings(nn.Module):
    """Class token + patches + learned positions; ``forward((B*T, C, H, W), T)``."""

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        d, p = cfg.hidden_size, cfg.patch_size
        self.three_d = cfg.embeddings_3d
        self.num_frames = cfg.num_frames
        if self.three_d:
            self.class_embedding = nn.Parameter(torch.randn(cfg.num_frames // cfg.tube_size, d))
            k = (cfg.tube_size, p, p)
            self.patch_embedding: nn.Module = nn.Conv3d(cfg.num_channels, d, kernel_size=k, stride=k, bias=False)
        else:
            self.class_embedding = nn.Parameter(torch.randn(d))
            self.patch_embedding = nn.Conv2d(cfg.num_channels, d, kernel_size=p, stride=p, bias=False)
        gh, gw = cfg.grid
        self.position_embedding = nn.Embedding(gh * gw + 1, d)

    def forward(self, x: torch.Tensor, t: int = 1) -> torch.Tensor:
        x = x.to(self.patch_embedding.weight.dtype)
        if self.three_d:
            b = x.shape[0] // t
            y = self.patch_embedding(x.reshape(b, t, *x.shape[1:]).transpose(1, 2))  # b d t' h w
            y = y.flatten(3).permute(0, 2, 3, 1)  # b t' hw d
            cls = self.class_embedding[None, :, None, :].expand(b, -1, -1, -1)
            y = torch.cat([cls, y], dim=2) + self.position_embedding.weight
            return y.flatten(0, 1)
        y = self.patch_embedding(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(y.shape[0], 1, -1)
        return torch.cat([cls, y], dim=1) + self.position_embedding.weight


class VisionTransformer(nn.Module):
    """``vision_model``: (B, T, C, H, W) or (B, C, H, W) model input -> pooled (B, D)."""

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = VisionEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.encoder = TransformerEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[0], (x.shape[1] if x.dim() == 5 else 1)
        if x.dim() == 5:
            x = x.flatten(0, 1)
        h = self.encoder(self.pre_layrnorm(self.embeddings(x, t)))
        pooled = self.post_layernorm(h[:, 0])
        return pooled.reshape(b, -1, pooled.shape[-1]).mean(1)


class TextEmbeddings(nn.Module):
    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(ids) + self.position_embedding.weight[: ids.shape[1]]


class TextTransformer(nn.Module):
    """``text_model``: token ids (B, L) -> pooled (B, D) at the first end-of-text token (causal); with
    the pre-2023 ``eos_token_id = 2`` of old CLIP configs at the largest id, as transformers does."""

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.eos_token_id = int(cfg.eos_token_id)
        self.embeddings = TextEmbeddings(cfg)
        self.encoder = TransformerEncoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.final_layer_norm(self.encoder(self.embeddings(ids), causal=True))
        if self.eos_token_id == 2:  # configs saved before transformers#24773: the legacy rule, the largest id
            pos = ids.argmax(1)
        else:
            is_eos = ids == self.eos_token_id
            pos = torch.where(is_eos.any(1), is_eos.int().argmax(1), ids.argmax(1))
        return h[torch.arange(h.shape[0], device=h.device), pos]


class LanguageBindModel(nn.Module):
    """One LanguageBind checkpoint: a modality tower and the text tower, each with its projection."""

    def __init__(self, text: TowerConfig, vision: TowerConfig, projection_dim: int):
        super().__init__()
        self.text_model = TextTransformer(text)
        self.vision_model = VisionTransformer(vision)
        self.visual_projection = nn.Linear(vision.hidden_size, projection_dim, bias=False)
        self.text_projection = nn.Linear(text.hidden_size, projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "LanguageBindModel":
        """Build from a checkpoint's ``config.json`` dict (``text_config``, ``vision_config``, ``projection_dim``)."""
        try:
            text = TowerConfig.from_dict(config.get("text_config") or config["text_config_dict"])
            vision = TowerConfig.from_dict(config.get("vision_config") or config["vision_config_dict"])
            dim = int(config.get("projection_dim", 768))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"not a LanguageBind config.json ({type(e).__name__}: {e})") from None
        return cls(text, vision, dim)

    def encode_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """Model input -> projected (unnormalised) embedding."""
        return self.visual_projection(self.vision_model(pixels))

    def encode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids -> projected (unnormalised) embedding."""
        return self.text_projection(self.text_model(ids))
