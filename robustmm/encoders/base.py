"""The Encoder contract: raw-domain inputs in, L2-normalised embeddings out.

Every model family (TinyBind, open_clip, Hugging Face CLIP) subclasses :class:`Encoder`. The
encoder owns its preprocessing (resizing, mean/std), so attacks and datasets only ever see raw
tensors in the domain of the modality's :class:`~robustmm.modalities.ModalitySpec`.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .. import cost
from ..errors import CheckpointError, EmptyDatasetError, InputShapeError, UnknownNameError
from ..modalities import get_modality

#: How closely two float32 computations of the same embeddings agree where nothing guarantees their
#: bits: other batch shapes or batch mates, another thread count, another CPU (the kernels then sum
#: in another order; 1.4e-7 apart was seen on unit vectors). The one stated tolerance: tests and
#: benchmarks compare such results with ``torch.testing.assert_close(a, b, **NUMERIC_TOLERANCE)``.
#: The same computation (same shapes and batch mates, same process settings) is compared exactly.
NUMERIC_TOLERANCE: dict[str, float] = {"rtol": 1e-5, "atol": 1e-5}


def check_texts(texts: Any) -> list[str]:
    """A list of strings for ``encode_text`` (one string is a list of one); clear errors otherwise."""
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
        raise InputShapeError(f"encode_text expects a list of strings, got {type(texts).__name__}"
                              + ("" if not isinstance(texts, Sequence) else " with non-string items"))
    if len(texts) == 0:
        raise EmptyDatasetError("encode_text got an empty list of texts")
    return list(texts)


def _counted_text(encode_text: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``encode_text`` that notes the texts it embeds while passes are counted (outermost call only)."""

    @functools.wraps(encode_text)
    def counted(self: "Encoder", texts: Sequence[str], *args: Any, **kwargs: Any) -> torch.Tensor:
        if not cost.counting():
            return encode_text(self, texts, *args, **kwargs)
        with cost.model_call() as outermost:
            out = encode_text(self, texts, *args, **kwargs)
        if outermost:
            cost.note_text(int(out.shape[0]))
        return out

    return counted


