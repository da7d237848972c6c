"""InvGC (Wang et al., EMNLP 2023): inverse graph convolution against hubness in retrieval.

"Balance Act: Mitigating Hubness in Cross-Modal Retrieval with Query and Gallery Banks". In a
high-dimensional embedding space a few gallery items ("hubs") are the nearest neighbour of many
queries, and retrieval suffers. InvGC undoes one step of graph convolution over a reference bank:
each embedding ``g`` becomes ``g - beta * mean(neighbours of g in the gallery bank) - beta_query *
mean(neighbours of g in the query bank)``, renormalised. With ``k`` set (LocalAdj) only the ``k``
nearest bank entries count; without it, the whole bank does (the bank's centroid is subtracted).
Subtracting what an embedding shares with its neighbourhood spreads the crowded region out, so fewer
items are everybody's neighbour.

Here the gallery is an item modality (text queries retrieve items: ``t2x`` recall) and the banks
are embeddings of a reference split: the gallery bank of that modality's items, the query bank of
their captions (``defend(enc, "invgc", data=train, modality="image")`` builds both). The adjustment
is a differentiable function of the embedding (the neighbour choice is piecewise constant), so a
white-box attack on :class:`InvGCEncoder` is the adaptive attack.

:func:`k_occurrence` and :func:`hubness` measure what InvGC is for: how often each gallery item is
in the queries' top ``k``, and the skewness of that count (0 for an even spread; hubs make it large).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import RobustMMError
from .base import Encoder, WrapperEncoder
from .clipure import check_positive

WEIGHTINGS = ("mean", "similarity")


def neighbour_mean(z: torch.Tensor, bank: torch.Tensor, k: int | None, weighting: str = "mean") -> torch.Tensor:
    """Per row of ``z`` (N, D): the mean of its ``k`` most similar rows of ``bank`` (M, D) -- all of
    them when ``k`` is None -- equally weighted (``"mean"``) or each weighted by its cosine
    similarity (``"similarity"``, the paper's adjacency: not renormalised, so an embedding in a
    crowded region, close to many bank entries, has more subtracted)."""
    if weighting not in WEIGHTINGS:
        raise RobustMMError(f"invgc weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    bank = bank.to(z)
    sims = z @ bank.T
    if k is not None and k < bank.shape[0]:
        sims, idx = sims.topk(k, dim=-1)
        neighbours = bank[idx]  # (N, k, D)
    else:
        neighbours = bank.unsqueeze(0).expand(z.shape[0], -1, -1)
    if weighting == "mean":
        return neighbours.mean(1)
    return (sims.clamp_min(0).unsqueeze(-1) * neighbours).mean(1)


def invgc_adjust(z: torch.Tensor, bank: torch.Tensor, *, beta: float, k: int | None = None,
                 query_bank: torch.Tensor | None = None, beta_query: float = 0.0, weighting: str = "similarity",
                 renormalize: bool = True) -> torch.Tensor:
    """InvGC on embeddings ``z`` (N, D): ``z - beta * nb(z, bank) - beta_query * nb(z, query_bank)`` with
    ``nb`` the :func:`neighbour_mean` over ``k`` neighbours (LocalAdj; None: the whole bank),
    renormalised to unit length unless ``renormalize=False``.

    The paper scores the adjusted gallery by dot product, so an embedding's shrunken length (an
    item close to many bank entries loses more) lowers its scores: that is much of what reduces
    hubness. Renormalising (what the Encoder contract asks for) keeps only the change of
    direction, and can even favour items near the bank's centre; ``renormalize=False`` is the
    paper's scoring for callers that rank by dot product (robustmm's retrieval metrics do)."""
    out = z - beta * neighbour_mean(z, bank, k, weighting)
    if query_bank is not None and beta_query:
        out = out - beta_query * neighbour_mean(z, query_bank, k, weighting)
    return F.normalize(out, dim=-1) if renormalize else out


def k_occurrence(queries: torch.Tensor, gallery: torch.Tensor, k: int = 10) -> torch.Tensor:
    """(G,) how many of ``queries`` (Q, D) have each row of ``gallery`` (G, D) among their ``k``
    most similar (the k-occurrence N_k of hubness studies)."""
    k = min(int(check_positive("k_occurrence k", k, integer=True)), gallery.shape[0])
    top = (queries @ gallery.T).topk(k, dim=-1).indices
    return torch.bincount(top.flatten(), minlength=gallery.shape[0])


def hubness(queries: torch.Tensor, gallery: torch.Tensor, k: int = 10) -> float:
    """Skewness of the k-occurrence distribution (:func:`k_occurrence`): about 0 when every gallery
    item is retrieved equally often, large and positive when a few hubs take most queries."""
    n = k_occurrence(queries, gallery, k).double()
    sd = n.std(unbiased=False)
    if float(sd) == 0.0:
        return 0.0
    return float(((n - n.mean()) ** 3).mean() / sd**3)


class InvGCEncoder(WrapperEncoder):
    """``base`` whose embeddings of the modalities in ``banks`` are adjusted by InvGC.

    Args:
        base: the frozen encoder.
        banks: modality -> (M, D) gallery bank (embeddings of a reference split of that modality).
        beta: weight of the gallery bank's neighbour mean.
        k: neighbours per embedding (LocalAdj); None = the whole bank.
        query_banks: modality -> (M', D) query bank (embeddings of the queries of a reference
            split, e.g. captions), used with ``beta_query``.
        beta_query: weight of the query bank's neighbour mean (0: unused).
        weighting: ``"similarity"`` (each neighbour weighted by its cosine, the paper's adjacency)
            or ``"mean"`` (neighbours count equally).
        renormalize: return unit vectors (the Encoder contract); False returns the adjusted
            vectors as they are, the paper's dot-product scoring (see :func:`invgc_adjust`).
    """

    def __init__(self, base: Encoder, banks: Mapping[str, torch.Tensor], *, beta: float = 0.1, k: int | None = 10,
                 query_banks: Mapping[str, torch.Tensor] | None = None, beta_query: float = 0.5,
                 weighting: str = "similarity", renormalize: bool = True):
        super().__init__(base)
        if not banks:
            raise RobustMMError("invgc needs a gallery bank: pass data=<reference split> and modality=...")
        check_positive("invgc beta", beta, allow_zero=True)
        check_positive("invgc beta_query", beta_query, allow_zero=True)
        if k is not None:
            check_positive("invgc k", k, integer=True)
        if weighting not in WEIGHTINGS:
            raise RobustMMError(f"invgc weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
        self.beta, self.k, self.beta_query, self.weighting = float(beta), k, float(beta_query), weighting
        self.renormalize = bool(renormalize)
        self.bank_modalities = tuple(banks)
        for m, bank in {**banks, **(query_banks or {})}.items():
            base.check_modality(m)
            if not isinstance(bank, torch.Tensor) or bank.dim() != 2 or bank.shape[1] != base.embed_dim or not len(bank):
                raise RobustMMError(f"invgc bank for {m!r} must be a non-empty (M, {base.embed_dim}) tensor, got "
                                    f"{tuple(bank.shape) if isinstance(bank, torch.Tensor) else type(bank).__name__}")
        for m, bank in banks.items():
            self.register_buffer(f"bank_{m}", F.normalize(bank.detach().float(), dim=-1).clone())
        self.query_modalities = tuple(query_banks or {})
        for m, bank in (query_banks or {}).items():
            self.register_buffer(f"query_bank_{m}", F.normalize(bank.detach().float(), dim=-1).clone())
        self.eval()

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        z = self.base.encode(modality, x, validate=False)
        if modality not in self.bank_modalities:
            return z
        query = getattr(self, f"query_bank_{modality}") if modality in self.query_modalities else None
        return invgc_adjust(z, getattr(self, f"bank_{modality}"), beta=self.beta, k=self.k, query_bank=query,
                            beta_query=self.beta_query, weighting=self.weighting, renormalize=self.renormalize)

    def settings(self) -> dict[str, Any]:
        """The adjustment's settings and bank sizes (recorded in ``info()``)."""
        return {"beta": self.beta, "k": self.k, "beta_query": self.beta_query, "weighting": self.weighting,
                "renormalize": self.renormalize,
                "banks": {m: int(getattr(self, f"bank_{m}").shape[0]) for m in self.bank_modalities},
                "query_banks": {m: int(getattr(self, f"query_bank_{m}").shape[0]) for m in self.query_modalities}}

    def info(self) -> dict[str, Any]:
        return self.base.info() | {"defense": {"name": "invgc", **self.settings()}}
