"""``imagebind`` / ``imagebind:PATH``: the official ImageBind (huge) checkpoint behind the Encoder contract.

The architecture is this project's own (:mod:`robustmm.encoders.imagebind_model`) with the
official parameter names; ``imagebind_huge.pth`` is read with ``torch.load(weights_only=True)``
and loaded with ``strict=True`` (IMU keys skipped). Without a path the file is looked for at
``$ROBUSTMM_IMAGEBIND``, ``~/.cache/robustmm/imagebind_huge.pth`` and
``.checkpoints/imagebind_huge.pth`` (where the official code downloads it). A ``PATH.json`` next to
the file describes a non-huge variant (:meth:`ImageBindConfig.to_dict`). Text uses the
OpenAI CLIP BPE (ImageBind ships the same ``bpe_simple_vocab_16e6``), through open_clip's
tokenizer, 77 tokens.

Modalities and preprocessing: image (Resize 224 bicubic + center crop + CLIP mean/std, 8-bit PIL
semantics), video (2-frame clips of the vision trunk, :class:`ImageBindVideo`), audio (Kaldi
fbank, 3 clips of 2 s, :class:`~robustmm.encoders.audio_features.ImageBindAudio`), depth and
thermal (:mod:`robustmm.encoders.imagebind_preprocess`; their recipes are unpublished and marked
unverified there).
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, MissingWeightsError
from .audio_features import ImageBindAudio
from .base import Encoder, check_texts
from .bind_checkpoint import load_exact, read_weights
from .bind_preprocess import OPENAI_MEAN, OPENAI_STD
from .hub import first_line
from .imagebind_model import ImageBindConfig, ImageBindModel
from .imagebind_preprocess import ImageBindDepth, ImageBindThermal, ImageBindVideo
from .preprocess import ImagePreprocessor
from .registry import register_encoder

logger = logging.getLogger(__name__)

__all__ = ["ImageBindEncoder", "load_imagebind", "default_imagebind_paths", "open_clip_tokenizer"]

_BRANCH = {"image": "vision", "video": "vision", "audio": "audio", "depth": "depth", "thermal": "thermal"}


def default_imagebind_paths() -> list[Path]:
    """Where ``imagebind`` (no path) looks for ``imagebind_huge.pth``, in order."""
    env = os.environ.get("ROBUSTMM_IMAGEBIND")
    paths = [Path(env).expanduser()] if env else []
    return paths + [Path("~/.cache/robustmm/imagebind_huge.pth").expanduser(), Path(".checkpoints/imagebind_huge.pth")]


def open_clip_tokenizer(context_length: int = 77) -> Callable[[list[str]], torch.Tensor]:
    """OpenAI CLIP BPE tokenizer (sot ... eot, zero padded) -> (N, context_length) int64."""
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer(context_length=context_length)
    return lambda texts: tok(texts, context_length=context_length)


class ImageBindEncoder(Encoder):
    """ImageBind's image, video, audio, depth and thermal branches with its text branch.

    Args:
        model: an :class:`ImageBindModel` with loaded weights.
        tokenizer: texts -> (N, L) token ids (end-of-text = the largest id).
        video_clips: clips per video (official: 5); ``depth_range_m``: metres of raw depth 0;
        ``audio_input_rate``: the raw waveforms' rate when not 16 kHz (resampled differentiably).
    """

    deterministic = True  # eval-mode encode draws nothing: a handed-back embedding equals a fresh one

    modalities = ("image", "video", "audio", "depth", "thermal")

    def __init__(self, model: ImageBindModel, tokenizer: Callable[[list[str]], torch.Tensor], *,
                 video_clips: int = 5, depth_range_m: float = 10.0, audio_input_rate: int | None = None,
                 name: str = "imagebind", weights: str = "custom"):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        b = model.cfg.branches
        img = b["vision"].input_size[0]
        self.preprocess = nn.ModuleDict({
            "image": ImagePreprocessor(img, OPENAI_MEAN, OPENAI_STD, interpolation="bicubic", resize_mode="shortest"),
            "video": ImageBindVideo(img, clips=video_clips, frames_per_clip=model.cfg.video_frames),
            "audio": ImageBindAudio(num_mel_bins=b["audio"].input_size[0], target_length=b["audio"].input_size[1],
                                    input_rate=audio_input_rate),
            "depth": ImageBindDepth(b["depth"].input_size[0], depth_range_m=depth_range_m),
            "thermal": ImageBindThermal(b["thermal"].input_size[0]),
        })
        self.embed_dim = int(model.cfg.out_embed_dim)
        self.name, self.weights = name, weights

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess[modality](x.to(self.device).float())
        return F.normalize(self.model.embed(_BRANCH[modality], x).float(), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        ids = self.tokenizer(check_texts(texts)).to(self.device)
        return F.normalize(self.model.embed("text", ids).float(), dim=-1)

    def tower(self, modality: str) -> nn.Module:
        self.check_modality(modality)
        br = _BRANCH[modality]
        m = self.model
        return nn.ModuleList([m.modality_preprocessors[br], m.modality_trunks[br], m.modality_heads[br]])

    def preprocess_info(self) -> dict[str, Any]:
        return {m: p.info() for m, p in self.preprocess.items() if hasattr(p, "info")} | {"text": "CLIP BPE, 77 tokens"}

    def info(self) -> dict[str, Any]:
        return super().info() | {"family": "imagebind", "embed_dim": self.embed_dim}


@register_encoder("imagebind",
                  "ImageBind huge from imagebind_huge.pth: imagebind (default paths) or imagebind:/path/imagebind_huge.pth")
def load_imagebind(spec: str, *, video_clips: int = 5, depth_range_m: float = 10.0, audio_input_rate: int | None = None,
                   config: ImageBindConfig | None = None) -> ImageBindEncoder:
    """Build an :class:`ImageBindEncoder` from ``imagebind_huge.pth`` (``config``: tests' tiny variant)."""
    name = f"imagebind:{spec}" if spec else "imagebind"
    if spec:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"{name}: checkpoint not found: {path}")
    else:
        found = [p for p in default_imagebind_paths() if p.is_file()]
        if not found:
            where = ", ".join(str(p) for p in default_imagebind_paths())
            raise MissingWeightsError(
                f"{name}: imagebind_huge.pth not found (looked in {where}); download "
                "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth to ~/.cache/robustmm/ or use imagebind:/path"
            )
        path = found[0]
    sidecar = path.with_suffix(".json")
    if config is None and sidecar.is_file():  # a non-huge variant describes itself (tests' tiny models)
        try:
            config = ImageBindConfig.from_dict(json.loads(sidecar.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as e:
            raise CheckpointError(f"{name}: {sidecar} is not an ImageBind config: {first_line(e)}") from None
    sd = read_weights(path)
    sd = {k: v for k, v in sd.items() if ".imu." not in f".{k}."}
    model = ImageBindModel(config)
    load_exact(model, sd, f"{name} ({path})")
    tokenizer = open_clip_tokenizer(model.cfg.context_length)
    logger.info("loaded %s from %s", name, path)
    return ImageBindEncoder(model, tokenizer, video_clips=video_clips, depth_range_m=depth_range_m,
                            audio_input_rate=audio_input_rate, name=name, weights=str(path))
