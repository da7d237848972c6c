"""Outputs are checked before any work (every command that writes), and one run per output
folder: an OS-level lock that a second process respects, `--wait` queues behind, and a crash
releases."""
import os
import subprocess
import sys
import threading

import pytest

from robustmm.cli import main
from robustmm.outdir import FolderLock, FolderLockedError, OutputError, check_writable_dir, check_writable_file

HOLDER = """
import sys
from pathlib import Path
from robustmm.outdir import FolderLock
lock = FolderLock(sys.argv[1]).acquire()
print("locked", flush=True)
sys.stdin.readline()
print("results existed while locked:", (Path(sys.argv[1]) / "results.jsonl").exists(), flush=True)
"""


@pytest.fixture
def holder(tmp_path):
    """A second process that holds the lock of tmp_path/out until told to let go."""
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "locked"
    yield p, out
    if p.poll() is None:
        p.kill()
    p.wait(timeout=60)


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory, rand_encoder):
    d = tmp_path_factory.mktemp("job")
    rand_encoder.save(d / "model")
    from robustmm.job.registry import cell_kinds

    # every cell kind but clean off (read from the registry, so new kinds are off here too)
    off = "".join(f"[{k.name}]\nenabled = false\n" for k in cell_kinds() if k.name not in ("clean", "run", "report", "attacks"))
    (d / "job.toml").write_text(f'[run]\nmodel = "tinybind:{d / "model"}"\nquick_n = 8\nmodalities = ["thermal"]\n'
                                f"batch_size = 8\n[report]\nexamples = false\n{off}")
    return d / "job.toml"


def test_probe_rejects_paths_below_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="cannot be written"):
        check_writable_dir(tmp_path / "afile" / "sub")
    with pytest.raises(OutputError, match="is a file"):
        check_writable_dir(tmp_path / "afile")
    with pytest.raises(OutputError, match="cannot be written"):
        check_writable_file(tmp_path / "afile" / "r.json")
    with pytest.raises(OutputError, match="is a folder"):
        check_writable_file(tmp_path)
    assert check_writable_dir(tmp_path / "new" / "deep").is_dir()
    assert list((tmp_path / "new" / "deep").iterdir()) == []  # the probe leaves nothing


def test_probe_rejects_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root writes anyway: then the folder is writable, and there is nothing to test
            pytest.skip("this user can write into a read-only folder (root)")
        with pytest.raises(OutputError, match="cannot be written"):
            check_writable_dir(ro / "out")
    finally:
        ro.chmod(0o700)


@pytest.fixture
def no_models(monkeypatch):
    """Loading any model fails the test: proves an output error comes before any work."""
    import robustmm.encoders
    import robustmm.job.context

    def boom(*a, **k):
        raise AssertionError("a model was loaded before the output was checked")

    monkeypatch.setattr(robustmm.encoders, "load_encoder", boom)
    monkeypatch.setattr(robustmm.job.context, "load_encoder", boom)


@pytest.mark.parametrize("argv", [
    ["run", "--quick", "--out", "{f}/sub"],
    ["eval", "--modality", "image", "--out", "{f}/r.json"],
    ["eval", "--modality", "image", "--attack", "pgd", "--out", "{f}/sub/r.jsonl"],
    ["calibrate", "--modality", "image", "--out", "{f}/h.safetensors"],
    ["check-attack", "--modality", "image", "--out", "{f}/c.json"],
    ["report", "{results}", "--out", "{f}/r"],
])
def test_unwritable_out_fails_at_once(tmp_path, capsys, no_models, argv):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "results.jsonl").write_text("")
    argv = [a.replace("{f}", str(tmp_path / "afile")).replace("{results}", str(tmp_path / "results.jsonl")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "afile" in err and ("cannot be written" in err or "is a file" in err), err
    assert "\n" not in err and "Traceback" not in err


def test_second_run_into_a_locked_folder_refuses_naming_the_holder(tmp_path, capsys, holder, tiny_job):
    p, out = holder
    for extra in ([], ["--resume"], ["--overwrite"]):
        assert main(["run", str(tiny_job), "--quick", "--out", str(out), "-q", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert f"pid {p.pid}" in err and "--wait" in err and "\n" not in err
    assert not (out / "results.jsonl").exists()


def test_a_crashed_holder_releases_the_lock(tmp_path, capsys, holder, tiny_job):
    p, out = holder
    p.kill()  # kill -9: no cleanup code runs; the kernel drops the flock
    p.wait(timeout=60)
    assert main(["run", str(tiny_job), "--quick", "--out", str(out), "-q"]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 1
    with FolderLock(out):  # and the finished run released it too
        pass


def test_wait_queues_behind_the_holder(tmp_path, holder, tiny_job):
    p, out = holder
    waiter = subprocess.Popen([sys.executable, "-m", "robustmm", "run", str(tiny_job), "--quick", "--out", str(out),
                               "-q", "--wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    got = []  # the same in-process: FolderLock(wait=True) blocks until the holder lets go
    t = threading.Thread(target=lambda: got.append(FolderLock(out, wait=True).acquire().release()), daemon=True)
    t.start()
    t.join(timeout=2)
    assert t.is_alive() and not got
    p.stdin.write("go\n")
    p.stdin.flush()
    assert p.stdout.readline().strip() == "results existed while locked: False"
    p.wait(timeout=60)
    t.join(timeout=120)
    assert got == [None]
    _, err = waiter.communicate(timeout=600)
    assert waiter.returncode == 0, err
    assert len((out / "results.jsonl").read_text().splitlines()) == 1


def test_lock_file_names_the_holder(tmp_path):
    lock = FolderLock(tmp_path).acquire()
    try:
        info = (tmp_path / ".robustmm.lock").read_text()
        assert f'"pid": {os.getpid()}' in info and '"host"' in info and '"started"' in info
        with pytest.raises(FolderLockedError):  # flock locks are per open file: a second open conflicts
            FolderLock(tmp_path).acquire()
    finally:
        lock.release()
    FolderLock(tmp_path).acquire().release()
