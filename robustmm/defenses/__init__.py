"""Defenses that are trained: calibration heads over frozen encoders, noise heads and the denoiser for
randomized smoothing, and adversarial fine-tuning of a tower (FARE, TeCoA, optionally LoRA); plus the defense registry
(:func:`list_defenses`, :func:`defend`) that builds every defense family as an Encoder.

The defended encoders themselves (heads, input transforms, smoothing) live with the models in
:mod:`robustmm.encoders`; the procedures here run attacks to train them.
"""
from ..encoders.heads import Calibration, ResidualHead, load_heads, save_heads
from .calibrate import calibrate, default_attack
from .denoiser import train_denoiser
from .fare import fare_finetune
from .finetune import adversarial_finetune
from .noise_heads import GaussianNoise, noise_calibrate, noisy_embeddings
from .objectives import OBJECTIVES, parse_objective
from .registry import DefenseFamily, defend, defense_family, list_defenses, register_defense_family, smooth
from .tecoa import tecoa_finetune  # registers the "tecoa" defense family
from .test_time import embedding_banks, fit_tau_threshold

__all__ = ["Calibration", "DefenseFamily", "GaussianNoise", "OBJECTIVES", "ResidualHead", "adversarial_finetune", "calibrate",
           "default_attack", "defend", "defense_family", "embedding_banks", "fare_finetune", "fit_tau_threshold",
           "list_defenses", "load_heads", "noise_calibrate", "noisy_embeddings", "parse_objective", "register_defense_family",
           "save_heads", "smooth", "tecoa_finetune", "train_denoiser"]
