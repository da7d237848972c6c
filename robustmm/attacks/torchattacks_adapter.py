"""Bridge to torchattacks: run any torchattacks attack on any modality of any Encoder.

torchattacks attacks classifiers that map inputs in [0, 1] to logits.
:class:`ZeroShotClassifier` turns an encoder + one modality + class prompts into exactly that:
``logits = logit_scale * encode(modality, x) @ class_emb.T`` with frozen class "semantic
centers". :class:`TorchAttacksAttack` (registered as ``"torchattacks"``) builds the classifier
from ``batch.prompts`` and calls ``torchattacks.<attack_name>`` on ``batch.x`` / ``batch.labels``.

Domains other than [0, 1] (audio and point clouds live in [-1, 1]): the classifier is built with
``input_range="unit"``, so torchattacks sees ``x01 = (x - lo) / (hi - lo)`` in [0, 1] and the
wrapper maps it back (``x = lo + x01 * (hi - lo)``) before encoding. Budgets are given in the
modality's own unit and divided by ``hi - lo`` for torchattacks (``eps`` and ``alpha``; for
L-inf and L2 alike, since the map is a uniform scaling), so ``eps=0.004`` on audio is the same
threat as ``PGD(eps=0.004)``. torchattacks' default step sizes are image budgets (PGD:
``alpha=2/255`` for ``eps=8/255``, 4x an audio eps of 0.002), so an ``alpha`` left unset keeps
the class's own ratio to the budget instead: ``alpha = eps * default_alpha / default_eps`` (eps/4
for PGD, BIM, MIFGSM; eps/5 for PGDL2), see :func:`default_alpha`. The result is mapped back, clamped to the domain and (for
norm-bounded attacks) projected onto the eps-ball once more, which only removes the rounding of
the affine round trip.

Example::

    >>> atk = TorchAttacksAttack("PGD", eps=4 / 255, alpha=1 / 255, steps=10)
    >>> res = robustmm.evaluate(enc, data, modality="image", attack=atk)
    >>> clf = ZeroShotClassifier(enc, "image", data.task("image").prompts())
    >>> adv = torchattacks.APGD(clf, eps=4 / 255, steps=100)(images, labels)   # direct use

torchattacks switches its model to eval mode and may call ``train()`` afterwards; the attack
runs inside :func:`~robustmm.attacks.ops.frozen`, which restores every module's mode and every
parameter's ``requires_grad`` exactly. torchattacks' random draws use the global torch RNG: the
call runs under ``torch.random.fork_rng`` seeded with ``seed``, so it is reproducible and leaves
the caller's RNG untouched. Inputs that are not (N, C, H, W) are passed to torchattacks as a
4-d view (:func:`as_4d`) because APGD, FAB and Square assume image tensors.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..batch import Batch
from ..errors import RobustMMError, UnknownNameError
from ..modalities import CONTINUOUS_MODALITIES, Norm, get_modality
from ..seeding import seeded
from .base import Attack, register_attack
from .losses import DEFAULT_SCALE
from .ops import check_eps, frozen, project

log = logging.getLogger(__name__)

__all__ = ["TorchAttacksAttack", "ZeroShotClassifier", "as_4d", "default_alpha"]

#: torchattacks constructor arguments that are budgets in input units (scaled with the domain)
BUDGET_KWARGS = ("eps", "alpha")


class ZeroShotClassifier(nn.Module):
    """An encoder as a zero-shot classifier: ``forward(x) -> (N, C)`` logits.

    Args:
        encoder: any :class:`~robustmm.encoders.Encoder`.
        modality: the modality ``forward`` embeds.
        classes: per-class prompt lists (``task.prompts()``), or a (C, D) tensor of unit class
            embeddings (used as given, frozen).
        logit_scale: multiplies the cosine logits (CLIP: 100).
        input_range: "raw" -- ``forward`` takes raw inputs in the modality's domain; "unit" --
            ``forward`` takes ``(x - lo) / (hi - lo)`` in [0, 1] (what torchattacks expects).
        sample_shape: if given, ``forward`` reshapes its input to ``(N, *sample_shape)`` first
            (torchattacks' APGD/Square/FAB assume 4-d (N, C, H, W) tensors; see :func:`as_4d`).
    Shape:
        x: (N, *ModalitySpec.shape) (or any shape with as many elements per sample when
        ``sample_shape`` is set) -> (N, C).
    """

    def __init__(self, encoder: nn.Module, modality: str, classes: torch.Tensor | Sequence[Sequence[str]],
                 logit_scale: float = DEFAULT_SCALE, input_range: str = "raw",
                 sample_shape: Sequence[int] | None = None):
        super().__init__()
        if input_range not in ("raw", "unit"):
            raise UnknownNameError("input range", input_range, ("raw", "unit"))
        encoder.check_modality(modality)
        self.encoder = encoder
        self.modality = modality
        self.logit_scale = float(logit_scale)
        self.input_range = input_range
        self.sample_shape = None if sample_shape is None else tuple(int(v) for v in sample_shape)
        self.domain = get_modality(modality).domain
        if isinstance(classes, torch.Tensor):
            class_emb = classes.detach()
        else:
            class_emb = encoder.class_embeddings([list(c) for c in classes])
        self.register_buffer("class_emb", class_emb.to(encoder.device), persistent=False)

    def to_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``forward``'s input to the raw domain (identity for ``input_range="raw"``)."""
        if self.input_range == "raw":
            return x
        lo, hi = self.domain
        return x * (hi - lo) + lo

    def from_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Map raw inputs to what ``forward`` takes."""
        if self.input_range == "raw":
            return x
        lo, hi = self.domain
        return (x - lo) / (hi - lo)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sample_shape is not None:
            x = x.reshape(x.shape[0], *self.sample_shape)
        emb = self.encoder.encode(self.modality, self.to_raw(x), validate=False)  # torchattacks keeps x in range
        return self.logit_scale * emb @ self.class_emb.to(emb.dtype).T


def as_4d(x: torch.Tensor) -> torch.Tensor:
    """An (N, C, H, W) view for torchattacks: (N, L) -> (N, 1, 1, L); (N, P, F) -> (N, 1, P, F);
    (N, T, C, H, W) -> (N, T*C, H, W). Element-wise budgets (L-inf, L2 over all elements) are
    unchanged by the reshape; only Square's square windows depend on the layout."""
    if x.dim() < 4:
        return x.reshape(x.shape[0], *([1] * (4 - x.dim())), *x.shape[1:])
    if x.dim() > 4:
        return x.flatten(1, x.dim() - 3)
    return x


def _torchattacks_class(name: str) -> type:
    import torchattacks

    known = [n for n in dir(torchattacks) if n[:1].isupper() and isinstance(getattr(torchattacks, n), type)]
    if name not in known:
        raise UnknownNameError("torchattacks attack", name, known)
    return getattr(torchattacks, name)


def default_alpha(cls: type, eps: float) -> float | None:
    """The step size a torchattacks class gets for budget ``eps`` when none is given: its default
    ``alpha`` scaled by ``eps / default eps`` (None when it has no alpha or no numeric defaults)."""
    params = inspect.signature(cls.__init__).parameters
    if "alpha" not in params or "eps" not in params:
        return None
    alpha, eps0 = params["alpha"].default, params["eps"].default
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (alpha, eps0)) or eps0 <= 0:
        return None
    return eps * alpha / eps0


