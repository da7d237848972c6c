"""The real-model experiment configs run end to end, with a random-init tiny open_clip model and
fixture data in the real on-disk formats substituted for the weights and datasets a GPU user has."""
import json
import tomllib
from pathlib import Path

import _fixtures as fx
import numpy as np
import pytest
from PIL import Image

open_clip = pytest.importorskip("open_clip")

from robustmm.job import parse_config, read_toml, run_job  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "experiments" / "configs"
TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("archs")
    names = []
    for name in ("robustmm-cfgtest-a", "robustmm-cfgtest-b"):
        (d / f"{name}.json").write_text(json.dumps(TINY))
        open_clip.add_model_config(d / f"{name}.json")
        names.append(f"open_clip:{name}@none")
    return names


def write_coco(root: Path, n_per_split: int = 8) -> None:
    rng = np.random.default_rng(0)
    images = []
    for i in range(3 * n_per_split):
        split = ("test", "train", "restval")[i % 3]
        name = f"COCO_val2014_{i:012d}.jpg"
        (root / "images" / "val2014").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / "images" / "val2014" / name)
        images.append({"filepath": "val2014", "filename": name, "split": split,
                       "sentences": [{"raw": f"a photo of a red car number {i} on a street {k}"} for k in range(5)]})
    (root / "dataset_coco.json").write_text(json.dumps({"images": images}))


def write_cifar10(root: Path) -> None:
    """24 test items and five 24-item training batches."""
    fx.write_cifar10(root, n=24, seed=1, train=True)


def substitute(config: dict, models: list[str], root: Path) -> dict:
    """Swap the real model and data for the tiny ones (in the file's tables, before they are
    typed); shrink sizes so the test stays fast."""
    config["run"] |= {"model": models[0], "root": str(root), "quick_n": 8, "quick_attack_n": 8, "batch_size": 8}
    for sec in ("sga", "patch", "calibration", "checks"):
        config.setdefault(sec, {})
    config["sga"]["transfer_to"] = [models[1]]
    config["patch"] |= {"quick_fit_n": 8, "epochs": 1}
    config["calibration"] |= {"quick_train_n": 8, "epochs": 2}
    if config["checks"].get("surrogate"):
        config["checks"]["surrogate"] = models[1]
    config["checks"]["quick_n"] = 8
    return config


@pytest.mark.parametrize("name, writer", [("openclip_vitb32_coco.toml", write_coco),
                                          ("openclip_vitb32_cifar10.toml", write_cifar10)])
def test_config_runs_end_to_end(tmp_path, tiny_models, name, writer):
    raw = tomllib.loads((CONFIGS / name).read_text())
    assert raw["run"]["model"].startswith("open_clip:ViT-B-32@")  # what GPU users run
    root = tmp_path / "data"
    root.mkdir()
    writer(root)
    config = parse_config(substitute(read_toml(CONFIGS / name), tiny_models, root), name)
    results = run_job(config, tmp_path / "out", quick=True, progress=False)
    cells = {r.extra["cell"].split("|", 1)[1] for r in results}
    expected = {"image|clean", "image|pgd-curve"} | {k for k, sec in [("image|patch", "patch"), ("image|xmai", "xmai")]
                                                      if config.section(sec).enabled}
    assert expected <= cells
    if config.section("sga").enabled:
        assert any(c.startswith("image|sga|transfer") for c in cells)
    assert any(r.defense for r in results)  # calibration ran
    if config.section("checks").enabled:  # sanity checks of the bare model and of its heads, with the report section
        obj = config.section("calibration").objectives[0]  # COCO: label-free objectives, checks on R@1
        assert {"image|checks", f"image|checks:calibration:{obj}"} <= cells
        assert "Sanity checks" in (tmp_path / "out" / "report.md").read_text()
        assert list((tmp_path / "out" / "heads").glob("*.safetensors"))
    for f in ("results.jsonl", "summary.csv", "report.md"):
        assert (tmp_path / "out" / f).stat().st_size > 0
