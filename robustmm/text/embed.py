"""Embedding many captions at once, in chunks, without gradients (the text attacks' inner loop)."""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["embed_texts"]


def embed_texts(encoder: Any, texts: list[str], chunk: int = 1024) -> torch.Tensor:
    """(len(texts), D) float32 CPU embeddings of ``texts`` under ``encoder.encode_text``.

    Encoded ``chunk`` captions at a time under ``torch.no_grad`` so that scoring thousands of
    candidate edits fits in memory; an empty list gives a (0, D) tensor (D = ``encoder.embed_dim``).
    """
    if not texts:
        return torch.zeros(0, getattr(encoder, "embed_dim", 1))
    with torch.no_grad():
        return torch.cat([encoder.encode_text(texts[i : i + chunk]).float().cpu() for i in range(0, len(texts), chunk)])
