"""The runner: clean vs attacked metrics of one modality, with separate source and target encoders.

``evaluate(target, dataset, modality="image")`` is a clean evaluation. With ``attack=`` the
adversarial examples are made on ``source`` (default: the target itself, i.e. white-box /
adaptive) and scored on ``target`` -- transfer attacks and head-unaware evaluation of a
calibrated model are the same call with another source.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from .. import distributed as dist_utils
from ..attacks.base import Attack
from ..batch import Batch
from ..cost import PassCount, count_passes, summed_passes
from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from ..errors import RobustMMError
from ..metrics import (
    attack_success_rate,
    caption_owner,
    retrieval_metrics,
    t2x_ranks,
    x2t_ranks,
    zeroshot_correct,
    zeroshot_metrics,
)
from ..modalities import get_modality
from ..progress import tqdm
from ..records import THREATS, Result
from ..seeding import seeded
from ..text.edits import caption_edit_stats

log = logging.getLogger(__name__)


@dataclass
class Embeddings:
    """Everything the metrics need for one (clean or attacked) pass."""

    items: torch.Tensor  # (N, D)
    texts: torch.Tensor  # (M, D)
    owner: torch.Tensor  # (M,)


def iter_batches(dataset: MultimodalDataset, modality: str, batch_size: int, prompts: list[list[str]] | None,
                 items: range | None = None):
    """Yield :class:`Batch` objects over a dataset (or the contiguous ``items`` of it), in order.

    ``batch.index`` holds dataset positions, so per-item seeding is the same for any ``items``.
    """
    items = range(len(dataset)) if items is None else items
    for s in range(items.start, items.stop, batch_size):
        yield make_batch(dataset, modality, torch.arange(s, min(s + batch_size, items.stop)), prompts)


def make_batch(dataset: MultimodalDataset, modality: str, idx: torch.Tensor, prompts: list[list[str]] | None) -> Batch:
    """The :class:`Batch` of items ``idx`` (dataset positions) of one modality, loaded on demand."""
    task = dataset.tasks.get(modality)
    return Batch(
        modality=modality,
        x=dataset.get(modality, idx),
        captions=[list(dataset.captions[i]) for i in idx.tolist()],
        labels=None if task is None else task.labels[idx],
        prompts=prompts,
        index=idx,
    )


def embedding_metrics(emb: Embeddings, class_emb: torch.Tensor | None, labels: torch.Tensor | None) -> dict[str, float]:
    """Zero-shot metrics (when class embeddings and labels are given) and retrieval metrics of one set of embeddings."""
    out: dict[str, float] = {}
    if class_emb is not None and labels is not None:
        out |= zeroshot_metrics(emb.items, class_emb, labels)
    out |= retrieval_metrics(emb.items, emb.texts, emb.owner)
    return out


def _gather_items(clean_items: list[torch.Tensor], adv_items: list[torch.Tensor], adv_captions: list[list[str]],
                  attacked: bool, n: int) -> tuple[list[torch.Tensor], list[torch.Tensor], list[list[str]]]:
    """Multi-process evaluation (:mod:`robustmm.distributed`): every rank's shard, in item order.

    Outside a process group the lists are returned unchanged. Inside one, each rank holds the
    embeddings of its own shard (of the same ``n``-item dataset on every rank); they are gathered
    bit-exact, so every rank has all items and computes identical metrics. Adversarial captions
    are gathered only under an attack (text attacks change them).
    """
    if not dist_utils.is_distributed():
        return clean_items, adv_items, adv_captions
    sizes = dist_utils.all_gather_object(n)
    if len(set(sizes)) > 1:
        raise RobustMMError(f"multi-process evaluate needs the same dataset on every rank; ranks hold {sizes} items")
    clean = [dist_utils.all_gather_tensor(torch.cat(clean_items) if clean_items else None)]
    adv = [dist_utils.all_gather_tensor(torch.cat(adv_items) if adv_items else None)] if attacked else []
    if attacked:
        adv_captions = [c for part in dist_utils.all_gather_object(adv_captions) for c in part]
    return clean, adv, adv_captions


def _default_threat(attack: Attack | None, source: Encoder | None, target: Encoder) -> str:
    if attack is None:
        return "clean"
    if source is None or source is target:
        return "white-box"
    return "transfer"


def prepare(target: Encoder, dataset: MultimodalDataset, modality: str, attack: Attack | None,
            source: Encoder | None, n: int | None, threat: str | None) -> tuple[MultimodalDataset, Encoder, str]:
    """Validate the arguments shared by :func:`evaluate` and the curve sweeps; returns the first
    ``n`` items, the source encoder (``target`` when None) and the threat name."""
    get_modality(modality)
    dataset.check_modality(modality)
    target.check_modality(modality)
    if n is not None:
        if n <= 0:
            raise RobustMMError(f"n must be positive, got {n}")
        dataset = dataset.head(n)
    dataset.check_nonempty()
    if source is not None:
        source.check_modality(modality)
    threat = threat or _default_threat(attack, source, target)
    source = target if source is None else source
    if threat not in THREATS:
        raise RobustMMError(f"unknown threat {threat!r}; known: {', '.join(THREATS)}")
    return dataset, source, threat


def evaluate(
    target: Encoder,
    dataset: MultimodalDataset,
    *,
    modality: str,
    attack: Attack | None = None,
    source: Encoder | None = None,
    n: int | None = None,
    batch_size: int = 128,
    threat: str | None = None,
    defense: dict[str, Any] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Result:
    """Score ``target`` on ``dataset``'s ``modality``, clean and (optionally) under ``attack``.

    Args:
        target: the encoder whose metrics are reported.
        dataset: items with captions (and a zero-shot task for ``modality`` if it has one).
        modality: the modality whose items are embedded (and attacked).
        attack: an :class:`~robustmm.attacks.Attack`, or None for a clean evaluation.
        source: the encoder the attack differentiates (default ``target``).
        n: evaluate the first ``n`` items only.
        threat: the threat label recorded in the result (default: clean / white-box / transfer).
        defense: the ``defense`` block recorded in the result (set by calibration code).
        seed: seeds torch's global generators while attacking (attacks and randomized defenses that draw
            without a generator of their own are reproducible); the caller's random state is restored after.

    Inside an initialised ``torch.distributed`` process group (``torchrun ... robustmm eval``),
    every rank must pass the same dataset: each embeds and attacks only its shard of whole
    batches, and the per-item results are gathered in order, so every rank returns the metrics a
    single process would (see :mod:`robustmm.distributed`).

    Returns:
        A :class:`~robustmm.report.Result` with ``metrics.clean``, ``metrics.attacked``,
        ``metrics.delta`` and ``metrics.asr`` (fraction of clean-correct items the attack flips).
    """
    dataset, source, threat = prepare(target, dataset, modality, attack, source, n, threat)
    if attack is not None:
        source.check_modality(modality)
        attack = attack.resolve(modality)  # fill modality defaults (eps=None -> middle eps) so results record them

    t0 = time.perf_counter()
    task = dataset.tasks.get(modality)
    prompts = task.prompts() if task is not None else None
    class_emb = target.class_embeddings(prompts) if prompts is not None else None
    labels = task.labels if task is not None else None

    texts, owner = caption_owner(dataset.captions)
    passes = PassCount()
    with seeded(seed):
        clean_items, adv_items, adv_captions = _embed_batches(target, source, dataset, modality, attack, prompts,
                                                              batch_size, progress, passes)
    clean_items, adv_items, adv_captions = _gather_items(clean_items, adv_items, adv_captions, attack is not None,
                                                         len(dataset))

    with torch.no_grad():
        text_emb = target.encode_text(texts).cpu()
    clean = Embeddings(torch.cat(clean_items), text_emb, owner)
    class_emb = None if class_emb is None else class_emb.cpu()
    metrics: dict[str, Any] = {"clean": embedding_metrics(clean, class_emb, labels), "attacked": None, "delta": None, "asr": None}
    if attack is not None:
        attacked = _attacked_embeddings(target, texts, text_emb, adv_items, adv_captions)
        metrics |= _attacked_metrics(metrics["clean"], clean, attacked, class_emb, labels, attack.perturbs)
        if "captions" in attack.perturbs and [len(c) for c in adv_captions] == [len(c) for c in dataset.captions]:
            # how many of the attack's word edits still change what a caption says (robustmm.text.edits)
            metrics["caption_edits"] = caption_edit_stats(dataset.captions, adv_captions)

    return Result(
        model=model_block(target, source),
        dataset=dataset.info(),
        modality=modality,
        attack=None if attack is None else attack.describe(),
        defense=defense,
        threat=threat,
        metrics=metrics,
        n=len(dataset),
        seed=seed,
        timing_s=round(time.perf_counter() - t0, 3),
        cost=None if attack is None else summed_passes(passes).as_dict(len(dataset)),
    )


def adv_embedding(target: Encoder, modality: str, adv: Batch) -> torch.Tensor:
    """``target``'s embedding of the attacked batch, on the CPU: the one the attack handed back
    when it embedded exactly ``adv.x`` with ``target`` itself (PGD's kept iterate; bit for bit what
    embedding again gives, see :meth:`Batch.embedding_by`), else a fresh no-grad forward."""
    emb = adv.embedding_by(target)
    if emb is not None and adv.x.device == target.device:
        get_modality(modality).validate(adv.x)  # what encode() would check
        return emb.detach().cpu()
    with torch.no_grad():
        return target.encode(modality, adv.x.to(target.device)).cpu()


def _embed_batches(target: Encoder, source: Encoder, dataset: MultimodalDataset, modality: str, attack: Attack | None,
                   prompts: list[list[str]] | None, batch_size: int, progress: bool,
                   passes: PassCount) -> tuple[list[torch.Tensor], list[torch.Tensor], list[list[str]]]:
    """This rank's clean embeddings, attacked embeddings and attacked captions, batch by batch (the
    attack differentiates ``source``; ``target`` embeds). Outside a process group: every batch.
    The attack's model passes are added to ``passes``."""
    clean_items, adv_items, adv_captions = [], [], []
    # multi-process: this rank's whole batches only (everything when not distributed)
    items = dist_utils.shard(len(dataset), align=batch_size)
    batches = iter_batches(dataset, modality, batch_size, prompts, items)
    n_batches = (len(items) + batch_size - 1) // batch_size
    desc = f"{target.name}/{modality}" + (f" {attack.name}" if attack else "")
    progress = progress and dist_utils.rank() == 0
    for batch in tqdm(batches, total=n_batches, desc=desc, disable=not progress, leave=False):
        batch = batch.replace(x=batch.x.to(target.device))
        with torch.no_grad():  # encode() validates the batch against the modality's spec
            clean_items.append(target.encode(modality, batch.x).cpu())
        if attack is not None:
            with count_passes() as spent:
                adv = attack(source, batch.replace(x=batch.x.to(source.device)))
            passes.add(spent)
            adv_items.append(adv_embedding(target, modality, adv))
            adv_captions.extend(adv.captions)
    return clean_items, adv_items, adv_captions


