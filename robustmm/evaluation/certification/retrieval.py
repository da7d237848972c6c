"""Certified X->text R@1 by randomized smoothing of the retrieval decision itself.

**The bound.** For item ``i`` with captions ``own(i)`` in a gallery of caption embeddings
``t_1..t_M``, let the base decision be the indicator

    b_i(x) = 1[ max_{j in own(i)} <f(x), t_j>  >  max_{j not in own(i)} <f(x), t_j> ]

("R@1 is a hit"; ties count against the item, as in :func:`robustmm.metrics.x2t_ranks`), with
``f`` the base embedding (encoder, heads, clamping). Its smoothed version is
``h_i(x) = P_d[b_i(x + d) = 1]``, ``d ~ N(0, sigma^2 I)``.

*Claim.* If ``h_i(x) >= p > 1/2`` then ``h_i(x + delta) > 1/2`` for every ``||delta||_2 < sigma Phi^-1(p)``:
the smoothed retriever (which returns, for an input, the item that wins the top-caption vote
under noise) still ranks one of ``i``'s own captions first.

*Proof sketch.* For any measurable ``b: R^d -> [0, 1]``, ``x -> Phi^-1(E[b(x + d)])`` is
``1/sigma``-Lipschitz (Salman et al. 2019, Lemma 2; it is the Neyman-Pearson argument of Cohen et
al. 2019, Theorem 1, whose worst case is a half-space). So ``Phi^-1(h_i(x + delta)) >=
Phi^-1(p) - ||delta|| / sigma > 0``. ``p`` is the one-sided Clopper-Pearson lower bound of the
n estimation draws at level alpha; the event ``b_i = 1`` is fixed before sampling (no selection
step is needed), so the certificate fails with probability at most alpha per item. This is the
classification certificate of Cohen et al. applied to the binary "own caption on top" decision.

*Why not bound each caption score?* Smoothing every similarity ``(1 + <f(x+d), t_j>) / 2`` in
[0, 1] is also sound (same lemma per caption, plus a union bound over the M captions), but on
SynthScenes the own-vs-best-other cosine margins are ~0.05-0.1, which gives radii of about
``sigma * 0.05`` before the Hoeffding slack -- nothing certifies at useful radii. The vote
certificate uses the same draws as the classification certificate at no extra forward cost.
"""
from __future__ import annotations

import torch

from ...data.base import MultimodalDataset
from ...encoders.base import Encoder
from ...metrics import caption_owner


@torch.no_grad()
def caption_gallery(encoder: Encoder, dataset: MultimodalDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The X->text gallery of a dataset: (M, D) unit caption embeddings and (M,) owner item of each."""
    texts, owner = caption_owner(dataset.captions)
    return encoder.encode_text(texts).cpu(), owner


def own_masks(owner: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(len(items), M) boolean masks: caption j belongs to item ``items[r]``."""
    return owner[None, :] == items[:, None]
