"""Checks of command options that need no model, shared by every command.

Each raises a one-line :class:`~robustmm.errors.RobustMMError` (the CLI prints it and exits 2),
and each command calls them before it loads any model or dataset: the device, the seed, counts
(``--n``, ``--batch-size``, ...), budgets, model and dataset names with the dataset's ``--root``,
input files, and output paths, which may be neither empty nor one of the command's own inputs.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ..errors import RobustMMError
from .sections import MAX_SEED

DEVICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str) -> str:
    """The device named by ``--device`` (``auto`` = CUDA when available, else CPU), checked:
    a string torch cannot parse, a device type robustmm does not run on (``meta``, ``xpu``) or
    one this machine lacks (``cuda`` without a GPU, ``cuda:7`` with two) is refused."""
    from ..distributed import local_device

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise RobustMMError(f"--device {name!r} is not a device; use {DEVICES}") from None
    if dev.type == "cpu" and dev.index in (None, 0):
        return "cpu"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RobustMMError(f"--device {name}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RobustMMError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return local_device(str(dev))  # under torchrun, plain "cuda" is this rank's GPU
    if dev.type == "mps" and dev.index in (None, 0):
        if not torch.backends.mps.is_available():
            raise RobustMMError(f"--device {name}: MPS is not available on this machine")
        return "mps"
    raise RobustMMError(f"--device {name!r}: robustmm runs on {DEVICES}")


def check_input_modality(modality: str) -> None:
    """``--modality`` names a registered raw-input modality: text is the caption side of every
    modality (what the others are scored against), never a ``--modality`` of its own."""
    from ..modalities import CONTINUOUS_MODALITIES, get_modality

    get_modality(modality)
    if modality not in CONTINUOUS_MODALITIES:
        raise RobustMMError(f"--modality {modality!r} is not one of the raw-input modalities "
                            f"({', '.join(CONTINUOUS_MODALITIES)}): text is the captions they are scored against")


def check_seed(seed: int | None, flag: str = "--seed") -> None:
    """A seed (None = not given) must be an integer in [0, 2**63 - 1], the same bound as ``[run] seed``
    (torch's generators take no more; attacks mix larger per-item seeds modulo 2**64)."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        shown = seed if not isinstance(seed, int) or abs(seed) < 10**12 else f"a {len(str(abs(seed)))}-digit number"
        raise RobustMMError(f"{flag} must be an integer in [0, 2**63 - 1], got {shown}")


def check_count(value: int | None, flag: str, minimum: int = 1) -> None:
    """A count option (None = not given) must be an integer >= ``minimum``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise RobustMMError(f"{flag} must be >= {minimum}, got {value}")


def check_budgets(values: Any, flag: str = "--eps", modality: str | None = None,
                  norm: str | None = None) -> list[float] | None:
    """Budgets (None = not given) as floats: numbers or fractions (``4/255``), finite, >= 0, and
    with ``modality`` within its domain (``--eps 4`` on images: "did you mean 4/255?"); a flag
    given with no value is refused. Returns the parsed list (None when not given)."""
    from ..modalities import get_modality, parse_budget

    if values is None:
        return None
    listed = values if isinstance(values, list) else [values]
    if not listed:
        raise RobustMMError(f"{flag} needs at least one value")
    parsed = [parse_budget(v, flag) for v in listed]
    if modality is not None:
        spec = get_modality(modality)
        for v in parsed:
            spec.check_budget(v, norm, flag)
    return parsed


def check_models(**models: str | None) -> None:
    """Every model name given (``source="tinybind"``, None = not given) has a registered family:
    "did you mean" before the first model loads, for every model option a command has."""
    from ..encoders.registry import check_model_name

    for flag, name in models.items():
        if name is not None:
            try:
                check_model_name(name)
            except RobustMMError as e:
                raise RobustMMError(f"--{flag}: {e}" if flag != "model" else str(e)) from None


def check_data(name: str, root: str | None, split: str | None = None, n: int | None = None,
               flag: str = "--n") -> None:
    """The dataset name is registered, ``--root`` is given (an existing folder) exactly when the
    dataset reads files (a real dataset without it, or SynthScenes with one, ignored, is refused),
    and, where the dataset declares its splits, ``split`` is one of them holding at least ``n`` items."""
    from ..data.registry import dataset_needs_root, dataset_root, dataset_splits

    name, root = dataset_root(name, root)  # `--data imagefolder:DIR` names its root like --root DIR
    needs = dataset_needs_root(name)
    splits = dataset_splits(name)
    if splits is not None and split is not None and split not in splits:
        raise RobustMMError(f"--split {split!r}: not a split of {name} ({', '.join(splits)})")
    size = (splits or {}).get(split) if split is not None else None
    if size is not None and n is not None and n > size:
        raise RobustMMError(f"{flag} {n}: {name} split {split!r} holds {size} items")
    if root is not None and not root.strip():
        raise RobustMMError("--root is empty")
    if needs and root is None:
        raise RobustMMError(f"dataset {name!r} reads its files from disk: pass --root DIR (see `robustmm list datasets`)")
    if not needs and root is not None:
        raise RobustMMError(f"dataset {name!r} reads nothing from disk, so --root {root} would be ignored: drop it")
    if needs and not Path(root).expanduser().exists():
        raise RobustMMError(f"--root {root}: no such folder (dataset {name!r} reads its files from it)")


def check_heads_file(path: str | None, modality: str | None = None) -> None:
    """Calibration heads (None = not given): both ``X.safetensors`` and its ``X.json`` sidecar,
    whichever of the two was named, exist as files ("heads file not found" otherwise), and with
    ``modality`` the sidecar holds a head for it: heads of another modality would leave the scored
    embeddings bare while the record said "calibration"."""
    from ..encoders.heads import heads_paths

    if path is None:
        return
    if not path.strip():
        raise RobustMMError("--heads is empty")
    for p in (Path(path), *heads_paths(path)):
        if p.is_dir():
            raise RobustMMError(f"heads {p} is a folder, not a file")
    for p in heads_paths(path):
        if not p.exists():
            raise RobustMMError(f"heads file not found: {p}")
    if modality is not None:
        _check_heads_modality(heads_paths(path)[1], modality)


def _check_heads_modality(sidecar: Path, modality: str) -> None:
    """The heads' sidecar names a head for ``modality`` (an unreadable sidecar is left to the loader)."""
    import json

    try:
        heads = json.loads(sidecar.read_text(encoding="utf-8")).get("heads")
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return
    if isinstance(heads, dict) and modality not in heads:
        held = ", ".join(map(str, heads)) or "no modality"
        raise RobustMMError(f"--heads {sidecar.with_suffix('.safetensors')} holds heads for {held}, not {modality}: "
                            f"the {modality} embeddings would stay bare; train {modality} heads "
                            f"(robustmm calibrate --modality {modality}) or pass the heads' --modality")


def check_defense_changes(bare: Any, defended: Any, data: Any, modality: str, what: str = "--heads",
                          items: int = 16) -> None:
    """A defended model must change the embeddings it is credited for: if ``defended`` embeds the
    first ``items`` items of ``modality`` exactly as ``bare`` does, the record would say "defended"
    and measure the bare encoder, so this is a one-line error (heads of another modality, a head
    that is the identity)."""
    import torch

    n = min(items, len(data))
    x = data.get(modality, slice(0, n)).to(bare.device)
    with torch.no_grad():
        same = torch.equal(bare.encode(modality, x), defended.encode(modality, x))
    if same:
        raise RobustMMError(f"{what}: the defended model embeds {modality} exactly like the bare encoder on every "
                            f"item checked ({n}): the record would credit a defense that does nothing")


def check_out_text(out: str | None, flag: str = "--out") -> None:
    """An output path given as '' or blanks (an unset shell variable) is refused, never taken as
    "no output" or as the current folder."""
    if out is not None and not out.strip():
        raise RobustMMError(f"{flag} is empty (an unset variable?): name a file or folder")


def input_paths(*, models: Iterable[str | None] = (), heads: str | None = None, root: str | None = None) -> list[Path]:
    """The files and folders a command reads: ``family:PATH`` model weights (PATH, PATH.safetensors,
    PATH.json), calibration heads and their JSON sidecar, the dataset root."""
    from ..encoders.heads import heads_paths
    from ..persist import weight_paths

    paths: list[Path] = []
    for m in models:
        spec = (m or "").partition(":")[2]
        if spec:
            paths += [Path(spec).expanduser(), *weight_paths(Path(spec).expanduser())]
    if heads:
        paths += list(heads_paths(heads))
    if root:
        paths.append(Path(root).expanduser())
    return paths


def check_not_an_input(outs: Iterable[str | Path], inputs: Iterable[Path], flag: str = "--out") -> None:
    """No output may overwrite an input: an output equal to an input file, or an existing file
    inside an input folder (model folder, dataset root), is refused (paths compared resolved)."""
    ins = [(p.resolve(), p.is_dir()) for p in inputs]
    for out in outs:
        o = Path(out).expanduser().resolve()
        for p, is_dir in ins:
            if o == p or (is_dir and o.exists() and o.is_relative_to(p)):
                raise RobustMMError(f"{flag} {out} would overwrite an input of this command ({p}): write elsewhere")


def check_run_options(out_dir: str | Path, resume: bool, overwrite: bool) -> None:
    """`robustmm run`: a non-empty output folder, and not both --resume (keep the finished cells)
    and --overwrite (discard them)."""
    check_out_text(str(out_dir))
    if resume and overwrite:
        raise RobustMMError("--resume keeps the finished cells and --overwrite discards them: pass one, not both")
