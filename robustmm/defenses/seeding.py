"""Seeded blocks that leave the caller's random state as it was."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Run the block with the global RNG seeded to ``seed`` and restore the caller's state afterwards.

    Training procedures draw from the global RNG (weight initialisation, dropout, attacks without a
    generator); seeding it inside a fork keeps their results as reproducible as a plain
    ``torch.manual_seed(seed)`` while the caller's random stream is untouched. The CPU state is
    always forked, and the state of ``device`` too when it is a CUDA device.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
