"""The smoothed zero-shot classifier of Cohen, Rosenfeld & Kolter (ICML 2019) over any encoder.

``g(x) = argmax_c P(f(clamp(x + d)) = c)``, ``d ~ N(0, sigma^2 I)``, where the base classifier
``f`` is the zero-shot classifier of the encoder (optionally behind calibration heads or a
denoiser): the class whose text "semantic center" has the highest cosine with the embedding.
Noise is added in the modality's raw domain, in its own units, and the noisy input is clamped to
the domain: clamping is a deterministic post-processing of ``x + d``, i.e. part of ``f``, so the
guarantee of Cohen et al. holds unchanged.

Monte Carlo draws are seeded **per item** (from its dataset position, ``batch.index``), so an
item's counts do not depend on which other items share its batch, on the item batch size, or on
how items are sharded over ranks. Each forward embeds ``batch_noise`` noisy copies of one item.

* :meth:`SmoothedClassifier.predict` -- PREDICT: n draws, abstain (-1) unless the two-sided
  binomial test between the top two counts is below alpha.
* :meth:`SmoothedClassifier.certify` -- CERTIFY: n0 selection draws pick the class, n estimation
  draws count it, ``pA`` = one-sided Clopper-Pearson lower bound at alpha, radius
  ``sigma * Phi^-1(pA)``; abstain (-1, radius 0) when ``pA <= 1/2``. With ``gallery=`` the same
  estimation draws also certify X->text R@1 (see :mod:`robustmm.evaluation.certification.retrieval`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..batch import DEFAULT_TEMPLATES
from ..errors import RobustMMError
from ..modalities import get_modality
from .base import Encoder, WrapperEncoder
from .smoothing_stats import binomial_test, certified_radius, check_smoothing_args, clopper_pearson_lower

#: seed-stream phases, so the draws of CERTIFY, PREDICT and the attack never coincide
PHASE_CERTIFY, PHASE_PREDICT, PHASE_ATTACK = 0, 1, 2


def item_seed(seed: int, index: int, phase: int) -> int:
    """A 63-bit seed for one item's noise stream (a mix of the run seed, dataset position, phase)."""
    h = (int(seed) * 0x9E3779B97F4A7C15 + int(index) * 0xBF58476D1CE4E5B9 + int(phase) * 0x94D049BB133111EB)
    h &= (1 << 64) - 1
    h ^= h >> 31
    return h & ((1 << 63) - 1)


@dataclass
class Certificate:
    """Per-item output of :meth:`SmoothedClassifier.certify` (tensors of length N).

    ``pred`` is the certified class (-1 = abstain), ``radius`` its L2 radius in the modality's
    unit (0 when abstaining), ``p_lower`` the Clopper-Pearson bound on its probability,
    ``top_count`` the estimation count of the selected class, and ``plugin`` the majority class of
    the n estimation draws (no abstention). ``x2t_radius`` is the certified X->text R@1 radius
    (-1 = not certified) when a gallery was given.
    """

    pred: torch.Tensor
    radius: torch.Tensor
    p_lower: torch.Tensor
    top_count: torch.Tensor
    plugin: torch.Tensor
    x2t_radius: torch.Tensor | None = None
    x2t_hit_rate: torch.Tensor | None = None


def predict_from_counts(counts: torch.Tensor, alpha: float) -> torch.Tensor:
    """PREDICT's decision from (N, C) counts: the top class, or -1 where the two-sided binomial
    test between the top two counts has a p-value above ``alpha``."""
    top2 = counts.topk(min(2, counts.shape[1]), dim=1)
    out = top2.indices[:, 0].clone()
    for r in range(len(counts)):
        na = int(top2.values[r, 0])
        nb = int(top2.values[r, 1]) if counts.shape[1] > 1 else 0
        if binomial_test(na, na + nb) > alpha:
            out[r] = -1
    return out


