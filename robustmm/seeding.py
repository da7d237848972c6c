"""Seeded regions that leave the caller's random state as it was.

Library code that needs reproducible draws from torch's global generators (an attack that draws
without a generator of its own, a randomized input defense) seeds them inside :func:`seeded`: the
body sees ``torch.manual_seed(seed)``, and on leaving, the caller's CPU (and CUDA) generator states
are put back, so calling into robustmm never changes what the caller's next random draw is.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["seeded"]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global generators seeded with ``seed``; restore the caller's states after.

    The CUDA generators are saved and restored too when CUDA is available (``torch.manual_seed``
    seeds them as well), so GPU runs draw the same numbers as before and leak no state either.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
