"""The example figures of a run: PGD (and the fitted patch) on a few items, then drawn by
:mod:`robustmm.report.example_figures`, which only plots what it is given."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..attacks.base import Attack, build_attack
from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from ..evaluation import iter_batches
from ..modalities import get_modality
from ..report import example_figures as draw
from ..seeding import seeded


def _predict(encoder: Encoder, data: MultimodalDataset, modality: str, x: torch.Tensor) -> list[str]:
    task = data.tasks[modality]
    with torch.no_grad():
        cls = encoder.class_embeddings(task.prompts())
        pred = (encoder.encode(modality, x) @ cls.T).argmax(-1)
    return [task.classnames[i] for i in pred.tolist()]


def _attacked(encoder: Encoder, data: MultimodalDataset, modality: str, attack: Attack,
              n: int) -> tuple[torch.Tensor, torch.Tensor]:
    task = data.tasks.get(modality)
    batch = next(iter_batches(data.head(n), modality, n, task.prompts() if task else None))
    return batch.x, attack(encoder, batch).x


#: the modalities with an example figure, in the report's order
EXAMPLE_MODALITIES = ("image", "audio", "pointcloud")


def example_figures(encoder: Encoder, data: MultimodalDataset, out_dir: str | Path, *, patch: Attack | None = None,
                    n_images: int = 4, steps: int = 10, seed: int = 0,
                    modalities: Sequence[str] = EXAMPLE_MODALITIES) -> list[Path]:
    """Write gallery / spectrogram / point-cloud figures for the first items of ``data``.

    PGD runs at the image modality's middle eps (the largest eps of audio and point clouds, where
    a small one is invisible), with ``steps`` steps, seeded by ``seed``. ``modalities`` picks the
    figures (each is drawn the same alone or with the others: a multi-process run splits them).
    The caller's random state is left as it was.
    """
    with seeded(seed):
        return _draw_examples(encoder, data, Path(out_dir), patch, n_images, steps, seed, modalities)


def _draw_examples(encoder: Encoder, data: MultimodalDataset, out_dir: Path, patch: Attack | None, n_images: int,
                   steps: int, seed: int, modalities: Sequence[str]) -> list[Path]:
    written: list[Path] = []
    wanted = set(modalities) & set(data.modalities) & set(encoder.modalities)
    if "image" in wanted and "image" in data.tasks:
        spec = get_modality("image")
        eps = spec.middle_eps
        x, xa = _attacked(encoder, data, "image", build_attack("pgd", eps=eps, steps=steps, seed=seed), n_images)
        truth = [data.tasks["image"].classnames[i] for i in data.tasks["image"].labels[:n_images].tolist()]
        clean_pred, adv_pred = _predict(encoder, data, "image", x), _predict(encoder, data, "image", xa)
        xp, patched_pred = None, None
        if patch is not None:
            xp = patch(encoder, next(iter_batches(data.head(n_images), "image", n_images, None))).x
            patched_pred = _predict(encoder, data, "image", xp)
        written += draw.image_gallery(x, xa, truth, clean_pred, adv_pred, f"PGD {spec.format_eps(eps)}",
                                      out_dir / "gallery_image", x_patch=xp, patch_pred=patched_pred)
    if "audio" in wanted:
        eps = get_modality("audio").eps_grid[-1]
        x, xa = _attacked(encoder, data, "audio", build_attack("pgd", eps=eps, steps=steps, seed=seed), 1)
        written += draw.audio_example(x[0], xa[0], int(data.meta.get("sample_rate", 8000)), eps,
                                      out_dir / "audio_spectrograms")
    if "pointcloud" in wanted:
        eps = get_modality("pointcloud").eps_grid[-1]
        x, xa = _attacked(encoder, data, "pointcloud", build_attack("pgd", eps=eps, steps=steps, seed=seed), 1)
        written += draw.pointcloud_example(x[0], xa[0], out_dir / "pointcloud_pgd")
    return written
