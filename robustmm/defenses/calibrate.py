"""Train calibration heads on adversarial examples while the encoder stays frozen.

Default (``adaptive_every=None``): adversarial examples are generated once against the frozen
encoder; because the encoder never changes, their embeddings (and the clean ones) are cached and
the head trains for many epochs over the cache in seconds. With ``adaptive_every=k`` the examples
are regenerated *through the current head* every k epochs, so the head also learns from attacks
that see it (costlier, and the only training that can help against adaptive attacks).

Example::

    enc = robustmm.load_encoder("tinybind")
    train = robustmm.load_dataset("synthscenes", split="train", n=2000)
    cal = calibrate(enc, train, modality="audio", objective="ce")
    robust = enc.with_heads(cal.heads)
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from .. import distributed as dist_utils
from ..attacks.base import Attack, build_attack
from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from ..encoders.heads import Calibration, ResidualHead
from ..errors import RobustMMError, UnknownNameError
from ..evaluation import iter_batches
from ..modalities import get_modality
from ..progress import tqdm
from ..seeding import seeded
from .objectives import DEFAULT_REGULARISER, REGULARISERS, CalibBatch, objective_loss, parse_spec, regulariser_loss, uses_labels

log = logging.getLogger(__name__)

#: regulariser weight when ``calibrate(consistency_weight=None)``, per regulariser: chosen on SynthScenes
#: val (seed 1), never test, by ``experiments/select_consistency.py`` (TinyBind, ce objective, image +
#: depth, clean top-1 within 2 points of the bare encoder; README "Hyperparameters chosen on val").
#: The PGD-20 worst case chose 16 and 32 (8 before that, on test). With APGD-T-50 added to the worst
#: case (``--stronger apgd-t``) the highest val scores were supervised 32 and label-free 128, above
#: 16 and 32 by 1.2 and 1.0 points: less than one standard error (about 1.5 points at 200 items near 5 %), so the
#: defaults stay 16 and 32 (a default moves only when the gain exceeds the noise; README).
DEFAULT_CONSISTENCY_WEIGHTS: dict[str, float] = {"supervised": 16.0, "label-free": 32.0, "none": 0.0}


def default_attack(modality: str, labelled: bool, eps: float | None = None, steps: int = 10) -> Attack:
    """PGD at the modality's middle budget, zero-shot CE loss when labels exist, else embedding loss."""
    spec = get_modality(modality)
    return build_attack("pgd", eps=spec.middle_eps if eps is None else eps, steps=steps,
                        loss="ce" if labelled else "embedding")


