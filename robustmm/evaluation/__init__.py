"""Evaluation: clean vs attacked metrics (:func:`evaluate`), robustness curves, threat models and the
per-item worst case, certification under randomized smoothing, and gradient-masking checks."""
from .curves import naive_curve, robustness_curve
from .runner import Embeddings, evaluate, iter_batches, make_batch, prepare

__all__ = ["Embeddings", "evaluate", "iter_batches", "make_batch", "naive_curve", "prepare", "robustness_curve"]
