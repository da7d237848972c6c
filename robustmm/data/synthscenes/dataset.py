"""The SynthScenes dataset: :func:`synthscenes` and its registry entry ``"synthscenes"``."""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ...errors import EmptyDatasetError, RobustMMError, UnknownNameError
from ..base import MultimodalDataset
from ..registry import register_dataset
from .render import check_modalities, render
from .scenes import generate_scenes, scene_attributes
from .tasks import zeroshot_tasks
from .vocab import ALL_MODALITIES, GENERATOR_VERSION, SAMPLE_RATE, SPLIT_SEEDS, SPLIT_SIZES

logger = logging.getLogger("robustmm.data.synthscenes")


def synthscenes(
    n: int = 1000,
    seed: int = 2,
    split: str = "test",
    modalities: Sequence[str] | str | None = ALL_MODALITIES,
    *,
    lazy: bool = False,
) -> MultimodalDataset:
    """Generate and render ``n`` SynthScenes scenes of ``seed`` as a :class:`MultimodalDataset`.

    ``lazy=True`` keeps only the scene parameters and renders batches on demand (for large
    training splits); the tensors are identical either way. ``split`` is only recorded.
    """
    if n < 1:
        raise EmptyDatasetError(f"synthscenes: n must be >= 1, got {n}")
    mods = check_modalities(modalities)
    t0 = time.perf_counter()
    scenes = generate_scenes(n, seed)
    tensors: dict[str, torch.Tensor] = {}
    loaders: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    if lazy:
        for m in mods:
            loaders[m] = functools.partial(_render_indexed, scenes, m)
    else:
        tensors = render(scenes, mods)
    logger.debug("synthscenes: %d scenes (seed %d, %s) in %.2fs", n, seed, ",".join(mods), time.perf_counter() - t0)
    return MultimodalDataset(
        name="synthscenes",
        split=split,
        captions=[list(s["captions"]) for s in scenes],
        tensors=tensors,
        loaders=loaders,
        tasks=zeroshot_tasks(scenes, mods),
        attributes=[scene_attributes(s) for s in scenes],
        seed=int(seed),
        meta={"generator_version": GENERATOR_VERSION, "sample_rate": SAMPLE_RATE},
    )


def _render_indexed(scenes: Sequence[dict[str, Any]], modality: str, index: torch.Tensor) -> torch.Tensor:
    return render([scenes[i] for i in index.tolist()], (modality,))[modality]


@register_dataset("synthscenes", "SynthScenes: seeded procedural scenes in 6 aligned modalities + captions (offline)",
                  splits=SPLIT_SIZES)
def load_synthscenes(
    *,
    split: str = "test",
    n: int | None = None,
    seed: int | None = None,
    root: str | None = None,
    modalities: Sequence[str] | str | None = None,
    lazy: bool = False,
) -> MultimodalDataset:
    """Registry entry: split ``train``/``val``/``test`` (seeds 0/1/2, sizes 10000/1000/1000).

    ``n`` and ``seed`` override the split's defaults; ``root`` is ignored (nothing on disk). An
    ``n`` above the split's size is refused before any scene is generated: the scenes beyond it
    belong to no split, and a huge ``n`` would render until memory runs out.
    """
    if split not in SPLIT_SEEDS:
        raise UnknownNameError("SynthScenes split", split, SPLIT_SEEDS)
    if n is not None and int(n) > SPLIT_SIZES[split]:
        raise RobustMMError(f"synthscenes: n must be at most {SPLIT_SIZES[split]} (the size of split {split!r}), "
                            f"got {n}")
    return synthscenes(
        n=SPLIT_SIZES[split] if n is None else int(n),
        seed=SPLIT_SEEDS[split] if seed is None else int(seed),
        split=split,
        modalities=modalities,
        lazy=lazy,
    )
