"""Randomized smoothing: certified zero-shot accuracy and X->text R@1 for any encoder.

Cohen, Rosenfeld & Kolter (ICML 2019) over the frozen encoder's zero-shot classifier, optionally
behind noise-calibrated heads (:func:`noise_calibrate`) or a denoiser (:func:`train_denoiser`),
with the SmoothAdv attack (Salman et al. 2019) as the empirical check beside each certificate::

    from robustmm.defenses.smoothing import certify_dataset, noise_calibrate

    cal = noise_calibrate(enc, train, modality="image", sigma=0.12, draws=4)
    res = certify_dataset(enc, test, modality="image", sigma=0.12, heads=cal, n0=64, n=512,
                          smoothadv={"steps": 10, "m": 8})
    res.metrics["certified"]["top1"]["0.1"], res.metrics["empirical"]["top1"]["0.1"]

This package sits inside the defenses layer (it reuses ``calibrate`` and the heads), which is why
it is ``robustmm.defenses.smoothing`` rather than a sibling package of ``robustmm.defenses``.
"""
from .certify import certify_dataset, classification_task
from .defaults import DEFAULT_SIGMAS, REFERENCE_RADII, reference_radii
from .denoiser import ConvDenoiser, DenoisedEncoder, train_denoiser
from .noise import GaussianNoise, noise_calibrate, noisy_embeddings
from .reach import max_certified_radius, reachable_radii
from .retrieval import caption_gallery
from .smoothadv import smoothadv_accuracy, smoothadv_attack
from .smoothed import Certificate, SmoothedClassifier
from .stats import binomial_test, certified_radius, check_smoothing_args, clopper_pearson_lower, clopper_pearson_upper

__all__ = [
    "Certificate", "ConvDenoiser", "DEFAULT_SIGMAS", "DenoisedEncoder", "GaussianNoise", "REFERENCE_RADII",
    "SmoothedClassifier", "binomial_test", "caption_gallery", "certified_radius", "certify_dataset",
    "check_smoothing_args", "classification_task", "clopper_pearson_lower", "clopper_pearson_upper",
    "max_certified_radius", "noise_calibrate", "noisy_embeddings", "reachable_radii", "reference_radii", "smoothadv_accuracy", "smoothadv_attack", "train_denoiser",
]
