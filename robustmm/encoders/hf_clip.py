"""Hugging Face ``transformers`` CLIP models behind the Encoder contract: ``hf:ID`` or ``hf:/dir``.

``hf:openai/clip-vit-base-patch32`` loads a ``CLIPModel``, its tokenizer and the image-processor
config (resize, crop size, mean/std, interpolation) from the local HF cache, or the hub when
online. With ``HF_HUB_OFFLINE=1`` or no network a missing model is a one-line
:class:`MissingWeightsError`, raised at once. ``hf:/path/to/dir`` loads a ``save_pretrained``
directory. Raw images in [0, 1] of any size are preprocessed differentiably
(:class:`~robustmm.encoders.preprocess.ImagePreprocessor`); tests wrap a tiny random
``CLIPModel`` with :meth:`HFClipEncoder.from_model`.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import MissingWeightsError, RobustMMError
from .clip_like import ClipLikeEncoder
from .hub import first_line, hub_access, hub_cache_dir
from .preprocess import ImagePreprocessor
from .registry import register_encoder

logger = logging.getLogger(__name__)

__all__ = ["HFClipEncoder", "load_hf_clip", "preprocessor_from_hf_config"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# PIL resample codes used in preprocessor_config.json -> torch interpolation modes
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def _features(out: Any) -> torch.Tensor:
    """transformers 5 returns a ModelOutput with the projected ``pooler_output``; 4.x a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def preprocessor_from_hf_config(cfg: Mapping[str, Any], image_size: int) -> ImagePreprocessor:
    """An :class:`ImagePreprocessor` equivalent to a ``CLIPImageProcessor`` config dict.

    ``size: {"shortest_edge": S}`` + ``crop_size`` = resize the shorter side to S, center-crop
    (CLIP); ``size: {"height", "width"}`` = squash to that size. The output must be the model's
    ``image_size`` (its position embeddings are fixed), which is also the default crop.
    """
    size = cfg.get("size") or {"shortest_edge": image_size}
    if isinstance(size, int):
        size = {"shortest_edge": size}
    crop = cfg.get("crop_size") or {"height": image_size, "width": image_size}
    if isinstance(crop, int):
        crop = {"height": crop, "width": crop}
    resample = cfg.get("resample", 3)
    interpolation = _RESAMPLE.get(int(resample), "bicubic") if resample is not None else "bicubic"
    if resample is not None and int(resample) not in _RESAMPLE:
        logger.warning("resample=%s has no differentiable torch equivalent; using bicubic", resample)
    mean = cfg.get("image_mean") or OPENAI_CLIP_MEAN
    std = cfg.get("image_std") or OPENAI_CLIP_STD
    if not cfg.get("do_normalize", True):
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if "shortest_edge" not in size:  # {"height", "width"}: squash (a crop after it is not modelled)
        out = (int(size["height"]), int(size["width"]))
        return ImagePreprocessor(out, mean, std, interpolation=interpolation, resize_mode="squash")
    out = (int(crop["height"]), int(crop["width"])) if cfg.get("do_center_crop", True) else (image_size, image_size)
    return ImagePreprocessor(
        out, mean, std, interpolation=interpolation, resize_mode="shortest", resize_size=int(size["shortest_edge"])
    )


