"""The shared back end of the user-data loaders: item checks, lazy streaming, the dataset.

Every user-data loader (class folders, manifests, Hugging Face datasets, webdataset shards,
ImageNet, ModelNet40) lists its items as *sources* (paths or bytes) with captions and labels, and
hands them to :func:`build_dataset`, which

1. picks the items (all, or a seeded subset of ``n`` kept in file order); more items asked for
   than there are is a one-line error stating the real count;
2. checks each picked item's header before any work (:func:`~robustmm.data.decode.probe`): an
   empty or corrupt file, or items of mixed sizes / sample rates where no common size is set, is
   a one-line error naming the file -- or, with ``skip_bad``, the item is skipped (another one
   drawn in its place) and ``meta["skipped"]`` (recorded in every result) counts them;
3. returns a :class:`MultimodalDataset` whose modality is an :class:`ItemLoader`: items are
   decoded only when a batch is asked for, by ``workers`` DataLoader worker processes, so memory
   stays flat however many items the dataset has (``benchmarks/data_streaming.py``).
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import EmptyDatasetError, RobustMMError
from .base import MultimodalDataset, ZeroShotTask
from .decode import BadFileError, DecodeOptions, Source, clip_seconds, decode, probe, source_name
from .options import DEFAULT_TEMPLATES, as_bool, as_int, decode_options, read_lines, read_templates

__all__ = ["ItemLoader", "build_dataset", "DEFAULT_TEMPLATES", "read_lines", "read_templates", "as_bool", "as_int",
           "decode_options"]

log = logging.getLogger(__name__)

class _Decoder:
    """What a worker needs to decode item ``i`` (no reference back to the loader and its workers)."""

    def __init__(self, modality: str, sources: list[Source], opts: DecodeOptions):
        self.modality, self.sources, self.opts = modality, sources, opts

    def load_one(self, i: int) -> torch.Tensor:
        return decode(self.modality, self.sources[i], self.opts)


class _Items(torch.utils.data.Dataset):
    """The picked items of one ItemLoader call; errors come back as values (one line, not a
    worker traceback)."""

    def __init__(self, loader: "_Decoder", idx: list[int]):
        self.loader, self.idx = loader, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> Any:
        try:
            return self.loader.load_one(self.idx[i])
        except RobustMMError as e:
            return e


class _Slots(torch.utils.data.Dataset):
    """Worker side of an ItemLoader: item ``code % n`` decoded into row ``code // n`` of a shared
    buffer made before the workers start, so a request's items cross no pipe and no new shared
    memory; returns None, or the item's one-line error."""

    def __init__(self, decoder: _Decoder, buffer: torch.Tensor):
        self.decoder, self.buffer, self.n = decoder, buffer, len(decoder.sources)

    def __len__(self) -> int:
        return self.n * self.buffer.shape[0]

    def __getitem__(self, code: int) -> Any:
        slot, i = divmod(int(code), self.n)
        try:
            x = self.decoder.load_one(i)
            if x.shape != self.buffer.shape[1:]:
                raise BadFileError(f"{source_name(self.decoder.sources[i])}: shape {tuple(x.shape)} differs from "
                                   f"{tuple(self.buffer.shape[1:])} of the other items (set size=/sample_rate=/seconds=)")
            self.buffer[slot].copy_(x)
            return None
        except RobustMMError as e:
            return e


class _Request:
    """The batch sampler of an ItemLoader's DataLoader: the chunks of the current request."""

    def __init__(self) -> None:
        self.chunks: list[list[int]] = []

    def __iter__(self) -> Any:
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


class ItemLoader:
    """Lazy loader of one modality: index tensor -> stacked batch, decoded on demand by
    ``workers`` DataLoader worker processes (0 = in this process). The workers start on the first
    large request and stay for the next ones (``persistent_workers``): each request is split into
    chunks that the workers decode in parallel, so only the requested batch is ever in memory."""

    def __init__(self, modality: str, sources: Sequence[Source], opts: DecodeOptions, workers: int = 0):
        self.modality, self.sources, self.opts, self.workers = modality, list(sources), opts, int(workers)
        self._dl: Any = None
        self._buffer = torch.empty(0)
        self._request = _Request()

    def load_one(self, i: int) -> torch.Tensor:
        """Item ``i`` decoded."""
        return decode(self.modality, self.sources[i], self.opts)

    def _pool(self, rows: int, first: int) -> tuple[Any, torch.Tensor]:
        """The DataLoader and its shared buffer of at least ``rows`` items (item ``first`` gives
        the shape); a larger request replaces both."""
        if self._dl is None or self._buffer.shape[0] < rows:
            self.close()
            shape = self.load_one(first).shape
            self._buffer = torch.empty(rows, *shape).share_memory_()
            slots = _Slots(_Decoder(self.modality, self.sources, self.opts), self._buffer)
            self._dl = torch.utils.data.DataLoader(
                slots, batch_sampler=self._request, num_workers=self.workers, collate_fn=list, persistent_workers=True,
                multiprocessing_context="fork" if os.name == "posix" else None)
        return self._dl, self._buffer

    def close(self) -> None:
        """Stop the worker processes now (the next large request starts new ones). Called when the
        loader is garbage-collected: a DataLoader's own shutdown of persistent workers waits up to
        5 s per worker."""
        iterator = getattr(self._dl, "_iterator", None)
        for w in getattr(iterator, "_workers", None) or []:
            if w.is_alive():
                w.terminate()
        self._dl = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser (interpreter shutdown)
            pass

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_dl": None, "_buffer": torch.empty(0), "_request": _Request()}  # workers stay here

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(index, dtype=torch.long).reshape(-1).tolist()
        if not idx:  # an empty batch (a rank with no items): the shape of item 0, no rows
            return self.load_one(0)[None][:0]
        nested = multiprocessing.current_process().daemon  # a worker itself cannot start workers
        if self.workers > 0 and len(idx) >= 8 * self.workers and not nested:
            dl, buffer = self._pool(len(idx), idx[0])
            codes = [slot * len(self.sources) + i for slot, i in enumerate(idx)]
            chunk = max(1, math.ceil(len(idx) / (4 * self.workers)))
            self._request.chunks = [codes[s: s + chunk] for s in range(0, len(codes), chunk)]
            for err in (x for part in dl for x in part if x is not None):
                raise err
            return buffer[: len(idx)].clone()
        else:
            items = [_Items(_Decoder(self.modality, self.sources, self.opts), idx)[j] for j in range(len(idx))]
        for x in items:
            if isinstance(x, BaseException):
                raise x
        first = items[0].shape
        for j, x in enumerate(items):
            if x.shape != first:
                raise BadFileError(f"{source_name(self.sources[idx[j]])}: shape {tuple(x.shape)} differs from "
                                   f"{tuple(first)} of {source_name(self.sources[idx[0]])} (set size=/sample_rate=/seconds=)")
        return torch.stack(items)

    def __len__(self) -> int:
        return len(self.sources)


