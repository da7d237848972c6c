"""Test-time defenses of a frozen encoder, registered as defense families.

* ``clipure`` -- CLIPure-Cos latent purification (:class:`~robustmm.encoders.clipure.PurifiedEncoder`);
* ``counterattack`` -- test-time counterattacks with tau-thresholding
  (:class:`~robustmm.encoders.counterattack.CounterattackEncoder`); with ``data=`` and
  ``modality=`` the threshold is fitted on that split's clean items (:func:`fit_tau_threshold`);
* ``invgc`` -- InvGC against hubness in retrieval (:class:`~robustmm.encoders.invgc.InvGCEncoder`),
  its banks embedded from a reference split (:func:`embedding_banks`).

None of them trains a weight: the encoder stays frozen; the fitted parts are a threshold and banks.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from ..encoders.clipure import PurifiedEncoder
from ..encoders.counterattack import CounterattackEncoder
from ..encoders.invgc import InvGCEncoder
from ..errors import RobustMMError
from ..seeding import seeded
from .registry import register_defense_family

__all__ = ["embedding_banks", "fit_tau_threshold"]


def _batched(encoder: Encoder, modality: str, x: torch.Tensor, batch_size: int, fn: Any) -> torch.Tensor:
    return torch.cat([fn(modality, x[s : s + batch_size].to(encoder.device)).cpu() for s in range(0, len(x), batch_size)])


def fit_tau_threshold(defended: CounterattackEncoder, data: MultimodalDataset, modality: str, *, quantile: float = 0.2,
                      n: int | None = 256, batch_size: int = 128, seed: int = 0) -> float:
    """The ``quantile`` of the sensitivity ``tau_0`` over ``data``'s clean ``modality`` items: the
    threshold under which an input counts as falsely stable and is counterattacked.

    The paper's 0.2 was chosen for CLIP's image features; how far an embedding moves under the
    random start differs by model and modality (TinyBind: about 0.01 for images, 0.5 for audio), so
    the threshold is fitted per modality. Draws are seeded by ``seed``; the caller's RNG is restored.
    """
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 < quantile < 1:
        raise RobustMMError(f"counterattack tau_quantile must be a number in (0, 1), got {quantile!r}")
    data.check_modality(modality)
    defended.check_modality(modality)
    part = data.head(n) if n else data
    x = part.get(modality, slice(None))
    with seeded(seed):
        tau = _batched(defended, modality, x, batch_size, defended.sensitivity)
    return float(torch.quantile(tau.double(), float(quantile)))


def embedding_banks(encoder: Encoder, data: MultimodalDataset, modality: str, *, n: int | None = 500,
                    batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """(gallery bank, query bank) for InvGC: embeddings of ``data``'s first ``n`` ``modality`` items and
    of their first captions, by the bare ``encoder``."""
    data.check_modality(modality)
    encoder.check_modality(modality)
    part = data.head(n) if n else data
    part.check_nonempty()
    with torch.no_grad():
        gallery = _batched(encoder, modality, part.get(modality, slice(None)), batch_size, encoder.encode)
        captions = [c[0] for c in part.captions]
        query = torch.cat([encoder.encode_text(captions[s : s + batch_size]).cpu() for s in range(0, len(captions), batch_size)])
    return gallery, query


@register_defense_family("clipure", "test-time purification",
                         "CLIPure-Cos: embeddings purified toward a blank template's text embedding, encoder frozen")
def clipure(encoder: Encoder, data: MultimodalDataset | None = None, **settings: Any) -> Encoder:
    """:class:`~robustmm.encoders.clipure.PurifiedEncoder` (``null_text``, ``steps``, ``step_size``,
    ``momentum``, ``unroll``, ``modalities``); nothing is fitted, so ``data`` is refused."""
    if data is not None:
        raise RobustMMError("defense 'clipure' fits nothing: drop data= (settings: steps, step_size, momentum, null_text)")
    return PurifiedEncoder(encoder, **settings)


@register_defense_family("counterattack", "test-time counterattack",
                         "test-time counterattacks (tau-thresholded PGD away from the input's embedding); "
                         "optional data=, modality= fit the threshold")
def counterattack(encoder: Encoder, data: MultimodalDataset | None = None, *, modality: str | None = None,
                  tau_quantile: float = 0.2, fit_n: int | None = 256, seed: int = 0, **settings: Any) -> Encoder:
    """:class:`~robustmm.encoders.counterattack.CounterattackEncoder` (``eps``, ``steps``,
    ``step_size``, ``tau_thres``, ``beta``, ``random_start``). With ``data=`` and ``modality=``,
    ``tau_thres`` of that modality is fitted (:func:`fit_tau_threshold` at ``tau_quantile``)."""
    if data is None:
        if modality is not None:
            raise RobustMMError("defense 'counterattack': modality= fits a threshold on data=; pass data=<split> too")
        return CounterattackEncoder(encoder, **settings)
    if modality is None:
        raise RobustMMError("defense 'counterattack' with data=: pass modality=... (whose tau_thres to fit)")
    if settings.get("tau_thres") is not None:
        raise RobustMMError("defense 'counterattack': give tau_thres= or data= to fit it, not both")
    probe = CounterattackEncoder(encoder, **settings)
    thres = fit_tau_threshold(probe, data, modality, quantile=tau_quantile, n=fit_n, seed=seed)
    defended = CounterattackEncoder(encoder, **(settings | {"tau_thres": {modality: thres}}))
    defended.training_info = {"tau_thres": {modality: thres}, "tau_quantile": float(tau_quantile),
                              "fit_n": min(len(data), fit_n or len(data)), "fit_split": data.split, "seed": seed}
    return defended


@register_defense_family("invgc", "retrieval post-processing",
                         "InvGC: embeddings minus their neighbours' mean in reference banks (hubness); "
                         "data=, modality= embed the banks")
def invgc(encoder: Encoder, data: MultimodalDataset | None = None, *, modality: str | None = None,
          bank_n: int | None = 500, banks: Mapping[str, torch.Tensor] | None = None,
          query_banks: Mapping[str, torch.Tensor] | None = None, **settings: Any) -> Encoder:
    """:class:`~robustmm.encoders.invgc.InvGCEncoder` (``beta``, ``k``, ``beta_query``,
    ``weighting``), its banks embedded from ``data``'s first ``bank_n`` ``modality`` items and their
    captions (:func:`embedding_banks`), or given as ``banks=`` / ``query_banks=``."""
    if banks is not None:
        if data is not None:
            raise RobustMMError("defense 'invgc': give banks= or data= to embed them, not both")
        return InvGCEncoder(encoder, banks, query_banks=query_banks, **settings)
    if data is None or modality is None:
        raise RobustMMError("defense 'invgc' needs its banks: pass data=<reference split> and modality=...")
    gallery, query = embedding_banks(encoder, data, modality, n=bank_n)
    defended = InvGCEncoder(encoder, {modality: gallery}, query_banks={modality: query}, **settings)
    defended.training_info = {"bank_split": data.split, "bank_n": int(len(gallery)), "modality": modality}
    return defended