class HFClipEncoder(ClipLikeEncoder):
    """A transformers ``CLIPModel`` with its tokenizer and raw-domain image preprocessing.

    Args:
        model: a ``CLIPModel`` (anything with ``get_image_features`` / ``get_text_features``).
        tokenizer: a transformers tokenizer (``CLIPTokenizer`` / ``AutoTokenizer``).
        preprocess: the differentiable equivalent of the model's image processor.
        name, weights: recorded in results.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        preprocess: ImagePreprocessor,
        *,
        name: str = "hf:custom",
        weights: str = "custom",
    ):
        super().__init__(model, preprocess, tokenizer, name=name, weights=weights, family="hf",
                         architecture=type(model).__name__)
        cfg = getattr(model, "config", None)
        self.embed_dim = int(getattr(cfg, "projection_dim", 0) or 0)
        text_cfg = getattr(cfg, "text_config", None)
        self.context_length = int(getattr(text_cfg, "max_position_embeddings", 77) or 77)
        if not self.embed_dim:
            with torch.no_grad():
                self.embed_dim = int(self.encode_text(["a"]).shape[-1])

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        tokenizer: Any,
        image_size: int | None = None,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
        *,
        name: str = "hf:custom",
        weights: str = "custom",
        interpolation: str = "bicubic",
    ) -> "HFClipEncoder":
        """Wrap an already-built ``CLIPModel`` (``image_size`` defaults to its vision config)."""
        if image_size is None:
            image_size = int(model.config.vision_config.image_size)
        pre = ImagePreprocessor(image_size, mean, std, interpolation=interpolation, resize_mode="shortest")
        return cls(model, tokenizer, pre, name=name, weights=weights)

    # -- the CLIP-like hooks -------------------------------------------------------------------
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=pixels))

    def text_features(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.context_length, return_tensors="pt")
        return _features(self.model.get_text_features(
            input_ids=batch["input_ids"].to(self.device), attention_mask=batch["attention_mask"].to(self.device)))

    def vision_tower(self) -> nn.Module:
        return nn.ModuleList([self.model.vision_model, self.model.visual_projection])

    def text_info(self) -> str:
        return f"{type(self.tokenizer).__name__}, max_length {self.context_length}"


def _is_path(spec: str) -> bool:
    return spec.startswith(("/", ".", "~")) or os.path.isdir(spec) or (os.sep == "\\" and ":" in spec[:3])


@register_encoder("hf", "transformers CLIPModel: hf:HUB_ID (e.g. hf:openai/clip-vit-base-patch32) or hf:/local/dir")
def load_hf_clip(
    spec: str,
    *,
    cache_dir: str | None = None,
    revision: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> HFClipEncoder:
    """Build an :class:`HFClipEncoder` from a hub id or a ``save_pretrained`` directory."""
    from transformers import AutoTokenizer, CLIPModel
    from transformers.image_processing_base import ImageProcessingMixin

    if not spec:
        raise RobustMMError("hf model name needs an id or directory: hf:openai/clip-vit-base-patch32 or hf:/path/to/dir")
    name = f"hf:{spec}"
    local = _is_path(spec)
    source = os.path.expanduser(spec) if local else spec
    if local and not os.path.isdir(source):
        raise MissingWeightsError(f"{name}: model directory not found: {source}")
    opts: dict[str, Any] = {"cache_dir": cache_dir, "revision": revision}

    with hub_access(allow_download=not local) as hub:
        opts["local_files_only"] = not hub.online
        where = source if local else f"the HF cache {hub_cache_dir(cache_dir)}"
        try:
            model = CLIPModel.from_pretrained(source, dtype=dtype, **opts)
        except (OSError, ValueError) as e:
            if local:
                raise MissingWeightsError(f"{name}: no loadable CLIPModel in {source}: {first_line(e)}") from None
            why = first_line(e) if hub.online else f"{hub.reason} and not in the local cache"
            raise MissingWeightsError(
                f"{name}: weights not available ({why}); download the repo {spec} "
                f"(e.g. `hf download {spec}`) into {where}, or use hf:/path/to/saved/dir"
            ) from None
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **opts)
        except (OSError, ValueError) as e:
            raise MissingWeightsError(f"{name}: tokenizer files not available in {where}: {first_line(e)}") from None
        image_size = int(model.config.vision_config.image_size)
        try:
            pp_cfg, _ = ImageProcessingMixin.get_image_processor_dict(source, **opts)
        except (OSError, ValueError) as e:
            logger.warning("%s: no image processor config (%s); using CLIP defaults at %d px", name, first_line(e), image_size)
            pp_cfg = {}
    preprocess = preprocessor_from_hf_config(pp_cfg, image_size)
    if preprocess.size != (image_size, image_size):
        logger.warning("%s: processor crop %s differs from the model's image_size %d", name, preprocess.size, image_size)
    logger.info("loaded %s (%s)", name, "local directory" if local else "hub cache")
    return HFClipEncoder(model, tokenizer, preprocess, name=name, weights=source if local else spec)
