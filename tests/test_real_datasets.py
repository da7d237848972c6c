"""CIFAR and Karpathy-split (COCO / Flickr30k) loaders on tiny fixture files in the real formats."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from _fixtures import CIFAR10_NAMES, write_cifar10, write_cifar100, write_coco, write_image
from _fixtures import cifar_images as _images
from _fixtures import dump_pickle as _dump

from robustmm.data.base import MultimodalDataset
from robustmm.data.cifar import CIFAR_TEMPLATES, SafeArrayUnpickler, load_cifar10, load_cifar100, safe_load_pickle
from robustmm.data.files import MissingDataError
from robustmm.data.karpathy import load_coco, load_flickr30k
from robustmm.errors import CheckpointError, EmptyDatasetError, RobustMMError, UnknownNameError


# -- CIFAR fixtures (the torchvision on-disk format; writers in tests/_fixtures.py) --------------
@pytest.fixture
def cifar10_root(tmp_path):
    return tmp_path, write_cifar10(tmp_path, n=12)


@pytest.fixture
def cifar100_root(tmp_path):
    return tmp_path, write_cifar100(tmp_path)


def test_cifar10_loads(cifar10_root):
    root, data = cifar10_root
    ds = load_cifar10(root=str(root))
    assert isinstance(ds, MultimodalDataset) and len(ds) == 12 and ds.name == "cifar10" and ds.split == "test"
    x = ds.get("image", torch.arange(12))
    assert x.shape == (12, 3, 32, 32) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # pixel layout: CHW rows of the 3072-byte records, scaled by 1/255
    torch.testing.assert_close(x[3], torch.from_numpy(data[3].reshape(3, 32, 32)).float() / 255)
    task = ds.task("image")
    assert task.classnames == tuple(CIFAR10_NAMES) and task.templates == CIFAR_TEMPLATES
    assert task.labels.tolist() == [i % 10 for i in range(12)] and task.labels.dtype == torch.int64
    assert ds.captions[3] == ["a photo of a cat."]
    assert task.prompts()[0][1] == "a blurry photo of a airplane."
    ds.check_nonempty()


def test_cifar_subset_is_seeded_and_consistent(cifar10_root):
    root, data = cifar10_root
    a = load_cifar10(root=str(root), n=5, seed=3)
    b = load_cifar10(root=str(root), n=5, seed=3)
    c = load_cifar10(root=str(root), n=5, seed=4)
    assert len(a) == 5 and a.seed == 3 and a.info()["size"] == 5
    assert a.task("image").labels.tolist() == b.task("image").labels.tolist()
    torch.testing.assert_close(a.tensors["image"], b.tensors["image"])
    assert not torch.equal(a.tensors["image"], c.tensors["image"])
    sub = a.subset([4, 0])
    assert len(sub) == 2 and sub.captions == [a.captions[4], a.captions[0]]
    torch.testing.assert_close(sub.get("image", [0, 1]), a.get("image", [4, 0]))
    assert sub.task("image").labels.tolist() == [a.task("image").labels[4].item(), a.task("image").labels[0].item()]


def test_cifar100_fine_labels_and_protocol5(cifar100_root):
    root, _ = cifar100_root
    ds = load_cifar100(root=str(root))
    assert len(ds) == 6
    assert ds.task("image").classnames == ("apple", "aquarium fish", "maple tree")
    assert ds.captions[1] == ["a photo of a aquarium fish."]
    assert ds.get("image", [0]).shape == (1, 3, 32, 32)


def test_cifar_missing_root_and_files(tmp_path):
    with pytest.raises(RobustMMError, match="cifar-10-batches-py"):
        load_cifar10()
    with pytest.raises(MissingDataError, match="test_batch"):
        load_cifar10(root=str(tmp_path))
    with pytest.raises(UnknownNameError):
        load_cifar10(root=str(tmp_path), split="validation")


def test_cifar_wrong_contents(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    _dump(d / "test_batch", {b"labels": [0], b"data": np.zeros((1, 100), np.uint8)})
    _dump(d / "batches.meta", {b"label_names": [b"a"]})
    with pytest.raises(CheckpointError, match="3072"):
        load_cifar10(root=str(tmp_path))
    (d / "test_batch").write_bytes(b"\x80\x02}q\x00(")  # truncated pickle
    with pytest.raises(CheckpointError):
        load_cifar10(root=str(tmp_path))


class _RunsCommand:
    """A pickle payload that would run a shell command when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def test_malicious_pickle_is_rejected_without_running(tmp_path):
    marker = tmp_path / "pwned"
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    _dump(d / "test_batch", {b"labels": [0], b"data": _images(1, 0), b"x": _RunsCommand(marker)})
    _dump(d / "batches.meta", {b"label_names": [s.encode() for s in CIFAR10_NAMES]})
    with pytest.raises(CheckpointError, match="system"):
        load_cifar10(root=str(tmp_path))
    assert not marker.exists()
    evil = tmp_path / "evil.pkl"
    _dump(evil, [_CallsEval()], protocol=4)
    with pytest.raises(CheckpointError, match="eval"):
        safe_load_pickle(evil)
    assert issubclass(SafeArrayUnpickler, pickle.Unpickler)


