"""`robustmm bench`: the protocol and its item hashes, the entry and its schema, resume."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import robustmm
from robustmm.cli import main
from robustmm.errors import EntryError, ProtocolError, RobustMMError
from robustmm.job import bench as bench_mod
from robustmm.job.bench import BenchRequest, parse_defense, run_bench
from robustmm.job.bench_entry import check_entry, schema_errors, weights_sha256
from robustmm.job.bench_protocol import build_protocol, item_hash, load_protocol, shipped_protocols, verify_items

TINY_SETTINGS = {
    "seed": 0, "batch_size": 8, "quick": True,
    "ensemble": {"pgd_steps": 2, "attacks": ["apgd-ce", "apgd-t"], "steps": 2, "targets": 2, "eot_samples": 2},
    "certification": {"enabled": True, "n_items": 3, "n0": 4, "draws": 16, "alpha": 0.01, "batch_size": 4},
    "headline": {"overall": "mean of the per-modality headlines"},
}


def tiny_protocol(path: Path, n: int = 5) -> Path:
    """A small protocol (image and audio, two eps each) over the first ``n`` SynthScenes test items."""
    data = robustmm.load_dataset("synthscenes", split="test", n=n)
    table = build_protocol(data, name="tiny", version="0", modalities=["image", "audio"], settings=TINY_SETTINGS,
                           eps={"image": [2 / 255, 8 / 255], "audio": [0.001, 0.004]},
                           headline_eps={"image": 2 / 255, "audio": 0.001},
                           radii={"image": [0.05, 0.1], "audio": [0.004]}, n=n)
    path.write_text(json.dumps(table, indent=1))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(protocol path, entry path, entry) of one bench of TinyBind under the tiny protocol."""
    root = tmp_path_factory.mktemp("bench")
    proto = tiny_protocol(root / "tiny.json")
    out = root / "tinybind.json"
    entry = run_bench(BenchRequest(model="tinybind", out=str(out), protocol=str(proto), progress=False, command="test"))
    return proto, out, entry


def test_load_protocol_shipped_mm_v1():
    p = load_protocol("mm-v1")
    assert "mm-v1" in shipped_protocols()
    assert p.modalities == ["image", "video", "audio", "depth", "thermal", "pointcloud"]
    assert all(len(p.item_ids(m)) == 100 for m in p.modalities)
    assert len(p.sha256) == 64 and p.describe()["quick"] is False
    for m in p.modalities:
        assert p.headline_eps(m) in p.eps_grid(m)
        assert p.modality(m)["certification_radii"]


def test_load_protocol_unknown_name_is_one_line():
    with pytest.raises(ProtocolError, match="unknown protocol 'mm-v9'.*mm-v1"):
        load_protocol("mm-v9")


def test_load_protocol_missing_key(tmp_path):
    path = tiny_protocol(tmp_path / "p.json", n=2)
    table = json.loads(path.read_text())
    del table["modalities"]["audio"]["threat"]["eps"]
    path.write_text(json.dumps(table))
    with pytest.raises(ProtocolError, match="modalities.audio.threat.eps"):
        load_protocol(str(path))


def test_verify_items_accepts_the_shipped_data():
    p = load_protocol("mm-v1")
    verify_items(p, robustmm.load_dataset("synthscenes", split="test", n=p.n_items()))


class _Changed:
    """A dataset whose item ``idx`` of ``modality`` is moved by a tiny amount (a changed file)."""

    def __init__(self, data, modality: str, idx: int):
        self.data, self.modality, self.idx = data, modality, idx

    def __len__(self) -> int:
        return len(self.data)

    def info(self):
        return self.data.info()

    def get(self, modality, index):
        x = self.data.get(modality, index).clone()
        if modality == self.modality:
            rows = (torch.as_tensor(index) == self.idx).nonzero().flatten()
            x[rows] = (x[rows] + 1e-3).clamp(max=1.0) if x[rows].max() < 1 else x[rows] - 1e-3
        return x


def test_verify_items_names_a_changed_item(tmp_path):
    p = load_protocol(str(tiny_protocol(tmp_path / "p.json", n=5)))
    data = robustmm.load_dataset("synthscenes", split="test", n=5)
    verify_items(p, data)
    with pytest.raises(ProtocolError, match=r"item synthscenes/test\[3\] audio changed") as e:
        verify_items(p, _Changed(data, "audio", 3))
    assert "\n" not in str(e.value)


def test_item_hash_sees_one_value():
    x = torch.zeros(3, 4)
    y = x.clone()
    y[1, 2] = 1e-6
    assert item_hash(x) != item_hash(y) and item_hash(x) == item_hash(x.clone())


def test_parse_defense():
    assert parse_defense("jpeg,quality=75") == ("jpeg", {"quality": 75})
    assert parse_defense("calibration,modality=image,epochs=3") == ("calibration", {"modality": "image", "epochs": 3})
    assert parse_defense(None) == (None, {})
    with pytest.raises(RobustMMError, match="not KEY=VALUE"):
        parse_defense("jpeg,75")


