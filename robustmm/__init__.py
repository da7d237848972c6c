"""robustmm: adversarial robustness of multimodal embedding models.

The public surface::

    import robustmm
    from robustmm.attacks import PGD

    enc = robustmm.load_encoder("tinybind")
    data = robustmm.load_dataset("synthscenes", split="test", n=64)
    x, task = data.get("image", slice(None)), data.tasks["image"]
    x_adv = PGD(eps=4 / 255)(enc, x, labels=task.labels, modality="image", classnames=task.classnames)

    res = robustmm.evaluate(enc, data, modality="image", attack=PGD(eps=4 / 255))   # a Result
    curve = robustmm.curve(enc, data, modality="image", attack=PGD(), eps=[1 / 255, 4 / 255])
    fig = robustmm.plot_curves(curve)                                              # a matplotlib Figure
    defended = robustmm.defend(enc, "jpeg", quality=75)                            # every defense is an Encoder
    robustmm.list_defenses()

The verbs ``evaluate``, ``curve``, ``certify``, ``calibrate`` and ``check`` all take
``(encoder, data, *, modality, ...)``; see :mod:`robustmm.api`.
"""
from . import defenses  # noqa: F401  (robustmm.defenses.smooth, ...)
from ._version import __version__  # noqa: F401  (robustmm.__version__)
from .api import calibrate, certify, check, curve, evaluate
from .attacks import Attack, build_attack, list_attacks
from .batch import Batch
from .data import MultimodalDataset, ZeroShotTask, list_datasets, load_dataset
from .defenses import defend, list_defenses, smooth
from .encoders import Encoder, list_encoders, load_encoder
from .errors import RobustMMError
from .modalities import MODALITIES, ModalitySpec, get_modality, list_modalities
from .report import Result, load_results
from .report.plots import plot_curves

__all__ = [
    "Attack", "Batch", "Encoder", "MODALITIES", "ModalitySpec", "MultimodalDataset", "Result", "RobustMMError",
    "ZeroShotTask", "build_attack", "calibrate", "certify", "check", "curve", "defend", "evaluate", "get_modality",
    "list_attacks", "list_datasets", "list_defenses", "list_encoders", "list_modalities", "load_dataset", "load_encoder",
    "load_results", "plot_curves", "smooth",
]
