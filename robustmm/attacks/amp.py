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
from .base import Attack


class AutocastEncoder(Encoder):
    """A view of ``base`` whose modality ``encode`` runs under ``torch.autocast`` (``--amp``).

    Only the differentiated path (modality input -> embedding) is autocast; the embedding is cast
    back to float32, so losses and gradients w.r.t. the float32 input stay float32 and PGD's steps
    and projections are exact. Text encoding is delegated untouched, so text embeddings (and
    TinyBind's MiniLM cache) stay full precision.
    """

    def __init__(self, base: Encoder, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.base = base
        self.dtype = dtype
        self.name, self.modalities, self.embed_dim, self.weights = base.name, base.modalities, base.embed_dim, base.weights

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            z = self.base.encode(modality, x, validate=False)  # the outer encode() checked x
        return z.float()

    def encode_text(self, texts: Any) -> torch.Tensor:
        return self.base.encode_text(texts)

    def tower(self, modality: str) -> torch.nn.Module:
        return self.base.tower(modality)

    def info(self) -> dict[str, Any]:
        return self.base.info()


class AutocastAttack(Attack):
    """Any attack, made on an autocast (bfloat16) view of the source encoder (``robustmm eval/run --amp``).

    ``resolve``/``with_eps`` return wrapped copies, so :func:`robustmm.evaluate` and robustness
    curves keep the wrapper; ``describe()`` records ``"amp": "bfloat16"``. Inputs, projections and
    the returned batch stay float32; clean and scored embeddings are computed outside autocast.
    """

    def __init__(self, inner: Attack):
        self.inner = inner
        self.name, self.perturbs = inner.name, inner.perturbs
        self._views: dict[int, AutocastEncoder] = {}

    def __getattr__(self, key: str) -> Any:  # fit_split, budget, ... come from the wrapped attack
        if key == "inner":
            raise AttributeError(key)
        value = getattr(self.inner, key)
        if key == "replace":  # a changed copy (e.g. other steps) keeps autocast
            return lambda **changes: AutocastAttack(value(**changes))
        return value

    @property
    def eps(self) -> Any:  # type: ignore[override]
        return getattr(self.inner, "eps", None)

    def _view(self, encoder: Encoder) -> AutocastEncoder:
        if id(encoder) not in self._views:
            self._views[id(encoder)] = AutocastEncoder(encoder)
        return self._views[id(encoder)]

    def __call__(self, encoder: Any, batch: Any) -> Any:
        return self.inner(self._view(encoder), batch)

    def fit(self, encoder: Any, dataset: Any) -> "AutocastAttack":
        self.inner.fit(self._view(encoder), dataset)
        return self

    def resolve(self, modality: str) -> "AutocastAttack":
        return AutocastAttack(self.inner.resolve(modality) if hasattr(self.inner, "resolve") else self.inner)

    def with_eps(self, eps: float) -> "AutocastAttack":
        return AutocastAttack(self.inner.with_eps(eps))

    def describe(self) -> dict[str, Any]:
        return self.inner.describe() | {"amp": "bfloat16"}
