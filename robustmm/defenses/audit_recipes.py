"""Audit recipes: how the defense zoo (:mod:`robustmm.defenses.audit`) builds each registered family.

A recipe holds what the registry cannot say: the settings a family is audited with on each
modality (a smoothing family's ``sigma`` is the modality's smaller default noise level), the
smaller settings of ``--quick``, alternatives to select on the validation split, and whether the
family is a smoothing entry whose certified accuracy the audit reports. Every family of
:func:`~robustmm.defenses.registry.list_defenses` needs one: a family without a recipe is a
one-line :class:`MissingRecipeError` (and ``tests/test_defense_zoo.py`` fails until the family has
one), never a silent skip. A new family adds one ``register_audit_recipe(...)`` call, here or next
to its builder.

Example::

    register_audit_recipe("my-defense", AuditRecipe(settings={"strength": 2}, quick={"strength": 1}))
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import RobustMMError
from ..evaluation.certification import DEFAULT_SIGMAS


class MissingRecipeError(RobustMMError):
    """A registered defense family with no audit recipe."""


@dataclass(frozen=True)
class AuditRecipe:
    """How the zoo audits one family.

    ``settings``: builder keywords on every modality; ``per_modality``: overrides by modality;
    ``quick``: overrides under ``--quick``; ``sigma``: add ``sigma=`` the modality's smaller default
    noise level (:data:`~robustmm.evaluation.certification.DEFAULT_SIGMAS`); ``candidates``:
    alternative overrides, the one with the best adaptive validation score is kept (trained
    families; empty = the settings alone); ``certify``: report certified accuracy at the reference
    radii (smoothing entries); ``note``: one line for the report.
    """

    settings: Mapping[str, Any] = field(default_factory=dict)
    per_modality: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    quick: Mapping[str, Any] = field(default_factory=dict)
    sigma: bool = False
    candidates: tuple[Mapping[str, Any], ...] = ()
    certify: bool = False
    note: str = ""
    #: hand an untrained family the train split and the modality (``data=``, ``modality=``): a
    #: test-time defense that fits a threshold or embeds reference banks from them
    fit: bool = False

    def settings_for(self, modality: str, quick: bool = False) -> list[dict[str, Any]]:
        """The candidate builder settings on ``modality`` (one unless ``candidates`` are given)."""
        base: dict[str, Any] = dict(self.settings) | dict(self.per_modality.get(modality, {}))
        if self.sigma:
            base["sigma"] = DEFAULT_SIGMAS[modality][0]
        if quick:
            base |= dict(self.quick)
        return [base | dict(c) for c in self.candidates] or [base]


_RECIPES: dict[str, AuditRecipe] = {}


def register_audit_recipe(name: str, recipe: AuditRecipe) -> None:
    """Register (or replace) the audit recipe of defense family ``name``."""
    if not isinstance(recipe, AuditRecipe):
        raise RobustMMError(f"audit recipe of {name!r} must be an AuditRecipe, got {type(recipe).__name__}")
    _RECIPES[name] = recipe


def unregister_audit_recipe(name: str) -> None:
    """Remove the recipe of ``name`` (tests, plugins); unknown names are ignored."""
    _RECIPES.pop(name, None)


def audit_recipe(name: str) -> AuditRecipe:
    """The recipe of family ``name``, or a one-line :class:`MissingRecipeError` naming the fix."""
    if name not in _RECIPES:
        raise MissingRecipeError(f"defense family {name!r} has no audit recipe: add register_audit_recipe({name!r}, "
                                 "AuditRecipe(...)) (robustmm/defenses/audit_recipes.py), or leave it out of --defenses")
    return _RECIPES[name]


def audit_recipes() -> dict[str, AuditRecipe]:
    """Every registered recipe, by family name."""
    return dict(_RECIPES)


# -- the families of this package ------------------------------------------------------------
# Trained families get short training budgets: the audit compares defenses, each trained the same
# modest way on the train split; the families' own defaults are what their guides benchmark.
register_audit_recipe("calibration", AuditRecipe(
    settings={"epochs": 20, "progress": False}, quick={"epochs": 3},
    note="heads trained on PGD-10 examples of the train split"))
register_audit_recipe("noise-heads", AuditRecipe(
    settings={"epochs": 20, "draws": 2, "progress": False}, quick={"epochs": 3, "draws": 1}, sigma=True, certify=True,
    note="heads trained on Gaussian-noised inputs at the smaller default sigma; certified as a smoothed classifier"))
register_audit_recipe("denoiser", AuditRecipe(
    settings={"epochs": 3}, quick={"epochs": 1}, sigma=True, certify=True,
    note="a denoiser shaped for the modality; certified as a smoothed classifier (denoised smoothing)"))
register_audit_recipe("fare", AuditRecipe(
    settings={"epochs": 2, "steps": 5, "progress": False}, quick={"epochs": 1, "steps": 2},
    note="the modality tower fine-tuned with FARE's inner PGD at the middle eps"))
register_audit_recipe("tecoa", AuditRecipe(
    settings={"epochs": 2, "steps": 3, "progress": False}, quick={"epochs": 1, "steps": 2},
    note="the modality tower fine-tuned with TeCoA (zero-shot CE on PGD examples) at the middle eps"))
register_audit_recipe("smoothing", AuditRecipe(
    settings={"n0": 32, "draws": 256}, quick={"n0": 16, "draws": 64}, sigma=True, certify=True,
    note="encode is the base model's (attack columns score the base classifier); the guarantee is the certificate"))
register_audit_recipe("bit-depth", AuditRecipe(settings={"bits": 3}))
register_audit_recipe("jpeg", AuditRecipe(settings={"quality": 75}, note="image-like modalities only"))
register_audit_recipe("random-resize-pad", AuditRecipe(note="image-like modalities only"))
register_audit_recipe("clipure", AuditRecipe(
    note="CLIPure-Cos purification unrolled: the adaptive attack differentiates through its steps"))
register_audit_recipe("counterattack", AuditRecipe(
    fit=True, note="tau threshold fitted on the train split; randomized start (EOT) and sign steps (BPDA)"))
register_audit_recipe("invgc", AuditRecipe(
    fit=True, note="retrieval post-processing: banks embedded from the train split; scores the zero-shot top-1 too"))
