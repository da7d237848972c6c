"""Defenses: calibration heads over frozen encoders, and the FARE fine-tuning baseline."""
from .calibrate import Calibration, calibrate, default_attack
from .fare import fare_finetune
from .heads import ResidualHead, load_heads, save_heads
from .objectives import OBJECTIVES, parse_objective

__all__ = ["Calibration", "OBJECTIVES", "ResidualHead", "calibrate", "default_attack", "fare_finetune",
           "load_heads", "parse_objective", "save_heads"]
