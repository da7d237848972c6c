"""EOT (Expectation over Transformation, Athalye et al., ICML 2018) for any gradient attack.

Against a randomized model or defense the attack should follow ``E_t[grad L(f_t(x))]``, the mean
over draws ``t`` of the *per-draw losses'* gradients. Averaging embeddings first
(``grad L(mean_t f_t(x))``) is a different, biased estimator for any loss that is not linear in
the embedding (zero-shot CE, DLR), and a view that returns one (n, D) embedding can only ever
hand the attack's loss one point per item. So :class:`EOT` lets the loss see every draw:

1. the inner attack gets the batch tiled ``samples`` times (copies keep the item's index, hence
   its random start), so its loss is evaluated on ``samples`` draws per item;
2. it attacks :class:`EOTEncoder`, a view of the encoder that gives each copy its own draw (copy
   r of every item in the r-th call of the randomized encoder) and ties identical rows in the
   backward pass: every copy receives the mean of its copies' gradients -- exactly the EOT
   estimate, with the forward values untouched;
3. copies that get the same gradient take the same step and stay identical (PGD always), so
   each item's result is the example most of its copies ended at.

An attack whose own decisions depend on the loss per item would split the copies: APGD halves
its step per row on single-draw losses and keeps each row's best iterate, so its copies drift
apart. Such an attack averages over draws itself -- it takes an ``eot_samples`` setting, and EOT
hands it ``eot_samples=samples`` instead of tiling: APGD's loss, gradient, step-size checkpoints,
best iterate and broken verdict are then per item on the mean over ``samples`` draws (the share
of broken draws ranks its iterates). Cost either way: ``samples`` forward/backward passes per step.
(Rows of different items that are bit-identical would be tied too; real data has none.)

Example::

    >>> robust = EOT(build_attack("apgd", steps=100), samples=20)
    >>> res = robustmm.evaluate(randomized_defense, data, modality="image", attack=robust)
"""
from __future__ import annotations

from typing import Any

import torch

from ..batch import Batch
from ..encoders.base import Encoder
from ..errors import BudgetError, RobustMMError, UnknownNameError
from .base import Attack, AttackWrapper
from .bpda import declared
from .eot_draws import DRAW_MODES, DrawnEncoder
from .eot_reduction import check_reduction
from .views import EncoderView

__all__ = ["EOT", "EOTEncoder", "tie_identical_rows"]


def tie_identical_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_tied, rank): ``x_tied`` equals ``x`` but the gradient reaching each row is the mean over
    the rows bit-identical to it; ``rank[i]`` counts the identical rows before row i."""
    flat = x.detach().flatten(1)
    _, group, counts = torch.unique(flat, dim=0, return_inverse=True, return_counts=True)
    order = torch.argsort(group, stable=True)
    starts = counts.cumsum(0) - counts
    rank = torch.empty_like(group)
    rank[order] = torch.arange(len(group), device=x.device) - starts[group[order]]
    if not x.requires_grad or bool((counts == 1).all()):
        return x, rank
    sums = torch.zeros(len(counts), flat.shape[1], dtype=x.dtype, device=x.device).index_add(0, group, x.flatten(1))
    mean = (sums / counts[:, None].to(x.dtype))[group].view_as(x)
    return x.detach() + (mean - mean.detach()), rank


class EOTEncoder(EncoderView):
    """A view of ``base`` for EOT: identical input rows are tied in the backward pass (their
    gradients averaged), and the r-th copy of each row is embedded in the r-th call of ``base``,
    so a randomizing ``base`` gives every copy its own draw."""

    @property
    def bpda_steps(self) -> tuple[Any, ...]:
        """The wrapped defense's non-differentiable steps (so BPDA composes with EOT)."""
        return declared(self.base, "bpda_steps")

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        x, rank = tie_identical_rows(x)
        order, parts = [], []
        for r in range(int(rank.max()) + 1):
            rows = (rank == r).nonzero().squeeze(1)
            order.append(rows)
            parts.append(self.base.encode(modality, x[rows], validate=False))
        emb = torch.cat(parts)
        return emb[torch.argsort(torch.cat(order))]


