"""The cell registry of `robustmm run`: one cell kind per config section.

A *cell* is one unit of work with a stable key (``MODEL|MODALITY|WHAT``) under which its results
are recorded, so ``--resume`` can skip it. A *cell kind* owns one config section (a
:class:`~robustmm.job.sections.Section` dataclass holding every default of that section) and turns
it into cells. A new kind is one file in ``robustmm/job/cells/`` with a class decorated by
:func:`register_cell`; its section becomes valid in job files and its cells run in the job, in
the order of ``order``, with no other edit.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import UnknownNameError
from ..records import Result
from .sections import Section

if TYPE_CHECKING:  # pragma: no cover
    from .context import JobContext


@dataclasses.dataclass
class Cell:
    """One unit of work: ``key`` identifies it in results.jsonl for --resume.

    ``group`` names the cells that share costly memoised work (SGA's white-box and transfer cells:
    the text tower's embeddings of its edits): a multi-process run hands consecutive cells of one
    group to a single rank, so the work is done once there instead of once per rank.
    """

    key: str
    run: Callable[[], list[Result]]
    group: str | None = None


@dataclasses.dataclass
class EnabledSection(Section):
    """A section with nothing but its switch."""

    enabled: bool = True


class CellKind:
    """Base of a cell kind. Subclasses set ``Config`` (their section's dataclass) and ``order``
    and implement :meth:`cells`; :func:`register_cell` sets ``name`` (the section name)."""

    name: str = ""
    #: position in the job: kinds run by ascending order (ties by name)
    order: int = 100
    #: the dataclass of this kind's config section
    Config: type[Section] = EnabledSection

    @classmethod
    def parse(cls, table: Any, source: str) -> Any:
        """The typed section from a TOML table (one-line errors naming file, section and key)."""
        return cls.Config.from_table(table, cls.name, source)

    @classmethod
    def default(cls) -> Any:
        """The section with every key at its default (a job file that leaves it out)."""
        return cls.Config()

    @classmethod
    def to_table(cls, section: Any) -> dict[str, Any]:
        """The section as a plain table (the inverse of :meth:`parse`)."""
        return section.to_table()

    @classmethod
    def tables(cls, section: Any) -> dict[str, Section]:
        """The typed tables of the section by their names in a job file (``{"pgd": section}``;
        ``[attacks]`` has one ``attacks.NAME`` per attack): the loader checks each one's
        job-level rules (split names, item counts) against ``[run]``."""
        return {cls.name: section}

    @classmethod
    def validate(cls, section: Any, job: Any, source: str) -> None:
        """Checks of the section's meaning that need the whole job (``job``: the
        :class:`~robustmm.job.config.JobConfig`), run by the loader after every key's own rule and
        before any work: a bad value is a one-line :class:`ConfigError` naming ``source``, the
        section and the key. Nothing by default; a kind overrides it to build what its cells
        would build (an attack from its settings, say) so that a value only its cell would reject
        is refused at load."""

    def enabled(self, section: Any) -> bool:
        """Whether the job runs this kind's cells."""
        return bool(getattr(section, "enabled", True))

    def cells(self, ctx: JobContext, section: Any) -> list[Cell]:  # pragma: no cover - abstract
        """The cells of this kind for the job ``ctx``, in the order they run."""
        raise NotImplementedError


_KINDS: dict[str, type[CellKind]] = {}


def register_cell(name: str, *, order: int = 100) -> Callable[[type[CellKind]], type[CellKind]]:
    """Class decorator: ``@register_cell("pgd", order=20)`` makes ``[pgd]`` a job section."""

    def deco(cls: type[CellKind]) -> type[CellKind]:
        if not (isinstance(cls, type) and issubclass(cls, CellKind)):
            raise TypeError(f"@register_cell({name!r}) decorates a CellKind subclass, got {cls!r}")
        cls.name, cls.order = name, order
        _KINDS[name] = cls
        return cls

    return deco


def unregister_cell(name: str) -> None:
    """Remove cell kind ``name`` (a plugin's, or a test's toy kind); unknown names are ignored."""
    _KINDS.pop(name, None)


def _ensure_builtin() -> None:
    # Every module of robustmm.job.cells, then the entry points of group robustmm.cells (a module,
    # or a CellKind subclass registered under the entry point's name with its own ``order``).
    from ..plugins import discover

    for name, obj in discover("cells", [f"{__package__}.cells"]).items():
        if isinstance(obj, type) and issubclass(obj, CellKind) and name not in _KINDS:
            register_cell(name, order=obj.order)(obj)


def cell_kinds() -> list[type[CellKind]]:
    """Every registered cell kind, in job order."""
    _ensure_builtin()
    return sorted(_KINDS.values(), key=lambda k: (k.order, k.name))


def cell_kind(name: str) -> type[CellKind]:
    """The registered kind of section ``name`` (UnknownNameError with "did you mean")."""
    _ensure_builtin()
    if name not in _KINDS:
        raise UnknownNameError("cell kind", name, _KINDS)
    return _KINDS[name]


def list_cell_kinds() -> dict[str, str]:
    """Registered cell kinds (section names) and the first line of their docstrings, in job order."""
    return {k.name: (k.__doc__ or "").strip().split("\n")[0] for k in cell_kinds()}
