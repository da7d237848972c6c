"""Reading Bind checkpoints safely: weight files, HF-cache snapshots, key mapping, LoRA merging.

Shared by the LanguageBind and ImageBind loaders. Weights are read with safetensors or with
``torch.load(weights_only=True)`` (no pickled code runs). LanguageBind's LoRA-tuned towers were
saved from a peft-wrapped encoder, so their keys read
``vision_model.encoder.base_model.model.layers.0.self_attn.q_proj[.base_layer].weight`` plus
``...q_proj.lora_A[.default].weight`` / ``lora_B``; :func:`merge_lora` folds them into plain
weights (``W + alpha / r * B @ A``), so one architecture loads full and LoRA checkpoints alike.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, MissingWeightsError
from .hub import first_line, hub_access, hub_cache_dir

logger = logging.getLogger(__name__)

__all__ = ["read_weights", "find_weight_file", "hub_snapshot", "merge_lora", "load_exact"]

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def read_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only=True``); one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any decode failure is a bad checkpoint
        raise CheckpointError(f"cannot read weights {path}: {first_line(e)}") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return dict(sd)


def find_weight_file(folder: Path) -> Path:
    """The weights inside a checkpoint folder (``model.safetensors`` preferred)."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    shards = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if len(shards) == 1:
        return shards[0]
    raise MissingWeightsError(f"no {' or '.join(WEIGHT_FILES)} in {folder}")


def hub_snapshot(repo_id: str, *, cache_dir: str | None = None, what: str = "") -> Path:
    """The local snapshot folder of a hub repo (downloading only when online and allowed)."""
    from huggingface_hub import snapshot_download

    with hub_access() as hub:
        try:
            path = snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=not hub.online)
        except Exception as e:  # noqa: BLE001 - hub errors have many classes; all mean "not available"
            why = first_line(e) if hub.online else f"{hub.reason} and not in the local cache"
            raise MissingWeightsError(
                f"{what or repo_id}: weights not available ({why}); download {repo_id} "
                f"(`hf download {repo_id}`) into the HF cache {hub_cache_dir(cache_dir)}, or pass a local folder"
            ) from None
    return Path(path)


_LORA = re.compile(r"^(?P<base>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.weight$")


def merge_lora(sd: Mapping[str, torch.Tensor], alpha: float, r: int) -> dict[str, torch.Tensor]:
    """Strip peft wrappers from keys and fold LoRA factors into the base weights."""
    out: dict[str, torch.Tensor] = {}
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        key = key.replace(".base_model.model.", ".").replace(".base_layer.", ".")
        m = _LORA.match(key)
        if m:
            factors.setdefault(m["base"], {})[m["ab"]] = value
        else:
            out[key] = value
    if factors and r <= 0:
        raise CheckpointError("checkpoint has LoRA factors but its config has lora_r = 0")
    for base, ab in factors.items():
        if set(ab) != {"A", "B"} or f"{base}.weight" not in out:
            raise CheckpointError(f"incomplete LoRA factors for {base}")
        w = out[f"{base}.weight"]
        out[f"{base}.weight"] = (w.float() + (alpha / r) * (ab["B"].float() @ ab["A"].float())).to(w.dtype)
    if factors:
        logger.info("merged %d LoRA adapters (alpha %g, r %d)", len(factors), alpha, r)
    return out


def load_exact(module: nn.Module, sd: Mapping[str, torch.Tensor], what: str, ignore: tuple[str, ...] = ()) -> None:
    """``load_state_dict`` that names the first missing/unexpected/mis-shaped key in one line."""
    own = module.state_dict()
    sd = {k: v for k, v in sd.items() if not any(k.endswith(s) for s in ignore)}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} shape mismatches (e.g. {k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)})")
        raise CheckpointError(f"{what}: checkpoint does not match the architecture: {'; '.join(parts)}")
    module.load_state_dict(sd, strict=True)
