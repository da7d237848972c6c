"""Output files: .jsonl outputs are appended under a lock (nothing lost, nothing mixed), every
output gets the umask's mode, and OS errors (a full disk) name the file."""
import errno
import json
import os
import subprocess
import sys

import pytest

from robustmm.job.eval_command import EvalRequest, write_eval
from robustmm.persist import append_lines_durably, atomic_write_text
from robustmm.records import Result, load_results, write_json


def result(seed=0):
    return Result(model={"name": "tinybind"}, dataset={"name": "synthscenes", "split": "test"}, modality="image",
                  attack=None, defense=None, threat="clean",
                  metrics={"clean": {"zeroshot_top1": 0.5, "t2x_R@1": 0.5}, "attacked": None}, n=4, seed=seed,
                  timing_s=0.1)


def test_write_eval_appends_to_a_jsonl_file(tmp_path):
    req = EvalRequest(modality="image", out=str(tmp_path / "r.jsonl"))
    write_eval(req, [result(1)])
    write_eval(req, [result(2)])
    assert [r.seed for r in load_results([tmp_path / "r.jsonl"])] == [1, 2]


WRITER = """
import sys
from robustmm.job.eval_command import EvalRequest, write_eval
from robustmm.records import Result
req = EvalRequest(modality="image", out=sys.argv[1])
for i in range(40):
    write_eval(req, [Result(model={"name": "m"}, dataset={"name": "d"}, modality="image", attack=None, defense=None,
                            threat="clean", metrics={"clean": {"t2x_R@1": 0.5}}, n=1, seed=int(sys.argv[2]) * 100 + i,
                            timing_s=0.0)])
"""


def test_concurrent_evals_into_one_file_keep_every_record(tmp_path):
    out = tmp_path / "r.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(out), str(k)], env=env) for k in (1, 2)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    seeds = sorted(r.seed for r in load_results([out]))
    assert seeds == sorted([100 + i for i in range(40)] + [200 + i for i in range(40)])


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_respect_the_umask(tmp_path, umask, mode):
    from robustmm.encoders.heads import ResidualHead, save_heads

    old = os.umask(umask)
    try:
        write_json(tmp_path / "r.json", result())
        atomic_write_text(tmp_path / "report.md", "x")
        append_lines_durably(tmp_path / "r.jsonl", ["{}"])
        save_heads(tmp_path / "h.safetensors", {"image": ResidualHead(8, 4)}, {"encoder": "x"})
    finally:
        os.umask(old)
    for name in ("r.json", "report.md", "r.jsonl", "h.safetensors", "h.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def full_disk(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match=r"No space left on device: '.*report.md'"):
        atomic_write_text(tmp_path / "report.md", "x")
    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError, match=r"No space left on device: '.*r.jsonl'"):
        append_lines_durably(tmp_path / "r.jsonl", ["{}"])


def test_cli_prints_the_file_of_an_os_error(tmp_path, monkeypatch, capsys):
    from robustmm.cli import main

    f = tmp_path / "r.jsonl"
    f.write_text(json.dumps(result().to_dict()) + "\n")
    monkeypatch.setattr(os, "fsync", full_disk)
    assert main(["report", str(f), "--out", str(tmp_path / "rep"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "No space left on device" in err and str(tmp_path / "rep") in err and "\n" not in err


def test_certify_appends_to_a_jsonl_file(tmp_path, trained, one_thread):
    from robustmm.cli import main

    out = tmp_path / "c.jsonl"
    for seed in ("1", "2"):
        assert main(["certify", "--modality", "pointcloud", "--n", "2", "--sigma", "0.02", "--draws", "8", "--n0", "4",
                     "--seed", seed, "--out", str(out), "-q"]) == 0
    assert [r.seed for r in load_results([out])] == [1, 2]
