"""Example figures of a run: what attacks do to a few concrete items.

* an image gallery (clean / PGD / amplified perturbation / universal patch) with top-1 predictions,
* an audio example as spectrograms (clean, adversarial, perturbation),
* a point cloud before and after PGD.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..attacks.base import Attack, build_attack
from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from ..evaluation import iter_batches
from ..modalities import get_modality
from .plots import amplified_perturbation, plot_gallery, plot_pointcloud, plot_spectrograms

log = logging.getLogger(__name__)


def _predict(encoder: Encoder, data: MultimodalDataset, modality: str, x: torch.Tensor) -> list[str]:
    task = data.tasks[modality]
    with torch.no_grad():
        cls = encoder.class_embeddings(task.prompts())
        pred = (encoder.encode(modality, x) @ cls.T).argmax(-1)
    return [task.classnames[i] for i in pred.tolist()]


def _attacked(encoder: Encoder, data: MultimodalDataset, modality: str, attack: Attack, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    task = data.tasks.get(modality)
    batch = next(iter_batches(data.head(n), modality, n, task.prompts() if task else None))
    return batch.x, attack(encoder, batch).x


def example_figures(encoder: Encoder, data: MultimodalDataset, out_dir: str | Path, *, patch: Attack | None = None,
                    n_images: int = 4, steps: int = 10, seed: int = 0) -> list[Path]:
    """Write gallery / spectrogram / point-cloud figures for the first items of ``data``."""
    out_dir = Path(out_dir)
    written: list[Path] = []
    torch.manual_seed(seed)
    if "image" in data.modalities and "image" in encoder.modalities and "image" in data.tasks:
        spec = get_modality("image")
        eps = spec.middle_eps
        x, xa = _attacked(encoder, data, "image", build_attack("pgd", eps=eps, steps=steps, seed=seed), n_images)
        truth = [data.tasks["image"].classnames[i] for i in data.tasks["image"].labels[:n_images].tolist()]
        clean_pred, adv_pred = _predict(encoder, data, "image", x), _predict(encoder, data, "image", xa)
        cols = ["clean", f"PGD {spec.format_eps(eps)}", "perturbation (amplified)"]
        patched_pred, xp = None, None
        if patch is not None:
            xp = patch(encoder, next(iter_batches(data.head(n_images), "image", n_images, None))).x
            patched_pred = _predict(encoder, data, "image", xp)
            cols.append("universal patch")

        def cell(img: Any, pred: str | None, t: str) -> dict[str, Any]:
            cap = "" if pred is None else f"pred: {pred} {'✓' if pred == t else '✗'}"
            return {"image": img, "title": f"true: {t}", "caption": cap}

        rows = []
        for i, t in enumerate(truth):
            row = [cell(x[i], clean_pred[i], t), cell(xa[i], adv_pred[i], t),
                   {"image": amplified_perturbation(x[i], xa[i]), "title": f"true: {t}", "caption": ""}]
            if xp is not None:
                row.append(cell(xp[i], patched_pred[i], t))
            rows.append(row)
        written += plot_gallery(rows, cols, out_dir / "gallery_image")
    if "audio" in data.modalities and "audio" in encoder.modalities:
        eps = get_modality("audio").eps_grid[-1]
        x, xa = _attacked(encoder, data, "audio", build_attack("pgd", eps=eps, steps=steps, seed=seed), 1)
        sr = int(data.meta.get("sample_rate", 8000))
        written += plot_spectrograms(x[0], xa[0], sr, out_dir / "audio_spectrograms",
                                     titles=("clean", f"PGD eps {eps:g} FS"))
    if "pointcloud" in data.modalities and "pointcloud" in encoder.modalities:
        eps = get_modality("pointcloud").eps_grid[-1]
        x, xa = _attacked(encoder, data, "pointcloud", build_attack("pgd", eps=eps, steps=steps, seed=seed), 1)
        written += plot_pointcloud(x[0], xa[0], out_dir / "pointcloud_pgd")
    return written
