"""Hostile files: every loader answers with a one-line RobustMMError, in bounded
memory, and overwrites nothing: absurd safetensors headers, truncated and empty files, a folder
where a file belongs, symlink loops, binary junk, and records from a newer schema."""
import json
import os
import struct
from pathlib import Path

import pytest

import robustmm
from robustmm.errors import RobustMMError
from robustmm.persist import load_weights, save_weights
from robustmm.records import load_results, read_jsonl

ABSURD = struct.pack("<Q", 2**62) + b"{}"  # a header that claims 4 EiB


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


@pytest.fixture
def weights(tmp_path):
    import torch

    stem = tmp_path / "w"
    save_weights(stem, {"a": torch.ones(4, 4)}, {"format": "test"})
    return stem


@pytest.mark.parametrize("bad", ["absurd", "truncated", "empty", "directory", "loop", "junk"])
def test_load_weights_rejects_hostile_weights(tmp_path, weights, bad):
    target = tmp_path / "h.safetensors"
    (tmp_path / "h.json").write_text((tmp_path / "w.json").read_text())
    good = (tmp_path / "w.safetensors").read_bytes()
    if bad == "absurd":
        target.write_bytes(ABSURD)
    elif bad == "truncated":
        target.write_bytes(good[: len(good) // 2])
    elif bad == "empty":
        target.write_bytes(b"")
    elif bad == "directory":
        target.mkdir()
    elif bad == "loop":
        os.symlink(tmp_path / "h2.safetensors", target)
        os.symlink(target, tmp_path / "h2.safetensors")
    else:
        target.write_bytes(os.urandom(256))
    with pytest.raises(RobustMMError) as e:
        load_weights(target)
    _one_line(e)
    assert (tmp_path / "w.safetensors").read_bytes() == good  # nothing else touched


def test_load_weights_round_trip_and_bad_sidecar(tmp_path, weights):
    tensors, config = load_weights(weights)
    assert config == {"format": "test"} and tensors["a"].sum() == 16
    (tmp_path / "w.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(RobustMMError) as e:
        load_weights(weights)
    assert "w.json" in _one_line(e)


def test_tinybind_rejects_absurd_and_truncated_weights(tmp_path):
    assets = Path(robustmm.__file__).parent / "assets"
    for name, data in [("absurd", ABSURD), ("trunc", (assets / "tinybind.safetensors").read_bytes()[:4096])]:
        (tmp_path / f"{name}.json").write_text((assets / "tinybind.json").read_text())
        (tmp_path / f"{name}.safetensors").write_bytes(data)
        with pytest.raises(RobustMMError) as e:
            robustmm.load_encoder(f"tinybind:{tmp_path / name}")
        _one_line(e)


@pytest.mark.parametrize("bad", ["newer-schema", "directory", "loop", "binary", "not-a-record"])
def test_results_loaders_reject_hostile_files(tmp_path, bad):
    path = tmp_path / ("r.json" if bad != "directory" else "r.jsonl")
    if bad == "newer-schema":
        path.write_text(json.dumps({"schema": "robustmm.result/2", "model": {}}))
    elif bad == "directory":
        path.mkdir()
    elif bad == "loop":
        os.symlink(tmp_path / "r2.json", path)
        os.symlink(path, tmp_path / "r2.json")
    elif bad == "binary":
        path.write_bytes(b"\xff\xfe\x00\x01junk")
    else:
        path.write_text("[1, 2, 3]")
    with pytest.raises(RobustMMError) as e:
        load_results([path])
    msg = _one_line(e)
    assert "r.json" in msg or "r2.json" in msg
    if bad == "newer-schema":
        assert "robustmm.result/2" in msg


def test_jsonl_with_a_bad_middle_line_is_an_error_not_a_skip(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"a": 2, \n{"a": 3}\n')
    with pytest.raises(RobustMMError) as e:
        read_jsonl(path)
    assert "line 2" in _one_line(e)