def _attacked_embeddings(target: Encoder, texts: list[str], text_emb: torch.Tensor, adv_items: list[torch.Tensor],
                         adv_captions: list[list[str]]) -> Embeddings:
    """The attacked pass: attacked items, and the captions' embeddings (re-embedded only if the attack edited them)."""
    adv_texts, adv_owner = caption_owner(adv_captions)
    if adv_texts == texts:
        adv_text_emb = text_emb
    else:
        with torch.no_grad():
            adv_text_emb = target.encode_text(adv_texts).cpu()
    return Embeddings(torch.cat(adv_items), adv_text_emb, adv_owner)


def _attacked_metrics(clean_metrics: dict[str, float], clean: Embeddings, attacked: Embeddings,
                      class_emb: torch.Tensor | None, labels: torch.Tensor | None,
                      perturbs: tuple[str, ...]) -> dict[str, Any]:
    """``attacked``, ``delta``, ``asr`` and ``asr_detail`` of a result's metrics block."""
    metrics: dict[str, Any] = {"attacked": embedding_metrics(attacked, class_emb, labels)}
    metrics["delta"] = {k: metrics["attacked"][k] - v for k, v in clean_metrics.items() if k in metrics["attacked"]}
    asr = _success_rates(clean, attacked, class_emb, labels)
    # primary ASR: zero-shot for input attacks; retrieval (text->X R@1) when captions are attacked
    if "captions" in perturbs and asr.get("t2x_R@1") is not None:
        metrics["asr"] = asr["t2x_R@1"]
    else:
        metrics["asr"] = asr.get("zeroshot_top1", asr.get("x2t_R@1"))
    metrics["asr_detail"] = asr
    return metrics


