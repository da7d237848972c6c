"""robustmm used by a hostile new user: empty strings, unicode,
very long paths, ``--out`` equal to an input, ``--n`` beyond the dataset, ``--device`` values
that are not devices, ``report`` on empty, missing or unusual files, two runs into one folder.

Each finding is a test. Those whose bug lies in a file this test does not own are marked
``xfail(strict=True)`` with the file and the fix in ``reason``, so they flip when it is fixed.
"Before any work" means before any model or dataset loads (both loaders are stubbed to raise
``WorkStarted``, as in tests/test_fuzz_cli.py).
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from test_crash_safety import _install_hooks, _Killer, only, run_child, snapshot  # noqa: E402  (tests/ is on sys.path)
from test_fuzz_cli import run_cli, stub_work

from robustmm.cli import main
from robustmm.errors import RobustMMError
from robustmm.job.config import parse_config
from robustmm.records import Result


@pytest.fixture
def no_work(monkeypatch, tmp_path):
    """Loading any model or dataset raises WorkStarted; the command runs in an empty folder."""
    return stub_work(monkeypatch, tmp_path)


def wait(pid: int, timeout_s: float = 300) -> int:
    """waitpid with a watchdog: a child that hangs is killed and fails the test (never a wait on timing)."""
    deadline = time.monotonic() + timeout_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"child {pid} hung for {timeout_s}s")
        time.sleep(0.02)


def xfail(reason: str):
    return pytest.mark.xfail(strict=True, reason=reason)


def one_line_exit_2(argv, capsys):
    rc, err = run_cli(argv, capsys)
    assert "Traceback" not in err
    assert rc == 2, f"{argv}: {'work started' if rc == 'work' else f'exit {rc}'} ({err.strip()!r})"
    assert len(err.splitlines()) == 1 and err.strip(), err
    return err


# ---------------------------------------------------------------- refused at once, before any work


@pytest.mark.parametrize("argv", [
    pytest.param(["eval", "--modality", "image", "--device", "foo"], id="eval-device-foo"),
    pytest.param(["eval", "--modality", "image", "--device", ""], id="eval-device-empty"),
    pytest.param(["eval", "--modality", "image", "--device", "meta"], id="eval-device-meta"),
    pytest.param(["calibrate", "--modality", "image", "--device", "foo", "--out", "h.safetensors"],
                 id="calibrate-device-foo"),
    pytest.param(["run", "--device", "gpu", "--out", "r"], id="run-device-gpu"),
    pytest.param(["eval", "--modality", "image", "--seed", "9" * 25], id="eval-seed-huge"),
    pytest.param(["eval", "--modality", "image", "--n", "0"], id="eval-n-0"),
    pytest.param(["calibrate", "--modality", "image", "--n", "-1", "--out", "h.safetensors"],
                 id="calibrate-n-neg"),
    pytest.param(["check-attack", "--modality", "image", "--n", "0"], id="check-attack-n-0"),
    pytest.param(["eval", "--modality", "image", "--batch-size", "0"], id="eval-batch-0"),
    pytest.param(["eval", "--modality", "image", "--batch-size", "-3"], id="eval-batch-neg"),
    pytest.param(["eval", "--modality", "image", "--out", ""], id="eval-out-empty"),
    pytest.param(["run", "--out", ""], id="run-out-empty"),
    pytest.param(["eval", "--modality", "image", "--steps", "3"], id="eval-steps-no-attack"),
    pytest.param(["eval", "--modality", "image", "--norm", "l2"], id="eval-norm-no-attack"),
    pytest.param(["run", "--resume", "--overwrite", "--out", "r"], id="run-resume-overwrite"),
    pytest.param(["eval", "--modality", "image", "--device", "cuda"], id="eval-cuda-without-gpu"),
    pytest.param(["eval", "--modality", "", "--n", "2"], id="eval-modality-empty"),
    pytest.param(["eval", "--modality", "image", "--data", ""], id="eval-data-empty"),
    pytest.param(["eval", "--modality", "image", "--data", "cifar10"], id="eval-data-no-root"),
    pytest.param(["calibrate", "--modality", "image", "--data", "nope", "--out", "h.safetensors"],
                 id="calibrate-data-unknown"),
    pytest.param(["eval", "--modality", "image", "--source", "nope", "--attack", "pgd"],
                 id="eval-source-unknown"),
    pytest.param(["eval", "--modality", "image", "--attack", "pgd", "--eps", "nan"], id="eval-eps-nan"),
    pytest.param(["eval", "--modality", "image", "--out", "x" * 300 + ".json"], id="eval-out-name-too-long"),
    pytest.param(["eval", "--modality", "image", "--out", "{model:>100000}"], id="eval-out-template-too-long"),
    pytest.param(["calibrate", "--modality", "image", "--out", ""], id="calibrate-out-empty"),
    pytest.param(["calibrate", "--modality", "image", "--eps", "inf", "--out", "h.safetensors"], id="calibrate-eps-inf"),
    pytest.param(["calibrate", "--modality", "image", "--eps", "nan", "--out", "h.safetensors"], id="calibrate-eps-nan"),
    pytest.param(["run", "", "--out", "r"], id="run-config-empty"),
    pytest.param(["run", "--out", "r/{nope}"], id="run-out-template-unknown"),
])
def test_refused_in_one_line_before_any_work(no_work, capsys, argv):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    one_line_exit_2(argv, capsys)


def test_unicode_and_deep_paths_work(tmp_path, capsys):
    """A unicode, nested --out is created and written; the report reads it back."""
    out = tmp_path / "é ü" / "日本" / "r.json"
    assert main(["eval", "--modality", "thermal", "--n", "2", "-q", "--out", str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8"))["n"] == 2
    assert main(["report", str(out), "--out", str(tmp_path / "ré port"), "-q"]) == 0
    assert (tmp_path / "ré port" / "report.md").exists()


def test_no_command_is_a_one_line_error(no_work, capsys):
    one_line_exit_2([], capsys)


# ---------------------------------------------------------------- --out equal to an input


@pytest.fixture
def heads_file(tmp_path):
    from robustmm.encoders.heads import ResidualHead, save_heads

    path = tmp_path / "h.safetensors"
    save_heads(path, {"image": ResidualHead(8, 4)}, {"encoder": "tinybind", "objective": "ce"})
    return path


@pytest.mark.parametrize("which", ["eval-heads", "eval-heads-sidecar", "check-attack-sidecar", "eval-model"])
def test_out_equal_to_an_input_is_refused_and_the_input_kept(no_work, capsys, heads_file, which):
    h, side = str(heads_file), str(heads_file.with_suffix(".json"))
    argv = {"eval-heads": ["eval", "--modality", "image", "--heads", h, "--out", h],
            "eval-heads-sidecar": ["eval", "--modality", "image", "--heads", h, "--out", side],
            "check-attack-sidecar": ["check-attack", "--modality", "image", "--heads", h, "--out", side],
            "eval-model": ["eval", "--modality", "image", "--model", f"tinybind:{heads_file.with_suffix('')}",
                           "--out", h]}[which]
    before = snapshot(heads_file.parent)
    one_line_exit_2(argv, capsys)
    assert snapshot(heads_file.parent) == before


def test_report_out_equal_to_its_input_file_is_refused(tmp_path, capsys):
    r = tmp_path / "r.json"
    assert main(["eval", "--modality", "thermal", "--n", "2", "-q", "--out", str(r)]) == 0
    data = r.read_bytes()
    one_line_exit_2(["report", str(r), "--out", str(r)], capsys)
    assert r.read_bytes() == data


def test_report_with_an_empty_out_writes_nothing_into_the_current_folder(tmp_path, capsys, monkeypatch):
    r = tmp_path / "in" / "r.json"
    assert main(["eval", "--modality", "thermal", "--n", "2", "-q", "--out", str(r)]) == 0
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    rc, err = run_cli(["report", str(r), "--out", "", "-q"], capsys)
    assert sorted(os.listdir(work)) == [], f"exit {rc}: report wrote {sorted(os.listdir(work))} into the current folder"
    assert rc == 2 and len(err.splitlines()) == 1


# ---------------------------------------------------------------- report on odd files


def _record(**kw) -> Result:
    base = dict(model={"name": "tinybind"}, dataset={"name": "synthscenes", "split": "test"}, modality="image",
                attack=None, defense=None, threat="clean", n=4, seed=0, timing_s=0.1,
                metrics={"clean": {"zeroshot_top1": 0.5, "t2x_R@1": 0.5, "x2t_R@1": 0.5}, "attacked": None})
    return Result(**{**base, **kw})


@pytest.mark.parametrize("content, json_needle, jsonl_needle", [
    ("", "not valid JSON", "no results"),
    ("\n\n", "not valid JSON", "no results"),
    (b"\xff\xfe junk", "UTF-8", "UTF-8"),
    ('{"schema": "robustmm.result/99"}\n', "another robustmm version", "another robustmm version"),
    ("[]", "no results", "not a robustmm.result/1 record"),
    ("null", "not a robustmm.result/1 record", "not a robustmm.result/1 record"),
])
@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_report_on_empty_or_foreign_files_is_one_line(tmp_path, capsys, content, json_needle, jsonl_needle, suffix):
    f = tmp_path / f"r{suffix}"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    err = one_line_exit_2(["report", str(f), "--out", str(tmp_path / "rep")], capsys)
    assert (json_needle if suffix == ".json" else jsonl_needle) in err, err
    assert not (tmp_path / "rep" / "report.md").exists()


def test_report_on_a_missing_file_or_a_folder_is_one_line(tmp_path, capsys):
    one_line_exit_2(["report", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "rep")], capsys)
    one_line_exit_2(["report", str(tmp_path), "--out", str(tmp_path / "rep")], capsys)
    one_line_exit_2(["report", "", "--out", str(tmp_path / "rep")], capsys)


def test_report_on_a_clean_calibrated_eval(tmp_path, capsys):
    f = tmp_path / "r.json"
    f.write_text(_record(defense={"name": "calibration", "objective": "ce", "clean_only": False}).to_json())
    rc, err = run_cli(["report", str(f), "--out", str(tmp_path / "rep"), "-q"], capsys)
    assert rc == 0, err
    assert "| image | ce | clean only | 0.500 |" in (tmp_path / "rep" / "report.md").read_text()


def test_report_of_one_file_given_twice_has_each_row_once(tmp_path, capsys):
    f = tmp_path / "r.json"
    f.write_text(_record().to_json())
    assert run_cli(["report", str(f), str(f), "--out", str(tmp_path / "rep"), "-q"], capsys)[0] == 0
    assert len((tmp_path / "rep" / "summary.csv").read_text().splitlines()) == 2


# ---------------------------------------------------------------- values that only failed when their cell ran


@pytest.mark.parametrize("raw, needle", [
    # the meaning of a value, not only its type, is checked at load (job/sections.py rules, CellKind.validate)
    pytest.param({"attacks": {"pgd": {"settings": {"steps": "x"}}}}, "[attacks.pgd] settings.steps",
                 id="attack-settings-wrong-type"),
    pytest.param({"attacks": {"noise": {"settings": {"norm": "l7"}}}}, "[attacks.noise] settings.norm",
                 id="attack-settings-bad-norm"),
    pytest.param({"attacks": {"pgd": {"modalities": ["text"]}}}, "[attacks.pgd] modalities", id="attack-on-text"),
    pytest.param({"patch": {"area": 5.0}}, "[patch] area: expected a number > 0 and < 1", id="patch-area-above-1"),
    pytest.param({"patch": {"area": 1.0}}, "[patch] area", id="patch-area-1"),
    pytest.param({"patch": {"modality": "audio"}}, "[patch] modality: unknown image-like modality 'audio'",
                 id="patch-modality-audio"),
    pytest.param({"patch": {"fit_split": "nope"}}, "[patch] fit_split: expected a split of synthscenes",
                 id="patch-fit-split"),
    pytest.param({"calibration": {"train_split": "nope"}}, "[calibration] train_split: expected a split",
                 id="calibration-train-split"),
    pytest.param({"run": {"split": "nope"}}, "[run] split: expected a split of synthscenes (train, val, test)",
                 id="run-split"),
    pytest.param({"run": {"seed": 2**64}}, "[run] seed: expected an integer >= 0 and <= 9223372036854775807",
                 id="run-seed-2**64"),
    pytest.param({"run": {"n": 10**30}}, "[run] n: expected an integer <= 1000 (the size of synthscenes split 'test')",
                 id="run-n-huge"),
    pytest.param({"run": {"n": 5000}}, "[run] n: expected an integer <= 1000", id="run-n-beyond-split"),
    pytest.param({"run": {"split": "val", "attack_n": 1001}}, "[run] attack_n: expected an integer <= 1000",
                 id="run-attack-n-beyond-split"),
    pytest.param({"run": {"quick_n": 2000}}, "[run] quick_n", id="run-quick-n-beyond-split"),
    pytest.param({"calibration": {"train_n": 10001}}, "[calibration] train_n: expected an integer <= 10000",
                 id="calibration-train-n"),
    pytest.param({"calibration": {"train_split": "val", "train_n": 1001}}, "[calibration] train_n: expected an "
                 "integer <= 1000 (the size of synthscenes split 'val')", id="calibration-train-n-of-its-split"),
    pytest.param({"patch": {"quick_fit_n": 10**6}}, "[patch] quick_fit_n", id="patch-fit-n"),
    pytest.param({"certification": {"train_n": 10**6}}, "[certification] train_n", id="certification-train-n"),
    pytest.param({"run": {"modalities": []}}, "[run] modalities: expected a non-empty list", id="run-modalities-empty"),
    pytest.param({"calibration": {"objectives": []}}, "[calibration] objectives: expected a non-empty list",
                 id="calibration-no-objective"),
    pytest.param({"calibration": {"objectives": ["ce+-1*l2"]}}, "[calibration] objectives[0]: the weight of 'l2'",
                 id="calibration-negative-weight"),
    pytest.param({"checks": {"steps": []}}, "[checks] steps: expected a non-empty list", id="checks-no-steps"),
    pytest.param({"ensemble": {"attacks": []}}, "[ensemble] attacks: expected a non-empty list", id="ensemble-empty"),
    pytest.param({"input_defenses": {"defenses": []}}, "[input_defenses] defenses", id="input-defenses-none"),
    pytest.param({"checks": {"tolerance": 1e300}}, "[checks] tolerance: expected a number >= 0 and <= 1",
                 id="checks-tolerance-huge"),
    pytest.param({"ensemble": {"tolerance": 2.0}}, "[ensemble] tolerance", id="ensemble-tolerance-above-1"),
    # these already held
    pytest.param({"sga": {"eps": float("nan")}}, "[sga] eps", id="sga-eps-nan"),
    pytest.param({"run": {"batch_size": 0}}, "[run] batch_size", id="run-batch-0"),
    pytest.param({"pgd": {"stepz": 3}}, "stepz", id="pgd-unknown-key"),
])
def test_config_values_are_refused_at_load(no_work, raw, needle):
    """One line naming the file, the section and the key, at load: no model or dataset loads
    (``no_work`` makes any load raise WorkStarted, which is not a RobustMMError)."""
    with pytest.raises(RobustMMError) as e:
        parse_config(raw, "job.toml")
    assert "\n" not in str(e.value)
    assert needle in str(e.value), str(e.value)


@pytest.mark.parametrize("raw", [
    pytest.param({"patch": {"enabled": False, "fit_split": "nope"}}, id="disabled-section-meaning-unchecked"),
    pytest.param({"run": {"split": "train", "n": 5000}}, id="train-split-holds-5000"),
    pytest.param({"calibration": {"train_split": "test", "train_n": 1000}}, id="a-whole-split"),
    pytest.param({"run": {"dataset": "nyu_depth_v2", "split": "val", "n": 10**6}}, id="split-size-known-on-disk-only"),
    pytest.param({"patch": {"area": 0.99}, "run": {"seed": 2**63 - 1}}, id="bounds-inclusive"),
])
def test_config_values_within_their_meaning_load(no_work, raw):
    """What the checks above must not refuse: values of a disabled section beyond their types,
    sizes within the split, and datasets read from disk (their splits are known only there)."""
    parse_config(raw, "job.toml")


def test_n_beyond_the_split_is_refused_before_generating(monkeypatch):
    import robustmm.data.synthscenes.dataset as ds
    from robustmm.data import load_dataset

    asked = []

    class Stop(BaseException):  # noqa: N818
        pass

    def record(n, seed):
        asked.append(n)
        raise Stop

    monkeypatch.setattr(ds, "generate_scenes", record)
    try:
        with pytest.raises(RobustMMError, match="at most 1000 .*'val'"):
            load_dataset("synthscenes", split="val", n=10**9, modalities=["depth"])
    except Stop:
        pass
    assert all(n <= 1000 for n in asked), f"generation of {asked} scenes of a 1000-scene split started"
    with pytest.raises(Stop):  # the whole split is still there
        load_dataset("synthscenes", split="val", n=1000, modalities=["depth"])
    assert asked == [1000]


@pytest.mark.parametrize("spec", ["ce+-1*l2", "0*ce", "ce+0*l2", "1e400*ce", "-0.5*infonce@label-free"])
def test_negative_objective_weight_is_refused(spec):
    from robustmm.defenses.objectives import parse_objective

    with pytest.raises(RobustMMError, match="must be a finite number > 0"):
        parse_objective(spec)
    assert parse_objective("ce+0.5*l2") == {"ce": 1.0, "l2": 0.5}


@pytest.mark.parametrize("out", ["{model.__class__}.json", "{model[0]}.json", "{model!r}.json", "{modality:>9}.json"])
def test_out_template_fills_plain_fields_only(no_work, capsys, out):
    err = one_line_exit_2(["eval", "--modality", "image", "--out", out], capsys)
    assert "only plain fields" in err, err


# ---------------------------------------------------------------- two runs, crashes, leftovers


def _tiny_job(d: Path) -> Path:
    job = d / "job.toml"
    job.write_text('[run]\nn = 4\nattack_n = 4\nmodalities = ["thermal"]\nbatch_size = 4\n'
                   "[pgd]\nsteps = 1\nretrieval = false\n[report]\nexamples = false\n" + only("clean", "pgd"))
    return job


@pytest.mark.slow  # forks a process that has torch's thread pool: run with OMP_NUM_THREADS=1
def test_a_second_run_into_a_folder_in_use_refuses_and_the_first_completes(tmp_path, capsys):
    """Concurrent `run` into one --out: a real run (a forked child, paused on its first append of
    results.jsonl, no timing involved) holds the folder; a second run, with or without --resume,
    refuses in one line naming the holder's pid; once let go, the first run completes."""
    job = _tiny_job(tmp_path)
    assert main(["eval", "--modality", "thermal", "--n", "2", "-q"]) == 0  # warm: the child inherits the loaded model
    out = tmp_path / "out"
    go_r, go_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            torch.set_num_threads(1)
            real = os.write

            def paused_write(fd, data):  # the first results line: say so and wait
                if b'"schema"' in data:
                    real(ready_w, b"x")
                    os.read(go_r, 1)
                    os.write = real
                return real(fd, data)

            os.write = paused_write
            os._exit(main(["run", str(job), "--out", str(out), "-q"]))
        except BaseException:  # noqa: BLE001
            os._exit(99)
    os.close(ready_w)  # the child holds the write end: if it dies before its first line, read() sees EOF
    os.close(go_r)
    status = None
    try:
        assert os.read(ready_r, 1) == b"x"
        for extra in ([], ["--resume"], ["--overwrite"]):
            err = one_line_exit_2(["run", str(job), "--out", str(out), "-q", *extra], capsys)
            assert "in use" in err and f"pid {pid}" in err, err
        os.write(go_w, b"g")
        status = wait(pid)
    finally:
        if status is None:  # a failed check above: never leave the child behind
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert {r["extra"]["cell"].split("|", 1)[1] for r in rows} == {"thermal|clean", "thermal|pgd-curve"}


