"""The options every user-data loader shares, as spec strings or Python values: ``skip_bad``,
``workers``, ``size``/``sample_rate``/``seconds``/``frames``/``points`` (:func:`decode_options`),
``classes`` files or lists (:func:`read_classes`), ``templates`` (:func:`read_templates`), and the
caption every labelled item without one gets (:func:`fill_captions`)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import EmptyDatasetError, RobustMMError
from .decode import DecodeOptions

__all__ = ["DEFAULT_TEMPLATES", "as_bool", "as_int", "decode_options", "fill_captions", "read_classes", "read_lines",
           "read_templates"]

#: one prompt template per modality when the user gives no ``templates`` file
DEFAULT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "image": ("a photo of a {}.",), "video": ("a video of a {}.",), "audio": ("a sound of a {}.",),
    "depth": ("a depth map of a {}.",), "thermal": ("a thermal image of a {}.",), "pointcloud": ("a point cloud of a {}.",),
}


def as_bool(value: Any, what: str) -> bool:
    """A spec option (``skip_bad=true``) or a Python value as a bool."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise RobustMMError(f"option {what}={value!r}: expected true or false")


def as_int(value: Any, what: str, *, native: bool = False) -> int | None:
    """A positive integer option; ``native`` allows ``native`` (= None: keep each item's own)."""
    if value is None or (native and str(value).strip().lower() == "native"):
        return None
    try:
        out = int(value)
    except (TypeError, ValueError):
        out = 0
    if out <= 0:
        raise RobustMMError(f"option {what}={value!r}: expected a positive integer{' or native' if native else ''}")
    return out


def decode_options(size: Any = 224, sample_rate: Any = 16000, seconds: Any = None, frames: Any = 8, points: Any = 1024,
                   depth_scale: Any = 1000.0, far_m: Any = 10.0) -> DecodeOptions:
    """:class:`DecodeOptions` from loader keywords (spec strings or numbers), checked."""
    secs = None if seconds is None else float(seconds)
    if secs is not None and not secs > 0:
        raise RobustMMError(f"option seconds={seconds!r}: expected a positive number")
    return DecodeOptions(size=as_int(size, "size", native=True), sample_rate=as_int(sample_rate, "sample_rate", native=True),
                         seconds=secs, frames=as_int(frames, "frames") or 8, points=as_int(points, "points", native=True),
                         depth_scale=float(depth_scale), far_m=float(far_m))


def read_lines(path: str | Path, what: str) -> list[str]:
    """The non-empty, non-comment lines of a text file (class names, templates)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise RobustMMError(f"{what} file not found: {p}")
    lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise EmptyDatasetError(f"{what} file {p} is empty")
    return lines


def read_templates(templates: Any, modality: str) -> tuple[str, ...]:
    """Templates from a file (one per line, each with ``{}``), a sequence, or the defaults."""
    if templates is None:
        return DEFAULT_TEMPLATES[modality]
    lines = read_lines(templates, "templates") if isinstance(templates, (str, Path)) else [str(t) for t in templates]
    bad = [t for t in lines if "{}" not in t]
    if bad:
        raise RobustMMError(f"template {bad[0]!r} has no {{}} for the class name")
    return tuple(lines)


def read_classes(classes: Any) -> list[str]:
    """Class names from a ``classes`` option: a file (one name per line) or a sequence of names."""
    return read_lines(classes, "classes") if isinstance(classes, (str, Path)) else list(classes)


def fill_captions(captions: Sequence[list[str]], labels: Sequence[int] | None, classnames: Sequence[str] | None,
                  template: str, missing: Callable[[int], str]) -> list[list[str]]:
    """Each item's captions, where an item without any gets ``template`` filled with its class name
    (so a labelled dataset scores retrieval too); an item with neither captions nor a label is an
    :class:`EmptyDatasetError` with the message ``missing(index)``, which names the item."""
    out: list[list[str]] = []
    for i, caps in enumerate(captions):
        if not caps and labels is not None and classnames is not None:
            caps = [template.format(classnames[labels[i]])]
        if not caps:
            raise EmptyDatasetError(missing(i))
        out.append(caps)
    return out
