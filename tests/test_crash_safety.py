"""Crash safety: `eval`, `calibrate`, `report` and `run` killed with SIGKILL at every
step of their write sequence leave, for every file of the output folder, either the previous
version (byte-identical) or the complete new one -- never a torn JSON, JSONL line, safetensors,
CSV, Markdown, SVG or PNG, and never a weights file that loads with another run's sidecar. (Two
files cannot be replaced in one step: a kill between the weights' rename and the sidecar's leaves
the new weights beside the old sidecar, and the loader must refuse that pair, which it can because
the sidecar records the hash of the weights it describes.)

Deterministic, no sleeps guessing timing: the command runs in a forked child (models already
loaded in the parent, so each kill costs only the command's own work) whose file-system calls
are hooked; the child SIGKILLs itself just before its Nth file event. An event is one of:
opening a file for writing (Python ``open``/``os.open``), each ``write`` on such a file (the
file is flushed first, so what was written before is on disk as the kernel would have it),
``os.write``, ``fsync``, ``replace``/``rename``, ``unlink``, ``truncate`` and a safetensors
``save_file`` (killed after half of its bytes are written: a torn write at whatever path it
writes). A first, unkilled run counts the events and gives the reference outputs; then
N = 1, 2, ... every event is a kill point.
"""
from __future__ import annotations

import builtins
import csv
import io
import json
import os
import re
import shutil
import signal
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from robustmm.cli import main

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

TIMEOUT_S = 300  # watchdog for one child (a hang is a failure, never a wait)


# ---------------------------------------------------------------- the child: hooks and the kill


class _Killer:
    """Counts file events in this (child) process and SIGKILLs it before event ``kill_at`` (a
    number, or a test of the event's label: the first event it accepts). With ``torn``, a write
    it is killed at lands half-way first (a large write cut short)."""

    def __init__(self, kill_at, log_fd: int, torn: bool = False):
        self.kill_at, self.log_fd, self.n, self.torn = kill_at, log_fd, 0, torn
        self._write = os.write  # the real one: os.write itself is hooked

    def event(self, what: str, flush=None, after=None) -> None:
        self.n += 1
        self._write(self.log_fd, f"{self.n}\t{what}\n".encode("utf-8", "replace"))
        if self.n == self.kill_at or (callable(self.kill_at) and self.kill_at(what)):
            if flush is not None:
                flush()
            if after is not None:
                after()
            os.kill(os.getpid(), signal.SIGKILL)


def _writing(mode: str) -> bool:
    return any(c in mode for c in "wax+")


