"""persist.py: a weights file and its sidecar are tied by the weights' hash (a pair of two runs is
refused in one line, sidecars written before the hash still load), and temp files of killed
writers are swept while a live writer's temp file is never touched."""
import fcntl
import json
import os

import pytest
import torch

from robustmm.errors import CheckpointError
from robustmm.persist import HASH_KEY, atomic_write_bytes, load_weights, save_weights, sweep_stale_temps


def test_the_sidecar_records_the_weights_hash_and_the_loader_hides_it(tmp_path):
    wpath, cpath = save_weights(tmp_path / "m", {"w": torch.arange(4.0)}, {"version": 1})
    side = json.loads(cpath.read_text())
    assert side["version"] == 1 and len(side[HASH_KEY]) == 64
    tensors, config = load_weights(tmp_path / "m")
    assert config == {"version": 1} and torch.equal(tensors["w"], torch.arange(4.0))


def test_weights_beside_another_runs_sidecar_are_refused_in_one_line(tmp_path):
    save_weights(tmp_path / "m", {"w": torch.zeros(4)}, {"version": "old"})
    old_side = (tmp_path / "m.json").read_bytes()
    save_weights(tmp_path / "m", {"w": torch.ones(4)}, {"version": "new"})
    (tmp_path / "m.json").write_bytes(old_side)  # what a kill between the two renames leaves
    with pytest.raises(CheckpointError) as e:
        load_weights(tmp_path / "m")
    msg = str(e.value)
    assert "\n" not in msg and "m.json does not describe" in msg and "m.safetensors" in msg


def test_a_sidecar_from_before_the_hash_still_loads(tmp_path):
    """Files written by earlier versions (no weights_sha256) load as before, unchecked."""
    from safetensors.torch import save_file

    save_file({"w": torch.ones(3)}, str(tmp_path / "m.safetensors"))
    (tmp_path / "m.json").write_text(json.dumps({"version": "old"}))
    tensors, config = load_weights(tmp_path / "m")
    assert config == {"version": "old"} and tensors["w"].sum() == 3


def test_old_heads_files_still_load_and_new_ones_keep_dotted_names(tmp_path):
    from safetensors.torch import save_file

    from robustmm.encoders.heads import ResidualHead, load_heads, save_heads

    head = ResidualHead(8, 4)
    state = {f"image.{k}": v for k, v in head.state_dict().items()}
    save_file(state, str(tmp_path / "old.safetensors"))  # the format before the hash: save_file + plain JSON
    (tmp_path / "old.json").write_text(json.dumps({"format": "robustmm.heads/1", "heads": {"image": {"dim": 8,
                                                   "hidden": 4}}, "objective": "ce"}))
    heads, meta = load_heads(tmp_path / "old.safetensors")
    assert meta["objective"] == "ce" and set(heads) == {"image"}
    path = save_heads(tmp_path / "tinybind-image-noise-sigma0.25.safetensors", {"image": head}, {"objective": "ce"})
    assert path.name == "tinybind-image-noise-sigma0.25.safetensors"
    assert (tmp_path / "tinybind-image-noise-sigma0.25.json").exists()
    assert load_heads(path)[1]["objective"] == "ce"


def test_sweep_removes_dead_writers_temp_files_only(tmp_path):
    dead = tmp_path / ".r.json.ab12cd_3.tmp"
    dead.write_bytes(b"half a file")
    old_heads = tmp_path / ".h.safetensors.tmp"  # the fixed name of versions before per-writer temps
    old_heads.write_bytes(b"x")
    live = tmp_path / ".r.json.zz99zz99.tmp"
    live.write_bytes(b"being written")
    foreign = [tmp_path / ".notes.tmp", tmp_path / "r.json.ab12cd34.tmp", tmp_path / ".a.TOOLONG99.tmp"]
    for f in foreign:
        f.write_text("not ours")
    (tmp_path / ".d.abcdefgh.tmp").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / ".s.abcdefgh.tmp")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a live writer's lock (another open file description: a conflict)
    try:
        removed = sweep_stale_temps(tmp_path)
    finally:
        os.close(fd)
    assert sorted(p.name for p in removed) == sorted([dead.name, old_heads.name])
    assert live.exists() and all(f.exists() for f in foreign)
    assert (tmp_path / ".d.abcdefgh.tmp").is_dir() and (tmp_path / ".s.abcdefgh.tmp").is_symlink()
    assert sweep_stale_temps(tmp_path) == [live]  # its writer is gone now


def test_a_writers_temp_file_survives_a_sweep_until_its_rename(tmp_path, monkeypatch):
    """While atomic_write_bytes holds its temp file (here: at its rename), a sweep leaves it be."""
    import robustmm.persist as persist

    real = os.replace
    seen = []

    def sweep_then_replace(src, dst):
        seen.append((sweep_stale_temps(tmp_path), os.path.exists(src)))
        return real(src, dst)

    monkeypatch.setattr(persist.os, "replace", sweep_then_replace)
    atomic_write_bytes(tmp_path / "f.bin", b"data")
    assert seen == [([], True)]
    assert (tmp_path / "f.bin").read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_a_write_sweeps_what_a_killed_writer_left(tmp_path):
    (tmp_path / ".f.bin.a1b2c3d4.tmp").write_bytes(b"torn")
    atomic_write_bytes(tmp_path / "f.bin", b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


@pytest.mark.parametrize("entry", [{}, {"dim": "8", "hidden": 4}, {"dim": 8, "hidden": 0}, None])
def test_a_heads_sidecar_with_a_malformed_head_is_one_line(tmp_path, entry):
    from robustmm.encoders.heads import ResidualHead, load_heads, save_heads

    save_heads(tmp_path / "h.safetensors", {"image": ResidualHead(8, 4)}, {"objective": "ce"})
    side = json.loads((tmp_path / "h.json").read_text())
    side["heads"]["image"] = entry  # an edit of the sidecar (its weights hash still matches)
    (tmp_path / "h.json").write_text(json.dumps(side))
    with pytest.raises(CheckpointError) as e:
        load_heads(tmp_path / "h.safetensors")
    assert "\n" not in str(e.value) and "head 'image'" in str(e.value)
