"""PGD: projected gradient ascent in the raw input domain of any continuous modality.

Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks" (ICLR 2018),
adapted to embedding models: the loss is computed on embeddings (zero-shot cross-entropy against
the class-prompt "semantic centers" by default; caption or clean-embedding losses when there are
no labels -- see :mod:`robustmm.attacks.losses`).

Distance measure: L-inf or L2, per sample over all non-batch dims, in the modality's own unit
(``ModalitySpec.eps_unit``); after every step the perturbation is projected back onto the eps-ball
and the input clamped to ``ModalitySpec.domain``.

Arguments:
    eps (float | None): budget; None = the modality's ``middle_eps`` at call time.
    norm ("linf" | "l2" | None): threat norm; None = the modality's default norm.
    steps (int): gradient steps (one forward + backward each). Default 10.
    step_size (float | None): None = eps/4 (linf) or 2.5*eps/steps (l2).
    random_start (bool): start at a uniform point of the L-inf ball / a random point of the L2
        ball. Default True. When the batch carries item indices (``batch.index``) each item's
        start comes from a generator seeded by ``(seed, index)``, so an item is attacked the same
        way whatever batch it is in (batch size, nested sweeps); otherwise from one
        ``torch.Generator`` seeded with ``seed``.
    loss (str): "ce" | "ce-targeted" | "caption" | "caption-targeted" | "embedding". "ce" falls
        back to "caption" when the batch has no labels.
    targeted (bool): turn "ce"/"caption" into their targeted forms.
    target: targeted losses only -- class index, (N,) class indices or ``f(labels)`` for ce; a
        caption, N captions or ``f(captions)`` for captions. None: a random other class / the next
        item's first caption.
    seed (int): seeds the random start (and random target classes).
    logit_scale (float): zero-shot logit scale for the ce losses. Default 100.
    early_stop (bool): freeze a sample at the first iterate that already meets the zero-shot goal
        (misclassified / classified as the target), judged on the logits of that step's forward
        pass, and stop computing it (a stopped sample returns that iterate). Default False.
    keep_best (bool): return each sample's most damaging iterate -- the highest objective seen,
        judged on the forward pass every step already does, plus one forward of the final
        iterate -- instead of the last one. Default True; False reproduces plain PGD (last iterate).
        The returned batch then carries the embedding of the iterate it keeps (``batch.embedded``,
        from the forward passes already made: the step that evaluated it, or the final forward),
        so :func:`robustmm.evaluate` does not embed it again: the final iterate's forward is the
        pass evaluate would otherwise make, and keep_best costs no extra pass.

Shape:
    batch.x: (N, *ModalitySpec.shape) in ``ModalitySpec.domain``; returns a Batch with ``x`` of
    the same shape, dtype and device. The input batch is never mutated; the encoder's weights,
    train/eval modes and ``requires_grad`` flags are left exactly as they were.

Example::

    >>> enc = robustmm.load_encoder("tinybind")
    >>> data = robustmm.load_dataset("synthscenes", split="test", n=64)
    >>> x, task = data.get("image", slice(None)), data.tasks["image"]
    >>> attack = PGD(eps=4 / 255, steps=10)                 # L-inf, step 1/255, random start
    >>> x_adv = attack(enc, x, labels=task.labels, modality="image", classnames=task.classnames)
    >>> res = robustmm.evaluate(enc, data, modality="image", attack=attack)
    >>> adv = PGD(norm="l2", eps=0.5)(enc, Batch.from_tensors(x, modality="image", labels=task.labels,
    ...                                                      prompts=task.prompts()))  # a Batch in, a Batch out
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from ..batch import Batch, Embedded
from ..errors import BudgetError, RobustMMError
from ..modalities import Norm, get_modality
from .base import Attack, register_attack
from .losses import DEFAULT_SCALE, effective_loss, make_objective, resolve_loss
from .ops import ascent_step, check_eps, checked_input, frozen, item_seed, per_sample, project, random_delta, resolve_norm

log = logging.getLogger(__name__)

__all__ = ["PGD", "PGDOutput", "check_eps", "frozen", "item_seed", "project", "random_delta", "resolve_norm"]


@dataclass
class PGDOutput:
    """What :meth:`PGD.run` returns besides the adversarial batch (bookkeeping, no extra passes).

    ``loss_first``/``loss_last``: (N,) objective at the first and last evaluated iterate (the
    random start; then the final iterate with ``keep_best``, else the iterate before the final
    step); ``loss_best``: (N,) objective of the returned iterate with ``keep_best`` (the best seen;
    the stopping iterate's for samples stopped early), else None; ``stopped``: (N,) samples frozen
    by early stopping; ``forwards``: number of forward passes (sum of rows over steps, plus the
    final iterate's forward with ``keep_best``).
    """

    batch: Batch
    loss: str
    loss_first: torch.Tensor | None
    loss_last: torch.Tensor | None
    stopped: torch.Tensor
    forwards: int
    loss_best: torch.Tensor | None = None


# -- the attack -------------------------------------------------------------------------------------
@register_attack("pgd")
class PGD(Attack):
    """PGD (L-inf / L2) on any continuous modality of any Encoder, in the raw input domain.

    See the module docstring for arguments, shapes and an example.
    """

    perturbs = ("x",)

    def __init__(
        self,
        eps: float | None = None,
        norm: str | None = None,
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool = True,
        loss: str = "ce",
        targeted: bool = False,
        target: Any = None,
        seed: int = 0,
        logit_scale: float = DEFAULT_SCALE,
        early_stop: bool = False,
        keep_best: bool = True,
    ):
        self.eps = None if eps is None else check_eps(eps)  # type: ignore[assignment]
        self.norm = None if norm is None else resolve_norm(norm)
        if isinstance(steps, bool) or not (isinstance(steps, int) or (isinstance(steps, float) and steps.is_integer())):
            raise BudgetError(f"steps must be an integer >= 0, got {steps!r}")
        if steps < 0:
            raise BudgetError(f"steps must be >= 0, got {steps}")
        self.steps = int(steps)
        if step_size is not None:
            step_size = check_eps(step_size, "step_size")
            if step_size == 0:
                raise BudgetError("step_size must be > 0 (or None for the default)")
        self.step_size = step_size
        self.random_start = bool(random_start)
        resolve_loss(loss)
        if targeted and loss == "embedding":
            raise RobustMMError("the 'embedding' loss is untargeted; use 'ce-targeted' or 'caption-targeted'")
        self.loss = loss
        self.targeted = bool(targeted)
        self.target = target
        self.seed = int(seed)
        self.logit_scale = float(logit_scale)
        self.early_stop = bool(early_stop)
        self.keep_best = bool(keep_best)

    # -- settings ---------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        return {
            "eps": self.eps, "norm": self.norm, "steps": self.steps, "step_size": self.step_size,
            "random_start": self.random_start, "loss": self.loss, "targeted": self.targeted,
            "target": self.target, "seed": self.seed, "logit_scale": self.logit_scale, "early_stop": self.early_stop,
            "keep_best": self.keep_best,
        }

    def resolve(self, modality: str) -> "PGD":
        """A copy with the modality defaults filled in (concrete eps and norm)."""
        spec = get_modality(modality)
        norm = resolve_norm(self.norm, spec)  # a budget beyond the domain (eps=4 on pixels) is refused
        return self.replace(eps=spec.middle_eps if self.eps is None else spec.check_budget(self.eps, norm), norm=norm)

    def budget(self, modality: str) -> tuple[float, str, float]:
        """(eps, norm, step size) this attack uses on ``modality``."""
        spec = get_modality(modality)
        eps = spec.middle_eps if self.eps is None else float(self.eps)
        norm = resolve_norm(self.norm, spec)
        if self.step_size is not None:
            step = self.step_size
        elif norm == Norm.LINF:
            step = eps / 4
        else:
            step = 2.5 * eps / max(self.steps, 1)
        return eps, norm, step

    def describe(self) -> dict[str, Any]:
        step: Any = self.step_size
        if step is None:
            if self.eps is not None and self.norm is not None:
                step = self.eps / 4 if self.norm == Norm.LINF else 2.5 * self.eps / max(self.steps, 1)
            else:
                step = "eps/4 (linf) | 2.5*eps/steps (l2)"
        out: dict[str, Any] = {
            "name": self.name, "eps": self.eps, "norm": self.norm, "steps": self.steps, "step_size": step,
            "random_start": self.random_start, "loss": self.loss, "targeted": self.targeted, "seed": self.seed,
        }
        if self.logit_scale != DEFAULT_SCALE:
            out["logit_scale"] = self.logit_scale
        if self.early_stop:
            out["early_stop"] = True
        if self.keep_best:  # records without the key returned the last iterate
            out["keep_best"] = True
        if self.target is not None:
            out["target"] = self.target if isinstance(self.target, (int, str)) else "custom"
        return out

    # -- the attack -------------------------------------------------------------------------
    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        """Return a perturbed copy of ``batch`` (``x`` changed, everything else shared)."""
        return self.run(encoder, batch).batch

    def run(self, encoder: Any, batch: Batch) -> PGDOutput:
        """Attack ``batch`` and also return per-sample bookkeeping (see :class:`PGDOutput`)."""
        modality = batch.modality
        spec = checked_input("PGD", encoder, batch)
        eps, norm, step = self.budget(modality)
        n = len(batch)
        x = batch.x.detach()
        none = torch.zeros(n, dtype=torch.bool, device=x.device)
        loss_name = effective_loss(self.loss, self.targeted, batch)
        if eps == 0:
            return PGDOutput(batch.replace(x=x.clone()), loss_name, None, None, none, 0)

        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        with frozen(encoder), torch.enable_grad():
            objective = make_objective(
                loss_name, encoder, batch, x=x, target=self.target, scale=self.logit_scale, generator=gen
            )
            x_adv = self._start(batch, x, eps, norm, spec.domain, gen)
            # hot loop: no host syncs unless early_stop, no gathers or batch-sized allocations while
            # every row is active (``full``): the step is projected in the gradient's own storage
            active = torch.arange(n, device=x.device)
            stopped = none.clone()
            loss_first = torch.full((n,), float("nan"), device=x.device)
            loss_last = loss_first.clone()
            best = _Best(x_adv, n) if self.keep_best else None
            forwards = 0
            for t in range(self.steps):
                full = len(active) == n
                xa = (x_adv if full else x_adv[active]).detach().requires_grad_(True)
                emb = encoder.encode(modality, xa, validate=False)
                loss = objective(emb, active)
                forwards += len(active)
                (grad,) = torch.autograd.grad(loss.sum(), xa)
                with torch.no_grad():
                    loss, xa = loss.detach(), xa.detach()
                    if t == 0:
                        _put(loss_first, active, loss, full)
                    _put(loss_last, active, loss, full)
                    if best is not None:
                        best.update(active, xa, loss, full, emb.detach())
                    new = project(ascent_step(grad, norm, step).add_(xa), x if full else x[active], eps, norm,
                                  spec.domain, inplace=True)
                    done = objective.success(emb, active) if self.early_stop else None
                    done = done if done is not None and bool(done.any()) else None
                    if done is not None:
                        new[done] = xa[done]  # keep the iterate that already succeeded
                        stopped[active[done]] = True
                    if full:
                        x_adv = new
                    else:
                        x_adv[active] = new
                    if done is not None:
                        active = active[~done]
                if len(active) == 0:
                    break
            if best is not None and self.steps and len(active):  # the final iterate: one more forward
                full = len(active) == n
                with torch.no_grad():
                    xa = x_adv if full else x_adv[active]
                    emb = encoder.encode(modality, xa, validate=False)
                    loss = objective(emb, active)
                forwards += len(active)
                _put(loss_last, active, loss, full)
                best.update(active, xa, loss, full, emb)
                # an early-stopped item keeps its stopping iterate; the others continue from their best
                x_adv = torch.where(per_sample(stopped, x_adv), x_adv, best.x) if self.early_stop else best.x
        if self.steps and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "pgd %s %s eps=%g step=%g: loss %.4f -> %.4f (%d forwards, %d stopped early)",
                modality, loss_name, eps, step, float(loss_first.nanmean()), float(loss_last.nanmean()),
                forwards, int(stopped.sum()),
            )
        loss_best = None
        x_out = x_adv.detach()
        if best is not None and self.steps:
            loss_best = torch.where(stopped, loss_last, best.loss)
        embedded = _kept_embedding(best if self.steps else None, x_out, encoder, stopped if self.early_stop else None)
        return PGDOutput(batch.replace(x=x_out, embedded=embedded), loss_name, loss_first, loss_last, stopped,
                         forwards, loss_best)

    def _start(self, batch: Batch, x: torch.Tensor, eps: float, norm: str, domain: tuple[float, float],
               gen: torch.Generator) -> torch.Tensor:
        """The first iterate: ``x`` itself, or with ``random_start`` a seeded random point of the ball
        (per item by dataset index when the batch has one, so an item's start does not depend on its batch)."""
        if not self.random_start:
            return x.clone()
        n = len(batch)
        index = None if batch.index is None or len(batch.index) != n else torch.as_tensor(batch.index)
        delta = random_delta(x, eps, norm, gen, seed=self.seed, index=index)
        return project(delta.add_(x), x, eps, norm, domain, inplace=True)  # x + delta, projected


def _kept_embedding(best: "_Best | None", x_out: torch.Tensor, encoder: Any,
                    stopped: torch.Tensor | None) -> Embedded | None:
    """The embedding of the returned iterates, from the forward passes that evaluated them (the
    step that kept each one, or the final forward): None without ``keep_best``, or when early
    stopping froze some items (their stopping iterates' embeddings are not tracked)."""
    if best is None or best.emb is None or (stopped is not None and bool(stopped.any())):
        return None
    return Embedded(x_out, encoder, best.emb)


def _put(buf: torch.Tensor, rows: torch.Tensor, v: torch.Tensor, full: bool) -> None:
    """``buf[rows] = v`` (cast to ``buf``'s dtype); a plain copy when ``rows`` is every row."""
    if full:
        buf.copy_(v)
    else:
        buf[rows] = v.to(buf.dtype)


class _Best:
    """Each item's most damaging iterate so far (highest objective), for ``keep_best``, and the
    embedding its forward pass gave (``emb``; None once a partial update made it incomplete)."""

    def __init__(self, x: torch.Tensor, n: int):
        self.x = x.detach().clone()
        self.loss = torch.full((n,), float("-inf"), device=x.device)
        self.emb: torch.Tensor | None = None
        self._emb_ok = True

    def update(self, rows: torch.Tensor, xa: torch.Tensor, loss: torch.Tensor, full: bool = False,
               emb: torch.Tensor | None = None) -> None:
        """Keep ``xa[j]`` (and ``emb[j]``) for item ``rows[j]`` where its ``loss[j]`` beats the best so
        far (strictly); ``torch.where`` into the buffers when ``full``: no device sync, no
        batch-sized allocation. The first update is the first iterate, which ``x`` already holds,
        so its embedding starts the embedding buffer."""
        loss = loss.to(self.loss.dtype)
        if full:
            better = loss > self.loss
            torch.where(better, loss, self.loss, out=self.loss)
            torch.where(per_sample(better, xa), xa, self.x, out=self.x)
            if emb is not None and self._emb_ok:
                if self.emb is None:
                    self.emb = emb.detach().clone()
                else:
                    torch.where(better[:, None], emb, self.emb, out=self.emb)
        else:
            self.emb, self._emb_ok = None, False
            old = self.loss[rows]
            better = loss > old
            self.loss[rows] = torch.where(better, loss, old)
            self.x[rows] = torch.where(per_sample(better, xa), xa, self.x[rows])