class _File:
    """A file opened for writing: every ``write``/``truncate`` is an event (delegates the rest)."""

    def __init__(self, f, name, killer):
        self._f, self._name, self._k = f, name, killer

    def write(self, data):
        def half():
            self._f.write(data[: len(data) // 2])
            self._f.flush()

        self._k.event(f"write {self._name}", flush=self._f.flush, after=half if self._k.torn else None)
        return self._f.write(data)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def truncate(self, *a):
        self._k.event(f"truncate {self._name}", flush=self._f.flush)
        return self._f.truncate(*a)

    def __enter__(self):
        self._f.__enter__()
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)

    def __iter__(self):
        return iter(self._f)

    def __getattr__(self, name):
        return getattr(self._f, name)


def _install_hooks(killer: _Killer) -> None:
    real_open, real_os_open = io.open, os.open

    def hooked_open(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        if not _writing(mode):
            return f
        killer.event(f"open {file}")
        return _File(f, str(file), killer)

    def hooked_os_open(path, flags, *a, **k):
        fd = real_os_open(path, flags, *a, **k)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND):
            killer.event(f"os.open {path}")
        return fd

    def wrap(name, mod=os):
        real = getattr(mod, name)

        def hooked(*a, **k):
            killer.event(f"{name} {a[0] if a else ''}")
            return real(*a, **k)

        setattr(mod, name, hooked)

    builtins.open = io.open = hooked_open
    os.open = hooked_os_open
    for name in ("write", "fsync", "replace", "rename", "unlink", "ftruncate"):
        wrap(name)

    import safetensors.torch as st

    real_save_file = st.save_file

    def hooked_save_file(tensors, filename, *a, **k):
        def torn():  # the Rust writer killed half-way: a torn file at whatever path it writes
            real_save_file(tensors, filename, *a, **k)
            size = os.path.getsize(filename)
            with real_open(filename, "r+b") as f:
                f.truncate(size // 2)

        killer.event(f"save_file {filename}", after=torn)
        return real_save_file(tensors, filename, *a, **k)

    st.save_file = hooked_save_file
    for mod in list(sys.modules.values()):  # modules that imported save_file by name before the fork
        if getattr(mod, "save_file", None) is real_save_file and mod is not st:
            mod.save_file = hooked_save_file


def run_child(argv: list[str], cwd: Path, kill_at: int | None, log: Path) -> tuple[str, int, list[str]]:
    """Run ``robustmm.cli.main(argv)`` in a forked child; ``kill_at`` = the event to die before
    (None: run to the end). Returns ("killed" | "exit", status, events seen)."""
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err_path = log.with_suffix(".stderr")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            torch.set_num_threads(1)
            os.chdir(cwd)
            err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(err, 2)
            os.dup2(err, 1)
            sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
            sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
            import logging

            logging.getLogger().handlers[:] = [logging.StreamHandler(sys.stderr)]
            _install_hooks(_Killer(kill_at, log_fd))
            rc = main(argv)
        except BaseException as e:  # noqa: BLE001 - report anything, exit non-zero
            try:
                os.write(2, f"child raised {type(e).__name__}: {e}\n".encode())
            finally:
                os._exit(99)
        os._exit(rc if isinstance(rc, int) else 98)
    os.close(log_fd)
    deadline = time.monotonic() + TIMEOUT_S
    while True:  # a watchdog only: the kill point itself never depends on timing
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"{argv} (kill at {kill_at}) hung for {TIMEOUT_S}s")
        time.sleep(0.02)
    events = log.read_text(encoding="utf-8").splitlines()
    if os.WIFSIGNALED(status):
        return "killed", os.WTERMSIG(status), events
    return "exit", os.WEXITSTATUS(status), events


# ---------------------------------------------------------------- checking a folder after a kill

_VOLATILE = re.compile(r"(_s|^started)$")  # wall-clock timings differ between runs of the same command
_NUMBER = re.compile(r"\d+(\.\d+)?(e[-+]?\d+)?")
_SKIP = re.compile(r"^(\.robustmm\.lock|\.robustmm-probe\..*|\..*\.tmp)$")  # lock file, leftovers of temp files


def _strip(d):
    if isinstance(d, dict):
        return {k: (None if _VOLATILE.search(k) else _strip(v)) for k, v in d.items()}
    if isinstance(d, list):
        return [_strip(x) for x in d]
    return d


def _check_json(data: bytes) -> str | None:
    json.loads(data.decode("utf-8"))
    return None


def _check_jsonl(data: bytes) -> str | None:
    text = data.decode("utf-8")
    if text and not text.endswith("\n"):
        return "torn last line"
    for line in text.splitlines():
        json.loads(line)
    return None


def _check_safetensors(data: bytes) -> str | None:
    from safetensors.torch import load

    load(data)
    return None


def _check_png(data: bytes) -> str | None:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
    return None


def _check_svg(data: bytes) -> str | None:
    ET.fromstring(data)
    return None


def _check_csv(data: bytes) -> str | None:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    if not rows or any(len(r) != len(rows[0]) for r in rows) or not data.endswith(b"\n"):
        return "ragged or unterminated CSV"
    return None


def _check_md(data: bytes) -> str | None:
    return None if data.endswith(b"\n") else "unterminated Markdown"


_COMPLETE_CHECKS = {".json": _check_json, ".jsonl": _check_jsonl, ".safetensors": _check_safetensors,
                    ".png": _check_png, ".svg": _check_svg, ".csv": _check_csv, ".md": _check_md}


def _complete(path: Path, data: bytes) -> str | None:
    """Why ``data`` is not a complete file of its kind (None when it is)."""
    check = _COMPLETE_CHECKS.get(path.suffix.lower())
    if check is None:
        return None
    try:
        return check(data)
    except Exception as e:  # noqa: BLE001 - any parse failure is the finding
        return f"does not parse ({type(e).__name__}: {str(e)[:80]})"


def _same_as(path: Path, data: bytes, ref: bytes) -> bool:
    """Whether ``data`` is the reference file's content (up to wall-clock timings)."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _strip(json.loads(data)) == _strip(json.loads(ref))
    if suffix == ".safetensors":
        from safetensors.torch import load

        a, b = load(data), load(ref)
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if suffix in (".csv", ".md"):
        return _NUMBER.sub("#", data.decode()) == _NUMBER.sub("#", ref.decode())
    if suffix in (".png", ".svg"):  # SVG carries a date: complete is what can be checked
        return True
    return data == ref


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not _SKIP.match(p.name)}


def problems(folder: Path, before: dict[str, bytes], ref: dict[str, bytes]) -> list[str]:
    """Every file that is neither its previous version nor the complete new one."""
    out = []
    now = snapshot(folder)
    state = {}
    for name, data in now.items():
        if before.get(name) == data:
            state[name] = "old"
            continue
        why = _complete(Path(name), data)
        if why:
            out.append(f"{name}: {why}")
            continue
        why = _not_the_new_file(name, data, ref)
        if why:
            out.append(f"{name}: {why}")
        state[name] = "new"
    for name in before:
        if name not in now and name in ref:
            out.append(f"{name}: the previous file is gone and the new one is not there")
    return out + _mixed_pairs(folder, state)


def _not_the_new_file(name: str, data: bytes, ref: dict[str, bytes]) -> str | None:
    """Why a changed, complete file is not what the complete run writes (None when it is)."""
    path = Path(name)
    if path.suffix == ".jsonl":  # appended: complete lines, the old ones kept, then a prefix of the new
        lines = [_strip(json.loads(x)) for x in data.decode().splitlines()]
        want = [_strip(json.loads(x)) for x in ref.get(name, b"").decode().splitlines()]
        return None if lines == want[: len(lines)] else "its lines are not a prefix of the complete run's"
    if name not in ref:
        return "a file the complete run does not write"
    if not _same_as(path, data, ref[name]):
        return "neither the previous file nor the complete new one"
    return None


def _mixed_pairs(folder: Path, state: dict[str, str]) -> list[str]:
    """A weights file and its sidecar from two runs must not load as a pair."""
    out = []
    for name, st in state.items():
        if name.endswith(".safetensors"):
            side = name[: -len(".safetensors")] + ".json"
            if side in state and state[side] != st and _loads_as_a_pair(folder / name):
                out.append(f"{name} is {st} but its sidecar {side} is {state[side]}, and they load: a mixed pair")
    return out


def _loads_as_a_pair(weights: Path) -> bool:
    """Whether robustmm's loader (persist.load_weights, under load_heads and TinyBind) accepts the pair."""
    from robustmm.errors import CheckpointError
    from robustmm.persist import load_weights

    try:
        load_weights(weights)
    except CheckpointError:
        return False
    return True


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.tmp"))


# ---------------------------------------------------------------- the scenarios


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """Models loaded once in this process (the forked children inherit them), and a tiny job."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("warm")
    assert main(["eval", "--modality", "thermal", "--n", "2", "-q", "--out", str(d / "w.json")]) == 0
    job = d / "job.toml"
    job.write_text('[run]\nn = 4\nattack_n = 4\nmodalities = ["thermal"]\nbatch_size = 4\n'
                   "[pgd]\nsteps = 1\nretrieval = false\n[report]\nexamples = false\n" + only("clean", "pgd"))
    return d


def only(*kinds: str) -> str:
    """Job-file lines that switch off every registered cell kind but ``kinds`` (new kinds too)."""
    from robustmm.job.registry import cell_kinds

    return "".join(f"[{k.name}]\nenabled = false\n" for k in cell_kinds() if k.name not in kinds and k.name != "attacks")


def kill_points(events: list[str]) -> list[int]:
    """Every event, except that of a run of consecutive writes to one file only the first, the
    middle and the last are kill points (an SVG is hundreds of small writes)."""
    points, run = [], []
    labels = [e.split("\t", 1)[1] for e in events]

    def close():
        if run:
            points.extend(sorted({run[0], run[len(run) // 2], run[-1]}))
            run.clear()

    for i, label in enumerate(labels, 1):
        if label.startswith("write ") and (not run or labels[run[-1] - 1] == label):
            run.append(i)
            continue
        close()
        if label.startswith("write "):
            run.append(i)
        else:
            points.append(i)
    close()
    return points


def _sweep(tmp_path: Path, setup, argv: list[str], out_name: str, max_points: int | None = None):
    """Reference run, then a kill before every kill point (or ``max_points`` of them spread evenly)."""
    template = tmp_path / "template"
    template.mkdir()
    setup(template)
    (template / out_name).mkdir(exist_ok=True)

    def fresh(tag):
        cwd = tmp_path / tag
        shutil.copytree(template, cwd, symlinks=True)
        return cwd, cwd / out_name

    cwd, out = fresh("ref")
    before = snapshot(out)
    how, rc, events = run_child(argv, cwd, None, tmp_path / "ref.log")
    assert (how, rc) == ("exit", 0), (tmp_path / "ref.stderr").read_text()[-2000:]
    ref = snapshot(out)
    assert ref != before, "the command wrote nothing"
    points = kill_points(events)
    if max_points and len(points) > max_points:
        points = sorted({points[round(i * (len(points) - 1) / (max_points - 1))] for i in range(max_points)})
    found = []
    for n in points:
        cwd, out = fresh(f"k{n}")
        how, sig, seen = run_child(argv, cwd, n, tmp_path / f"k{n}.log")
        if how != "killed":  # the run took another path than the reference: say so
            found.append(f"kill at {n}: exited {sig} instead ({(tmp_path / f'k{n}.stderr').read_text()[-300:]})")
            continue
        assert sig == signal.SIGKILL
        found += [f"kill before event {n} ({seen[-1].split(chr(9), 1)[1]}): {p}" for p in problems(out, before, ref)]
    return found, events


def _prior(cwd: Path, argv: list[str]) -> None:
    """Earlier outputs in the folder (another run of the command), to be kept or replaced whole."""
    cur = Path.cwd()
    os.chdir(cwd)
    try:
        assert main(argv) == 0
    finally:
        os.chdir(cur)


def test_eval_killed_at_every_write_leaves_old_or_complete_json(tmp_path, warm):
    def setup(cwd):
        (cwd / "out").mkdir()
        _prior(cwd, ["eval", "--modality", "thermal", "--n", "2", "-q", "--out", "out/r.json"])


    found, events = _sweep(tmp_path, setup, ["eval", "--modality", "thermal", "--n", "3", "-q", "--out", "out/r.json"],
                           "out")
    assert len(events) >= 4  # probe, temp file, fsync, replace at least: the sweep covered a real write
    assert not found, "\n".join(found)


def test_eval_curve_jsonl_killed_at_every_write(tmp_path, warm):
    def setup(cwd):
        (cwd / "out").mkdir()
        _prior(cwd, ["eval", "--modality", "thermal", "--n", "2", "-q", "--attack", "noise", "--eps", "0.01", "0.02",
                     "--out", "out/c.jsonl"])

    found, _ = _sweep(tmp_path, setup, ["eval", "--modality", "thermal", "--n", "3", "-q", "--attack", "noise",
                                        "--eps", "0.01", "0.03", "--out", "out/c.jsonl"], "out")
    assert not found, "\n".join(found)


@pytest.fixture(scope="module")
def calibrate_sweep(tmp_path_factory, warm):
    """calibrate over earlier heads of another objective, killed at every write."""
    common = ["calibrate", "--modality", "thermal", "--n", "4", "--epochs", "1", "--steps", "1", "-q",
              "--out", "out/h.safetensors"]

    def setup(cwd):
        (cwd / "out").mkdir()
        _prior(cwd, [*common, "--objective", "l2"])

    found, events = _sweep(tmp_path_factory.mktemp("calibrate"), setup, [*common, "--objective", "ce"], "out")
    assert any("h.safetensors" in e for e in events) and any("h.json" in e for e in events)
    return found


def test_calibrate_killed_at_every_write_leaves_no_torn_file(calibrate_sweep):
    torn = [f for f in calibrate_sweep if "mixed pair" not in f]
    assert not torn, "\n".join(torn)


def test_calibrate_killed_never_pairs_new_heads_with_the_old_sidecar(calibrate_sweep):
    mixed = [f for f in calibrate_sweep if "mixed pair" in f]
    assert not mixed, "\n".join(mixed)


@pytest.fixture
def results_pair(tmp_path):
    """Two result files of a small curve (old report input, new report input)."""
    d = tmp_path / "inputs"
    d.mkdir()
    for name, eps in (("old.jsonl", ["0.01", "0.02"]), ("new.jsonl", ["0.01", "0.02", "0.03"])):
        assert main(["eval", "--modality", "thermal", "--n", "3", "-q", "--attack", "noise", "--eps", *eps,
                     "--out", str(d / name)]) == 0
    return d


@pytest.mark.parametrize("points", [pytest.param(8, id="8-points"),
                                    pytest.param(None, id="every-point", marks=pytest.mark.slow)])
def test_report_killed_at_every_write_leaves_old_or_complete_files(tmp_path, warm, results_pair, points):
    def setup(cwd):
        _prior(cwd, ["report", str(results_pair / "old.jsonl"), "--out", "rep", "-q"])

    (tmp_path / "s").mkdir()
    found, events = _sweep(tmp_path / "s", setup, ["report", str(results_pair / "new.jsonl"), "--out", "rep", "-q"],
                           "rep", max_points=points)
    assert any(".png" in e for e in events), "the report wrote no PNG: nothing of the kind was covered"
    assert not found, "\n".join(found)


@pytest.mark.slow  # ~1 min per 5 kill points on 2 busy cores; the resume tests below kill `run` at 2 points
@pytest.mark.parametrize("points", [pytest.param(5, id="5-points"), pytest.param(None, id="every-point")])
def test_run_killed_at_every_write_leaves_complete_lines_and_files(tmp_path, warm, points):
    job = warm / "job.toml"
    found, events = _sweep(tmp_path, lambda cwd: None, ["run", str(job), "--out", "out", "-q"], "out",
                           max_points=points)
    assert any("results.jsonl" in e for e in events)
    assert not found, "\n".join(found)


@pytest.fixture(scope="module")
def run_reference(tmp_path_factory, warm):
    """An unkilled run of the tiny job: its events, its folder."""
    d = tmp_path_factory.mktemp("runref")
    how, rc, events = run_child(["run", str(warm / "job.toml"), "--out", "out", "-q"], d, None, d / "ref.log")
    assert (how, rc) == ("exit", 0), (d / "ref.stderr").read_text()[-1000:]
    return events, d / "out"


def test_killed_run_resumes_to_the_complete_results(tmp_path, warm, run_reference):
    """A run killed before its Nth results append leaves complete files, and `--resume` ends with
    the same rows as an unkilled run. Each cell's rows are one append (one write + fsync), so a
    kill can fall between cells but never between two rows of one cell (which would lose the
    rest of that cell on resume)."""
    job = warm / "job.toml"
    events, ref_out = run_reference
    rows = (ref_out / "results.jsonl").read_text().splitlines()
    want = [_strip(json.loads(x)) for x in rows]
    cells = [r["extra"]["cell"] for r in want]
    distinct = list(dict.fromkeys(cells))
    appends = [i + 1 for i, e in enumerate(events) if e.split("\t")[1].startswith("os.open") and "results.jsonl" in e]
    assert len(appends) == len(distinct) < len(rows) and distinct[0] == "tinybind|thermal|clean"
    n = appends[1]  # before the curve cell's rows (several rows, one append)
    cwd = tmp_path / "k"
    cwd.mkdir()
    assert run_child(["run", str(job), "--out", "out", "-q"], cwd, n, tmp_path / "k.log")[0] == "killed"
    assert problems(cwd / "out", {}, snapshot(ref_out)) == []
    how, rc, _ = run_child(["run", str(job), "--out", "out", "-q", "--resume"], cwd, None, tmp_path / "r.log")
    assert (how, rc) == ("exit", 0), (tmp_path / "r.stderr").read_text()[-1000:]
    got = [_strip(json.loads(x)) for x in (cwd / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["extra"]["cell"] for r in got] == cells, f"kill before event {n}: resumed rows differ from an unkilled run"
    assert got == want


CERTIFY = ["certify", "--modality", "thermal", "--n", "3", "--draws", "16", "--n0", "4", "-q", "--out", "out/c.json"]


def _certify_prior(cwd: Path) -> None:
    (cwd / "out").mkdir()
    _prior(cwd, [*CERTIFY[:-2], "--sigma", "0.1", "--out", "out/c.json"])


def test_certify_killed_at_every_write_leaves_old_or_complete_json(tmp_path, warm):
    """`robustmm certify` over an earlier certificate, killed before each of its file events; a
    rerun after the kill that left a temp file completes and leaves none behind."""
    argv = [*CERTIFY, "--sigma", "0.05"]
    found, events = _sweep(tmp_path, _certify_prior, argv, "out")
    assert any("c.json" in e for e in events) and len(kill_points(events)) >= 4
    assert not found, "\n".join(found)
    left = [d for d in tmp_path.glob("k*") if d.is_dir() and leftovers(d / "out")]
    assert left, "no kill left a temp file: the rerun below would check nothing"
    how, rc, _ = run_child(argv, left[0], None, tmp_path / "again.log")
    assert (how, rc) == ("exit", 0), (tmp_path / "again.stderr").read_text()[-1000:]
    assert leftovers(left[0] / "out") == []
    assert _complete(Path("c.json"), (left[0] / "out" / "c.json").read_bytes()) is None


@pytest.mark.slow  # a few certify runs, each killed by the parent at a seeded random moment
def test_certify_killed_at_random_moments_leaves_old_or_complete_json(tmp_path, warm):
    """SIGKILL from outside at random moments of the run (seeded), not only at the hooked file
    events: whatever the moment, out/c.json is the earlier certificate or the complete new one."""
    import random

    argv = [*CERTIFY, "--sigma", "0.05"]
    template = tmp_path / "template"
    template.mkdir()
    _certify_prior(template)
    before = snapshot(template / "out")
    ref_dir = tmp_path / "ref"
    shutil.copytree(template, ref_dir)
    t0 = time.monotonic()
    assert run_child(argv, ref_dir, None, tmp_path / "ref.log")[:2] == ("exit", 0)
    took = time.monotonic() - t0  # only to spread the kill moments over the run, never asserted
    ref = snapshot(ref_dir / "out")
    rng = random.Random(17)
    found, statuses = [], []
    for i in range(6):
        cwd = tmp_path / f"r{i}"
        shutil.copytree(template, cwd)
        delay = rng.uniform(0, took)
        statuses.append(_run_and_kill_after(argv, cwd, delay))
        found += [f"killed after {delay:.3f}s ({statuses[-1]}): {p}" for p in problems(cwd / "out", before, ref)]
    assert not found, "\n".join(found)
    assert "killed" in statuses, f"every run ended before its kill: {statuses}"


def _run_and_kill_after(argv: list[str], cwd: Path, delay: float) -> str:
    """Fork ``main(argv)`` in ``cwd`` (no hooks), SIGKILL it after ``delay`` seconds; 'killed' or 'exited'."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            torch.set_num_threads(1)
            os.chdir(cwd)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            os._exit(main(argv))
        except BaseException:  # noqa: BLE001
            os._exit(99)
    time.sleep(delay)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + TIMEOUT_S
    while True:  # a watchdog only
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "killed" if os.WIFSIGNALED(status) else f"exited {os.WEXITSTATUS(status)}"
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"{argv} hung for {TIMEOUT_S}s")
        time.sleep(0.02)


