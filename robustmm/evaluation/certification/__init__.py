"""Certification: certified zero-shot accuracy and X->text R@1 under randomized smoothing.

Cohen, Rosenfeld & Kolter (ICML 2019) over an encoder's zero-shot classifier (optionally behind
noise-calibrated heads or a denoiser, trained in :mod:`robustmm.defenses`), with the SmoothAdv
attack (Salman et al. 2019) as the empirical check beside each certificate. The smoothed model
itself is :class:`robustmm.encoders.smoothed.SmoothedEncoder`.
"""
from .certify import certify_dataset, classification_task, split_heads
from .defaults import DEFAULT_SIGMAS, REFERENCE_RADII, reference_radii
from .reach import max_certified_radius, reachable_radii
from .retrieval import caption_gallery
from .smoothadv import smoothadv_accuracy, smoothadv_attack

__all__ = ["DEFAULT_SIGMAS", "REFERENCE_RADII", "caption_gallery", "certify_dataset", "classification_task",
           "max_certified_radius", "reachable_radii", "reference_radii", "smoothadv_accuracy", "smoothadv_attack", "split_heads"]