def test_run_bench_entry_validates(tiny):
    proto, out, entry = tiny
    check_entry(entry)
    assert json.loads(out.read_text()) == entry
    assert entry["provenance"]["protocol"]["sha256"] == load_protocol(str(proto)).sha256
    assert entry["model"]["weights_sha256"] == weights_sha256(robustmm.load_encoder("tinybind"))
    assert entry["model"]["defense"] is None and entry["model"]["trainable_share"] == 0
    for m in ("image", "audio"):
        num = entry["modalities"][m]
        assert num["n"] == 5 and [c["eps"] for c in num["robust"]] == load_protocol(str(proto)).eps_grid(m)
        robust = [c["robust"] for c in num["robust"]]
        assert all(0 <= r <= num["clean"] for r in robust) and robust == sorted(robust, reverse=True)
        assert num["certified"] is None
    assert main(["bench", "--validate", str(out), "-q"]) == 0


def test_bench_validate_corrupted_entry_exits_2_with_one_line(tiny, tmp_path, capsys):
    _, out, entry = tiny
    bad = json.loads(json.dumps(entry))
    bad["model"]["parameters"] = "many"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    assert main(["bench", "--validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "entry.model.parameters" in err and "expected integer" in err
    del bad["model"]["parameters"]
    path.write_text(json.dumps(bad))
    assert main(["bench", "--validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "entry.model.parameters: missing" in err


def test_check_entry_names_out_of_range_and_unknown_fields(tiny):
    entry = json.loads(json.dumps(tiny[2]))
    entry["modalities"]["image"]["robust"][0]["robust"] = 1.5
    with pytest.raises(EntryError, match=r"entry.modalities.image.robust\[0\].robust: 1.5 is above the maximum 1"):
        check_entry(entry)
    entry = json.loads(json.dumps(tiny[2]))
    entry["surprise"] = 1
    assert schema_errors(entry, json.loads((Path(robustmm.__file__).parent / "protocols/entry.schema.json").read_text())) \
        == ["entry.surprise: unknown field"]


def test_bench_resume_skips_finished_cells(tiny, tmp_path, monkeypatch):
    proto, out, _ = tiny
    work = out.with_name("tinybind.work")
    lines = (work / "results.jsonl").read_text().splitlines()
    assert len({json.loads(line)["extra"]["cell"] for line in lines}) == 2
    # drop the audio cell's records: a resume runs that cell alone
    keep = [line for line in lines if "|audio|" not in json.loads(line)["extra"]["cell"]]
    copy = tmp_path / "work"
    copy.mkdir()
    (copy / "results.jsonl").write_text("\n".join(keep) + "\n")
    (copy / "bench.json").write_text((work / "bench.json").read_text())
    ran = []
    real = bench_mod.run_worst
    monkeypatch.setattr(bench_mod, "run_worst", lambda ctx, p, m: ran.append(m) or real(ctx, p, m))
    req = BenchRequest(model="tinybind", out=str(tmp_path / "e.json"), protocol=str(proto), work=str(copy), resume=True,
                       progress=False)
    entry = run_bench(req)
    assert ran == ["audio"]
    check_entry(entry)
    assert entry["modalities"]["image"] == tiny[2]["modalities"]["image"]
    ran.clear()
    run_bench(req)
    assert ran == []


def test_bench_refuses_a_used_folder_without_resume(tiny, tmp_path):
    proto, out, _ = tiny
    with pytest.raises(RobustMMError, match="pass --resume"):
        run_bench(BenchRequest(model="tinybind", out=str(out), protocol=str(proto), progress=False))
    with pytest.raises(RobustMMError, match="another bench.*defense"):
        run_bench(BenchRequest(model="tinybind", out=str(out), protocol=str(proto), defense="jpeg", resume=True,
                               progress=False))


def test_bench_smoothing_defense_is_certified(tmp_path):
    proto = tiny_protocol(tmp_path / "p.json", n=3)
    entry = run_bench(BenchRequest(model="tinybind", out=str(tmp_path / "s.json"), protocol=str(proto),
                                   defense="smoothing,sigma=0.12", progress=False))
    check_entry(entry)
    assert entry["model"]["defense"]["name"] == "smoothing"
    for m in ("image", "audio"):
        cert = entry["modalities"][m]["certified"]
        assert cert["sigma"] == 0.12 and cert["n"] == 3
        assert [c["radius"] for c in cert["curve"]][0] == 0.0


def test_bench_input_defense_marks_uncovered_modalities(tmp_path):
    proto = tiny_protocol(tmp_path / "p.json", n=3)
    entry = run_bench(BenchRequest(model="tinybind", out=str(tmp_path / "j.json"), protocol=str(proto),
                                   defense="jpeg,quality=75", progress=False))
    check_entry(entry)
    assert entry["modalities"]["image"]["defended"] is True
    assert entry["modalities"]["audio"]["defended"] is False
    assert entry["headline"]["defended_modalities"] == ["image"]
    assert "jpeg quality=75" in entry["model"]["name"]


def test_record_cost_reads_the_passes_when_a_record_has_them():
    from robustmm.job.bench_entry import record_cost
    from robustmm.records import Result

    r = Result(model={"name": "m"}, dataset={"name": "d"}, modality="image", attack=None, defense=None, threat="clean",
               metrics={"clean": {"zeroshot_top1": 0.5}}, n=4, seed=0, timing_s=0.1)
    assert record_cost(r) is None and record_cost(None) is None
    r.extra["cost"] = {"forward": 12, "backward": 10}
    assert record_cost(r) == {"forward": 12, "backward": 10}
    r.extra["cost"] = {"forward": "many"}
    assert record_cost(r) is None