def _success_rates(clean: Embeddings, attacked: Embeddings, class_emb: torch.Tensor | None,
                   labels: torch.Tensor | None) -> dict[str, float | None]:
    """Attack success rate per criterion: zero-shot top-1 (with a task) and, when every caption
    survived, both retrieval R@1 directions."""
    asr: dict[str, float | None] = {}
    if class_emb is not None:
        asr["zeroshot_top1"] = attack_success_rate(
            zeroshot_correct(clean.items, class_emb, labels), zeroshot_correct(attacked.items, class_emb, labels)
        )
    if len(attacked.owner) == len(clean.owner):
        asr["x2t_R@1"] = attack_success_rate(
            x2t_ranks(clean.items, clean.texts, clean.owner) <= 1,
            x2t_ranks(attacked.items, attacked.texts, attacked.owner) <= 1,
        )
        asr["t2x_R@1"] = attack_success_rate(
            t2x_ranks(clean.items, clean.texts, clean.owner) <= 1,
            t2x_ranks(attacked.items, attacked.texts, attacked.owner) <= 1,
        )
    return asr


def model_block(target: Encoder, source: Encoder) -> dict[str, Any]:
    """The ``model`` block of a result: the target's info, plus the source's when the attack used another encoder."""
    model_info = target.info()
    if source is not target:
        model_info["source"] = source.info()
    return model_info
