"""robustmm: adversarial robustness of multimodal embedding models.

The public surface::

    import robustmm
    enc = robustmm.load_encoder("tinybind")
    data = robustmm.load_dataset("synthscenes", split="test", n=500)
    res = robustmm.evaluate(enc, data, modality="audio")
    print(res.metrics["clean"]["zeroshot_top1"])
"""
from ._version import __version__  # noqa: F401  (robustmm.__version__)
from .attacks import Attack, build_attack, list_attacks
from .batch import Batch
from .data import MultimodalDataset, ZeroShotTask, list_datasets, load_dataset
from .encoders import Encoder, list_encoders, load_encoder
from .errors import RobustMMError
from .evaluation import evaluate
from .modalities import MODALITIES, ModalitySpec, get_modality, list_modalities
from .report import Result, load_results

__all__ = [
    "Attack", "Batch", "Encoder", "MODALITIES", "ModalitySpec", "MultimodalDataset", "Result",
    "RobustMMError", "ZeroShotTask", "build_attack", "evaluate", "get_modality", "list_attacks",
    "list_datasets", "list_encoders", "list_modalities", "load_dataset", "load_encoder", "load_results",
]