def test_report_warns_about_a_torn_last_line(tmp_path, warm, results_pair):
    """A torn last line (an older version killed mid-line) is reported on stderr, not silently dropped."""
    lines = (results_pair / "new.jsonl").read_text().splitlines()
    torn = tmp_path / "torn.jsonl"
    torn.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    how, rc, _ = run_child(["report", str(torn), "--out", "rep"], tmp_path, None, tmp_path / "t.log")
    err = (tmp_path / "t.stderr").read_text()
    assert (how, rc) == ("exit", 0), err
    assert "torn last line" in err and "torn.jsonl" in err
    assert "Traceback" not in err
    assert sum(1 for _ in csv.reader(io.StringIO((tmp_path / "rep" / "summary.csv").read_text()))) == len(lines)


def _writer_sweep(tmp_path: Path, write_old, write_new) -> list[str]:
    """Kill ``write_new()`` (in a forked child) before each of its events, over ``write_old``'s files."""
    out = tmp_path / "out"
    out.mkdir()
    write_old(out)
    before = snapshot(out)

    def child(kill_at):
        log_fd = os.open(tmp_path / "w.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        pid = os.fork()
        if pid == 0:
            try:
                _install_hooks(_Killer(kill_at, log_fd))
                write_new(out)
            finally:
                os._exit(0)
        os.close(log_fd)
        _, status = os.waitpid(pid, 0)
        return os.WIFSIGNALED(status), (tmp_path / "w.log").read_text().splitlines()

    killed, events = child(None)
    assert not killed and len(events) >= 4
    ref = snapshot(out)
    assert ref != before
    found = []
    for n in range(1, len(events) + 1):
        for p in out.iterdir():
            p.unlink()
        for name, data in before.items():
            (out / name).write_bytes(data)
        killed, seen = child(n)
        assert killed
        found += [f"kill before {seen[-1]}: {p}" for p in problems(out, before, ref)]
    return found


def _heads(hidden):
    from robustmm.encoders.heads import ResidualHead

    torch.manual_seed(hidden)
    return {"thermal": ResidualHead(8, hidden)}


@pytest.fixture(scope="module")
def heads_sweep(tmp_path_factory):
    from robustmm.encoders.heads import save_heads

    return _writer_sweep(tmp_path_factory.mktemp("heads"),
                         lambda out: save_heads(out / "h.safetensors", _heads(4), {"objective": "old"}),
                         lambda out: save_heads(out / "h.safetensors", _heads(16), {"objective": "new"}))


@pytest.fixture(scope="module")
def weights_sweep(tmp_path_factory):
    from robustmm.persist import save_weights

    return _writer_sweep(tmp_path_factory.mktemp("weights"),
                         lambda out: save_weights(out / "m", {"w": torch.zeros(4)}, {"version": "old"}),
                         lambda out: save_weights(out / "m", {"w": torch.ones(64)}, {"version": "new"}))


@pytest.mark.parametrize("sweep", ["heads_sweep", "weights_sweep"])
def test_heads_and_weights_writers_never_leave_a_torn_file(request, sweep):
    """save_heads (heads.py) and persist.save_weights (TinyBind, patch) killed at each event."""
    torn = [f for f in request.getfixturevalue(sweep) if "mixed pair" not in f]
    assert not torn, "\n".join(torn)


def test_save_heads_killed_never_mixes_the_pair(heads_sweep):
    assert not [f for f in heads_sweep if "mixed pair" in f]


def test_save_weights_killed_never_mixes_the_pair(weights_sweep):
    assert not [f for f in weights_sweep if "mixed pair" in f]


if __name__ == "__main__":  # pragma: no cover - a helper: print the events of one command
    import tempfile

    d = Path(tempfile.mkdtemp())
    how, rc, ev = run_child(sys.argv[1:], Path.cwd(), None, d / "ev.log")
    print(how, rc, len(ev), "events,", len(kill_points(ev)), "kill points")
    print("\n".join(ev))
