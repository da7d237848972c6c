"""The output probe of robustmm.outdir leaves nothing behind when its process is killed mid-probe:
an unnamed file where the file system has them, else a locked named probe that the next atomic
write into the folder sweeps (and that is never swept while its prober lives)."""
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

import robustmm.outdir as outdir
from robustmm.persist import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent

#: check_writable_dir in a child whose ``os.NAME`` (as robustmm.outdir sees it) kills the child:
#: a kill -9 in the middle of the probe, at a known point
KILLED_AT = """
import os, signal, sys
import robustmm.outdir as outdir

class KillAt:
    def __getattr__(self, key):
        if key == sys.argv[2]:
            return lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        return getattr(os, key)

if sys.argv[3] == "named":
    outdir._O_TMPFILE = 0  # as on a file system without unnamed temp files
outdir.os = KillAt()
outdir.check_writable_dir(sys.argv[1])
"""


def probes(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".robustmm-probe."))


def killed_probe(folder: Path, at: str, mode: str) -> None:
    """Run the probe of ``folder`` in a child killed by SIGKILL at its first ``os.<at>`` call."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", KILLED_AT, str(folder), at, mode], env=env, capture_output=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]


def has_unnamed_files(folder: Path) -> bool:
    try:
        os.close(os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o600))
    except (AttributeError, OSError):
        return False
    return True


def test_probe_killed_with_its_file_open_leaves_nothing(tmp_path):
    if not has_unnamed_files(tmp_path):
        pytest.skip("no O_TMPFILE on this file system: the named probe is checked below")
    killed_probe(tmp_path, "close", "default")  # killed while the probe file is open
    assert probes(tmp_path) == []


def test_named_probe_of_a_killed_process_is_swept_by_the_next_atomic_write(tmp_path):
    killed_probe(tmp_path, "unlink", "named")  # killed after creating its probe, before removing it
    left = probes(tmp_path)
    assert len(left) == 1 and left[0].endswith(".tmp")
    atomic_write_text(tmp_path / "results.json", "{}")
    assert probes(tmp_path) == [] and (tmp_path / "results.json").read_text() == "{}"


def test_named_probe_of_a_live_process_is_not_swept(tmp_path, monkeypatch):
    """A sweep that runs while a probe exists (another process writing into the same folder)
    leaves it alone: it is locked until its prober removes it."""
    seen = []
    real_unlink = os.unlink

    def sweep_then_unlink(path, *args, **kw):
        atomic_write_text(tmp_path / "other.json", "{}")  # sweeps the folder's stale temp files
        seen.append(probes(tmp_path))
        return real_unlink(path, *args, **kw)

    class Os:
        def __getattr__(self, key):
            return sweep_then_unlink if key == "unlink" else getattr(os, key)

    monkeypatch.setattr(outdir, "_O_TMPFILE", 0)
    monkeypatch.setattr(outdir, "os", Os())
    outdir.check_writable_dir(tmp_path)
    assert len(seen) == 1 and len(seen[0]) == 1  # the live probe survived the sweep
    assert probes(tmp_path) == []


def test_unnamed_probe_falls_back_where_the_file_system_has_none(tmp_path, monkeypatch):
    calls = []

    class Os:
        def __getattr__(self, key):
            return getattr(os, key)

        def open(self, path, flags, *args):
            if flags & outdir._O_TMPFILE:
                calls.append(path)
                raise OSError(errno.EOPNOTSUPP, "Operation not supported")
            return os.open(path, flags, *args)

    if not outdir._O_TMPFILE:
        pytest.skip("no O_TMPFILE on this platform: the named probe is the only one")
    monkeypatch.setattr(outdir, "os", Os())
    assert outdir.check_writable_dir(tmp_path / "out").is_dir()
    assert calls == [tmp_path / "out"] and probes(tmp_path / "out") == []
