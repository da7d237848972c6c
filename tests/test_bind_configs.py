"""The Bind experiment configs (experiments/configs/{languagebind,imagebind}/*.toml) run end to end:
random-init tiny checkpoints in the official layouts and fixture data in the real on-disk formats
stand in for the weights and datasets a GPU user has; sizes shrink, nothing else changes."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from _bind_data import write_esc50, write_llvip, write_msrvtt, write_nyu
from _bind_tiny import write_imagebind, write_languagebind
from _fixtures import write_cifar10

from robustmm.data import llvip, msrvtt, nyu_depth
from robustmm.job import parse_config, read_toml, run_job

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = Path(__file__).resolve().parent.parent / "experiments" / "configs"
JOBS = {"cifar10": "image", "esc50": "audio", "msrvtt": "video", "nyu_depth_v2": "depth", "llvip": "thermal"}


def write_data(job: str, root: Path) -> None:
    if job == "cifar10":
        write_cifar10(root, seed=3, train=True)
    elif job == "esc50":
        write_esc50(root, per_fold=3)
    elif job == "msrvtt":
        write_msrvtt(root)
    elif job == "nyu_depth_v2":
        write_nyu(root, "nicr", split="test")
        write_nyu(root, "nicr", split="train")
    else:
        write_llvip(root, split="test")
        write_llvip(root, split="train")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("bind_ckpts")
    for i, m in enumerate(JOBS.values()):
        write_languagebind(d / f"LanguageBind_{m}", m, seed=i)
    write_imagebind(d / "imagebind_tiny.pth")
    return d


def substitute(config: dict, model: str, root: Path) -> dict:
    """The tiny model and fixture data; small sizes so the job takes seconds."""
    config["run"] |= {"model": model, "root": str(root), "quick_n": 6, "quick_attack_n": 6, "batch_size": 6}
    config["pgd"] |= {"quick_steps": 2, "quick_retrieval_n": 6}
    config["calibration"] |= {"quick_train_n": 6, "epochs": 1, "quick_steps": 2}
    config["checks"] |= {"quick_n": 6, "quick_steps": [1, 2, 3]}
    config.setdefault("report", {})["examples"] = False
    return config


@pytest.mark.parametrize("family", ["languagebind", "imagebind"])
@pytest.mark.parametrize("job", list(JOBS))
def test_config_runs_end_to_end(tmp_path, tiny, family, job, monkeypatch):
    modality = JOBS[job]
    for mod in (msrvtt, nyu_depth, llvip):  # the loaders' 224-pixel frames, shrunk for the tiny towers
        monkeypatch.setattr(mod, "DEFAULT_IMAGE_SIZE", 32)
    path = CONFIGS / family / f"{job}.toml"
    raw = tomllib.loads(path.read_text())
    want_model = f"languagebind:{modality}" if family == "languagebind" else "imagebind"
    assert raw["run"]["model"] == want_model and raw["run"]["modalities"] == [modality]  # what GPU users run
    assert raw["run"]["amp"] is True and raw["calibration"]["enabled"] and raw["pgd"]["enabled"]
    root = tmp_path / "data"
    root.mkdir()
    write_data(job, root)
    model = (f"languagebind:{modality}={tiny}/LanguageBind_{modality}" if family == "languagebind"
             else f"imagebind:{tiny}/imagebind_tiny.pth")
    config = parse_config(substitute(read_toml(path), model, root), path.name)
    results = run_job(config, tmp_path / "out", quick=True, progress=False)
    cells = {r.extra["cell"].split("|", 1)[1] for r in results}
    assert {f"{modality}|clean", f"{modality}|pgd-curve"} <= cells
    assert any(r.defense for r in results)  # calibration heads were trained and scored
    assert any(c.startswith(f"{modality}|checks") for c in cells)
    assert list((tmp_path / "out" / "heads").glob("*.safetensors"))
    for f in ("results.jsonl", "summary.csv", "report.md"):
        assert (tmp_path / "out" / f).stat().st_size > 0
