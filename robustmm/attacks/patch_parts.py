"""The pieces of the universal patch attack: pasting a patch, AdvCLIP's objective, the fooling rate.

:func:`patch_objective` is what :class:`~robustmm.attacks.patch.UniversalPatch` maximises over
its pixels (InfoNCE away from the clean and caption embeddings plus the topology deviation, see
that module's docstring); :func:`fooling_rate` is AdvCLIP's metric for any attack on ``x``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..batch import Batch
from ..errors import BudgetError, UnknownNameError
from .base import Attack

#: the named patch placements (besides "random" and an explicit (row, col) corner)
CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left", "center")

__all__ = ["CORNERS", "caption_set_embeddings", "check_position", "fooling_rate", "paste_patch", "patch_objective"]


def paste_patch(x: torch.Tensor, patch: torch.Tensor, rows: list[int], cols: list[int]) -> torch.Tensor:
    """Copy of ``x`` with ``patch`` (C, s, s) pasted at (rows[i], cols[i]) of item i (top-left corner).

    ``x`` is (N, C, H, W) or (N, T, C, H, W) (every frame gets the patch). Differentiable with
    respect to ``patch``; pixels outside the patch are copied bit-exactly.
    """
    s = patch.shape[-1]
    out = x.clone()
    patch = patch.to(device=x.device, dtype=x.dtype)
    if len(set(rows)) == 1 and len(set(cols)) == 1:
        r, c = rows[0], cols[0]
        out[..., r : r + s, c : c + s] = patch
    else:
        for i, (r, c) in enumerate(zip(rows, cols)):
            out[i, ..., r : r + s, c : c + s] = patch
    return out


def _info_nce(query: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean -log p(key_i | query_i) over the batch (positives on the diagonal)."""
    logits = query @ keys.T / temperature
    return F.cross_entropy(logits, torch.arange(query.shape[0], device=query.device))


def _neighbourhood(emb: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, B) log-probabilities: row i is the softmax over j != i of sim(e_i, e_j) / temperature."""
    sims = emb @ emb.T / temperature
    eye = torch.eye(emb.shape[0], dtype=torch.bool, device=emb.device)
    return torch.log_softmax(sims.masked_fill(eye, float("-inf")), dim=-1).masked_fill(eye, 0.0)


def patch_objective(
    adv: torch.Tensor,
    clean: torch.Tensor,
    text: torch.Tensor | None,
    *,
    temperature: float = 0.1,
    adv_weight: float = 10.0,
    topology_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The AdvCLIP-style objective to *maximise* over the patch.

    Args:
        adv: (B, D) unit embeddings of patched inputs (differentiable).
        clean: (B, D) unit embeddings of the clean inputs.
        text: (B, D) unit embeddings of each item's captions (mean over its captions), or None.
    Returns:
        The scalar objective and its parts as floats (``nce_clean``, ``nce_text``, ``topology``).
    """
    nce_clean = _info_nce(adv, clean, temperature)
    nce_text = _info_nce(adv, text, temperature) if text is not None else adv.new_zeros(())
    if adv.shape[0] >= 3:
        log_p, log_q = _neighbourhood(clean, temperature), _neighbourhood(adv, temperature)
        topology = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    else:  # no neighbourhood to speak of
        topology = adv.new_zeros(())
    total = adv_weight * (nce_clean + nce_text) + topology_weight * topology
    parts = {"nce_clean": nce_clean.item(), "nce_text": nce_text.item(), "topology": topology.item()}
    return total, parts


def caption_set_embeddings(encoder: Any, captions: list[list[str]], device: torch.device) -> torch.Tensor:
    """(B, D): per item, the normalised mean embedding of its captions."""
    flat = [c for caps in captions for c in caps]
    counts = torch.tensor([len(c) for c in captions])
    with torch.no_grad():
        emb = encoder.encode_text(flat).to(device)
    owner = torch.repeat_interleave(torch.arange(len(captions)), counts).to(device)
    sums = torch.zeros(len(captions), emb.shape[1], device=device, dtype=emb.dtype).index_add_(0, owner, emb)
    return F.normalize(sums, dim=-1)


@torch.no_grad()
def fooling_rate(encoder: Any, dataset: Any, attack: Attack, modality: str = "image", batch_size: int = 128) -> float:
    """Fraction of items whose zero-shot top-1 prediction changes under ``attack`` (AdvCLIP's metric).

    Works with any attack that perturbs ``x``; ``dataset`` needs a zero-shot task for ``modality``.
    """
    task = dataset.tasks.get(modality)
    if task is None:
        raise UnknownNameError(f"zero-shot task of dataset {dataset.name!r}", modality, dataset.tasks)
    prompts = task.prompts()
    class_emb = encoder.class_embeddings(prompts)
    changed, total = 0, 0
    for s in range(0, len(dataset), batch_size):
        idx = torch.arange(s, min(s + batch_size, len(dataset)))
        batch = Batch(modality, dataset.get(modality, idx).to(encoder.device),
                      [list(dataset.captions[i]) for i in idx.tolist()], task.labels[idx], prompts, idx)
        with torch.enable_grad():
            adv = attack(encoder, batch)
        clean_pred = (encoder.encode(modality, batch.x) @ class_emb.T).argmax(1)
        adv_pred = (encoder.encode(modality, adv.x) @ class_emb.T).argmax(1)
        changed += int((clean_pred != adv_pred).sum())
        total += len(idx)
    return changed / max(total, 1)


def check_position(position: Any) -> str | tuple[int | float, int | float]:
    """A valid patch placement: a corner name, "random", or a non-negative (row, col) pair
    (ints: pixels; floats in [0, 1]: fractions of the free range); one-line errors otherwise."""
    if isinstance(position, str):
        if position not in CORNERS + ("random",):
            raise UnknownNameError("patch position", position, CORNERS + ("random",))
        return position
    position = tuple(position)
    if len(position) != 2 or any(isinstance(p, bool) or not isinstance(p, (int, float)) for p in position):
        raise BudgetError(f"patch position must be a corner name, 'random' or (row, col), got {position!r}")
    if any(p < 0 for p in position):
        raise BudgetError(f"patch position must be non-negative, got {position!r}")
    return position  # type: ignore[return-value]