def test_a_rerun_after_a_kill_leaves_no_temp_files(tmp_path):
    argv = ["calibrate", "--modality", "thermal", "--n", "4", "--epochs", "1", "--steps", "1", "-q",
            "--out", "out/h.safetensors"]
    assert main(["eval", "--modality", "thermal", "--n", "2", "-q", "--out", str(tmp_path / "w.json")]) == 0
    how, _, events = run_child(argv, tmp_path, None, tmp_path / "ref.log")
    assert how == "exit"
    n = [i for i, e in enumerate(events, 1) if e.split("\t")[1].startswith("replace")][-1]  # the sidecar's rename
    assert run_child(argv, tmp_path, n, tmp_path / "k.log")[0] == "killed"
    assert run_child(argv, tmp_path, None, tmp_path / "again.log")[:2] == ("exit", 0)
    assert sorted(p.name for p in (tmp_path / "out").glob(".*.tmp")) == []


def test_two_heads_writers_never_publish_a_torn_file(tmp_path):
    """Writer A is paused just before its rename; writer B dies half-way through its safetensors
    write (its first write, torn: half the bytes land); then A renames. With per-writer temp names
    A publishes its own complete file, and A's next write (the sidecar) sweeps B's dead temp file."""
    from safetensors.torch import load_file

    from robustmm.encoders.heads import ResidualHead, save_heads

    out = tmp_path / "h.safetensors"
    heads = {"image": ResidualHead(8, 64)}
    go_r, go_w = os.pipe()
    ready_r, ready_w = os.pipe()
    a = os.fork()
    if a == 0:  # writer A: pause at its first rename
        real = os.replace

        def paused(src, dst):  # only the first rename (the weights) waits
            os.replace = real
            os.write(ready_w, b"x")
            os.read(go_r, 1)
            return real(src, dst)

        os.replace = paused
        try:
            save_heads(out, heads, {"writer": "A"})
        finally:
            os._exit(0)
    assert os.read(ready_r, 1) == b"x"
    log = os.open(tmp_path / "b.log", os.O_WRONLY | os.O_CREAT, 0o644)
    b = os.fork()
    if b == 0:  # writer B: killed half-way through its safetensors write (a write, or a save_file)
        _install_hooks(_Killer(lambda what: what.startswith(("write ", "save_file ")), log, torn=True))
        try:
            save_heads(out, heads, {"writer": "B"})
        finally:
            os._exit(0)
    wait(b)
    os.write(go_w, b"g")
    wait(a)
    assert "save_file" in (tmp_path / "b.log").read_text() or "write" in (tmp_path / "b.log").read_text()
    load_file(str(out))  # A's complete heads, not B's torn half
    assert sorted(p.name for p in tmp_path.glob(".*.tmp")) == []
