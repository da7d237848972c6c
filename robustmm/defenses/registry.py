"""The defense registry: every defense family, built by name as an :class:`~robustmm.encoders.Encoder`.

``defend(encoder, name, **settings)`` returns the defended encoder, so every attack, runner, verb
and report works on a defense unchanged. Families that are trained (calibration heads, noise
heads, the denoiser, FARE) take the training split as ``data=`` and the ``modality=`` to defend;
the others wrap the encoder at once. ``robustmm list defenses`` prints :func:`list_defenses`.

Example::

    jpeg = defend(enc, "jpeg", quality=75)                                  # an input transform
    heads = defend(enc, "calibration", data=train, modality="audio", epochs=20)
    smoothed = defend(enc, "smoothing", sigma=0.12)                         # predict / certify
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.base import MultimodalDataset
from ..encoders.base import Encoder
from ..encoders.heads import Calibration, load_heads
from ..encoders.input_transforms import defend as transformed
from ..encoders.input_transforms import list_defenses as list_transforms
from ..encoders.smoothed import SmoothedEncoder
from ..errors import RobustMMError, UnknownNameError
from ..plugins import discover
from .calibrate import calibrate
from .denoiser import train_denoiser
from .fare import fare_finetune
from .noise_heads import noise_calibrate


@dataclass(frozen=True)
class DefenseFamily:
    """One registered defense: how to build it, and what it is."""

    name: str
    kind: str  # "heads", "fine-tuning", "input transform", "smoothing", "denoiser"
    summary: str
    build: Callable[..., Encoder]
    trained: bool  # needs data= and modality=

    def describe(self) -> str:
        """The one-line description ``robustmm list defenses`` prints."""
        needs = " (trained: data=, modality=)" if self.trained else ""
        return f"[{self.kind}] {self.summary}{needs}"


_FAMILIES: dict[str, DefenseFamily] = {}


def register_defense_family(name: str, kind: str, summary: str, *, trained: bool = False
                            ) -> Callable[[Callable[..., Encoder]], Callable[..., Encoder]]:
    """Decorator registering ``build(encoder, data, **settings) -> Encoder`` as defense ``name``."""

    def deco(build: Callable[..., Encoder]) -> Callable[..., Encoder]:
        _FAMILIES[name] = DefenseFamily(name, kind, summary, build, trained)
        return build

    return deco


def unregister_defense_family(name: str) -> None:
    """Remove family ``name`` (a plugin's, say) from the registry; unknown names are ignored."""
    _FAMILIES.pop(name, None)


def _discover_plugins() -> None:
    """Defense families of installed packages: entry points of the group ``robustmm.defenses``
    (:func:`robustmm.plugins.discover`). A module registers its families on import; a callable
    ``build(encoder, data, **settings) -> Encoder`` is registered under the entry point's name."""
    for name, obj in discover("defenses").items():
        if callable(obj) and name not in _FAMILIES:
            summary = ((getattr(obj, "__doc__", None) or "").strip().splitlines() or ["a defense from a plugin"])[0]
            register_defense_family(name, "plugin", summary)(obj)


def _families() -> dict[str, DefenseFamily]:
    """Every family: the registered ones (plugins included) and one per input transform."""
    _discover_plugins()
    out = dict(_FAMILIES)
    for name, summary in list_transforms().items():
        out.setdefault(name, DefenseFamily(name, "input transform", summary, _transform_builder(name), False))
    return dict(sorted(out.items()))


def _transform_builder(name: str) -> Callable[..., Encoder]:
    def build(encoder: Encoder, data: MultimodalDataset | None = None, **settings: Any) -> Encoder:
        return transformed(encoder, name, **settings)

    return build


def list_defenses() -> dict[str, str]:
    """Every defense family (calibration heads, FARE, each input transform, smoothing, ...) and a
    one-line description with its kind."""
    return {n: f.describe() for n, f in _families().items()}


def defense_family(name: str) -> DefenseFamily:
    """The registered family ``name`` (unknown names: one-line error with a suggestion)."""
    families = _families()
    if name not in families:
        raise UnknownNameError("defense", name, families)
    return families[name]


def defend(encoder: Encoder, name: str, data: MultimodalDataset | None = None, **settings: Any) -> Encoder:
    """``encoder`` behind defense ``name``: an Encoder (see :func:`list_defenses` for the names).

    Trained families need ``data=`` (the training split) and ``modality=``; their training report
    is the returned encoder's ``training_info``. ``settings`` go to the family's builder.
    """
    family = defense_family(name)
    if family.trained and data is None and not settings.get("heads"):
        raise RobustMMError(f"defense {name!r} is trained: pass data=<training split> and modality=...")
    return family.build(encoder, data, **settings)


def _need_modality(name: str, modality: str | None) -> str:
    if modality is None:
        raise RobustMMError(f"defense {name!r} needs modality=... (the modality it defends)")
    return modality


@register_defense_family("calibration", "heads", "calibration heads trained on adversarial embeddings, encoder frozen",
                         trained=True)
def calibration_heads(encoder: Encoder, data: MultimodalDataset | None = None, *, modality: str | None = None,
                      heads: str | Path | Calibration | Mapping[str, Any] | None = None, **settings: Any) -> Encoder:
    """Calibration heads: trained here (``calibrate`` settings), or given as ``heads=`` (a heads
    file, a :class:`Calibration` or a modality -> module mapping)."""
    if heads is not None:
        if settings:
            raise RobustMMError(f"calibration from heads=: training settings {sorted(settings)} would be ignored")
        if isinstance(heads, (str, Path)):
            head_map, meta = load_heads(heads, encoder)
            heads = Calibration(head_map, meta)
        cal = heads if isinstance(heads, Calibration) else Calibration(dict(heads))
    else:
        cal = calibrate(encoder, data, modality=_need_modality("calibration", modality), **settings)  # type: ignore[arg-type]
    defended = encoder.with_heads(cal.heads)
    defended.training_info = cal.meta
    return defended


@register_defense_family("noise-heads", "heads", "calibration heads trained on Gaussian-noised inputs (for smoothing)",
                         trained=True)
def noise_heads(encoder: Encoder, data: MultimodalDataset, *, modality: str | None = None, sigma: float,
                **settings: Any) -> Encoder:
    """Noise-calibrated heads (:func:`~robustmm.defenses.noise_calibrate`) over the frozen encoder."""
    cal = noise_calibrate(encoder, data, modality=_need_modality("noise-heads", modality), sigma=sigma, **settings)
    defended = encoder.with_heads(cal.heads)
    defended.training_info = cal.meta
    return defended


@register_defense_family("denoiser", "denoiser", "a small denoiser (MSE or consistency) in front of any continuous "
                         "modality (smoothing)", trained=True)
def denoiser(encoder: Encoder, data: MultimodalDataset, *, modality: str | None = None, sigma: float,
             **settings: Any) -> Encoder:
    """:func:`~robustmm.defenses.train_denoiser`: the encoder behind a trained denoiser
    (``architecture=`` one of ``list_denoisers()``, default by the modality's shape;
    ``objective="mse"`` or ``"consistency"``)."""
    return train_denoiser(encoder, data, modality=_need_modality("denoiser", modality), sigma=sigma, **settings)


@register_defense_family("fare", "fine-tuning", "FARE: the modality tower fine-tuned adversarially (unsupervised)",
                         trained=True)
def fare(encoder: Encoder, data: MultimodalDataset, *, modality: str | None = None, **settings: Any) -> Encoder:
    """:func:`~robustmm.defenses.fare_finetune`: a tuned copy of the encoder."""
    return fare_finetune(encoder, data, modality=_need_modality("fare", modality), **settings)


@register_defense_family("smoothing", "smoothing", "randomized smoothing: Gaussian noise, predict and certify")
def smoothing(encoder: Encoder, data: MultimodalDataset | None = None, *, sigma: float, **settings: Any) -> Encoder:
    """:class:`~robustmm.encoders.smoothed.SmoothedEncoder` with noise ``sigma`` (n0, n, alpha, seed)."""
    return SmoothedEncoder(encoder, sigma, **settings)


def smooth(encoder: Encoder, sigma: float, **settings: Any) -> SmoothedEncoder:
    """``encoder`` under randomized smoothing with noise ``sigma``: an Encoder with ``predict`` and
    ``certify`` (settings: ``n0``, ``n``, ``alpha``, ``batch_noise``, ``seed``)."""
    return SmoothedEncoder(encoder, sigma, **settings)