@torch.no_grad()
def _embed_pass(encoder: Encoder, dataset: MultimodalDataset, modality: str, attack: Attack | None,
                batch_size: int, progress: bool, desc: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    task = dataset.tasks.get(modality)
    prompts = task.prompts() if task is not None else None
    clean, adv = [], []
    items = dist_utils.shard(len(dataset), align=batch_size)  # multi-process: this rank's whole batches
    n_batches = (len(items) + batch_size - 1) // batch_size
    for batch in tqdm(iter_batches(dataset, modality, batch_size, prompts, items), total=n_batches, desc=desc,
                      disable=not progress or dist_utils.rank() != 0, leave=False):
        x = batch.x.to(encoder.device)
        clean.append(encoder.encode(modality, x).cpu())
        if attack is not None:
            with torch.enable_grad():
                xa = attack(encoder, batch.replace(x=x)).x
            adv.append(encoder.encode(modality, xa).cpu())
    # every rank's rows in item order (bit-exact), so every rank trains the same head
    return dist_utils.gather_cat(clean), (dist_utils.gather_cat(adv) if attack is not None else None)  # type: ignore[return-value]


def calibrate(
    encoder: Encoder,
    dataset: MultimodalDataset,
    *,
    modality: str,
    objective: str = "ce",
    attack: Attack | None = None,
    epochs: int = 60,
    lr: float = 2e-3,
    batch_size: int = 256,
    hidden: int = 128,
    consistency_weight: float | None = None,
    adaptive_every: int | None = None,
    clean_only: bool = False,
    embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
    progress: bool = True,
    regulariser: str | None = None,
) -> Calibration:
    """Train a head for ``modality`` of a frozen ``encoder`` on adversarial examples of ``dataset``.

    Args:
        objective: ``ce``, ``l2``, ``infonce`` or a weighted sum such as ``"ce+0.5*l2"``, optionally
            with a regulariser suffix (``"l2@label-free"``); see :mod:`.objectives` for what each reads.
        consistency_weight: weight of the regulariser (None: :data:`DEFAULT_CONSISTENCY_WEIGHTS`).
        regulariser: ``supervised`` (default), ``label-free`` (the paper's setting: nothing labelled
            is read unless the objective itself is ``ce``) or ``none``; must agree with a suffix.
        attack: how training examples are made (default :func:`default_attack`; its zero-shot CE
            loss reads labels, so label-free training defaults to the embedding loss).
        adaptive_every: regenerate the examples through the current head every k epochs.
        clean_only: train the same head on clean embeddings only (the control that separates a
            gain from extra supervision from a gain in robustness).
        embeddings: precomputed ``(clean, adv)`` from :func:`adversarial_embeddings` with the
            same attack, to train several objectives from one attack run.
        seed: seeds the head's initialisation and the batch order, inside a fork of the global RNG
            (the caller's random state is left as it was).
    Returns:
        A :class:`Calibration` (``.heads`` for ``encoder.with_heads``, ``.meta``, ``.save``).
    """
    terms, regulariser, consistency_weight = _check_calibrate_args(
        encoder, dataset, modality, objective, regulariser, consistency_weight, epochs, adaptive_every, clean_only)
    task = dataset.tasks.get(modality)
    labelled = uses_labels(terms, regulariser if consistency_weight > 0 else "none")
    # label-free training (objective and regulariser) also makes its examples without labels by default
    attack = attack or default_attack(modality, task is not None and labelled)
    plan = _Plan(modality, terms, regulariser, consistency_weight, epochs, lr, batch_size, adaptive_every, progress)
    with seeded(seed):
        gen = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        clean, adv = _training_embeddings(encoder, dataset, modality, attack, embeddings, clean_only, batch_size, progress)
        attack_s = time.perf_counter() - t0
        cap, centers = _targets(encoder, dataset, task)
        # what training may read: a label-free objective with a label-free regulariser never sees labels
        labels = task.labels if task is not None and labelled else None
        head = ResidualHead(encoder.embed_dim, hidden)
        t1 = time.perf_counter()
        epoch_losses, regen_s = _train_head(plan, head, encoder, dataset, attack, clean, adv, cap,
                                            labels, centers if labelled else None, gen)
    train_s = time.perf_counter() - t1 - regen_s
    meta = {
        "encoder": encoder.name,
        "modality": modality,
        "objective": objective,
        "attack": attack.describe(),
        "epochs": epochs,
        "lr": lr,
        "hidden": hidden,
        "regulariser": regulariser,
        "consistency_weight": consistency_weight,
        "uses_labels": labelled,
        "adaptive_every": adaptive_every,
        "clean_only": clean_only,
        "n_train": len(clean),
        "dataset": dataset.info(),
        "seed": seed,
        "attack_s": round(attack_s + regen_s, 2),
        "train_s": round(train_s, 2),
        "first_epoch_loss": round(epoch_losses[0], 4),
        "final_loss": round(epoch_losses[-1], 4),
        "trainable_params": sum(p.numel() for p in head.parameters()),
    }
    log.info("calibrated %s/%s (%s): attack %.1fs, train %.1fs", encoder.name, modality, objective, attack_s + regen_s, train_s)
    return Calibration({modality: head}, meta)


def _check_calibrate_args(encoder: Encoder, dataset: MultimodalDataset, modality: str, objective: str,
                          regulariser: str | None, consistency_weight: float | None, epochs: int,
                          adaptive_every: int | None, clean_only: bool) -> tuple[dict[str, float], str, float]:
    """Every check of :func:`calibrate`'s arguments, before any work: (terms, regulariser, weight)."""
    terms, suffix = parse_spec(objective)
    if regulariser is not None and suffix is not None and regulariser != suffix:
        raise RobustMMError(f"objective {objective!r} names regulariser {suffix!r}, but regulariser={regulariser!r}")
    regulariser = regulariser or suffix or DEFAULT_REGULARISER
    if regulariser not in REGULARISERS:
        raise UnknownNameError("regulariser", regulariser, REGULARISERS)
    if consistency_weight is None:
        consistency_weight = DEFAULT_CONSISTENCY_WEIGHTS[regulariser]
    if consistency_weight < 0:
        raise RobustMMError(f"consistency_weight must be >= 0, got {consistency_weight}")
    dataset.check_modality(modality)
    dataset.check_nonempty()
    encoder.check_modality(modality)
    if epochs <= 0:
        raise RobustMMError(f"epochs must be positive, got {epochs}")
    if adaptive_every is not None and adaptive_every <= 0:
        raise RobustMMError(f"adaptive_every must be positive, got {adaptive_every}")
    if adaptive_every and clean_only:
        raise RobustMMError("adaptive_every and clean_only exclude each other")
    if "ce" in terms and dataset.tasks.get(modality) is None:
        raise RobustMMError(f"objective 'ce' needs a zero-shot task for {modality!r}; dataset {dataset.name!r} has none")
    return terms, regulariser, consistency_weight


@dataclass(frozen=True)
class _Plan:
    """The training settings of one :func:`calibrate` call."""

    modality: str
    terms: dict[str, float]
    regulariser: str
    consistency_weight: float
    epochs: int
    lr: float
    batch_size: int
    adaptive_every: int | None
    progress: bool


def _training_embeddings(encoder: Encoder, dataset: MultimodalDataset, modality: str, attack: Attack,
                         embeddings: tuple[torch.Tensor, torch.Tensor] | None, clean_only: bool, batch_size: int,
                         progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, adversarial) embeddings to train on: given, or made by one attack pass."""
    if embeddings is not None:
        clean, adv = embeddings
        if len(clean) != len(dataset) or len(adv) != len(dataset):
            raise RobustMMError(f"embeddings cover {len(clean)} items, dataset has {len(dataset)}")
    else:
        clean, adv = _embed_pass(encoder, dataset, modality, None if clean_only else attack, batch_size, progress,
                                 f"calibrate/{modality}: adversarial examples")
    return clean, (clean if clean_only else adv)  # type: ignore[return-value]


@torch.no_grad()
def _targets(encoder: Encoder, dataset: MultimodalDataset, task: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each item's mean caption embedding (unit) and the class centers (None without a task)."""
    caps = [c for caps in dataset.captions for c in caps]
    counts = [len(c) for c in dataset.captions]
    cap = torch.stack([e.mean(0) for e in encoder.encode_text(caps).cpu().split(counts)])
    cap = torch.nn.functional.normalize(cap, dim=-1)
    centers = encoder.class_embeddings(task.prompts()).cpu() if task is not None else None
    return cap, centers


def _train_head(plan: _Plan, head: ResidualHead, encoder: Encoder, dataset: MultimodalDataset, attack: Attack,
                clean: torch.Tensor, adv: torch.Tensor, cap: torch.Tensor, labels: torch.Tensor | None,
                centers: torch.Tensor | None, gen: torch.Generator) -> tuple[list[float], float]:
    """Train ``head`` in place (frozen and in eval mode afterwards): per-epoch mean losses and the
    seconds spent regenerating adversarial examples (adaptive training)."""
    modality, n = plan.modality, len(clean)
    opt = torch.optim.AdamW(head.parameters(), lr=plan.lr, weight_decay=1e-4)
    regen_s, epoch_losses = 0.0, []
    for epoch in tqdm(range(plan.epochs), desc=f"calibrate/{modality}: training", disable=not plan.progress, leave=False):
        if plan.adaptive_every and epoch > 0 and epoch % plan.adaptive_every == 0:
            tr = time.perf_counter()
            head.eval()
            wrapped = encoder.with_heads({modality: copy.deepcopy(head).requires_grad_(False)})
            # cache the *bare* embedding of the head-aware adversarial example: the head is applied in training
            adv = _bare_from_wrapped(encoder, wrapped, dataset, modality, attack, plan.batch_size)
            regen_s += time.perf_counter() - tr
        head.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for s in range(0, n, plan.batch_size):
            idx = perm[s : s + plan.batch_size]
            b = CalibBatch(clean[idx], adv[idx], cap[idx], None if labels is None else labels[idx], centers)
            loss = objective_loss(plan.terms, head(b.adv), b)
            if plan.consistency_weight > 0:
                loss = loss + plan.consistency_weight * regulariser_loss(plan.regulariser, head(b.clean), b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        epoch_losses.append(total / n)
    head.eval()
    head.zero_grad(set_to_none=True)  # a frozen head carries no training gradients
    for p in head.parameters():
        p.requires_grad_(False)
    return epoch_losses, regen_s


def adversarial_embeddings(encoder: Encoder, dataset: MultimodalDataset, *, modality: str, attack: Attack,
                           batch_size: int = 256, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean and adversarial embeddings of ``dataset`` under ``attack`` on the frozen encoder (the cache)."""
    clean, adv = _embed_pass(encoder, dataset, modality, attack, batch_size, progress,
                             f"calibrate/{modality}: adversarial examples")
    return clean, adv


@torch.no_grad()
def _bare_from_wrapped(encoder: Encoder, wrapped: Encoder, dataset: MultimodalDataset, modality: str,
                       attack: Attack, batch_size: int) -> torch.Tensor:
    """Bare-encoder embeddings of adversarial examples made through the head (adaptive training)."""
    task = dataset.tasks.get(modality)
    prompts = task.prompts() if task is not None else None
    out = []
    for batch in iter_batches(dataset, modality, batch_size, prompts, dist_utils.shard(len(dataset), align=batch_size)):
        x = batch.x.to(encoder.device)
        with torch.enable_grad():
            xa = attack(wrapped, batch.replace(x=x)).x
        out.append(encoder.encode(modality, xa).cpu())
    return dist_utils.gather_cat(out)  # type: ignore[return-value]
