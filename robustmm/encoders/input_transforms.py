"""Input-transformation defenses known to be broken: bit-depth reduction, JPEG, random resize-and-pad.

Each one preprocesses the raw input before a frozen encoder. They look robust against a naive
attack only because their gradient is useless: rounding and JPEG have zero or no gradient
(obfuscated gradients, Athalye et al., ICML 2018), random resizing changes the model at every
call. The adaptive attacks that take this back are in the attacks layer:

* BPDA (:class:`robustmm.attacks.bpda.BPDA`) -- each non-differentiable step declares a
  differentiable stand-in (:meth:`InputTransform.stand_in`, the identity by default), used in the
  backward pass only;
* EOT (:class:`robustmm.attacks.eot.EOT`) -- the gradient is averaged over k draws of a
  randomized transform.

A defended model is an :class:`~robustmm.encoders.base.Encoder` (:class:`TransformedEncoder`), so
every attack, runner and report works on it unchanged. ``robustmm eval --defense NAME`` and the job's
input-defense cell score it naive and adaptive side by side.

Example::

    >>> enc = robustmm.load_encoder("tinybind")
    >>> defended = defend(enc, "bit-depth", bits=3)
    >>> naive = evaluate(defended, data, modality="image", attack=build_attack("pgd"))
    >>> adaptive = evaluate(defended, data, modality="image", attack=BPDA(build_attack("pgd")))
"""
from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BudgetError, RobustMMError, UnknownNameError
from ..modalities import get_modality
from .base import Encoder
from .straight_through import straight_through

_DEFENSES: dict[str, type[InputTransform]] = {}


def register_defense(name: str) -> Callable[[type[InputTransform]], type[InputTransform]]:
    """Class decorator registering an :class:`InputTransform` under ``name``."""

    def deco(cls: type[InputTransform]) -> type[InputTransform]:
        cls.name = name
        _DEFENSES[name] = cls
        return cls

    return deco


def list_defenses() -> dict[str, str]:
    """Registered input defenses and the first line of their docstrings."""
    return {n: (c.__doc__ or "").strip().split("\n")[0] for n, c in sorted(_DEFENSES.items())}


def build_defense(name: str, **settings: Any) -> InputTransform:
    """Instantiate a registered input defense by name (unknown names: one-line error)."""
    if name not in _DEFENSES:
        raise UnknownNameError("defense", name, _DEFENSES)
    try:
        return _DEFENSES[name](**settings)
    except TypeError as e:
        raise RobustMMError(f"defense {name!r}: {e}") from None


class InputTransform:
    """A preprocessing step in front of the encoder, in the modality's raw domain.

    ``differentiable``: False when :meth:`forward` has no useful gradient (BPDA approximates it).
    ``randomized``: True when :meth:`forward` draws randomness (EOT averages over it); it uses
    torch's global generator, which :func:`robustmm.evaluate` seeds, so runs are reproducible.
    """

    name = "transform"
    differentiable = True
    randomized = False
    #: modalities it applies to; None = every continuous modality
    modalities: tuple[str, ...] | None = None

    def settings(self) -> dict[str, Any]:
        """The constructor keywords (recorded in result records)."""
        return {}

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:  # pragma: no cover - abstract
        """The transform the defended model applies."""
        raise NotImplementedError

    def stand_in(self, x: torch.Tensor) -> torch.Tensor:
        """The differentiable approximation BPDA uses in the backward pass (identity)."""
        return x

    def support(self, shape: torch.Size) -> list[tuple[float, Any]]:
        """A randomized transform's finite set of draws for inputs of ``shape``, as (probability,
        draw) pairs that :meth:`apply` takes; empty when it declares none (EOT then samples)."""
        return []

    def apply(self, x: torch.Tensor, modality: str, draw: Any) -> torch.Tensor:
        """The transform with its randomness fixed to ``draw`` (one of :meth:`support`'s)."""
        raise RobustMMError(f"defense {self.name!r} declares no draws to fix")

    def check(self, modality: str) -> None:
        """Raise a one-line error if the transform does not apply to ``modality``."""
        if self.modalities is not None and modality not in self.modalities:
            raise UnknownNameError(f"modality for defense {self.name!r}", modality, self.modalities)

    def describe(self) -> dict[str, Any]:
        """The ``defense`` block of a result record."""
        marks = [m for m, on in (("non-differentiable", not self.differentiable), ("randomized", self.randomized)) if on]
        return {"name": self.name, **self.settings(), "marks": marks}


