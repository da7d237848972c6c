"""Datasets: the SynthScenes generator and loaders for real benchmarks."""
from .base import MultimodalDataset, ZeroShotTask
from .registry import list_datasets, load_dataset, register_dataset

__all__ = ["MultimodalDataset", "ZeroShotTask", "list_datasets", "load_dataset", "register_dataset"]
