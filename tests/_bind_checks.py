"""The checks every Bind family's tests run on its tiny encoder (tests/_bind_tiny.py checkpoints).

ImageBind and LanguageBind load differently but promise the same things once loaded: raw inputs
embed to unit vectors with a gradient on the raw input, and PGD moves an input away from its
class. Each test file parametrizes over its own modalities and raw inputs and calls these.
"""
from __future__ import annotations

import torch
from _bind_tiny import EMBED_DIM

from robustmm.attacks import build_attack
from robustmm.batch import Batch
from robustmm.modalities import get_modality

#: three one-prompt classes for the zero-shot checks
PROMPTS = [["a dog barking."], ["a red car."], ["rain on a window."]]


def check_embeds_with_gradient(enc, modality: str, x: torch.Tensor) -> None:
    """``enc`` embeds raw ``x`` to unit vectors of the tiny size, and a text-similarity loss on them
    has a finite, nonzero gradient on ``x`` itself (the whole preprocessing is differentiable)."""
    x = x.requires_grad_(True)
    z = enc.encode(modality, x)
    n = x.shape[0]
    assert z.shape == (n, EMBED_DIM)
    assert torch.allclose(z.norm(dim=-1), torch.ones(n), atol=1e-5)
    (z @ enc.encode_text(["a dog barking."]).T).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def check_pgd_lowers_true_class_similarity(enc, modality: str, x: torch.Tensor, loss: str) -> None:
    """Five PGD steps at the modality's largest eps, within budget, against the model's own labels over
    :data:`PROMPTS`. ce: the true class loses ground to the others (margin); caption: its prompt's
    similarity itself drops."""
    centers = enc.class_embeddings(PROMPTS)

    def scores(v):
        sims = enc.encode(modality, v) @ centers.T
        true = sims.gather(1, labels[:, None])[:, 0]
        other = sims.scatter(1, labels[:, None], -2.0).amax(1)
        return true, true - other

    with torch.no_grad():
        labels = (enc.encode(modality, x) @ centers.T).argmax(1)
        true0, margin0 = scores(x)
    captions = [[PROMPTS[int(c)][0]] for c in labels]
    batch = Batch(modality, x, captions, labels=labels, prompts=PROMPTS)
    eps = get_modality(modality).eps_grid[-1]
    adv = build_attack("pgd", eps=eps, steps=5, loss=loss)(enc, batch).x
    assert (adv - x).abs().max() <= eps + 1e-6
    with torch.no_grad():
        true1, margin1 = scores(adv)
    if loss == "ce":
        assert margin1.mean() < margin0.mean() - 1e-4
    else:
        assert true1.mean() < true0.mean() - 1e-4
