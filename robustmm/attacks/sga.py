"""Set-level Guidance Attack (SGA, ICCV 2023): a joint x + caption attack built to transfer.

Three steps per batch, all on the encoder given to ``__call__`` (the *source* model):

1. **text, guided by the clean x** -- every caption of an item is attacked BERT-Attack style:
   words are ranked by importance (how much the caption's similarity to the clean x embedding
   drops when the word is removed), stop-words are skipped, the top-``k`` substitutes of the
   most important word come from a :class:`~robustmm.text.substitutes.SubstituteGenerator`,
   and the substitute that lowers the x-caption similarity most is kept if it lowers it at all;
   otherwise the next word is tried. At most ``max_words`` words change per caption.
2. **x, guided by the set of adversarial captions** -- PGD (L-inf by default: eps 2/255, 10
   steps of 0.5/255, random start) minimising the summed similarity of the item's embedding to
   *all* of its adversarial captions, over a scale set: the input itself plus copies resized by
   0.5, 0.75, 1.25, 1.5 (``F.interpolate``, differentiable; N(0, 0.05) noise added before
   resizing, values clamped to the domain, resized back), losses summed over scales.
3. **text again, guided by the adversarial x** -- step 1 repeated on the *original* captions
   with the adversarial x embedding as guidance (so each output caption differs from its
   original in at most ``max_words`` words).

Scales apply to image-like modalities (image, depth, thermal; video is resized frame by
frame). For audio and point clouds the scale set is skipped -- resizing a waveform or a point set
is not the augmentation the method is about -- and step 2 is plain PGD against the caption set.

Transfer is ``evaluate(target, data, modality=..., attack=SGA(), source=other)``: examples are
made on ``source`` and scored on ``target``.

Example::

    sga = build_attack("sga")                     # eps 2/255, PGD-10, 1 word per caption
    res = robustmm.evaluate(alt, test, modality="image", attack=sga, source=enc)
    res.metrics["asr_detail"]                     # {"x2t_R@1": .., "t2x_R@1": .., ...}
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..batch import Batch
from ..errors import BudgetError, UnknownNameError
from ..modalities import get_modality
from ..text.substitutes import (
    STOP_WORDS,
    EmbeddingNeighbourSubstitutes,
    SubstituteGenerator,
    is_stop_word,
    replace_core,
    split_token,
    split_words,
)
from .base import Attack, register_attack
from .ops import frozen

log = logging.getLogger(__name__)

__all__ = ["SGA", "SCALES", "attack_captions"]

#: SGA's scale set (the original size is always included as well)
SCALES: tuple[float, ...] = (0.5, 0.75, 1.25, 1.5)
_IMAGE_LIKE = ("image", "video", "depth", "thermal")
_NORMS = ("linf", "l2")


def _embed_texts(encoder: Any, texts: list[str], chunk: int = 1024) -> torch.Tensor:
    if not texts:
        return torch.zeros(0, getattr(encoder, "embed_dim", 1))
    with torch.no_grad():
        return torch.cat([encoder.encode_text(texts[i : i + chunk]).float().cpu() for i in range(0, len(texts), chunk)])


def attack_captions(
    encoder: Any,
    captions: Sequence[Sequence[str]],
    guide: torch.Tensor,
    generator: SubstituteGenerator,
    *,
    k: int = 10,
    max_words: int = 1,
    stop_words: Iterable[str] = STOP_WORDS,
) -> list[list[str]]:
    """BERT-Attack style word substitution guided by one embedding per item.

    Args:
        encoder: anything with ``encode_text``.
        captions: per item, its captions.
        guide: (N, D) unit embeddings; the captions of item i are pushed away from ``guide[i]``.
        generator: proposes ``k`` substitutes per word.
        max_words: words changed per caption, at most.
    Returns:
        New per-item caption lists (same shape as ``captions``); each caption keeps its word
        count and differs from the original in at most ``max_words`` words.
    """
    stop = frozenset(stop_words)
    guide = guide.float().cpu()
    flat = [(i, c) for i, caps in enumerate(captions) for c in caps]
    words = [split_words(c) for _, c in flat]
    owner = [i for i, _ in flat]
    if not flat or max_words <= 0:
        return [list(c) for c in captions]

    # importance of each eligible word: similarity drop when it is removed
    eligible = [[j for j, w in enumerate(ws) if not is_stop_word(w, stop)] for ws in words]
    variants = [" ".join(ws[:j] + ws[j + 1 :]) for ws, el in zip(words, eligible) for j in el]
    emb = _embed_texts(encoder, [c for _, c in flat] + variants)
    base = (emb[: len(flat)] * guide[owner]).sum(-1)
    var_sims = (emb[len(flat) :].reshape(-1, emb.shape[-1]) if variants else emb[:0])
    order: list[list[int]] = []
    o = 0
    for n_c, el in enumerate(eligible):
        drops = base[n_c] - (var_sims[o : o + len(el)] @ guide[owner[n_c]])
        o += len(el)
        order.append([el[j] for j in torch.argsort(drops, descending=True, stable=True).tolist()])

    current = [list(ws) for ws in words]
    cur_sim = base.clone()
    changes = [0] * len(flat)
    ptr = [0] * len(flat)
    while True:
        active = [c for c in range(len(flat)) if changes[c] < max_words and ptr[c] < len(order[c])]
        if not active:
            break
        texts: list[str] = []
        slots: list[tuple[int, int, list[str], int]] = []  # caption, position, substitutes, offset
        for c in active:
            pos = order[c][ptr[c]]
            ptr[c] += 1
            original = split_token(current[c][pos])[1].lower()
            subs = [s for s in generator.candidates(current[c], pos, k) if s.lower() != original and s.lower() not in stop][:k]
            if not subs:
                continue
            slots.append((c, pos, subs, len(texts)))
            for s in subs:
                ws = list(current[c])
                ws[pos] = replace_core(ws[pos], s)
                texts.append(" ".join(ws))
        if not texts:
            continue
        emb = _embed_texts(encoder, texts)
        for c, pos, subs, off in slots:
            sims = emb[off : off + len(subs)] @ guide[owner[c]]
            best = int(sims.argmin())
            if float(sims[best]) < float(cur_sim[c]):
                current[c][pos] = replace_core(current[c][pos], subs[best])
                cur_sim[c] = sims[best]
                changes[c] += 1

    out: list[list[str]] = [[] for _ in captions]
    for c, i in enumerate(owner):
        out[i].append(" ".join(current[c]))
    return out


@register_attack("sga")
class SGA(Attack):
    """Set-level Guidance Attack: caption substitution + multi-scale PGD against the caption set.

    Args:
        eps: x budget in the modality's unit (default 2/255, SGA's image setting).
        steps: PGD iterations (10).
        step_size: PGD step (default eps / 4, i.e. 0.5/255 at 2/255).
        norm: "linf" (default) or "l2".
        random_start: start PGD from a random point of the eps-ball.
        scales: resize factors used besides the original size (image-like modalities only).
        noise_std: Gaussian noise added to the scaled copies (0.05).
        max_words: words changed per caption, at most (1).
        k: substitutes tried per word (10).
        substitutes: a :class:`~robustmm.text.substitutes.SubstituteGenerator` (default: an
            :class:`~robustmm.text.substitutes.EmbeddingNeighbourSubstitutes` over the built-in
            vocabulary, in the space of the encoder being attacked).
        vocabulary: the default generator's vocabulary (None = the built-in word list).
        stop_words: words never attacked or proposed.
        seed: random start and scale noise (mixed with the batch's first index, so every batch
            differs but reruns are identical).

    Shapes: ``batch.x`` (N, *shape) of any continuous modality; ``batch.captions`` per item.
    Returns a batch with the adversarial x (within eps of the input, inside the domain) and
    the adversarial captions (same number per item).

    Example::

        adv = SGA(eps=2 / 255)(encoder, batch)
        adv.captions[0]     # e.g. ['a large red circle next to a tiny blue sun.', ...]
    """

    perturbs = ("x", "captions")

    def __init__(
        self,
        eps: float = 2 / 255,
        steps: int = 10,
        step_size: float | None = None,
        norm: str = "linf",
        *,
        random_start: bool = True,
        scales: Sequence[float] = SCALES,
        noise_std: float = 0.05,
        max_words: int = 1,
        k: int = 10,
        substitutes: SubstituteGenerator | None = None,
        vocabulary: Sequence[str] | None = None,
        stop_words: Iterable[str] = STOP_WORDS,
        seed: int = 0,
    ):
        if eps < 0 or steps < 0 or (step_size is not None and step_size < 0):
            raise BudgetError(f"sga: eps, steps and step_size must be >= 0 (got {eps}, {steps}, {step_size})")
        if norm not in _NORMS:
            raise UnknownNameError("norm", norm, _NORMS)
        if max_words < 0 or k < 1 or noise_std < 0 or any(s <= 0 for s in scales):
            raise BudgetError("sga: max_words >= 0, k >= 1, noise_std >= 0 and positive scales required")
        self.eps = float(eps)
        self.steps = int(steps)
        self.step_size = float(step_size) if step_size is not None else self.eps / 4
        self._step_given = step_size is not None
        self.norm = norm
        self.random_start = bool(random_start)
        self.scales = tuple(float(s) for s in scales)
        self.noise_std = float(noise_std)
        self.max_words = int(max_words)
        self.k = int(k)
        self.substitutes = substitutes
        self.vocabulary = None if vocabulary is None else list(vocabulary)
        self.stop_words = frozenset(stop_words)
        self.seed = int(seed)
        self._default_gen: tuple[Any, EmbeddingNeighbourSubstitutes] | None = None

    # -- settings --------------------------------------------------------------------------
    def with_eps(self, eps: float) -> "SGA":
        """A copy at another budget (step size rescaled as eps / 4 unless it was given)."""
        other = SGA(
            eps, self.steps, self.step_size if self._step_given else None, self.norm,
            random_start=self.random_start, scales=self.scales, noise_std=self.noise_std,
            max_words=self.max_words, k=self.k, substitutes=self.substitutes,
            vocabulary=self.vocabulary, stop_words=self.stop_words, seed=self.seed,
        )
        other._default_gen = self._default_gen
        return other

    def describe(self) -> dict[str, Any]:
        gen = self.substitutes
        return {
            "name": self.name,
            "eps": self.eps,
            "norm": self.norm,
            "steps": self.steps,
            "step_size": self.step_size,
            "random_start": self.random_start,
            "scales": [1.0, *self.scales],
            "noise_std": self.noise_std,
            "max_words": self.max_words,
            "k": self.k,
            "substitutes": repr(gen) if gen is not None else "embedding-neighbours(source text encoder, built-in vocabulary)",
            "seed": self.seed,
        }

    def generator(self, encoder: Any) -> SubstituteGenerator:
        """The substitute generator used against ``encoder`` (the default one is cached per encoder)."""
        if self.substitutes is not None:
            return self.substitutes
        if self._default_gen is None or self._default_gen[0] is not encoder:
            self._default_gen = (encoder, EmbeddingNeighbourSubstitutes(encoder, self.vocabulary, stop_words=self.stop_words))
        return self._default_gen[1]

    # -- the attack ------------------------------------------------------------------------
    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        """Return a copy of ``batch`` with adversarial x and captions (the input is not mutated)."""
        spec = get_modality(batch.modality)
        encoder.check_modality(batch.modality)
        offset = int(batch.index[0]) if batch.index is not None and len(batch.index) else 0
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + offset)
        gen = self.generator(encoder)
        with frozen(encoder):
            with torch.no_grad():
                clean_emb = encoder.encode(batch.modality, batch.x).float().cpu()
            # (1) text guided by the clean x
            adv_caps = attack_captions(encoder, batch.captions, clean_emb, gen, k=self.k,
                                       max_words=self.max_words, stop_words=self.stop_words)
            # (2) x guided by the set of adversarial captions
            flat = [c for caps in adv_caps for c in caps]
            owner = torch.tensor([i for i, caps in enumerate(adv_caps) for _ in caps], dtype=torch.long)
            text_emb = _embed_texts(encoder, flat)
            x_adv = self._pgd(encoder, batch.modality, spec.domain, batch.x, text_emb, owner, g)
            # (3) text again, guided by the adversarial x
            with torch.no_grad():
                adv_emb = encoder.encode(batch.modality, x_adv).float().cpu()
            adv_caps = attack_captions(encoder, batch.captions, adv_emb, gen, k=self.k,
                                       max_words=self.max_words, stop_words=self.stop_words)
        return batch.replace(x=x_adv, captions=adv_caps)

    def _views(self, modality: str, x: torch.Tensor, domain: tuple[float, float], g: torch.Generator) -> torch.Tensor:
        """The input plus its noisy rescaled copies, concatenated along the batch dim."""
        if modality not in _IMAGE_LIKE or not self.scales:
            return x
        lo, hi = domain
        frames = x.flatten(0, x.dim() - 4)  # video: (N*T, C, H, W); images unchanged
        h, w = frames.shape[-2:]
        views = [x]
        for s in self.scales:
            noise = torch.randn(frames.shape, generator=g).to(frames.device, frames.dtype) * self.noise_std
            size = (max(1, int(s * h)), max(1, int(s * w)))
            v = F.interpolate(frames + noise, size=size, mode="bilinear", align_corners=False).clamp(lo, hi)
            v = F.interpolate(v, size=(h, w), mode="bilinear", align_corners=False)
            views.append(v.reshape(x.shape))
        return torch.cat(views)

    def _pgd(
        self, encoder: Any, modality: str, domain: tuple[float, float], x: torch.Tensor,
        text_emb: torch.Tensor, owner: torch.Tensor, g: torch.Generator,
    ) -> torch.Tensor:
        x = x.detach()
        if self.eps == 0 or self.steps == 0 or text_emb.shape[0] == 0:
            return x.clone()
        lo, hi = domain
        n = x.shape[0]
        text_emb = text_emb.to(x.device)
        # (N, M) mask: which captions belong to which item (the "set" of each item)
        mine = (owner.to(x.device)[None, :] == torch.arange(n, device=x.device)[:, None]).to(text_emb.dtype)
        if self.random_start:
            if self.norm == "linf":
                delta = (torch.rand(x.shape, generator=g) * 2 - 1) * self.eps
            else:
                d = torch.randn(x.shape, generator=g)
                d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
                r = torch.rand(n, generator=g).view(-1, *[1] * (x.dim() - 1))
                delta = d * r * self.eps
            x_adv = (x + delta.to(x.device, x.dtype)).clamp(lo, hi)
        else:
            x_adv = x.clone()
        views = 1 + (len(self.scales) if modality in _IMAGE_LIKE else 0)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            # the scaled, noised views are the attack's own input-diversity transforms, not raw inputs
            emb = encoder.encode(modality, self._views(modality, x_adv, domain, g), validate=False).float()  # (views*N, D)
            sims = emb @ text_emb.T  # (views*N, M)
            loss = (sims.reshape(views, n, -1) * mine).sum(-1).mean(1).sum()  # similarity to own caption set
            (grad,) = torch.autograd.grad(loss, [x_adv])
            with torch.no_grad():
                if self.norm == "linf":
                    x_adv = x_adv - self.step_size * grad.sign()
                    x_adv = torch.min(torch.max(x_adv, x - self.eps), x + self.eps)
                else:
                    gn = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
                    x_adv = x_adv - self.step_size * grad / gn
                    d = x_adv - x
                    dn = d.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
                    x_adv = x + d * torch.clamp(self.eps / dn.clamp_min(1e-12), max=1.0)
                x_adv = x_adv.clamp(lo, hi).detach()
        return x_adv
