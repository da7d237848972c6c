"""Your own model as an Encoder: per-modality torch modules and a text encoder.

:class:`ModuleEncoder` wraps what a researcher already has -- a vision tower, an audio tower, a
text model -- into robustmm's Encoder contract, so every attack, defense, certificate and job runs
on it unchanged::

    enc = ModuleEncoder(
        {"image": vision_model},                       # raw (N, 3, H, W) in [0, 1] -> (N, D)
        preprocess={"image": image_preprocess(224)},   # differentiable resize + CLIP mean/std
        text=lambda texts: text_model(tokenizer(texts)),  # or tokenizer=..., text_model=...
        name="my-clip",
    )

Each tower receives the modality's *raw* domain (pixels in [0, 1], waveforms in [-1, 1], points in
[-1, 1]; see :mod:`robustmm.modalities`), after its optional ``preprocess`` module, which must be
differentiable (no PIL, no numpy) because attacks take gradients through it. Outputs are
L2-normalised here. A function that builds one is a model id: ``--model mypkg.models:build``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, RobustMMError
from ..modalities import CONTINUOUS_MODALITIES
from .base import Encoder, check_texts

__all__ = ["ModuleEncoder", "ImagePreprocess", "image_preprocess", "CLIP_MEAN", "CLIP_STD"]

#: the OpenAI CLIP normalisation, shared by open_clip's OpenAI and LAION checkpoints
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


class ImagePreprocess(nn.Module):
    """Differentiable image preprocessing: resize the shorter side to ``size`` (bicubic,
    antialiased), center-crop to a square, then ``(x - mean) / std`` per channel."""

    def __init__(self, size: int, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD):
        super().__init__()
        self.size = int(size)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = self.size
        out = (s, max(s, round(s * w / h))) if h <= w else (max(s, round(s * h / w)), s)
        if out != (h, w):
            x = F.interpolate(x, size=out, mode="bicubic", antialias=True, align_corners=False)
        top, left = (out[0] - s) // 2, (out[1] - s) // 2
        x = x[..., top: top + s, left: left + s]
        return (x - self.mean.to(x)) / self.std.to(x)


def image_preprocess(size: int = 224, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> ImagePreprocess:
    """The usual CLIP image preprocessing as a differentiable module (see :class:`ImagePreprocess`)."""
    return ImagePreprocess(size, mean, std)


def _embedding_of(out: Any) -> torch.Tensor:
    """The (N, D) tensor of a text model's output: a tensor, a tuple's first item, or a
    ``text_embeds`` / ``pooler_output`` attribute (Hugging Face outputs)."""
    if isinstance(out, torch.Tensor):
        return out
    for attr in ("text_embeds", "pooler_output"):
        if getattr(out, attr, None) is not None:
            return getattr(out, attr)
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise RobustMMError(f"the text model returned a {type(out).__name__}; return an (N, D) tensor "
                        "(or an output with text_embeds / pooler_output)")


class ModuleEncoder(Encoder):
    """An Encoder from per-modality torch modules and a text encoder.

    Args:
        towers: modality name (``image``, ``video``, ``audio``, ``depth``, ``thermal``,
            ``pointcloud``) -> module mapping a raw batch (N, *shape) to (N, D) embeddings.
        text: a callable ``list[str] -> (N, D)`` tensor; or leave it out and give ``tokenizer``
            (``list[str] -> tensor or dict of tensors``) and ``text_model`` (called with the
            tokens, as keywords when they are a dict).
        preprocess: optional modality -> differentiable module applied before the tower (e.g.
            :func:`image_preprocess`), recorded in results by its ``repr``.
        name, weights: what result records call the model and its weights.
        embed_dim: the embedding size (default: measured once by embedding the text ``"a"``).
    """

    def __init__(self, towers: Mapping[str, nn.Module], text: Callable[[list[str]], Any] | None = None, *,
                 tokenizer: Callable[[list[str]], Any] | None = None, text_model: Callable[..., Any] | None = None,
                 preprocess: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
                 name: str = "custom", weights: str = "", embed_dim: int | None = None):
        super().__init__()
        if not towers:
            raise RobustMMError("ModuleEncoder needs at least one modality tower, e.g. {'image': model}")
        for m, tower in towers.items():
            if m not in CONTINUOUS_MODALITIES:
                raise RobustMMError(f"ModuleEncoder: {m!r} is not a modality ({', '.join(CONTINUOUS_MODALITIES)})")
            if not callable(tower):
                raise RobustMMError(f"ModuleEncoder: the {m} tower is a {type(tower).__name__}, not a module")
        if (text is None) == (text_model is None):
            raise RobustMMError("ModuleEncoder needs exactly one text encoder: text=callable, or tokenizer= and text_model=")
        if text_model is not None and tokenizer is None:
            raise RobustMMError("ModuleEncoder: text_model= needs tokenizer= (or pass text=callable)")
        self.name, self.weights = str(name), str(weights)
        self.towers = nn.ModuleDict({m: t if isinstance(t, nn.Module) else _Call(t) for m, t in towers.items()})
        self.pre = nn.ModuleDict({m: p if isinstance(p, nn.Module) else _Call(p) for m, p in (preprocess or {}).items()})
        unknown = set(self.pre) - set(self.towers)
        if unknown:
            raise RobustMMError(f"ModuleEncoder: preprocess for {sorted(unknown)[0]!r}, which has no tower")
        self.modalities = tuple(self.towers)
        self.text_fn = text if isinstance(text, nn.Module) or text is None else _Call(text)
        self.text_model = text_model if isinstance(text_model, nn.Module) or text_model is None else _Call(text_model)
        object.__setattr__(self, "_tokenizer", tokenizer)
        self.embed_dim = int(embed_dim) if embed_dim is not None else int(self.encode_text(["a"]).shape[-1])

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        if modality in self.pre:
            x = self.pre[modality](x)
        out = self.towers[modality](x)
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise CheckpointError(f"{self.name}: the {modality} tower returned {shape}, expected (N, D) for N={x.shape[0]}")
        return F.normalize(out.float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        texts = check_texts(texts)
        if self.text_fn is not None:
            out = self.text_fn(texts)
        else:
            tokens = self._tokenizer(texts)
            if isinstance(tokens, Mapping):
                tokens = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in tokens.items()}
                out = self.text_model(**tokens)
            else:
                out = self.text_model(tokens.to(self.device) if isinstance(tokens, torch.Tensor) else tokens)
        emb = _embedding_of(out)
        if emb.dim() != 2 or emb.shape[0] != len(texts):
            raise CheckpointError(f"{self.name}: the text encoder returned {tuple(emb.shape)}, "
                                  f"expected (N, D) for N={len(texts)}")
        return F.normalize(emb.float(), dim=-1).to(self.device)

    def tower(self, modality: str) -> nn.Module:
        self.check_modality(modality)
        return nn.Sequential(self.pre[modality], self.towers[modality]) if modality in self.pre else self.towers[modality]

    def preprocess_info(self) -> dict[str, Any]:
        return {m: repr(p) for m, p in self.pre.items()}


class _Call(nn.Module):
    """A plain callable held as a module (so ModuleDict accepts it); it has no parameters."""

    def __init__(self, fn: Callable[..., Any]):
        super().__init__()
        self.fn = fn

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def extra_repr(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))
