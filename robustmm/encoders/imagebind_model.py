"""ImageBind's architecture in plain torch, with the parameter names and shapes of ``imagebind_huge.pth``.

Rebuilt from facebookresearch/ImageBind (``imagebind_model.py``, ``multimodal_preprocessors.py``,
``transformer.py``) so that ``ImageBindModel(cfg).load_state_dict(torch.load(path,
weights_only=True))`` is exact for the vision, text, audio, depth and thermal branches (the IMU
branch's keys are skipped). Names, per modality ``m``:

* ``modality_preprocessors.m``: ``cls_token`` (1, 1, D), ``pos_embedding_helper.pos_embed``
  (1, 1 + patches, D) and a patch stem -- vision ``rgbt_stem.proj.1`` (Conv3d, kernel (2, 14, 14),
  images repeated to 2 frames first), audio/thermal ``rgbt_stem.proj`` + ``rgbt_stem.norm_layer``,
  depth ``depth_stem.proj`` + ``depth_stem.norm_layer``; text ``token_embedding``, ``pos_embed``
  and the causal ``mask`` buffer (77, 77).
* ``modality_trunks.m``: ``pre_transformer_layer.0`` (a LayerNorm for vision only),
  ``blocks.i.{attn (nn.MultiheadAttention, bias_k/bias_v except vision and text), norm_1,
  mlp.fc1, mlp.fc2, norm_2}``; pre-norm blocks, GELU, LayerNorm eps 1e-6.
* ``modality_heads.m``: LayerNorm + class token + Linear (``0``, ``2``); text ``proj.0``/``proj.1``
  at the end-of-text token (the largest token id).
* ``modality_postprocessors.m.1.log_logit_scale``: text (learned), audio 20, depth 5, thermal 10.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["ImageBindConfig", "BranchConfig", "ImageBindModel", "IMAGEBIND_MODALITIES"]

IMAGEBIND_MODALITIES = ("vision", "text", "audio", "depth", "thermal")
_LN_EPS = 1e-6


@dataclass
class BranchConfig:
    """One modality branch: width, depth, heads, patch kernel/stride, input size."""

    embed_dim: int
    num_blocks: int
    num_heads: int
    kernel: int = 16
    stride: int = 16
    input_size: tuple[int, int] = (224, 224)


def _huge() -> dict[str, BranchConfig]:
    return {
        "vision": BranchConfig(1280, 32, 16, 14, 14),
        "text": BranchConfig(1024, 24, 16),
        "audio": BranchConfig(768, 12, 12, 16, 10, (128, 204)),
        "depth": BranchConfig(384, 12, 8),
        "thermal": BranchConfig(768, 12, 12),
    }


@dataclass
class ImageBindConfig:
    """``imagebind_huge`` by default; tests build the same structure with tiny branches."""

    branches: dict[str, BranchConfig] = field(default_factory=_huge)
    out_embed_dim: int = 1024
    video_frames: int = 2
    context_length: int = 77
    vocab_size: int = 49408

    @classmethod
    def from_dict(cls, d: dict) -> "ImageBindConfig":
        """From a JSON dict (``branches: {m: {embed_dim, num_blocks, num_heads, kernel, stride, input_size}}``)."""
        branches = _huge()
        for m, b in d.get("branches", {}).items():
            b = dict(b)
            if "input_size" in b:
                b["input_size"] = tuple(int(v) for v in b["input_size"])
            branches[m] = BranchConfig(**b)
        rest = {k: d[k] for k in ("out_embed_dim", "video_frames", "context_length", "vocab_size") if k in d}
        return cls(branches=branches, **rest)

    def to_dict(self) -> dict:
        """The JSON form read by :meth:`from_dict`."""
        return {"branches": {m: {**vars(b), "input_size": list(b.input_size)} for m, b in self.branches.items()},
                "out_embed_dim": self.out_embed_dim, "video_frames": self.video_frames,
                "context_length": self.context_length, "vocab_size": self.vocab_size}


class PatchStem(nn.Module):
    """``PatchEmbedGeneric``: ``proj`` (conv) then optional ``norm_layer``; (B, C, ...) -> (B, patches, D)."""

    def __init__(self, proj: nn.Module, norm_layer: nn.Module | None = None):
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        return self.norm_layer(x) if self.norm_layer is not None else x


class RepeatToFrames(nn.Module):
    """``PadIm2Video(pad_type="repeat")``: (B, C, H, W) -> (B, C, T, H, W); videos pass through."""

    def __init__(self, frames: int):
        super().__init__()
        self.frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.unsqueeze(2)
        return x.repeat(1, 1, self.frames, 1, 1) if x.shape[2] == 1 else x


class PosEmbedding(nn.Module):
    def __init__(self, tokens: int, dim: int):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * dim ** -0.5)


class TokenPreprocessor(nn.Module):
    """``RGBDTPreprocessor``: class token + patch tokens + learned positions."""

    def __init__(self, stem: PatchStem, stem_name: str, patches: int, dim: int):
        super().__init__()
        self.stem_name = stem_name
        setattr(self, stem_name, stem)
        self.pos_embedding_helper = PosEmbedding(1 + patches, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * dim ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = getattr(self, self.stem_name)(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.pos_embedding_helper.pos_embed


class TextPreprocessor(nn.Module):
    def __init__(self, vocab: int, context: int, dim: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, context, dim) * 0.01)
        self.register_buffer("mask", torch.full((context, context), float("-inf")).triu_(1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(ids) + self.pos_embed[:, : ids.shape[1]]


class Mlp(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """``BlockWithMasking``: x + attn(norm_1(x)); x + mlp(norm_2(x))."""

    def __init__(self, dim: int, heads: int, bias_kv: bool):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, bias=True, add_bias_kv=bias_kv, batch_first=True)
        self.norm_1, self.norm_2 = nn.LayerNorm(dim, eps=_LN_EPS), nn.LayerNorm(dim, eps=_LN_EPS)
        self.mlp = Mlp(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.norm_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.norm_2(x))


class Trunk(nn.Module):
    """``SimpleTransformer`` (batch-first here; the same parameters)."""

    def __init__(self, cfg: BranchConfig, pre_ln: bool, bias_kv: bool):
        super().__init__()
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(cfg.embed_dim, eps=_LN_EPS) if pre_ln else nn.Identity())
        self.blocks = nn.Sequential(*(Block(cfg.embed_dim, cfg.num_heads, bias_kv) for _ in range(cfg.num_blocks)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pre_transformer_layer(x)
        for blk in self.blocks:
            x = blk(x, mask)
        return x


class SelectElement(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


class TextHead(nn.Module):
    """``SelectEOSAndProject``: LayerNorm + Linear at the end-of-text position."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(dim, eps=_LN_EPS), nn.Linear(dim, out, bias=False))

    def forward(self, x: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
        return self.proj(x[torch.arange(x.shape[0], device=x.device), eos])


class LogitScale(nn.Module):
    def __init__(self, init: float, learnable: bool):
        super().__init__()
        value = torch.tensor(math.log(init))
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)