def _pick(total: int, n: int | None, seed: int | None, what: str) -> tuple[list[int], int | None]:
    if n is not None and n <= 0:
        raise EmptyDatasetError(f"n must be positive, got {n}")
    if n is not None and n > total:
        raise EmptyDatasetError(f"{what} holds {total} items, fewer than the {n} asked for: ask for at most {total}")
    if n is None or n == total:
        return list(range(total)), seed
    seed = 0 if seed is None else int(seed)
    return np.random.default_rng(seed).permutation(total).tolist(), seed


def _check_probes(modality: str, opts: DecodeOptions, probes: dict[int, tuple[Any, ...]], sources: Sequence[Source]) -> None:
    """Items whose header values must agree (no common size/rate/count set): one line naming the odd file."""
    if modality in ("image", "depth", "thermal", "video"):
        key, unit = (None if opts.size is None else 0), "size"
    elif modality == "audio":
        key, unit = (None if opts.sample_rate is None else 0), "sample rate"
    else:
        key, unit = (None if opts.points is None else 0), "point count"
    if key == 0 or not probes:
        return
    items = sorted(probes.items())
    i0, ref = items[0]
    for i, got in items[1:]:
        a, b = (ref[:1], got[:1]) if modality == "audio" else (ref, got)
        if a != b:
            raise BadFileError(f"{source_name(sources[i])}: {unit} {b} differs from {a} of {source_name(sources[i0])} "
                               f"(mixed {unit}s: set a common one, or fix the file)")


def build_dataset(*, name: str, split: str, modality: str, sources: Sequence[Source], captions: Sequence[list[str]],
                  labels: Sequence[int] | None, classnames: Sequence[str] | None, templates: Any = None,
                  opts: DecodeOptions = DecodeOptions(), n: int | None = None, seed: int | None = None,
                  skip_bad: bool = False, workers: Any = None, what: str = "", meta: dict[str, Any] | None = None,
                  skipped: int = 0) -> MultimodalDataset:
    """The dataset of the picked, checked items (steps 1-3 of the module docstring). ``skipped``:
    items the caller already skipped (rows pointing nowhere) when ``skip_bad`` is on."""
    what = what or name
    total = len(sources)
    if total == 0:
        raise EmptyDatasetError(f"{what}: no {modality} items found")
    order, seed = _pick(total, n, seed, what)
    want = total if n is None else n
    good: list[int] = []
    probes: dict[int, tuple[Any, ...]] = {}
    for i in order:
        if len(good) == want:
            break
        try:
            probes[i] = probe(modality, sources[i])
        except BadFileError as e:
            if not skip_bad:
                raise
            skipped += 1
            log.warning("skipped: %s", e)
            continue
        good.append(i)
    if not good:
        raise EmptyDatasetError(f"{what}: no readable {modality} items ({skipped} skipped as unreadable)")
    if n is not None and len(good) < want:
        raise EmptyDatasetError(f"{what}: only {len(good)} readable items, fewer than the {want} asked for "
                                f"({skipped} skipped as unreadable)")
    good.sort()
    _check_probes(modality, opts, probes, sources)
    if modality == "audio" and opts.seconds is None:
        opts = DecodeOptions(**{**opts.__dict__, "seconds": clip_seconds([probes[i][1] for i in good])})
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    elif str(workers).strip() != "0":
        workers = as_int(workers, "workers")
    loader = ItemLoader(modality, [sources[i] for i in good], opts, int(workers or 0))
    tasks = {}
    if labels is not None and classnames:
        tasks[modality] = ZeroShotTask(torch.tensor([int(labels[i]) for i in good], dtype=torch.long), tuple(classnames),
                                       read_templates(templates, modality), f"{name} classes")
    image_like = modality in ("image", "video", "depth", "thermal")
    info = {"modality": modality, "image_size": opts.size if image_like else None,
            "sample_rate": opts.sample_rate if modality == "audio" else None,
            "points": opts.points if modality == "pointcloud" else None,
            "skipped": int(skipped), **(meta or {})}
    log.info("loaded %s: %d %s items (%d skipped)", what, len(good), modality, skipped)
    return MultimodalDataset(name=name, split=split, captions=[list(captions[i]) for i in good], loaders={modality: loader},
                             tasks=tasks, seed=seed, meta={k: v for k, v in info.items() if v is not None})
