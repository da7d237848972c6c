"""open_clip models behind the Encoder contract: ``open_clip:ARCH@TAG``.

Names (the part after ``open_clip:``):

* ``ViT-B-32@laion2b_s34b_b79k`` -- an open_clip architecture with a pretrained tag; the weights
  come from the local HF cache, or the hub when online (``HF_HUB_OFFLINE=1`` or no network: a
  one-line :class:`MissingWeightsError` saying what to download, never a 20 s retry loop).
* ``ViT-B-32@none`` -- random initialisation (benchmarks, tests; no download at all).
* ``ViT-B-32@/path/to/checkpoint.safetensors`` -- a local checkpoint (``.pt``/``.bin``/``.pth``
  are read with ``torch.load(weights_only=True)`` only).

The encoder takes raw images in [0, 1] of any size and applies the checkpoint's own eval
preprocessing (size, mean/std, interpolation, resize mode) differentiably, see
:class:`~robustmm.encoders.preprocess.ImagePreprocessor`. Tests and custom configs build a model
object themselves and wrap it with :meth:`OpenClipEncoder.from_model`.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, MissingWeightsError, RobustMMError, UnknownNameError
from .clip_like import ClipLikeEncoder
from .hub import HubMode, first_line, hub_access, hub_cache_dir
from .preprocess import ImagePreprocessor
from .registry import register_encoder

logger = logging.getLogger(__name__)

__all__ = ["OpenClipEncoder", "load_open_clip", "parse_open_clip_name", "preprocessor_from_open_clip_cfg"]

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
NO_WEIGHTS = ("none", "random")


def _open_clip():
    """Import the ``open_clip`` package (this module shadows its name inside the package only)."""
    import open_clip

    return open_clip


def preprocessor_from_open_clip_cfg(cfg: Mapping[str, Any]) -> ImagePreprocessor:
    """An :class:`ImagePreprocessor` from an open_clip preprocess config dict (``PreprocessCfg``)."""
    fill = float(cfg.get("fill_color", 0) or 0) / 255.0  # open_clip pads with an 8-bit value
    return ImagePreprocessor(
        cfg.get("size", 224),
        cfg.get("mean"),
        cfg.get("std"),
        interpolation="bilinear" if cfg.get("interpolation") == "bilinear" else "bicubic",
        resize_mode=cfg.get("resize_mode", "shortest") or "shortest",
        fill=fill,
    )


def parse_open_clip_name(spec: str) -> tuple[str, str]:
    """Split ``ARCH@TAG`` into (arch, tag); a missing ``@TAG`` is an error listing the options."""
    arch, sep, tag = spec.partition("@")
    arch, tag = arch.strip(), tag.strip()
    if not arch:
        raise RobustMMError(
            "open_clip model name needs an architecture: open_clip:ARCH@TAG, e.g. open_clip:ViT-B-32@laion2b_s34b_b79k"
        )
    if not sep or not tag:
        tags = _open_clip().list_pretrained_tags_by_model(arch)
        raise RobustMMError(
            f"open_clip:{arch} needs a weights tag: open_clip:{arch}@TAG with TAG one of "
            f"{', '.join(tags) or '(no known tags)'}, 'none' for random init, or a checkpoint path"
        )
    return arch, tag


class OpenClipEncoder(ClipLikeEncoder):
    """An open_clip CLIP model (image + text towers) with differentiable raw-domain preprocessing.

    Args:
        model: an open_clip ``CLIP`` / ``CustomTextCLIP`` (anything with ``encode_image`` and
            ``encode_text``).
        preprocess: the image preprocessing of the weights.
        tokenizer: callable ``list[str] -> LongTensor (N, context_length)``.
        name, weights: recorded in results (``open_clip:ARCH@TAG`` and the tag/path).
        architecture: the open_clip architecture name (``custom`` for hand-built configs).
    """

    def __init__(
        self,
        model: nn.Module,
        preprocess: ImagePreprocessor,
        tokenizer: Callable[[Sequence[str]], torch.Tensor],
        *,
        name: str = "open_clip:custom",
        weights: str = "",
        architecture: str = "custom",
    ):
        super().__init__(model, preprocess, tokenizer, name=name, weights=weights, family="open_clip",
                         architecture=architecture)
        self.embed_dim = self._infer_embed_dim()

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        preprocess_cfg: Mapping[str, Any] | None = None,
        *,
        tokenizer: Callable[[Sequence[str]], torch.Tensor] | None = None,
        name: str = "open_clip:custom",
        weights: str = "custom",
        architecture: str = "custom",
    ) -> "OpenClipEncoder":
        """Wrap an already-built open_clip model (e.g. a tiny random config in tests).

        ``preprocess_cfg`` defaults to the one attached to the model (``model.visual.preprocess_cfg``
        or open_clip's defaults with the tower's image size); ``tokenizer`` to open_clip's CLIP BPE
        ``SimpleTokenizer`` at the model's context length.
        """
        oc = _open_clip()
        cfg = asdict(_preprocess_defaults())
        cfg.update(dict(oc.get_model_preprocess_cfg(model)) if preprocess_cfg is None else dict(preprocess_cfg))
        visual = getattr(model, "visual", None)
        if preprocess_cfg is None or "size" not in preprocess_cfg:
            size = getattr(visual, "image_size", None)
            if size is not None:
                cfg["size"] = size
        if tokenizer is None:
            ctx = int(getattr(model, "context_length", 0) or getattr(getattr(model, "text", None), "context_length", 77))
            tokenizer = oc.SimpleTokenizer(context_length=ctx)
        return cls(model, preprocessor_from_open_clip_cfg(cfg), tokenizer, name=name, weights=weights,
                   architecture=architecture)

    def _infer_embed_dim(self) -> int:
        visual = getattr(self.model, "visual", None)
        dim = getattr(visual, "output_dim", None)
        if isinstance(dim, int) and dim > 0:
            return dim
        with torch.no_grad():
            return int(self.encode_text(["a"]).shape[-1])

    # -- the CLIP-like hooks -------------------------------------------------------------------
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def text_features(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))

    def vision_tower(self) -> nn.Module:
        return self.model.visual

    def text_info(self) -> str:
        ctx = getattr(self.tokenizer, "context_length", None)
        return f"open_clip {type(self.tokenizer).__name__}" + (f", context_length {ctx}" if ctx else "")


def _preprocess_defaults():
    from open_clip.transform import PreprocessCfg

    return PreprocessCfg()


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No pretrained weights loaded")


@contextlib.contextmanager
def _quiet_random_init():
    """open_clip warns "initialized randomly" on the root logger; we load the weights right after."""
    flt = _DropRandomInitWarning()
    root = logging.getLogger()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def _missing_tag(arch: str, tag: str, hf_hub: str, cache_dir: str | None, reason: str) -> MissingWeightsError:
    repo_id, file = os.path.split(hf_hub)
    file = file or "open_clip_model.safetensors"
    what, cmd = f"{file} from hf.co/{repo_id}", f"hf download {repo_id} {file}"
    return MissingWeightsError(
        f"open_clip:{arch}@{tag}: pretrained weights not available ({reason}); download {what} "
        f"(e.g. `{cmd}`) into the HF cache {hub_cache_dir(cache_dir)}, or use open_clip:{arch}@/path/to/checkpoint.safetensors"
    )


def _resolve_tag(arch: str, tag: str, cache_dir: str | None) -> tuple[str, dict[str, Any]]:
    """Local path of the checkpoint of a pretrained tag (downloading only when online)."""
    oc = _open_clip()
    cfg = oc.get_pretrained_cfg(arch, tag)
    if not cfg:
        known = oc.list_pretrained_tags_by_model(arch)
        raise UnknownNameError(f"pretrained tag of open_clip:{arch} (or checkpoint path)", tag, known)
    if cfg.get("file"):
        return str(cfg["file"]), cfg
    hf_hub = cfg.get("hf_hub", "")
    if not hf_hub:  # all tags of open_clip 3.x have an hf_hub entry; URL-only tags are legacy
        raise MissingWeightsError(f"open_clip:{arch}@{tag}: no hub entry for this tag; download {cfg.get('url')} "
                                  f"and use open_clip:{arch}@/path/to/file")
    with hub_access() as hub:
        try:
            path = oc.download_pretrained({"hf_hub": hf_hub}, cache_dir=cache_dir)
        except Exception as e:  # noqa: BLE001 - every failure here means "not available"
            reason = first_line(e) if hub.online else f"{hub.reason} and not in the local cache"
            raise _missing_tag(arch, tag, hf_hub, cache_dir, reason) from None
    if not path:
        raise _missing_tag(arch, tag, hf_hub, cache_dir, "not found")
    return str(path), cfg


def _load_weights(model: nn.Module, path: str, name: str) -> None:
    """Load a local checkpoint strictly (safetensors, or torch.load(weights_only=True))."""
    oc = _open_clip()
    if not os.path.isfile(path):
        raise MissingWeightsError(f"{name}: checkpoint file not found: {path}")
    if not path.endswith(CHECKPOINT_SUFFIXES):
        raise CheckpointError(
            f"{name}: unsupported checkpoint format {Path(path).suffix!r} (use one of {', '.join(CHECKPOINT_SUFFIXES)})"
        )
    try:
        oc.load_checkpoint(model, path, strict=True, weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt file, pickle refused, key/shape mismatch
        raise CheckpointError(f"{name}: cannot load checkpoint {path}: {type(e).__name__}: {first_line(e)}") from None


@register_encoder("open_clip",
                  "open_clip models: open_clip:ARCH@TAG (pretrained), ARCH@none (random), ARCH@/path/file.safetensors")
def load_open_clip(
    spec: str,
    *,
    cache_dir: str | None = None,
    precision: str = "fp32",
    quick_gelu: bool | None = None,
    **model_kwargs: Any,
) -> OpenClipEncoder:
    """Build an :class:`OpenClipEncoder` from ``ARCH@TAG`` / ``ARCH@none`` / ``ARCH@/path``.

    ``quick_gelu`` defaults to what the pretrained tag was trained with; ``cache_dir`` is the HF
    cache to look in; remaining keyword arguments override the architecture config.
    """
    oc = _open_clip()
    arch, tag = parse_open_clip_name(spec)
    name = f"open_clip:{arch}@{tag}"
    if oc.get_model_config(arch) is None:
        raise UnknownNameError("open_clip architecture", arch, oc.list_models())

    pretrained_cfg: dict[str, Any] = {}
    if tag.lower() in NO_WEIGHTS:
        checkpoint, weights = None, "none (random init)"
    elif os.path.sep in tag or tag.endswith(CHECKPOINT_SUFFIXES) or os.path.exists(tag):
        checkpoint, weights = tag, tag
    else:
        checkpoint, pretrained_cfg = _resolve_tag(arch, tag, cache_dir)
        weights = tag
    if quick_gelu is None:
        quick_gelu = bool(pretrained_cfg.get("quick_gelu", False))
    if checkpoint is not None and not os.path.isfile(checkpoint):
        raise MissingWeightsError(f"{name}: checkpoint file not found: {checkpoint}")

    text_cfg = oc.get_model_config(arch).get("text_cfg", {})
    needs_hub = bool(text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name")) or "siglip" in arch.lower()
    # HF text towers / tokenizers need config files from the hub; plain CLIP archs need nothing.
    with hub_access() if needs_hub else contextlib.nullcontext(HubMode(True)) as hub, _quiet_random_init():
        try:
            model = oc.create_model(
                arch,
                pretrained=None,
                load_weights=False,
                precision=precision,
                force_quick_gelu=quick_gelu,
                pretrained_image=False,
                pretrained_text=False,
                cache_dir=cache_dir,
                **model_kwargs,
            )
            tokenizer = oc.get_tokenizer(arch, cache_dir=cache_dir)
        except (OSError, ValueError) as e:
            raise MissingWeightsError(
                f"{name}: files for the architecture's text tower/tokenizer are not available"
                f"{'' if hub.online else f' ({hub.reason})'} (looked in {hub_cache_dir(cache_dir)}): {first_line(e)}"
            ) from None
    if checkpoint is not None:
        _load_weights(model, checkpoint, name)

    cfg = asdict(_preprocess_defaults())
    cfg.update({k: v for k, v in pretrained_cfg.items() if k in cfg})
    size = getattr(getattr(model, "visual", None), "image_size", None)
    if size is not None:
        cfg["size"] = size
    oc.set_model_preprocess_cfg(model, cfg)
    logger.info("loaded %s (weights: %s, quick_gelu=%s)", name, weights, quick_gelu)
    return OpenClipEncoder(
        model, preprocessor_from_open_clip_cfg(cfg), tokenizer, name=name, weights=weights, architecture=arch
    )
