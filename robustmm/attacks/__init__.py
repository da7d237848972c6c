"""Attacks on every modality; see :func:`build_attack` and ``robustmm list attacks``."""
from .base import Attack, build_attack, list_attacks, register_attack

__all__ = ["Attack", "build_attack", "list_attacks", "register_attack"]