class SmoothedClassifier(nn.Module):
    """Randomized smoothing of an encoder's zero-shot classifier on one modality.

    Args:
        encoder: any :class:`~robustmm.encoders.base.Encoder` (frozen).
        modality: the modality whose raw inputs are smoothed.
        sigma: standard deviation of the Gaussian noise, in the modality's raw units.
        class_embeddings: (C, D) unit class centers, or ``prompts`` (per class, its prompts).
        heads: optional calibration heads (``encoder.with_heads(heads)`` is the base classifier).
        batch_noise: noisy copies embedded per forward (speed only; part of the noise stream).
        seed: run seed mixed into every item's noise stream.
    """

    def __init__(self, encoder: Encoder, modality: str, sigma: float, *, class_embeddings: torch.Tensor | None = None,
                 prompts: list[list[str]] | None = None, heads: Mapping[str, nn.Module] | None = None,
                 batch_noise: int = 256, seed: int = 0):
        super().__init__()
        check_smoothing_args(sigma=sigma)
        check_smoothing_args(n=batch_noise)
        encoder.check_modality(modality)
        self.spec = get_modality(modality)
        self.base = encoder.with_heads(heads) if heads else encoder
        self.modality, self.sigma, self.batch_noise, self.seed = modality, float(sigma), int(batch_noise), int(seed)
        if class_embeddings is None:
            if prompts is None:
                raise RobustMMError(f"a smoothed classifier needs class prompts or class embeddings for {modality!r}")
            class_embeddings = self.base.class_embeddings(prompts)
        self.register_buffer("centers", class_embeddings.detach().to(self.base.device), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.centers.device

    @property
    def num_classes(self) -> int:
        return self.centers.shape[0]

    # -- the base classifier ------------------------------------------------------------------
    def noisy(self, x1: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
        """k noisy copies of one raw input ``x1``, clamped to the modality's domain."""
        lo, hi = self.spec.domain
        d = torch.randn((k, *x1.shape), generator=gen, device=x1.device, dtype=x1.dtype)
        torch.add(x1.unsqueeze(0), d, alpha=self.sigma, out=d)  # in place: one pass, no temporaries
        return d.clamp_(lo, hi)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings of raw (already domain-valid) inputs through the base model."""
        return self.base.encode(self.modality, x, validate=False)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Cosine similarities to the class centers (the base classifier's scores)."""
        return self.embed(x) @ self.centers.T

    # -- Monte Carlo ------------------------------------------------------------------------
    @torch.no_grad()
    def _draw_predictions(self, x1: torch.Tensor, index: int, num: int, phase: int,
                          gallery: torch.Tensor | None = None, own: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Base-classifier labels of ``num`` noisy copies of one item, and (with a gallery) whether
        the item's own caption strictly outranks every other caption for each draw."""
        gen = torch.Generator(device=x1.device).manual_seed(item_seed(self.seed, index, phase))
        labels, hits = [], []
        for s in range(0, num, self.batch_noise):
            z = self.embed(self.noisy(x1, min(self.batch_noise, num - s), gen))
            labels.append((z @ self.centers.T).argmax(1))
            if gallery is not None and own is not None:
                sims = z @ gallery.T
                best_own = sims[:, own].amax(1)
                best_other = sims[:, ~own].amax(1) if bool((~own).any()) else torch.full_like(best_own, -2.0)
                hits.append(best_own > best_other)  # ties count against the item, as in x2t_ranks
        return torch.cat(labels).cpu(), (torch.cat(hits).cpu() if hits else None)

    def _items(self, x: torch.Tensor, index: torch.Tensor | None) -> tuple[torch.Tensor, list[int]]:
        self.spec.validate(x)
        idx = list(range(len(x))) if index is None else [int(i) for i in index]
        return x.to(self.device), idx

    @torch.no_grad()
    def sample_counts(self, x: torch.Tensor, num: int, index: torch.Tensor | None = None,
                      phase: int = PHASE_PREDICT) -> torch.Tensor:
        """(N, C) counts of the base classifier's labels over ``num`` noise draws per item."""
        check_smoothing_args(n=num)
        x, idx = self._items(x, index)
        out = torch.zeros(len(x), self.num_classes, dtype=torch.long)
        for r, (x1, i) in enumerate(zip(x, idx)):
            out[r] = torch.bincount(self._draw_predictions(x1, i, num, phase)[0], minlength=self.num_classes)
        return out

    @torch.no_grad()
    def predict(self, x: torch.Tensor, n: int, alpha: float, index: torch.Tensor | None = None) -> torch.Tensor:
        """Cohen et al.'s PREDICT: (N,) classes, -1 where the two-sided binomial test between the
        top two counts of ``n`` draws is above ``alpha`` (the prediction is then not reliable).
        ``index`` gives the items' dataset positions (their noise seeds; default 0..N-1)."""
        check_smoothing_args(n=n, alpha=alpha)
        return predict_from_counts(self.sample_counts(x, n, index, PHASE_PREDICT), alpha)

    @torch.no_grad()
    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, index: torch.Tensor | None = None,
                gallery: torch.Tensor | None = None, own: torch.Tensor | None = None) -> Certificate:
        """Cohen et al.'s CERTIFY for each item of ``x``: see :class:`Certificate`.

        ``gallery`` (M, D) unit caption embeddings and ``own`` (N, M) boolean masks of each item's
        captions add the certified X->text R@1 radius of each item (:mod:`.retrieval`).
        """
        check_smoothing_args(n0=n0, n=n, alpha=alpha)
        x, idx = self._items(x, index)
        N = len(x)
        pred = torch.full((N,), -1, dtype=torch.long)
        plugin, top = torch.zeros(N, dtype=torch.long), torch.zeros(N, dtype=torch.long)
        radius, p_lo = torch.zeros(N, dtype=torch.float64), torch.zeros(N, dtype=torch.float64)
        x2t_r = torch.full((N,), -1.0, dtype=torch.float64) if gallery is not None else None
        x2t_rate = torch.zeros(N, dtype=torch.float64) if gallery is not None else None
        g = None if gallery is None else gallery.to(self.device)
        for r, (x1, i) in enumerate(zip(x, idx)):
            own_r = None if own is None else own[r].to(self.device)
            labels, hits = self._draw_predictions(x1, i, n0 + n, PHASE_CERTIFY, g, own_r)
            c_a = int(torch.bincount(labels[:n0], minlength=self.num_classes).argmax())
            est = torch.bincount(labels[n0:], minlength=self.num_classes)
            plugin[r], top[r] = int(est.argmax()), int(est[c_a])
            p_lo[r] = clopper_pearson_lower(int(est[c_a]), n, alpha)
            if p_lo[r] > 0.5:
                pred[r], radius[r] = c_a, certified_radius(float(p_lo[r]), self.sigma)
            if hits is not None:
                # the retrieval event "own caption on top" is fixed in advance: no selection draws needed
                k = int(hits[n0:].sum())
                x2t_rate[r] = k / n
                pr = clopper_pearson_lower(k, n, alpha)
                if pr > 0.5:
                    x2t_r[r] = certified_radius(pr, self.sigma)
        return Certificate(pred, radius, p_lo, top, plugin, x2t_r, x2t_rate)


class SmoothedEncoder(WrapperEncoder):
    """An encoder whose zero-shot predictions are smoothed with Gaussian noise (the smoothing defense).

    ``encode`` and ``encode_text`` are the base encoder's (the embedding the base classifier reads,
    so every attack, runner and report works on it unchanged); :meth:`predict` and :meth:`certify`
    are Cohen et al.'s PREDICT and CERTIFY over the zero-shot classifier of any modality, with the
    Monte Carlo settings given here. ``robustmm.certify`` on a SmoothedEncoder certifies a dataset
    with these settings.

    Args:
        base: the frozen encoder (a calibrated, denoised or transformed one is an encoder too).
        sigma: Gaussian noise std in the modality's raw unit.
        n0, draws, alpha: selection draws, estimation draws and failure probability (``draws`` as
            ``robustmm certify --draws``; ``n`` counts items everywhere).
        batch_noise: noisy copies embedded per forward (speed only).
        seed: mixed into every item's noise stream.
    """

    #: ``encode`` is the base's, without noise: the randomness lives in ``predict`` and ``certify``
    randomized = False

    def __init__(self, base: Encoder, sigma: float, *, n0: int = 100, draws: int = 1000, alpha: float = 0.001,
                 batch_noise: int = 256, seed: int = 0):
        check_smoothing_args(sigma=sigma, n0=n0, n=draws, alpha=alpha)
        check_smoothing_args(n=batch_noise)
        super().__init__(base)
        self.sigma, self.n0, self.draws, self.alpha = float(sigma), int(n0), int(draws), float(alpha)
        self.batch_noise, self.seed = int(batch_noise), int(seed)
        self.eval()  # a wrapper of a frozen encoder is frozen too (nn.Module starts in training mode)

    def settings(self) -> dict[str, Any]:
        """The Monte Carlo settings (the keywords that rebuild this defense around ``base``)."""
        return {"sigma": self.sigma, "n0": self.n0, "draws": self.draws, "alpha": self.alpha,
                "batch_noise": self.batch_noise, "seed": self.seed}

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return self.base.encode(modality, x, validate=False)

    def info(self) -> dict[str, Any]:
        return self.base.info() | {"smoothing": self.settings()}

    def classifier(self, modality: str, *, classnames: Sequence[str] | None = None,
                   prompts: Sequence[Sequence[str]] | None = None,
                   templates: Sequence[str] = DEFAULT_TEMPLATES) -> SmoothedClassifier:
        """The smoothed zero-shot classifier of ``modality`` over ``classnames`` (through
        ``templates``) or ``prompts`` (one list per class)."""
        if classnames is not None and prompts is not None:
            raise RobustMMError("give classnames= or prompts=, not both (prompts are built from classnames)")
        if classnames is not None:
            prompts = [[t.format(c) for t in templates] for c in classnames]
        if prompts is None:
            raise RobustMMError(f"smoothed predictions on {modality!r} need the classes: pass classnames=[...] "
                                "or prompts=[[...], ...]")
        return SmoothedClassifier(self.base, modality, self.sigma, prompts=[list(p) for p in prompts],
                                  batch_noise=self.batch_noise, seed=self.seed)

    def predict(self, modality: str, x: torch.Tensor, *, classnames: Sequence[str] | None = None,
                prompts: Sequence[Sequence[str]] | None = None, index: torch.Tensor | None = None,
                **classes: Any) -> torch.Tensor:
        """PREDICT: (N,) classes of ``x`` under noise, -1 where the top class is not reliable at ``alpha``.
        ``index`` gives the items' positions (their noise seeds; default 0..N-1)."""
        sm = self.classifier(modality, classnames=classnames, prompts=prompts, **classes)
        return sm.predict(x, self.draws, self.alpha, index)

    def certify(self, modality: str, x: torch.Tensor, *, classnames: Sequence[str] | None = None,
                prompts: Sequence[Sequence[str]] | None = None, index: torch.Tensor | None = None,
                **classes: Any) -> Certificate:
        """CERTIFY: per item of ``x``, the certified class (-1 = abstain) and its L2 radius (a
        :class:`Certificate`). For certified accuracy over a dataset use ``robustmm.certify``."""
        sm = self.classifier(modality, classnames=classnames, prompts=prompts, **classes)
        return sm.certify(x, self.n0, self.draws, self.alpha, index)
