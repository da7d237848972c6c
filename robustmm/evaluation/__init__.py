"""The runners: clean vs attacked metrics (:func:`evaluate`) and robustness curves over budgets."""
from .curves import naive_curve, robustness_curve
from .runner import Embeddings, evaluate, iter_batches, make_batch, prepare

__all__ = ["Embeddings", "evaluate", "iter_batches", "make_batch", "naive_curve", "prepare", "robustness_curve"]
