"""Set-level Guidance Attack (SGA, ICCV 2023): a joint x + caption attack built to transfer.

Three steps per batch, all on the encoder given to ``__call__`` (the *source* model):

1. **text, guided by the clean x** -- every caption of an item is attacked BERT-Attack style:
   words are ranked by importance (how much the caption's similarity to the clean x embedding
   drops when the word is removed), stop-words are skipped, the top-``k`` substitutes of the
   most important word come from a :class:`~robustmm.text.substitutes.SubstituteGenerator`,
   and the substitute that lowers the x-caption similarity most is kept if it lowers it at all;
   otherwise the next word is tried. At most ``max_words`` words change per caption.
2. **x, guided by the set of adversarial captions** -- PGD (the modality's norm and middle eps
   unless given, 10 steps of eps/4, random start; SGA's image setting is eps 2/255) minimising the
   summed similarity of the item's embedding to
   *all* of its adversarial captions, over a scale set: the input itself plus copies resized by
   0.5, 0.75, 1.25, 1.5 (``F.interpolate``, differentiable; N(0, 0.05) noise added before
   resizing, values clamped to the domain, resized back), losses summed over scales.
3. **text again, guided by the adversarial x** -- step 1 repeated on the *original* captions
   with the adversarial x embedding as guidance (so each output caption differs from its
   original in at most ``max_words`` words).

Both text steps run under a :class:`~robustmm.attacks.meaning_guard.MeaningGuard` (on by default,
``meaning_guard="strict"``): an attribute word (colour, shape, size, number, position, material,
texture) is only ever replaced by a synonym and none is added to a category the caption has, so
the adversarial caption still describes the item (``"category"`` only forbids same-category swaps;
``"off"`` is the published attack; results count the edits that still change an attribute in
``metrics.caption_edits``).

Scales apply to image-like modalities (``ModalitySpec.image_like``: image, depth, thermal;
video is resized frame by frame). For audio and point clouds the scale set is skipped -- resizing a waveform or a point set
is not the augmentation the method is about -- and step 2 is plain PGD against the caption set.

Transfer is ``evaluate(target, data, modality=..., attack=SGA(), source=other)``: examples are
made on ``source`` and scored on ``target``.

Example::

    sga = build_attack("sga", eps=2 / 255)        # SGA's image budget, PGD-10, 1 word per caption
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
from ..errors import BudgetError
from ..modalities import get_modality
from ..text.embed import embed_texts
from ..text.substitutes import STOP_WORDS, EmbeddingNeighbourSubstitutes, SubstituteGenerator
from .base import Attack, register_attack
from .meaning_guard import MeaningGuard
from .ops import ascent_step, check_eps, frozen, project, random_delta, resolve_norm
from .word_swap import attack_captions

log = logging.getLogger(__name__)

__all__ = ["SGA", "SCALES", "attack_captions"]

#: SGA's scale set (the original size is always included as well)
SCALES: tuple[float, ...] = (0.5, 0.75, 1.25, 1.5)


@register_attack("sga")
class SGA(Attack):
    """Set-level Guidance Attack: caption substitution + multi-scale PGD against the caption set.

    Args:
        eps: x budget in the modality's unit; None = the modality's middle eps (SGA's image
            setting is 2/255).
        norm: "linf" or "l2"; None = the modality's default norm.
        steps: PGD iterations (10).
        step_size: PGD step (default eps / 4, i.e. 0.5/255 at 2/255).
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
        meaning_guard: "strict" (default: attribute words are replaced by synonyms only), "category"
            (no same-category swaps) or "off" (:mod:`~robustmm.attacks.meaning_guard`).
        min_similarity: cosine floor of an adversarial caption to its original (None: none).
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
        eps: float | None = None,
        norm: str | None = None,
        steps: int = 10,
        step_size: float | None = None,
        *,
        random_start: bool = True,
        scales: Sequence[float] = SCALES,
        noise_std: float = 0.05,
        max_words: int = 1,
        k: int = 10,
        substitutes: SubstituteGenerator | None = None,
        vocabulary: Sequence[str] | None = None,
        stop_words: Iterable[str] = STOP_WORDS,
        meaning_guard: str = "strict",
        min_similarity: float | None = None,
        seed: int = 0,
    ):
        self.eps = None if eps is None else check_eps(eps)
        self.norm = None if norm is None else resolve_norm(norm)
        if steps < 0:
            raise BudgetError(f"sga: steps must be >= 0, got {steps}")
        self.step_size = None if step_size is None else check_eps(step_size, "step_size")
        if max_words < 0 or k < 1 or noise_std < 0 or any(s <= 0 for s in scales):
            raise BudgetError("sga: max_words >= 0, k >= 1, noise_std >= 0 and positive scales required")
        self.steps = int(steps)
        self.random_start = bool(random_start)
        self.scales = tuple(float(s) for s in scales)
        self.noise_std = float(noise_std)
        self.max_words = int(max_words)
        self.k = int(k)
        self.substitutes = substitutes
        self.vocabulary = None if vocabulary is None else list(vocabulary)
        self.stop_words = frozenset(stop_words)
        self.guard = MeaningGuard(meaning_guard, min_similarity)
        self.seed = int(seed)
        self._default_gen: tuple[Any, EmbeddingNeighbourSubstitutes] | None = None

    # -- settings --------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        return {
            "eps": self.eps, "norm": self.norm, "steps": self.steps, "step_size": self.step_size,
            "random_start": self.random_start, "scales": self.scales, "noise_std": self.noise_std,
            "max_words": self.max_words, "k": self.k, "substitutes": self.substitutes,
            "vocabulary": self.vocabulary, "stop_words": self.stop_words, "meaning_guard": self.guard.mode,
            "min_similarity": self.guard.min_similarity, "seed": self.seed,
        }

    def replace(self, **changes: Any) -> "SGA":
        """A copy with some settings changed (the default generator's cache carried over when
        the vocabulary and stop-words stay the same); an unknown setting is a one-line error."""
        other = super().replace(**changes)
        if not {"vocabulary", "stop_words"} & set(changes):
            other._default_gen = self._default_gen  # type: ignore[attr-defined]
        return other  # type: ignore[return-value]

    def resolve(self, modality: str) -> "SGA":
        """A copy with the modality's middle eps and default norm filled in."""
        eps, norm, _ = self.budget(modality)
        return self.replace(eps=eps, norm=norm)

    def budget(self, modality: str) -> tuple[float, str, float]:
        """(eps, norm, step size) of the x step on ``modality`` (step: eps / 4 unless given)."""
        spec = get_modality(modality)
        eps = spec.middle_eps if self.eps is None else self.eps
        return eps, resolve_norm(self.norm, spec), self.step_size if self.step_size is not None else eps / 4

    def describe(self) -> dict[str, Any]:
        gen = self.substitutes
        step: Any = self.step_size if self.step_size is not None else (
            "eps/4" if self.eps is None else self.eps / 4)
        return {
            "name": self.name, "eps": self.eps, "norm": self.norm, "steps": self.steps, "step_size": step,
            "random_start": self.random_start, "scales": [1.0, *self.scales], "noise_std": self.noise_std,
            "max_words": self.max_words, "k": self.k,
            "substitutes": repr(gen) if gen is not None else "embedding-neighbours(source text encoder, built-in vocabulary)",
            "meaning_guard": self.guard.describe(), "seed": self.seed,
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
        get_modality(batch.modality)  # an unknown modality is a one-line error
        encoder.check_modality(batch.modality)
        offset = int(batch.index[0]) if batch.index is not None and len(batch.index) else 0
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + offset) % 2**64)  # any seed
        gen = self.generator(encoder)
        with frozen(encoder):
            with torch.no_grad():
                clean_emb = encoder.encode(batch.modality, batch.x).float().cpu()
            # (1) text guided by the clean x
            adv_caps = self._text_step(encoder, batch, clean_emb, gen)
            # (2) x guided by the set of adversarial captions
            flat = [c for caps in adv_caps for c in caps]
            owner = torch.tensor([i for i, caps in enumerate(adv_caps) for _ in caps], dtype=torch.long)
            x_adv = self._pgd(encoder, batch.modality, batch.x, embed_texts(encoder, flat), owner, g)
            # (3) text again, guided by the adversarial x
            with torch.no_grad():
                adv_emb = encoder.encode(batch.modality, x_adv).float().cpu()
            adv_caps = self._text_step(encoder, batch, adv_emb, gen)
        return batch.replace(x=x_adv, captions=adv_caps)

    def _text_step(self, encoder: Any, batch: Batch, guide: torch.Tensor, gen: SubstituteGenerator) -> list[list[str]]:
        """The original captions attacked against ``guide`` (word swaps under the meaning guard)."""
        return attack_captions(encoder, batch.captions, guide, gen, k=self.k, max_words=self.max_words,
                               stop_words=self.stop_words, guard=self.guard)

    def _views(self, modality: str, x: torch.Tensor, domain: tuple[float, float], g: torch.Generator) -> torch.Tensor:
        """The input plus its noisy rescaled copies, concatenated along the batch dim."""
        if not get_modality(modality).image_like or not self.scales:
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

    def _pgd(self, encoder: Any, modality: str, x: torch.Tensor, text_emb: torch.Tensor, owner: torch.Tensor,
             g: torch.Generator) -> torch.Tensor:
        """PGD (the shared ops: random start, ascent step, projection) on minus the summed
        similarity of each item's views to its own caption set."""
        spec = get_modality(modality)
        eps, norm, step = self.budget(modality)
        x = x.detach()
        if eps == 0 or self.steps == 0 or text_emb.shape[0] == 0:
            return x.clone()
        n = x.shape[0]
        text_emb = text_emb.to(x.device)
        # (N, M) mask: which captions belong to which item (the "set" of each item)
        mine = (owner.to(x.device)[None, :] == torch.arange(n, device=x.device)[:, None]).to(text_emb.dtype)
        x_adv = x.clone()
        if self.random_start:  # drawn on the CPU from the attack's generator, like the scale noise
            delta = random_delta(x.cpu().float(), eps, norm, g).to(x.device, x.dtype)
            x_adv = project(x + delta, x, eps, norm, spec.domain)
        views = 1 + (len(self.scales) if spec.image_like else 0)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            # the scaled, noised views are the attack's own input-diversity transforms, not raw inputs
            emb = encoder.encode(modality, self._views(modality, x_adv, spec.domain, g), validate=False).float()
            sims = emb @ text_emb.T  # (views*N, M)
            loss = (sims.reshape(views, n, -1) * mine).sum(-1).mean(1).sum()  # similarity to own caption set
            (grad,) = torch.autograd.grad(-loss, [x_adv])
            with torch.no_grad():
                x_adv = project(ascent_step(grad, norm, step).add_(x_adv.detach()), x, eps, norm, spec.domain)
        return x_adv
