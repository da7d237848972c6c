"""ModelNet40 point-cloud zero-shot classification (the benchmark of PointCLIP, ULIP and Point-Bind).

Either layout of the release:

* ``modelnet40_normal_resampled`` (PointNet++'s): ``ROOT/modelnet40_shape_names.txt`` (the 40
  classes in index order), ``ROOT/modelnet40_{train,test}.txt`` (ids such as ``airplane_0627``)
  and ``ROOT/airplane/airplane_0627.txt`` (10,000 lines ``x,y,z,nx,ny,nz``; normals dropped);
* ``ModelNet40`` meshes: ``ROOT/airplane/{train,test}/airplane_0627.off`` (the mesh vertices are
  the points; classes in sorted folder order).

Each cloud is centred, scaled into the unit ball and resampled to ``points`` (default 1024, as in
PointCLIP and ULIP's evaluation) by evenly spaced indices; colour channels are 0. Class names are
the shape names with ``_`` as spaces; the template is ULIP's "a point cloud model of {}." (or
``templates=FILE``). The test split holds 2,468 shapes, train 9,843.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CheckpointError, EmptyDatasetError, RobustMMError
from .base import MultimodalDataset
from .files import MissingDataError
from .registry import register_dataset
from .stream import as_bool, build_dataset, decode_options, read_lines, read_templates

__all__ = ["MODELNET40_TEMPLATES", "load_modelnet40"]

MODELNET40_TEMPLATES: tuple[str, ...] = ("a point cloud model of {}.",)


def _resampled(root: Path, split: str, skip: bool) -> tuple[list[str], list[str], list[int], int]:
    names = read_lines(root / "modelnet40_shape_names.txt", "modelnet40 shape names")
    ids_file = root / f"modelnet40_{split}.txt"
    if not ids_file.is_file():
        raise MissingDataError(f"modelnet40: {ids_file} not found (the split's list of shape ids)")
    index = {c: i for i, c in enumerate(names)}
    paths, labels, skipped = [], [], 0
    for sid in read_lines(ids_file, f"modelnet40 {split} ids"):
        cls = sid.rsplit("_", 1)[0]
        if cls not in index:
            raise CheckpointError(f"modelnet40: {ids_file}: id {sid!r} has no class in modelnet40_shape_names.txt")
        path = root / cls / f"{sid}.txt"
        if not path.is_file():
            if not skip:
                raise MissingDataError(f"modelnet40: {path} not found (listed in {ids_file.name})")
            skipped += 1
            continue
        paths.append(str(path))
        labels.append(index[cls])
    return names, paths, labels, skipped


def _meshes(root: Path, split: str) -> tuple[list[str], list[str], list[int], int]:
    names = sorted(d.name for d in root.iterdir() if d.is_dir() and (d / split).is_dir())
    if not names:
        raise MissingDataError(f"modelnet40: {root} holds neither modelnet40_shape_names.txt nor CLASS/{split}/*.off folders")
    paths, labels = [], []
    for c, name in enumerate(names):
        files = sorted((root / name / split).glob("*.off"))
        if not files:
            raise EmptyDatasetError(f"modelnet40: class folder {root / name / split} has no .off files")
        paths += [str(f) for f in files]
        labels += [c] * len(files)
    return names, paths, labels, 0


def load_modelnet40(*, split: str = "test", n: int | None = None, seed: int | None = None, root: str | None = None,
                    points: Any = 1024, templates: Any = None, skip_bad: Any = False, workers: Any = None) -> MultimodalDataset:
    """ModelNet40 from either release layout (see the module docstring)."""
    if split not in ("train", "test"):
        raise RobustMMError(f"modelnet40: split {split!r} is not train or test")
    if root is None:
        raise RobustMMError("modelnet40 needs its folder: modelnet40:DIR as --data or [run] dataset")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise MissingDataError(f"modelnet40: no such folder: {base}")
    skip = as_bool(skip_bad, "skip_bad")
    if (base / "modelnet40_shape_names.txt").is_file():
        names, paths, labels, skipped = _resampled(base, split, skip)
        layout = "normal_resampled"
    else:
        names, paths, labels, skipped = _meshes(base, split)
        layout = "off"
    names = [c.replace("_", " ") for c in names]
    temps = read_templates(templates, "pointcloud") if templates is not None else MODELNET40_TEMPLATES
    return build_dataset(name="modelnet40", split=split, modality="pointcloud", sources=paths,
                         captions=[[temps[0].format(names[y])] for y in labels], labels=labels, classnames=names,
                         templates=temps, opts=decode_options(points=points), n=n, seed=seed, skip_bad=skip,
                         workers=workers, what=f"modelnet40 {base} ({split})", skipped=skipped,
                         meta={"root": str(base), "classes": len(names), "layout": layout})


register_dataset("modelnet40", "ModelNet40 point-cloud zero-shot, 40 classes "
                 "(normal_resampled .txt or .off layout; modelnet40:DIR)",
                 needs_root=True, splits={"test": 2468, "train": 9843})(load_modelnet40)