def test_safe_unpickler_still_reads_arrays(tmp_path):
    p = tmp_path / "ok.pkl"
    obj = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [b"x", "y", 3, 1.5], "c": np.int64(7)}
    for protocol in (2, 4, 5):
        _dump(p, obj, protocol=protocol)
        back = safe_load_pickle(p)
        np.testing.assert_array_equal(back["a"], obj["a"])
        assert back["b"] == obj["b"] and back["c"] == 7


# -- Karpathy JSON fixtures ---------------------------------------------------------------------
@pytest.fixture
def coco_root(tmp_path):
    return write_coco(tmp_path)


def test_coco_loads_lazily(coco_root, monkeypatch):
    ds = load_coco(root=str(coco_root), image_size=24)
    assert ds.name == "coco" and ds.split == "test" and len(ds) == 2
    assert ds.captions[0] == [f"Image 0 caption {k}." for k in range(5)]
    assert "image" in ds.loaders and "image" not in ds.tensors and ds.modalities == ("image",)
    assert not ds.tasks
    x = ds.get("image", torch.tensor([1, 0]))
    assert x.shape == (2, 3, 24, 24) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    torch.testing.assert_close(x[1].mean(dim=(1, 2)), torch.tensor([1.0, 0.0, 0.0]), atol=0.02, rtol=0)  # red JPEG
    torch.testing.assert_close(x[0].mean(dim=(1, 2)), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)  # green PNG
    ds.check_nonempty()
    # lazy: nothing is decoded until asked, subsets re-map indices
    opened = []
    real = ds.loaders["image"].load_one
    monkeypatch.setattr(ds.loaders["image"], "load_one", lambda p: opened.append(p) or real(p))
    sub = ds.subset([1])
    assert opened == [] and sub.captions == [ds.captions[1]]
    torch.testing.assert_close(sub.get("image", [0]), x[:1])
    assert len(opened) == 1 and opened[0].endswith("COCO_val2014_000000000001.png")


def test_coco_splits_and_subsets(coco_root):
    assert len(load_coco(root=str(coco_root), split="val")) == 1
    train = load_coco(root=str(coco_root), split="train")  # train + restval
    assert len(train) == 1 and train.captions[0][0] == "Image 3 caption 0."
    a = load_coco(root=str(coco_root), n=1, seed=0)
    b = load_coco(root=str(coco_root), n=1, seed=0)
    assert len(a) == 1 and a.captions == b.captions and a.seed == 0
    with pytest.raises(UnknownNameError):
        load_coco(root=str(coco_root), split="testing")


def test_flickr_without_filepath_and_image_root(tmp_path):
    img_dir = tmp_path / "flickr30k-images"
    write_image(img_dir / "1000092795.jpg", (50, 40), (10, 20, 30))
    ann = {"images": [{"filename": "1000092795.jpg", "split": "test",
                       "sentences": [{"raw": "Two young guys with shaggy hair."}, {"raw": "Two men outside."}]}]}
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps(ann))
    ds = load_flickr30k(root=str(tmp_path), image_root=str(img_dir))
    assert ds.name == "flickr30k" and len(ds) == 1 and len(ds.captions[0]) == 2
    assert ds.get("image", [0]).shape == (1, 3, 224, 224)


def test_karpathy_errors(tmp_path, coco_root):
    with pytest.raises(RobustMMError, match="dataset_coco.json"):
        load_coco()
    with pytest.raises(MissingDataError, match="dataset_flickr30k.json"):
        load_flickr30k(root=str(tmp_path / "nowhere"))
    os.remove(coco_root / "images" / "val2014" / "COCO_val2014_000000000000.jpg")
    with pytest.raises(MissingDataError, match="COCO_val2014_000000000000.jpg"):
        load_coco(root=str(coco_root))
    lazy = load_coco(root=str(coco_root), check_files=False)
    with pytest.raises(MissingDataError):
        lazy.get("image", [0])
    (coco_root / "dataset_coco.json").write_text(json.dumps({"images": [{"split": "test"}]}))
    with pytest.raises(CheckpointError):
        load_coco(root=str(coco_root))
    (coco_root / "dataset_coco.json").write_text(json.dumps({"images": []}))
    with pytest.raises(EmptyDatasetError):
        load_coco(root=str(coco_root))


def test_registry_entries(cifar10_root, coco_root):
    from robustmm.data import list_datasets, load_dataset

    names = list_datasets()
    assert {"cifar10", "cifar100", "coco", "flickr30k"} <= set(names)
    root, _ = cifar10_root
    assert len(load_dataset("cifar10", root=str(root), n=4)) == 4
    assert len(load_dataset("coco", root=str(coco_root), image_size=16)) == 2
