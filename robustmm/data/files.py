"""Helpers shared by the on-disk dataset loaders (CIFAR, Karpathy-split COCO/Flickr30k).

``MissingDataError`` is the one-line error for dataset files that are not where they should be
(the data counterpart of ``MissingWeightsError``); ``choose_subset`` is the one rule for ``n`` and
``seed``: all items, or a seeded random subset kept in file order.
"""
from __future__ import annotations

import logging

import numpy as np

from ..errors import EmptyDatasetError, MissingDataError

__all__ = ["MissingDataError", "choose_subset"]

log = logging.getLogger(__name__)


def choose_subset(total: int, n: int | None, seed: int | None, what: str = "the split") -> tuple[np.ndarray, int | None]:
    """Indices of all ``total`` items, or of a random subset of ``n`` (seed default 0), sorted.

    Returns the indices and the seed actually used (None when every item is kept). Asking for
    more items than ``what`` holds keeps all of them, with a warning: a split whose size is known
    only on disk (folder datasets) is first counted here, so a job could not refuse ``n`` earlier.
    """
    if n is not None and n > total:
        log.warning("%s holds %d items, fewer than the %d asked for: using all %d", what, total, n, total)
    if n is None or n >= total:
        return np.arange(total), seed
    if n <= 0:
        raise EmptyDatasetError(f"n must be positive, got {n}")
    seed = 0 if seed is None else int(seed)
    pick = np.random.default_rng(seed).permutation(total)[:n]
    return np.sort(pick), seed