class EOT(AttackWrapper):
    """Any gradient attack with its gradient averaged over ``samples`` draws of a randomized
    encoder (the mean of the per-draw losses' gradients). ``describe()`` adds ``eot_samples``.

    Args:
        inner: the attack (PGD, APGD, ... or a BPDA-wrapped one).
        samples: draws per step (``k``); an integer >= 1.
        draws: ``"random"`` (the encoder's own draws), ``"stratified"`` or ``"fixed"`` (systematic
            samples of the draws the encoder declares; :mod:`robustmm.attacks.eot_draws`).
        smooth: Gaussian blur (in samples) of the input gradient, translation-invariant attack
            (Dong et al. 2019); 0 = off. Image-like modalities only.
        seed: seeds the stratified schedule.
        reduction: how the draws' losses and gradients fold into one per item, ``"mean"`` or
            ``"softmin"`` (``-log mean_t exp(-loss_t)``; :mod:`robustmm.attacks.eot_reduction`).
            Only attacks that average draws themselves (``eot_samples``: APGD) can take ``"softmin"``.
    """

    def __init__(self, inner: Attack, samples: int = 10, draws: str = "random", smooth: float = 0.0, seed: int = 0,
                 reduction: str = "mean"):
        super().__init__(inner)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise BudgetError(f"EOT samples must be an integer >= 1, got {samples!r}")
        if draws not in DRAW_MODES:
            raise UnknownNameError("EOT draws", str(draws), DRAW_MODES)
        if isinstance(smooth, bool) or not isinstance(smooth, (int, float)) or not 0 <= smooth <= 64:
            raise BudgetError(f"EOT smooth must be a number of samples in [0, 64], got {smooth!r}")
        self.samples, self.draws, self.smooth, self.seed = samples, draws, float(smooth), int(seed)
        self.reduction = check_reduction(reduction)
        if reduction != "mean" and "eot_reduction" not in inner.settings():
            raise RobustMMError(f"EOT reduction={reduction!r} needs an attack that averages draws itself (eot_reduction: "
                                f"APGD); {inner.name!r} sees tiled copies, whose losses EOT can only average")
        self._views: dict[tuple[int, str], tuple[Encoder, Encoder]] = {}

    def wrap(self, inner: Attack) -> "EOT":
        return EOT(inner, self.samples, self.draws, self.smooth, self.seed, self.reduction)

    def _held(self, encoder: Encoder, kind: str, make: Any) -> Any:
        held = self._views.get((id(encoder), kind))
        if held is None or held[0] is not encoder:
            held = (encoder, make(encoder))
            self._views[(id(encoder), kind)] = held
        return held[1]

    def _view(self, encoder: Encoder) -> EOTEncoder:
        return self._held(encoder, "tied", EOTEncoder)

    def _drawn(self, encoder: Encoder) -> Encoder:
        """``encoder`` itself, or the view that schedules its draws and smooths its gradient."""
        if self.draws == "random" and self.smooth == 0:
            return encoder
        view = self._held(encoder, "drawn", lambda e: DrawnEncoder(e, self.samples, self.draws, self.smooth, self.seed))
        view.restart()
        return view

    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        """Attack ``samples`` tied copies of ``batch`` on the EOT view; one example per item back.
        An attack that averages over draws itself (an ``eot_samples`` setting: APGD) runs on the
        batch as it is, with ``eot_samples=samples``."""
        encoder = self._drawn(encoder)
        if "eot_samples" in self.inner.settings():
            folded = {"eot_reduction": self.reduction} if self.reduction != "mean" else {}
            return self.inner.replace(eot_samples=self.samples, **folded)(encoder, batch)
        k, n = self.samples, len(batch)
        index = batch.index if batch.index is not None and len(batch.index) == n else torch.arange(n)
        tiled = Batch(batch.modality, batch.x.repeat(k, *([1] * (batch.x.dim() - 1))), list(batch.captions) * k,
                      None if batch.labels is None else batch.labels.repeat(k), batch.prompts,
                      torch.as_tensor(index).repeat(k))
        out = self.inner(self._view(encoder), tiled)
        copies = out.x.detach().view(k, n, *batch.x.shape[1:])
        # the example most copies agree on (a random projection identifies bit-identical rows)
        probe = torch.randn(copies[0, 0].numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        keys = copies.flatten(2).to(torch.float64) @ probe.to(copies.device)
        votes = (keys[:, None, :] == keys[None, :, :]).sum(1)  # (k, n)
        pick = votes.argmax(0)
        return batch.replace(x=copies[pick, torch.arange(n, device=copies.device)].clone())

    def describe(self) -> dict[str, Any]:
        extra = {"eot_draws": self.draws} if self.draws != "random" else {}
        extra |= {"eot_smooth": self.smooth} if self.smooth else {}
        extra |= {"eot_reduction": self.reduction} if self.reduction != "mean" else {}
        return self.inner.describe() | {"eot_samples": self.samples} | extra
