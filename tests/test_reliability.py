"""Reliability: a run killed with SIGKILL resumes without lost or duplicated rows; determinism;
atomic writes; every results line is valid JSON."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import robustmm
from robustmm.attacks import build_attack
from robustmm.records import append_jsonl, read_jsonl


def _every_other_cell_kind_off(keep: tuple[str, ...]) -> str:
    """Job-file lines switching off every registered cell kind that runs by default, except ``keep``
    (new kinds are on by default; this job's expectations name only its clean and PGD cells)."""
    from robustmm.job.registry import cell_kinds

    lines = []
    for kind in cell_kinds():
        if kind.name in keep or not kind().enabled(kind.default()):
            continue
        assert not kind().enabled(kind.parse({"enabled": False}, "test")), kind.name
        lines += [f"[{kind.name}]", "enabled = false"]
    return "\n".join(lines)


def _job(tmp_path, model_stem, modalities):
    cfg = tmp_path / "job.toml"
    mods = ", ".join(f'"{m}"' for m in modalities)
    cfg.write_text(f"""
[run]
model = "tinybind:{model_stem}"
n = 24
modalities = [{mods}]
batch_size = 8
[pgd]
enabled = true
steps = 2
retrieval = false
[report]
examples = false
{_every_other_cell_kind_off(keep=("clean", "pgd", "report"))}
""")
    return cfg


#: ``python -c`` driver for the kill test: the CLI, with os.fsync parking the process forever after
#: the first fsync of the file named by $ROBUSTMM_TEST_PARK_ON (a durable results line is on disk)
PARK_AFTER_FIRST_RESULT = """
import os, sys, threading

park_on = os.environ["ROBUSTMM_TEST_PARK_ON"]
real_fsync = os.fsync


def fsync(fd):
    real_fsync(fd)
    try:
        same = os.path.samestat(os.fstat(fd), os.stat(park_on))
    except OSError:
        same = False
    if same:
        threading.Event().wait()  # parked until the test kills the process


os.fsync = fsync
from robustmm.cli import main

sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_then_resume_loses_and_duplicates_nothing(tmp_path, rand_encoder):
    rand_encoder.save(tmp_path / "model")
    modalities = ["image", "depth", "thermal", "pointcloud"]
    cfg = _job(tmp_path, tmp_path / "model", modalities)
    out = tmp_path / "run"
    results = out / "results.jsonl"
    # The job runs in a child that parks itself right after its first durable results line (in
    # os.fsync on results.jsonl), so it cannot finish before the kill: no race, whatever the speed.
    env = dict(os.environ, ROBUSTMM_TEST_PARK_ON=str(results))
    proc = subprocess.Popen([sys.executable, "-c", PARK_AFTER_FIRST_RESULT, "run", str(cfg), "--out", str(out), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        for _ in range(6000):  # bounded poll: at most ~10 minutes of 0.1 s sleeps
            if proc.poll() is not None or (results.exists() and read_jsonl(results)):
                break
            time.sleep(0.1)
        assert proc.poll() is None, f"the run ended before its first result line: {proc.stderr.read().decode()[-500:]}"
        assert results.exists() and read_jsonl(results), "no result line within the poll bound"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = read_jsonl(results)
    assert len(before) == 1  # parked after the first line: killed before a second one
    from robustmm.cli import main

    assert main(["run", str(cfg), "--out", str(out), "-q", "--resume"]) == 0
    lines = results.read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line valid JSON
    cells = [(r["extra"]["cell"], r["attack"]["eps"] if r["attack"] else None) for r in rows]
    assert len(cells) == len(set(cells))  # no duplicates
    expected = {f"{m}|clean" for m in modalities} | {f"{m}|pgd-curve" for m in modalities}
    assert {c.split("|", 1)[1] for c, _ in cells} == expected  # nothing lost
    assert len(rows) == len(modalities) * (1 + len(robustmm.get_modality("image").eps_grid))
    assert rows[: len(before)] == before  # what was written before the kill is kept as it was


def test_append_is_atomic_even_if_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "r.jsonl"
    append_jsonl(path, [{"a": 1}])

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "write", boom)
    with pytest.raises(KeyboardInterrupt):
        append_jsonl(path, [{"a": 2}])
    monkeypatch.undo()
    assert read_jsonl(path) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["r.jsonl"]  # no temp file left behind


def test_append_is_one_line_per_record_not_a_rewrite(tmp_path, monkeypatch):
    path = tmp_path / "r.jsonl"
    append_jsonl(path, [{"a": 1}])
    monkeypatch.setattr(os, "replace", lambda *a, **k: pytest.fail("append rewrote the whole file"))
    append_jsonl(path, [{"a": 2}, {"a": 3}])
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_torn_last_line_is_ignored(tmp_path, caplog):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"a": 2, "b"')
    assert read_jsonl(path) == [{"a": 1}]
    assert "torn last line" in caplog.text  # reported, not silently dropped


def test_append_after_a_torn_line_removes_it(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"a": 2, "b"')
    append_jsonl(path, [{"a": 3}])
    assert read_jsonl(path) == [{"a": 1}, {"a": 3}]
    assert path.read_text().endswith("\n")


def test_same_seed_same_results(rand_encoder, synth_small):
    def once():
        pgd = build_attack("pgd", eps=8 / 255, steps=2, seed=3)
        return robustmm.evaluate(rand_encoder, synth_small.head(12), modality="video", attack=pgd, seed=3, progress=False)

    a, b = once(), once()
    assert a.metrics == b.metrics
