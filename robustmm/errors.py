"""Exception classes raised at robustmm's public entry points.

Every class subclasses ``ValueError`` (or ``LookupError`` semantics via ``UnknownNameError``)
so callers can catch one family, and the CLI can print a single line and exit 2.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class RobustMMError(ValueError):
    """Base class of every error robustmm raises on bad input."""


class UnknownNameError(RobustMMError):
    """A model, attack, dataset, modality or objective name that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        known = sorted(known)
        hint = difflib.get_close_matches(name, known, n=1)
        msg = f"unknown {kind} {name!r}"
        if hint:
            msg += f" (did you mean {hint[0]!r}?)"
        msg += f"; known: {', '.join(known)}"
        super().__init__(msg)
        self.kind, self.name, self.known = kind, name, known


class InputShapeError(RobustMMError):
    """A tensor whose shape or dtype does not fit the modality."""


class InputValueError(RobustMMError):
    """A tensor with NaN/Inf or values outside the modality's domain."""


class EmptyDatasetError(RobustMMError):
    """A dataset (or subset) with no items, or items without captions."""


class BudgetError(RobustMMError):
    """A negative or otherwise invalid attack budget (eps, steps, step size)."""


class MissingWeightsError(RobustMMError):
    """Model weights that are not available locally (offline machine or missing file)."""


class CheckpointError(RobustMMError):
    """A corrupted, truncated or mismatched checkpoint (heads, towers)."""


class ResultFileError(RobustMMError):
    """A results file that is not valid JSON or not a ``robustmm.result/1`` record."""


class MissingDataError(RobustMMError, FileNotFoundError):
    """Dataset files (annotations, images, pickled batches) that are not on disk."""


class ProtocolError(RobustMMError):
    """A benchmark protocol that cannot be read, or data that no longer matches its item hashes."""


class EntryError(RobustMMError):
    """A benchmark entry that does not follow the entry schema (robustmm/protocols/entry.schema.json)."""
