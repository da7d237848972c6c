"""Mixed precision for attacks: the attacked path (modality input -> embedding) under
``torch.autocast(bfloat16)``, everything the attack returns and every score in float32.

``robustmm eval --amp`` and ``robustmm run --amp`` wrap their attacks in :class:`AutocastAttack`.
On a GPU this roughly halves the cost of each forward/backward of a ViT; on CPU it runs too (slower
than float32 on most CPUs), which is how the tests exercise it.
"""
from __future__ import annotations

from typing import Any

import torch

from ..encoders.base import Encoder
from .base import Attack, AttackWrapper
from .views import EncoderView


class AutocastEncoder(EncoderView):
    """A view of ``base`` whose modality ``encode`` runs under ``torch.autocast`` (``--amp``).

    Only the differentiated path (modality input -> embedding) is autocast; the embedding is cast
    back to float32, so losses and gradients w.r.t. the float32 input stay float32 and PGD's steps
    and projections are exact. Text encoding is delegated untouched, so text embeddings (and
    TinyBind's MiniLM cache) stay full precision.
    """

    def __init__(self, base: Encoder, dtype: torch.dtype = torch.bfloat16):
        super().__init__(base)
        self.dtype = dtype

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            z = self.base.encode(modality, x, validate=False)  # the outer encode() checked x
        return z.float()


class AutocastAttack(AttackWrapper):
    """Any attack, made on an autocast (bfloat16) view of the source encoder (``robustmm eval/run --amp``).

    ``resolve``/``with_eps``/``replace`` return wrapped copies (see :class:`AttackWrapper`), so
    :func:`robustmm.evaluate` and robustness curves keep the wrapper; ``describe()`` records
    ``"amp": "bfloat16"``. Inputs, projections and the returned batch stay float32; clean and
    scored embeddings are computed outside autocast.
    """

    def __init__(self, inner: Attack):
        super().__init__(inner)
        self._views: dict[int, tuple[Encoder, AutocastEncoder]] = {}

    def __getattr__(self, key: str) -> Any:  # fit_split, budget, ... come from the wrapped attack
        if key in ("inner", "_views"):
            raise AttributeError(key)
        return getattr(self.inner, key)

    def _view(self, encoder: Encoder) -> AutocastEncoder:
        held = self._views.get(id(encoder))
        if held is None or held[0] is not encoder:
            held = (encoder, AutocastEncoder(encoder))
            self._views[id(encoder)] = held
        return held[1]

    def __call__(self, encoder: Any, batch: Any) -> Any:
        return self.inner(self._view(encoder), batch)

    def fit(self, encoder: Any, dataset: Any) -> "AutocastAttack":
        self.inner.fit(self._view(encoder), dataset)
        return self

    def describe(self) -> dict[str, Any]:
        return self.inner.describe() | {"amp": "bfloat16"}
