"""Calibration heads: small residual projections on one modality's embedding.

A head maps an embedding ``z`` to ``z + up(act(down(z)))``. ``up`` starts at zero, so a fresh head
is exactly the identity and a calibrated model starts from the uncalibrated one. Heads are saved as
safetensors + a JSON sidecar that records what they were trained for, and loading verifies that
the encoder and embedding size match.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError


class ResidualHead(nn.Module):
    """``z -> z + W_up GELU(W_down z)``, identity at initialisation.

    Args:
        dim: embedding size of the encoder.
        hidden: bottleneck width (the head has about ``2 * dim * hidden`` parameters).
    """

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.up(torch.nn.functional.gelu(self.down(z)))


def heads_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, sidecar) for ``X.safetensors`` -> ``X.safetensors``, ``X.json``."""
    p = Path(path)
    if p.suffix != ".safetensors":
        p = p.with_suffix(".safetensors")
    return p, p.with_suffix(".json")


def save_heads(path: str | Path, heads: Mapping[str, ResidualHead], meta: Mapping[str, Any]) -> Path:
    """Write ``heads`` (modality -> head) and metadata (encoder, objective, attack, ...).

    Through :func:`robustmm.persist.save_weights`: each file atomically via its own temp file, and
    the sidecar tied to the weights by their hash, so a save killed between the two files is
    refused by :func:`load_heads` rather than pairing new heads with an older run's metadata.
    """
    from ..persist import save_weights

    wpath, _ = heads_paths(path)
    tensors = {f"{m}.{k}": v.detach().cpu().contiguous() for m, h in heads.items() for k, v in h.state_dict().items()}
    config = {
        "format": "robustmm.heads/1",
        "heads": {m: {"dim": h.dim, "hidden": h.hidden} for m, h in heads.items()},
        **dict(meta),
    }
    save_weights(wpath, tensors, config)
    return wpath


def load_heads(path: str | Path, encoder: Any | None = None) -> tuple[dict[str, ResidualHead], dict[str, Any]]:
    """Load heads saved by :func:`save_heads`; with ``encoder``, check they were made for it."""
    from ..persist import load_weights

    wpath, cpath = heads_paths(path)
    state, config = load_weights(wpath, "calibration heads")
    if config.get("format") != "robustmm.heads/1" or not isinstance(config.get("heads"), dict):
        raise CheckpointError(f"{cpath}: not a robustmm heads file (format={config.get('format')!r})")
    for m, h in config["heads"].items():
        if not (isinstance(h, dict) and all(type(h.get(k)) is int and h[k] > 0 for k in ("dim", "hidden"))):
            raise CheckpointError(f"{cpath}: head {m!r} needs integer 'dim' and 'hidden' > 0, got {h!r}")
    if encoder is not None:
        if config.get("encoder") != encoder.name:
            raise CheckpointError(
                f"{wpath}: heads were trained for encoder {config.get('encoder')!r}, not {encoder.name!r}"
            )
        for m, h in config["heads"].items():
            if h["dim"] != encoder.embed_dim:
                raise CheckpointError(f"{wpath}: head {m!r} expects embed_dim {h['dim']}, encoder has {encoder.embed_dim}")
            if m not in encoder.modalities:
                raise CheckpointError(f"{wpath}: head for modality {m!r}, which encoder {encoder.name!r} lacks")
    heads: dict[str, ResidualHead] = {}
    for m, h in config["heads"].items():
        head = ResidualHead(int(h["dim"]), int(h["hidden"]))
        sub = {k[len(m) + 1 :]: v for k, v in state.items() if k.startswith(f"{m}.")}
        expected = head.state_dict()
        if set(sub) != set(expected) or any(sub[k].shape != expected[k].shape for k in expected):
            raise CheckpointError(f"{wpath}: tensors of head {m!r} do not match its config")
        head.load_state_dict(sub)
        head.eval()
        heads[m] = head
    return heads, config


@dataclass
class Calibration:
    """Trained heads plus everything needed to describe them in results and on disk."""

    heads: dict[str, ResidualHead]
    meta: dict[str, Any] = field(default_factory=dict)

    def defense_block(self) -> dict[str, Any]:
        """The ``defense`` block of a result record."""
        keys = ("objective", "regulariser", "consistency_weight", "uses_labels", "attack", "epochs", "hidden",
                "adaptive_every", "clean_only", "n_train", "train_s", "attack_s")
        return {"name": "calibration", **{k: self.meta.get(k) for k in keys if k in self.meta}}

    def save(self, path: str) -> None:
        save_heads(path, self.heads, self.meta)
