"""Example figures of a run: what attacks do to a few concrete items (drawing only).

The job layer (:mod:`robustmm.job.example_attacks`) runs the attacks and the predictions; these
functions draw what they are given:

* an image gallery (clean / PGD / amplified perturbation / universal patch) with top-1 predictions,
* an audio example as spectrograms (clean, adversarial, perturbation),
* a point cloud before and after PGD.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .plots import amplified_perturbation, plot_gallery, plot_pointcloud, plot_spectrograms


def _cell(img: Any, pred: str | None, truth: str) -> dict[str, Any]:
    cap = "" if pred is None else f"pred: {pred} {'✓' if pred == truth else '✗'}"
    return {"image": img, "title": f"true: {truth}", "caption": cap}


def image_gallery(x: torch.Tensor, x_adv: torch.Tensor, truth: Sequence[str], clean_pred: Sequence[str],
                  adv_pred: Sequence[str], attack_label: str, out: str | Path, *, x_patch: torch.Tensor | None = None,
                  patch_pred: Sequence[str] | None = None) -> list[Path]:
    """One row per item: clean, attacked, the perturbation amplified, and (given) the patched item,
    each titled with the true class and captioned with the prediction (✓/✗)."""
    cols = ["clean", attack_label, "perturbation (amplified)"] + (["universal patch"] if x_patch is not None else [])
    rows = []
    for i, t in enumerate(truth):
        row = [_cell(x[i], clean_pred[i], t), _cell(x_adv[i], adv_pred[i], t),
               {"image": amplified_perturbation(x[i], x_adv[i]), "title": f"true: {t}", "caption": ""}]
        if x_patch is not None and patch_pred is not None:
            row.append(_cell(x_patch[i], patch_pred[i], t))
        rows.append(row)
    return plot_gallery(rows, cols, out)


def audio_example(x: torch.Tensor, x_adv: torch.Tensor, sample_rate: int, eps: float, out: str | Path) -> list[Path]:
    """Spectrograms of one clip, clean and under PGD at ``eps`` (full-scale units)."""
    return plot_spectrograms(x, x_adv, sample_rate, out, titles=("clean", f"PGD eps {eps:g} FS"))


def pointcloud_example(x: torch.Tensor, x_adv: torch.Tensor, out: str | Path) -> list[Path]:
    """One point cloud before and after PGD."""
    return plot_pointcloud(x, x_adv, out)
