"""ESC-50 environmental sounds: audio zero-shot classification (50 classes, 2000 clips of 5 s).

On-disk format of the official release (github karolpiczak/ESC-50)::

    root/meta/esc50.csv      filename,fold,target,category,esc10,src_file,take
    root/audio/*.wav         5 s, 44.1 kHz, mono, 16-bit PCM (e.g. 1-100032-A-0.wav)

Splits: ``test`` = all 2000 clips (the Bind papers' zero-shot protocol: ImageBind and
LanguageBind score every clip), ``fold1`` .. ``fold5`` = one fold, ``train`` = folds 1-4 and
``val`` = fold 5 (for fitting calibration heads without touching the fold they are scored on).

Clips are read lazily with the stdlib ``wave`` module and resampled to ``sample_rate`` (16 kHz,
what both Bind models expect) with torchaudio's windowed-sinc algorithm
(:func:`robustmm.data.media.resample`). The zero-shot task uses the category names with
underscores as spaces and LanguageBind's audio template "a sound of {}." (ImageBind uses the
class name alone; add templates with ``templates=``). Captions: "a sound of {category}.".
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, EmptyDatasetError, RobustMMError, UnknownNameError
from .base import MultimodalDataset, ZeroShotTask
from .files import MissingDataError, choose_subset
from .media import read_wav, resample
from .registry import register_dataset

logger = logging.getLogger(__name__)

__all__ = ["WavLoader", "load_esc50", "ESC50_TEMPLATES", "ESC50_SPLITS", "ESC50_SPLIT_SIZES"]

ESC50_TEMPLATES: tuple[str, ...] = ("a sound of {}.",)
ESC50_SPLITS: dict[str, tuple[int, ...]] = {"test": (1, 2, 3, 4, 5), "train": (1, 2, 3, 4), "val": (5,)} | {
    f"fold{k}": (k,) for k in range(1, 6)
}
#: clips per split: the release's meta CSV is fixed, 400 clips in each of its five folds
ESC50_SPLIT_SIZES: dict[str, int | None] = {name: 400 * len(folds) for name, folds in ESC50_SPLITS.items()}


class WavLoader:
    """Lazy wav loader: index -> (len, samples) float32 waveforms at ``sample_rate``, fixed length.

    Clips shorter than ``seconds`` are zero-padded, longer ones cut (ESC-50 clips are all 5 s).
    """

    def __init__(self, paths: list[str], sample_rate: int, seconds: float):
        self.paths, self.sample_rate = list(paths), int(sample_rate)
        self.length = int(round(seconds * sample_rate))

    def load_one(self, path: str) -> torch.Tensor:
        x, sr = read_wav(path)
        x = resample(x, sr, self.sample_rate)
        out = np.zeros(self.length, np.float32)
        out[: min(len(x), self.length)] = x[: self.length]
        return torch.from_numpy(np.clip(out, -1.0, 1.0))

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(index, dtype=torch.long).reshape(-1).tolist()
        if not idx:
            return torch.zeros(0, self.length)
        return torch.stack([self.load_one(self.paths[i]) for i in idx])


def _read_meta(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for r in rows:
            r["filename"], int(r["fold"]), int(r["target"]), r["category"]  # noqa: B018 - presence checks
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"esc50: {path} is not the ESC-50 meta CSV (filename,fold,target,category,...): {e}") from None
    return rows


@register_dataset("esc50", "ESC-50 audio zero-shot classification, 50 classes (meta/esc50.csv + audio/*.wav under root=)",
                  needs_root=True, splits=ESC50_SPLIT_SIZES)
def load_esc50(
    *,
    split: str = "test",
    n: int | None = None,
    seed: int | None = None,
    root: str | Path | None = None,
    sample_rate: int = 16000,
    templates: tuple[str, ...] = ESC50_TEMPLATES,
    check_files: bool = True,
    **_: Any,
) -> MultimodalDataset:
    """ESC-50 from its official CSV and wav files (see the module docstring for splits and format)."""
    if split not in ESC50_SPLITS:
        raise UnknownNameError("esc50 split", split, ESC50_SPLITS)
    if root is None:
        raise RobustMMError("esc50 needs root=DIR holding meta/esc50.csv and audio/*.wav")
    root = Path(root).expanduser()
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise MissingDataError(f"esc50: metadata not found: {meta} (the ESC-50 release's meta/esc50.csv)")
    rows = _read_meta(meta)
    names: dict[int, str] = {int(r["target"]): r["category"].replace("_", " ") for r in rows}
    classnames = tuple(names.get(i, f"class {i}") for i in range(max(names) + 1)) if names else ()
    rows = [r for r in rows if int(r["fold"]) in ESC50_SPLITS[split]]
    if not rows:
        raise EmptyDatasetError(f"esc50: no clips in split {split!r} of {meta}")
    index, seed = choose_subset(len(rows), n, seed, f"esc50/{split}")
    rows = [rows[i] for i in index.tolist()]
    paths = [root / "audio" / r["filename"] for r in rows]
    if check_files:
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise MissingDataError(f"esc50: {len(missing)} of {len(paths)} wav files not found, e.g. {missing[0]}")
    labels = torch.tensor([int(r["target"]) for r in rows], dtype=torch.long)
    captions = [[f"a sound of {classnames[int(r['target'])]}."] for r in rows]
    task = ZeroShotTask(labels, classnames, tuple(templates), "ESC-50 category (50 classes)")
    logger.info("loaded esc50/%s: %d clips from %s", split, len(rows), root)
    return MultimodalDataset(
        name="esc50", split=split, captions=captions,
        loaders={"audio": WavLoader([str(p) for p in paths], sample_rate, 5.0)},
        tasks={"audio": task}, seed=seed,
        meta={"sample_rate": int(sample_rate), "classes": len(classnames), "folds": list(ESC50_SPLITS[split])},
    )