class Encoder(nn.Module):
    """Base class of every multimodal encoder.

    Subclasses set ``name``, ``modalities`` (the non-text modalities they embed) and
    ``embed_dim``, and implement :meth:`_encode` and :meth:`encode_text`. Both return
    L2-normalised (N, D) tensors; ``encode`` is differentiable with respect to its input.
    """

    name: str = "encoder"
    modalities: tuple[str, ...] = ()
    embed_dim: int = 0
    weights: str = ""
    #: a trained defense's training report (calibration heads, FARE); None for encoders nobody trained here
    training_info: dict[str, Any] | None = None
    #: ``encode`` in eval mode is a pure function of its input (no random draws), so an embedding an
    #: attack already computed of its returned input stands for evaluate's own (:class:`robustmm.batch.Embedded`);
    #: False (the safe default) for wrappers, defenses and users' models
    deterministic: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every subclass's ``encode_text`` counts the texts it embeds (:mod:`robustmm.cost`)."""
        super().__init_subclass__(**kwargs)
        if "encode_text" in cls.__dict__:
            cls.encode_text = _counted_text(cls.__dict__["encode_text"])  # type: ignore[method-assign]
    #: what an adaptive attack must know (a defense overrides them; wrappers are read through
    #: ``straight_through.declared``, which looks into ``base``): whether ``encode`` draws randomness
    #: (EOT averages over it), and the names of non-differentiable steps routed through
    #: ``straight_through`` (BPDA approximates them). The defense-zoo audit also probes both.
    randomized: bool = False
    bpda_steps: tuple[str, ...] = ()

    # -- the public contract ---------------------------------------------------------------
    def encode(self, modality: str, x: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
        """Embed a batch of raw ``modality`` inputs: (N, *shape) -> (N, D), unit norm.

        ``x`` is checked against the modality's spec (shape, floating dtype, finite, inside the
        domain) unless ``validate=False``, which attacks use inside their step loops, where the
        input was checked once and every iterate is projected back into the domain.
        """
        self.check_modality(modality)
        if validate:
            get_modality(modality).validate(x)
        if not cost.counting():
            return self._encode(modality, x)
        with cost.model_call() as outermost:
            out = self._encode(modality, x)
        if outermost:  # one pass of the model under attack, whatever it wraps (robustmm.cost)
            cost.note_forward(out, int(x.shape[0]))
        return out

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed a list of strings: -> (N, D), unit norm."""
        raise NotImplementedError

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def text_memo(self) -> Any:
        """The memo of this encoder's text embeddings, or ``None`` (the default) when there is none.

        An object with ``chunks(texts) -> list[list[str]]`` (a canonical batching that depends on
        the set of texts alone), ``embed(chunk) -> (n, D)`` (computed now, memo untouched),
        ``remember(texts, emb)`` and ``missing(texts) -> list[str]``. A job embeds its texts chunk
        by chunk before its first cell, on one process or spread over ranks and pooled, so each
        text has the same batch mates, and the same bits, on any number of processes."""
        return None

    def tower(self, modality: str) -> nn.Module:
        """The sub-module that embeds ``modality`` (what fine-tuning baselines such as FARE train)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose a tower for {modality!r}")

    def preprocess_info(self) -> dict[str, Any]:
        """What the encoder does to raw inputs before its towers (recorded in results)."""
        return {}

    def info(self) -> dict[str, Any]:
        """The ``model`` block of a result record."""
        return {"name": self.name, "weights": self.weights, "preprocess": self.preprocess_info()}

    # -- helpers ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def check_modality(self, modality: str) -> None:
        get_modality(modality)
        if modality not in self.modalities:
            raise UnknownNameError(f"modality of encoder {self.name!r}", modality, self.modalities)

    @torch.no_grad()
    def class_embeddings(self, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
        """Class "semantic centers": per class, the normalised mean of its prompt embeddings.

        Memoised per prompt set (the text tower is frozen), so attacks that need the centers on
        every call do not re-run the text tower.
        """
        key = tuple(tuple(cls) for cls in prompts)
        cache = self.__dict__.setdefault("_class_cache", {})
        if key not in cache:
            flat = [p for cls in prompts for p in cls]
            emb = self.encode_text(flat).reshape(len(prompts), -1, self.embed_dim).mean(1)
            if len(cache) >= 8:
                cache.pop(next(iter(cache)))
            cache[key] = torch.nn.functional.normalize(emb, dim=-1)
        return cache[key].to(self.device)

    def with_heads(self, heads: Mapping[str, nn.Module]) -> "Encoder":
        """An Encoder whose ``modality`` embeddings pass through calibration heads."""
        from .calibrated import CalibratedEncoder

        for m, head in heads.items():
            self.check_modality(m)
            if not isinstance(head, nn.Module):
                raise CheckpointError(f"head for {m!r} is a {type(head).__name__}, not a torch module")
            dim = getattr(head, "dim", None) or getattr(head, "in_features", None)
            if dim is not None and dim != self.embed_dim:
                raise CheckpointError(f"head for {m!r} expects embed_dim {dim}, encoder {self.name!r} has {self.embed_dim}")

        return CalibratedEncoder(self, heads)

    def freeze(self) -> "Encoder":
        """Eval mode and no gradients for every parameter (encoders are never trained here)."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self


class WrapperEncoder(Encoder):
    """An Encoder that wraps another (a defended encoder): it takes the base's name, modalities,
    embedding size and weights, and its text side and preprocessing are the base's. Subclasses
    change ``_encode`` and ``info`` and put themselves in eval mode after adding their own modules.
    """

    def __init__(self, base: Encoder):
        super().__init__()
        self.base = base
        self.name, self.modalities, self.embed_dim, self.weights = base.name, base.modalities, base.embed_dim, base.weights

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return self.base.encode_text(texts)

    def class_embeddings(self, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
        return self.base.class_embeddings(prompts)

    def preprocess_info(self) -> dict[str, Any]:
        return self.base.preprocess_info()
