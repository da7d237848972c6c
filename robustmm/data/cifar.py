"""CIFAR-10 / CIFAR-100 zero-shot classification from the torchvision on-disk format.

Expected files (what ``torchvision.datasets.CIFAR10/100(download=True)`` leaves under ``root``)::

    root/cifar-10-batches-py/{test_batch, data_batch_1..5, batches.meta}
    root/cifar-100-python/{test, train, meta}

These files are Python pickles. Unpickling runs whatever callables a file names, so they are read
with :class:`SafeArrayUnpickler`, which only rebuilds numpy arrays and plain containers and
rejects every other global with :class:`~robustmm.errors.CheckpointError` -- a tampered file
cannot execute code.

Every item is an image (float32, (3, 32, 32), [0, 1]), the caption "a photo of a {class}." and
an ``image`` :class:`ZeroShotTask` with CLIP-style prompt templates.
"""
from __future__ import annotations

import codecs
import functools
import io
import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, RobustMMError, UnknownNameError
from .base import MultimodalDataset, ZeroShotTask
from .files import MissingDataError, choose_subset
from .registry import register_dataset

logger = logging.getLogger(__name__)

__all__ = ["SafeArrayUnpickler", "safe_load_pickle", "load_cifar", "load_cifar10", "load_cifar100", "CIFAR_TEMPLATES"]

#: A handful of the CLIP paper's CIFAR prompt templates.
CIFAR_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a pixelated photo of a {}.",
)

_LAYOUT = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "splits": {"test": ("test_batch",), "train": tuple(f"data_batch_{i}" for i in range(1, 6))},
        "meta": "batches.meta",
        "labels": "labels",
        "names": "label_names",
        "torchvision": "CIFAR10",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "splits": {"test": ("test",), "train": ("train",)},
        "meta": "meta",
        "labels": "fine_labels",
        "names": "fine_label_names",
        "torchvision": "CIFAR100",
    },
}


# -- safe unpickling -------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only callables a CIFAR pickle may name: numpy array/dtype reconstruction + builtins."""
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]

    allowed: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x / 2.x pickles
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
        allowed[(mod, "scalar")] = multiarray.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):  # protocol-5 array pickles
        allowed[(mod, "_frombuffer")] = numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    for mod in ("builtins", "__builtin__"):
        for name, obj in (("dict", dict), ("list", list), ("tuple", tuple), ("bytes", bytes),
                          ("bytearray", bytearray), ("str", str), ("int", int), ("float", float)):
            allowed[(mod, name)] = obj
    allowed[("_codecs", "encode")] = codecs.encode  # how protocol-2 pickles spell bytes objects
    return allowed


class SafeArrayUnpickler(pickle.Unpickler):
    """An Unpickler that can rebuild numpy arrays, dicts, lists and strings -- nothing else.

    Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) raises
    :class:`CheckpointError` before it is called; persistent ids are refused too.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _allowed_globals()[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"refusing to unpickle global {module}.{name}: only numpy arrays and plain data are allowed"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError("refusing to unpickle a persistent id")


def safe_load_pickle(path: str | Path) -> Any:
    """Load a data pickle with :class:`SafeArrayUnpickler` (Python-2 strings decoded as latin-1)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MissingDataError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return SafeArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - truncated/corrupt file
        raise CheckpointError(f"{path}: not a valid pickle ({type(e).__name__}: {e})") from None


def _str_keys(d: Any, path: Path) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(d).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in d.items()}


def _text(s: Any) -> str:
    return s.decode("utf-8") if isinstance(s, bytes) else str(s)


