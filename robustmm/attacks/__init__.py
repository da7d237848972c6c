"""Attacks on every modality; see :func:`build_attack` and ``robustmm list attacks``.

Every attack class is exported here, and every attack takes plain tensors as well as a
:class:`~robustmm.batch.Batch`::

    from robustmm.attacks import PGD
    x_adv = PGD(eps=4 / 255)(encoder, x, labels=y, modality="image", classnames=names)
"""
from .amp import AutocastAttack
from .apgd import APGD
from .base import Attack, AttackWrapper, accepts_tensors, attack_class, build_attack, list_attacks, register_attack
from .bpda import BPDA
from .budgeted import BudgetedEnsemble
from .ensemble import Ensemble
from .eot import EOT
from .fab import FAB
from .memo import MemoAttack
from .noise import RandomNoise
from .patch import UniversalPatch
from .pgd import PGD
from .sga import SGA
from .square import Square
from .torchattacks_adapter import TorchAttacksAttack
from .xmai import XMAI

__all__ = [
    "APGD", "BPDA", "EOT", "FAB", "PGD", "SGA", "XMAI", "Attack", "AttackWrapper", "AutocastAttack", "BudgetedEnsemble",
    "Ensemble", "MemoAttack",
    "RandomNoise", "Square", "TorchAttacksAttack", "UniversalPatch", "accepts_tensors", "attack_class", "build_attack",
    "list_attacks", "register_attack",
]