class TransformedEncoder(Encoder):
    """``base`` behind an input transform: ``encode(m, x) = base.encode(m, transform(x))``."""

    def __init__(self, base: Encoder, transform: InputTransform):
        super().__init__()
        self.base, self.transform = base, transform
        self.name, self.modalities, self.embed_dim = base.name, base.modalities, base.embed_dim
        self.weights = base.weights
        self.eval()  # a wrapper of frozen parts is frozen too (nn.Module starts in training mode)

    @property
    def bpda_steps(self) -> tuple[str, ...]:
        """Names of the non-differentiable steps BPDA must approximate (empty: nothing to do)."""
        return () if self.transform.differentiable else (self.transform.name,)

    @property
    def randomized(self) -> bool:
        """Whether two calls on the same input may differ (EOT is the adaptive attack then)."""
        return self.transform.randomized

    def draw_support(self, modality: str, shape: torch.Size) -> list[tuple[float, Any]]:
        """The transform's draws for inputs of ``shape`` with their probabilities (empty: it declares
        none); :meth:`encode_draw` embeds through one of them. EOT may average over all of them."""
        self.transform.check(modality)
        return self.transform.support(shape)

    def encode_draw(self, modality: str, x: torch.Tensor, draw: Any) -> torch.Tensor:
        """``encode`` with the transform's randomness fixed to ``draw`` (from :meth:`draw_support`)."""
        self.check_modality(modality)
        return self._through(modality, x, lambda v: self.transform.apply(v, modality, draw))

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return self._through(modality, x, lambda v: self.transform.forward(v, modality))

    def _through(self, modality: str, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        self.transform.check(modality)
        lo, hi = get_modality(modality).domain
        xt = fn(x) if self.transform.differentiable else straight_through(x, fn, self.transform.stand_in)
        return self.base.encode(modality, xt.clamp(lo, hi), validate=False)

    def encode_text(self, texts: Any) -> torch.Tensor:
        return self.base.encode_text(texts)

    def preprocess_info(self) -> dict[str, Any]:
        return self.base.preprocess_info()

    def info(self) -> dict[str, Any]:
        return self.base.info() | {"input_defense": self.transform.describe()}


def defend(encoder: Encoder, name: str | InputTransform, **settings: Any) -> TransformedEncoder:
    """``encoder`` behind the input defense ``name`` (or an :class:`InputTransform` instance)."""
    transform = name if isinstance(name, InputTransform) else build_defense(name, **settings)
    return TransformedEncoder(encoder, transform)


def _to_unit(x: torch.Tensor, modality: str) -> tuple[torch.Tensor, float, float]:
    lo, hi = get_modality(modality).domain
    return (x - lo) / (hi - lo), lo, hi


@register_defense("bit-depth")
class BitDepth(InputTransform):
    """Bit-depth reduction (feature squeezing, Xu et al. 2018): ``2**bits`` levels over the domain."""

    differentiable = False

    def __init__(self, bits: int = 3):
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
            raise BudgetError(f"bit-depth: bits must be an integer in [1, 16], got {bits!r}")
        self.bits = bits

    def settings(self) -> dict[str, Any]:
        return {"bits": self.bits}

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        u, lo, hi = _to_unit(x, modality)
        levels = 2**self.bits - 1
        return torch.round(u.clamp(0, 1) * levels) / levels * (hi - lo) + lo


_IMAGE_LIKE = ("image", "video", "depth", "thermal")


@register_defense("jpeg")
class JPEG(InputTransform):
    """JPEG compression at quality q (Dziugaite et al. 2016; Guo et al. 2018), per image or frame."""

    differentiable = False
    modalities = _IMAGE_LIKE

    def __init__(self, quality: int = 75):
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 95:
            raise BudgetError(f"jpeg: quality must be an integer in [1, 95], got {quality!r}")
        self.quality = quality

    def settings(self) -> dict[str, Any]:
        return {"quality": self.quality}

    def _one(self, img: np.ndarray) -> np.ndarray:
        from PIL import Image

        channels = img.shape[0]
        arr = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
        pil = Image.fromarray(arr[0] if channels == 1 else arr.transpose(1, 2, 0), mode="L" if channels == 1 else "RGB")
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=self.quality)
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255.0
        return out[None] if channels == 1 else out.transpose(2, 0, 1)

    def stand_in(self, x: torch.Tensor) -> torch.Tensor:
        """A differentiable JPEG (Shin & Song 2017) for BPDA: the same 8x8 DCT quantisation with a
        cubic soft rounding, so gradients favour the frequencies that survive compression (the
        identity would spend the budget on frequencies JPEG removes)."""
        from .jpeg_surrogate import soft_jpeg

        return soft_jpeg(x, self.quality)

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        u, lo, hi = _to_unit(x.detach(), modality)
        flat = u.reshape(-1, *u.shape[-3:]).float().cpu().numpy()
        if flat.shape[1] not in (1, 3):
            raise RobustMMError(f"jpeg: needs 1 or 3 channels, got {flat.shape[1]}")
        out = torch.from_numpy(np.stack([self._one(img) for img in flat])).reshape(u.shape)
        return out.to(x.device, x.dtype) * (hi - lo) + lo