# -- loading -----------------------------------------------------------------------------------
def _read_split(name: str, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    layout = _LAYOUT[name]
    files = [folder / f for f in layout["splits"][split]] + [folder / layout["meta"]]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise MissingDataError(
            f"{name}: missing file(s) {', '.join(missing)}; expected the torchvision layout "
            f"ROOT/{layout['folder']}/{{{', '.join(layout['splits'][split])}, {layout['meta']}}} "
            f"(as left by torchvision.datasets.{layout['torchvision']}(ROOT, download=True))"
        )
    images, labels = [], []
    for f in files[:-1]:
        batch = _str_keys(safe_load_pickle(f), f)
        if "data" not in batch or layout["labels"] not in batch:
            raise CheckpointError(f"{f}: expected keys 'data' and {layout['labels']!r}, got {sorted(batch)}")
        data = np.asarray(batch["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise CheckpointError(f"{f}: 'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
        lab = np.asarray(batch[layout["labels"]], dtype=np.int64)
        if lab.shape != (data.shape[0],):
            raise CheckpointError(f"{f}: {lab.shape[0]} labels for {data.shape[0]} images")
        images.append(data)
        labels.append(lab)
    meta = _str_keys(safe_load_pickle(files[-1]), files[-1])
    if layout["names"] not in meta:
        raise CheckpointError(f"{files[-1]}: expected key {layout['names']!r}, got {sorted(meta)}")
    classnames = [_text(c).replace("_", " ") for c in meta[layout["names"]]]
    y = np.concatenate(labels)
    if y.size and (y.min() < 0 or y.max() >= len(classnames)):
        raise CheckpointError(f"{name}: labels outside [0, {len(classnames)}) in {folder}")
    return np.concatenate(images), y, classnames


def load_cifar(
    name: str,
    *,
    split: str = "test",
    n: int | None = None,
    seed: int | None = None,
    root: str | Path | None = None,
    templates: Sequence[str] = CIFAR_TEMPLATES,
) -> MultimodalDataset:
    """Load ``cifar10`` or ``cifar100`` (``split`` test/train; ``n`` a seeded random subset)."""
    if name not in _LAYOUT:
        raise UnknownNameError("CIFAR variant", name, _LAYOUT)
    layout = _LAYOUT[name]
    if split not in layout["splits"]:
        raise UnknownNameError(f"{name} split", split, layout["splits"])
    if root is None:
        raise RobustMMError(
            f"{name} needs root=DIR containing {layout['folder']}/ (torchvision format: "
            f"{', '.join(layout['splits'][split])} and {layout['meta']})"
        )
    root = Path(root).expanduser()
    folder = root / layout["folder"] if (root / layout["folder"]).is_dir() or root.name != layout["folder"] else root
    data, labels, classnames = _read_split(name, folder, split)
    index, seed = choose_subset(len(labels), n, seed, f"{name}/{split}")
    images = torch.from_numpy(data[index].reshape(-1, 3, 32, 32)).float().div_(255.0)
    y = torch.from_numpy(labels[index])
    captions = [[f"a photo of a {classnames[int(c)]}."] for c in y.tolist()]
    task = ZeroShotTask(y, tuple(classnames), tuple(templates), description=f"{name} {len(classnames)}-way classification")
    logger.info("loaded %s/%s: %d of %d images from %s", name, split, len(y), len(labels), folder)
    return MultimodalDataset(
        name=name,
        split=split,
        captions=captions,
        tensors={"image": images},
        tasks={"image": task},
        seed=seed,
        meta={"total": int(len(labels)), "classes": len(classnames)},
    )


#: the split sizes of both releases (fixed files: 5 x 10000 training and 10000 test images)
CIFAR_SPLIT_SIZES: dict[str, int | None] = {"test": 10_000, "train": 50_000}


@register_dataset("cifar10", "CIFAR-10 zero-shot classification (torchvision files under root=)", needs_root=True,
                  splits=CIFAR_SPLIT_SIZES)
def load_cifar10(
    *, split: str = "test", n: int | None = None, seed: int | None = None, root: str | None = None, **kw: Any
) -> MultimodalDataset:
    """CIFAR-10 from ``root/cifar-10-batches-py`` (10 classes, 10000 test images)."""
    return load_cifar("cifar10", split=split, n=n, seed=seed, root=root, **kw)


@register_dataset("cifar100", "CIFAR-100 zero-shot classification (torchvision files under root=)", needs_root=True,
                  splits=CIFAR_SPLIT_SIZES)
def load_cifar100(
    *, split: str = "test", n: int | None = None, seed: int | None = None, root: str | None = None, **kw: Any
) -> MultimodalDataset:
    """CIFAR-100 from ``root/cifar-100-python`` (100 fine classes, 10000 test images)."""
    return load_cifar("cifar100", split=split, n=n, seed=seed, root=root, **kw)