def _norm_of(attack_name: str, kwargs: dict[str, Any], accepts: set[str]) -> str | None:
    """The norm a torchattacks attack bounds (None when it has no eps-ball)."""
    if "eps" not in accepts:
        return None
    if "norm" in kwargs:
        return Norm.L2 if str(kwargs["norm"]).lower() == "l2" else Norm.LINF
    return Norm.L2 if "L2" in attack_name else Norm.LINF


@register_attack("torchattacks")
class TorchAttacksAttack(Attack):
    """Any torchattacks attack (PGD, APGD, AutoAttack, Square, FGSM, ...) on a zero-shot classifier.

    Args:
        attack_name: a torchattacks class name (default "PGD").
        eps: budget in the modality's unit; None = the modality's ``middle_eps``. Ignored by
            attacks without an eps argument (CW, DeepFool, ...).
        seed: seeds torchattacks' global-RNG draws (and attacks with a ``seed`` argument).
        logit_scale: zero-shot logit scale of the classifier.
        **kwargs: passed to the torchattacks constructor (``alpha``, ``steps``,
            ``random_start``, ``norm``, ``n_queries`` ...); ``alpha`` is in modality units too
            and defaults to the class's default ratio to eps (:func:`default_alpha`).
            ``n_classes`` defaults to the number of classes for attacks that take it.
    Shape:
        batch.x: (N, *shape) in the domain, batch.labels: (N,), batch.prompts: C prompt lists.

    Example::

        >>> atk = build_attack("torchattacks", attack_name="APGD", eps=4 / 255, steps=100)
        >>> adv = atk(encoder, batch)
    """

    perturbs = ("x",)

    def __init__(self, attack_name: str = "PGD", eps: float | None = None, seed: int = 0,
                 logit_scale: float = DEFAULT_SCALE, **kwargs: Any):
        self.cls = _torchattacks_class(attack_name)
        self.attack_name = attack_name
        self.eps = None if eps is None else check_eps(eps)  # type: ignore[assignment]
        for k in BUDGET_KWARGS:
            if k in kwargs and kwargs[k] is not None:
                check_eps(kwargs[k], k)
        self.seed = int(seed)
        self.logit_scale = float(logit_scale)
        self.kwargs = dict(kwargs)
        self._accepts = set(inspect.signature(self.cls.__init__).parameters) - {"self", "model"}
        unknown = set(self.kwargs) - self._accepts
        if unknown:
            raise RobustMMError(
                f"torchattacks.{attack_name} takes no argument(s) {sorted(unknown)}; it takes {sorted(self._accepts)}"
            )

    def settings(self) -> dict[str, Any]:
        return {"attack_name": self.attack_name, "eps": self.eps, "seed": self.seed, "logit_scale": self.logit_scale,
                **self.kwargs}

    def replace(self, **changes: Any) -> "TorchAttacksAttack":
        """A copy with some settings changed; any keyword of the torchattacks class may be added."""
        unknown = sorted(set(changes) - set(self.settings()) - self._accepts)
        if unknown:
            raise UnknownNameError(f"setting of attack {self.name!r} (torchattacks.{self.attack_name})", unknown[0],
                                   set(self.settings()) | self._accepts)
        return TorchAttacksAttack(**(self.settings() | changes))

    def resolve(self, modality: str) -> "TorchAttacksAttack":
        """A copy with the modality's middle eps filled in."""
        return self if self.eps is not None else self.replace(eps=get_modality(modality).middle_eps)

    def alpha(self, eps: float) -> float | None:
        """The step size (modality units) used at budget ``eps``: the given one, else :func:`default_alpha`."""
        if "alpha" in self.kwargs and self.kwargs["alpha"] is not None:
            return float(self.kwargs["alpha"])
        return default_alpha(self.cls, eps) if "eps" in self._accepts else None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "attack_name": self.attack_name, "eps": self.eps, "seed": self.seed}
        if self.logit_scale != DEFAULT_SCALE:
            out["logit_scale"] = self.logit_scale
        out |= {k: v for k, v in self.kwargs.items() if isinstance(v, (int, float, str, bool, type(None)))}
        if "alpha" not in self.kwargs and self.eps is not None and self.alpha(self.eps) is not None:
            out["alpha"] = self.alpha(self.eps)  # scaled to the budget (records without it used torchattacks' 2/255)
        return out

    def torchattacks_kwargs(self, modality: str, n_classes: int) -> dict[str, Any]:
        """The keywords the torchattacks class is built with on ``modality``: budgets (eps,
        alpha) divided by the domain width, the seed and ``n_classes`` where it takes them."""
        spec = get_modality(modality)
        eps = spec.middle_eps if self.eps is None else float(self.eps)
        width = spec.domain[1] - spec.domain[0]
        kw = dict(self.kwargs)
        if "eps" in self._accepts:
            kw["eps"] = eps
            if self.alpha(eps) is not None:
                kw["alpha"] = self.alpha(eps)
        for k in BUDGET_KWARGS:
            if k in kw and kw[k] is not None:
                kw[k] = kw[k] / width
        if "seed" in self._accepts and "seed" not in kw:
            kw["seed"] = self.seed
        if "n_classes" in self._accepts and "n_classes" not in kw:
            kw["n_classes"] = n_classes
        return kw

    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        modality = batch.modality
        if modality not in CONTINUOUS_MODALITIES:
            raise UnknownNameError("continuous modality for torchattacks", modality, CONTINUOUS_MODALITIES)
        spec = get_modality(modality)
        encoder.check_modality(modality)
        spec.validate(batch.x)
        if batch.labels is None or batch.prompts is None:
            raise RobustMMError(f"torchattacks needs labels and class prompts; the {modality} batch has none")
        eps = spec.middle_eps if self.eps is None else float(self.eps)
        x = batch.x.detach()
        lo, hi = spec.domain
        unit = (lo, hi) != (0.0, 1.0)
        if "eps" in self._accepts and eps == 0:
            return batch.replace(x=x.clone())
        kw = self.torchattacks_kwargs(modality, len(batch.prompts))
        norm = _norm_of(self.attack_name, kw, self._accepts)

        with frozen(encoder), seeded(self.seed), torch.enable_grad():  # torchattacks draws from the global RNG
            clf = ZeroShotClassifier(encoder, modality, batch.prompts, self.logit_scale, "unit" if unit else "raw",
                                     sample_shape=x.shape[1:] if x.dim() != 4 else None).eval()
            with contextlib.redirect_stdout(io.StringIO()) as out:  # torchattacks prints; we log
                atk = self.cls(clf, **kw)
                atk.set_device(x.device)
                x01 = clf.from_raw(x)
                adv01 = atk(as_4d(x01), batch.labels.to(device=x.device, dtype=torch.long))
            if out.getvalue().strip():
                log.debug("torchattacks.%s: %s", self.attack_name, out.getvalue().strip())
            adv01 = adv01.detach().to(x.dtype).reshape(x.shape)
            # untouched elements come back bit-exact (no rounding from the affine round trip)
            x_adv = torch.where(adv01 == x01, x, clf.to_raw(adv01))
        if norm is not None:
            x_adv = project(x_adv, x, eps, norm, spec.domain)
        else:
            x_adv = x_adv.clamp(lo, hi)
        return batch.replace(x=x_adv)