@register_defense("random-resize-pad")
class RandomResizePad(InputTransform):
    """Random resize and pad (Xie et al., ICLR 2018): resize to a random size, pad at a random place."""

    randomized = True
    modalities = _IMAGE_LIKE

    def __init__(self, max_scale: float = 1.15):
        if not (isinstance(max_scale, (int, float)) and 1.0 < float(max_scale) <= 2.0):
            raise BudgetError(f"random-resize-pad: max_scale must lie in (1, 2], got {max_scale!r}")
        self.max_scale = float(max_scale)

    def settings(self) -> dict[str, Any]:
        return {"max_scale": self.max_scale}

    def _frame(self, shape: torch.Size) -> tuple[int, int, int, int]:
        h, w = shape[-2:]
        return h, w, round(h * self.max_scale), round(w * self.max_scale)

    def _width(self, rh: int, shape: torch.Size) -> int:
        h, w, _, big_w = self._frame(shape)
        return min(max(round(rh * w / h), w), big_w)

    def draw(self, shape: torch.Size) -> tuple[int, int, int]:
        """One transform ``(height, top, left)`` for images of ``shape``, from torch's global (CPU)
        generator, which evaluate() seeds: the size uniform, then the offset uniform given the size."""
        h, _, big_h, big_w = self._frame(shape)
        rh = int(torch.randint(h, big_h + 1, ()))
        top = int(torch.randint(0, big_h - rh + 1, ()))
        left = int(torch.randint(0, big_w - self._width(rh, shape) + 1, ()))
        return rh, top, left

    def support(self, shape: torch.Size) -> list[tuple[float, tuple[int, int, int]]]:
        """Every transform :meth:`draw` can pick for images of ``shape``, with its probability
        (sizes uniform, offsets uniform given the size): an EOT attack may average over all of them."""
        h, _, big_h, big_w = self._frame(shape)
        out = []
        for rh in range(h, big_h + 1):
            rw = self._width(rh, shape)
            p = 1.0 / ((big_h - h + 1) * (big_h - rh + 1) * (big_w - rw + 1))
            out += [(p, (rh, top, left)) for top in range(big_h - rh + 1) for left in range(big_w - rw + 1)]
        return out

    def apply(self, x: torch.Tensor, modality: str, draw: tuple[int, int, int]) -> torch.Tensor:
        """The transform ``draw`` (``(height, top, left)``, as :meth:`draw` returns) applied to ``x``:
        resize, pad with the domain's low end, resample to the input size."""
        lo = get_modality(modality).domain[0]
        shape = x.shape
        imgs = x.reshape(-1, *shape[-3:])
        h, w, big_h, big_w = self._frame(shape)
        rh, top, left = draw
        rw = self._width(rh, shape)
        resized = F.interpolate(imgs, size=(rh, rw), mode="bilinear", align_corners=False)
        padded = F.pad(resized, (left, big_w - rw - left, top, big_h - rh - top), value=lo)
        return F.interpolate(padded, size=(h, w), mode="bilinear", align_corners=False).reshape(shape)

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        return self.apply(x, modality, self.draw(x.shape))