def _grid(size: tuple[int, int], kernel: int, stride: int) -> int:
    return ((size[0] - kernel) // stride + 1) * ((size[1] - kernel) // stride + 1)


class ImageBindModel(nn.Module):
    """The five ImageBind branches; :meth:`embed` returns unnormalised per-input embeddings."""

    def __init__(self, cfg: ImageBindConfig | None = None):
        super().__init__()
        cfg = cfg or ImageBindConfig()
        self.cfg = cfg
        b = cfg.branches
        v, a, d, t = b["vision"], b["audio"], b["depth"], b["thermal"]
        conv3d = nn.Conv3d(3, v.embed_dim, kernel_size=(cfg.video_frames, v.kernel, v.kernel),
                           stride=(cfg.video_frames, v.kernel, v.kernel), bias=False)

        def stem2d(c: BranchConfig) -> PatchStem:
            conv = nn.Conv2d(1, c.embed_dim, kernel_size=c.kernel, stride=c.stride, bias=False)
            return PatchStem(conv, nn.LayerNorm(c.embed_dim))

        self.modality_preprocessors = nn.ModuleDict({
            "vision": TokenPreprocessor(PatchStem(nn.Sequential(RepeatToFrames(cfg.video_frames), conv3d)), "rgbt_stem",
                                        _grid(v.input_size, v.kernel, v.stride), v.embed_dim),
            "text": TextPreprocessor(cfg.vocab_size, cfg.context_length, b["text"].embed_dim),
            "audio": TokenPreprocessor(stem2d(a), "rgbt_stem", _grid(a.input_size, a.kernel, a.stride), a.embed_dim),
            "depth": TokenPreprocessor(stem2d(d), "depth_stem", _grid(d.input_size, d.kernel, d.stride), d.embed_dim),
            "thermal": TokenPreprocessor(stem2d(t), "rgbt_stem", _grid(t.input_size, t.kernel, t.stride), t.embed_dim),
        })
        self.modality_trunks = nn.ModuleDict({m: Trunk(b[m], pre_ln=m == "vision", bias_kv=m not in ("vision", "text"))
                                              for m in IMAGEBIND_MODALITIES})
        out = cfg.out_embed_dim
        self.modality_heads = nn.ModuleDict({
            m: (TextHead(b[m].embed_dim, out) if m == "text" else
                nn.Sequential(nn.LayerNorm(b[m].embed_dim, eps=_LN_EPS), SelectElement(),
                              nn.Linear(b[m].embed_dim, out, bias=False)))
            for m in IMAGEBIND_MODALITIES})
        self.modality_postprocessors = nn.ModuleDict({
            "vision": nn.Identity(),
            "text": nn.Sequential(nn.Identity(), LogitScale(1 / 0.07, True)),
            "audio": nn.Sequential(nn.Identity(), LogitScale(20.0, False)),
            "depth": nn.Sequential(nn.Identity(), LogitScale(5.0, False)),
            "thermal": nn.Sequential(nn.Identity(), LogitScale(10.0, False)),
        })

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Tower input -> (N, out) embedding; 5-D audio / 6-D video inputs are (N, clips, ...) averaged
        over clips after normalisation, as ImageBind's ``forward`` does."""
        clips = x.dim() >= (6 if modality == "vision" else 5)
        n = x.shape[0]
        if clips:
            x = x.flatten(0, 1)
        if modality == "text":
            pre = self.modality_preprocessors["text"]
            tokens, eos, mask = pre(x), x.argmax(dim=-1), pre.mask[: x.shape[1], : x.shape[1]]
            z = self.modality_heads["text"](self.modality_trunks["text"](tokens, mask), eos)
        else:
            tokens = self.modality_preprocessors[modality](x.to(self.modality_trunks[modality].blocks[0].norm_1.weight.dtype))
            z = self.modality_heads[modality](self.modality_trunks[modality](tokens))
        z = nn.functional.normalize(z, dim=-1)
        return z.reshape(n, -1, z.shape[-1]).mean(1) if clips else z
