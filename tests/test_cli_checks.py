"""Every command's options are checked before any work (beyond the named cases in
tests/test_hostile_user.py): each bad value or combination below is one line on stderr naming the
problem, exit 2, before any model or dataset loads (both loaders are stubbed to raise
``WorkStarted``). Also the library entry points behind the commands (robustmm/job/arg_checks.py)."""
from __future__ import annotations

import json

import pytest
import torch
from test_fuzz_cli import run_cli, stub_work  # noqa: E402  (tests/ is on sys.path)

from robustmm.errors import RobustMMError
from robustmm.job.arg_checks import check_not_an_input, check_seed, input_paths, resolve_device


@pytest.fixture
def no_work(monkeypatch, tmp_path):
    return stub_work(monkeypatch, tmp_path)


@pytest.fixture
def heads_file(tmp_path):
    from robustmm.encoders.heads import ResidualHead, save_heads

    path = tmp_path / "h.safetensors"
    save_heads(path, {"image": ResidualHead(8, 4)}, {"encoder": "tinybind", "objective": "ce"})
    return path


EVAL = ["eval", "--modality", "image"]
CAL = ["calibrate", "--modality", "image", "--out", "h.safetensors"]
CHECK = ["check-attack", "--modality", "image"]
CERT = ["certify", "--modality", "image", "--sigma", "0.1", "--out", "c.json"]

CASES = [
    # values the attack itself refuses, checked before the model loads (they were found after it)
    (EVAL + ["--attack", "pgd", "--steps", "-1"], "steps must be >= 0"),
    (CAL + ["--steps", "-2"], "steps must be >= 0"),
    (CHECK + ["--steps", "-1"], "steps must be >= 0"),
    (CAL + ["--epochs", "0"], "--epochs must be >= 1"),
    (CAL + ["--adaptive-every", "0"], "--adaptive-every must be >= 1"),
    (EVAL + ["--attack", "patch", "--fit-n", "0"], "--fit-n must be >= 1"),
    (CERT + ["--batch-size", "0"], "--batch-size must be >= 1"),
    # options that would be silently ignored
    (EVAL + ["--fit-n", "10"], "--fit-n needs --attack"),
    (EVAL + ["--attack", "pgd", "--fit-n", "10"], "--fit-n is for learned attacks"),
    (EVAL + ["--amp"], "--amp needs --attack"),
    (EVAL + ["--steps", "3", "--norm", "l2"], "--steps/--norm need --attack"),
    (EVAL + ["--threat", "adaptive"], "--threat needs --heads and --attack"),
    (EVAL + ["--attack", "pgd", "--threat", "adaptive"], "--threat needs --heads"),
    (EVAL + ["--defense", "jpeg", "--attack", "pgd", "--eot-samples", "4"], "--eot-samples needs --adaptive"),
    (CAL + ["--clean-only", "--eps", "0.01"], "--clean-only trains on clean data"),
    (EVAL + ["--root", "/tmp"], "reads nothing from disk"),
    (EVAL + ["--defense", "jpeg", "--defense-setting", "quality=50", "--defense-setting", "quality=20"],
     "--defense-setting quality is given more than once"),
    # flags given with no value (an unset shell variable)
    (EVAL + ["--attack", "pgd", "--eps"], "--eps needs at least one value"),
    (CERT + ["--radii"], "--radii needs at least one value"),
    (CHECK + ["--out", ""], "--out is empty"),
    (CHECK + ["--out", "  "], "--out is empty"),
    (EVAL + ["--data", "coco", "--root", ""], "--root is empty"),
    # names, roots and input files before the first model loads
    (CHECK + ["--surrogate", "nope"], "--surrogate: unknown model"),
    (CERT + ["--model", "tinybnd"], "did you mean 'tinybind'"),
    (CERT + ["--data", "nope"], "unknown dataset"),
    (CAL + ["--data", "cifar10"], "pass --root DIR"),
    (CHECK + ["--data", "esc50", "--root", "/nonexistent/esc"], "no such folder"),
    (EVAL + ["--heads", "/nonexistent/h.safetensors"], "heads file not found"),
    (EVAL + ["--heads", "h.json"], "heads file not found"),  # a sidecar without its weights (made below)
    (EVAL + ["--modality", "text"], "'text' is not one of the raw-input modalities"),
    (CAL + ["--modality", "text"], "'text' is not one"),
    (CERT + ["--modality", "text"], "'text' is not one"),
    (EVAL + ["--modality", "audio", "--attack", "patch"], "image-like modality for the patch attack"),
    (EVAL + ["--split", "validation"], "--split 'validation': not a split of synthscenes"),
    (CAL + ["--split", ""], "not a split of synthscenes"),
    (EVAL + ["--n", "5000"], "--n 5000: synthscenes split 'test' holds 1000 items"),
    (CHECK + ["--n", str(10**30)], "holds 1000 items"),
    (CERT + ["--n", "1001"], "--n 1001: synthscenes split 'test' holds 1000 items"),
    (EVAL + ["--attack", "patch", "--fit-n", "10001"], "--fit-n 10001: synthscenes split 'train' holds 10000"),
    (CHECK + ["--heads", "/nonexistent/h.safetensors"], "heads file not found"),
    # the device and the seed of every command
    (["report", "r.json", "--out", "rep", "--device", "foo"], "is not a device"),
    (EVAL + ["--device", "cpu:1"], "robustmm runs on"),
    (EVAL + ["--device", "xpu"], "robustmm runs on"),
    (CERT + ["--seed", "-1"], "--seed must be an integer in [0, 2**63 - 1]"),
    (CAL + ["--seed", str(2**63)], "--seed must be an integer in [0, 2**63 - 1]"),
    (["run", "--seed", str(2**64), "--out", "r"], "--seed must be an integer in [0, 2**63 - 1]"),
]


@pytest.mark.parametrize("argv, needle", CASES, ids=[f"{a[0]}-{i}" for i, (a, _) in enumerate(CASES)])
def test_refused_in_one_line_before_any_work(no_work, capsys, argv, needle):
    (no_work / "h.json").write_text("{}")
    rc, err = run_cli(argv, capsys)
    assert rc == 2, f"{argv}: {'work started' if rc == 'work' else f'exit {rc}'} ({err.strip()!r})"
    assert len(err.splitlines()) == 1 and needle in err, err


@pytest.mark.parametrize("argv", [EVAL + ["--device", "mps"], EVAL + ["--device", "cuda:7"]])
def test_a_device_this_machine_lacks_is_refused(no_work, capsys, argv):
    if torch.cuda.device_count() > 7 or torch.backends.mps.is_available():
        pytest.skip("this machine has the device")
    rc, err = run_cli(argv, capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "--device" in err, err


def test_good_options_reach_the_work(no_work, capsys):
    """The checks refuse only what is wrong: valid options of each command start the work."""
    for argv in (EVAL + ["--attack", "pgd", "--steps", "0", "--eps", "0.01", "--seed", str(2**63 - 1)],
                 EVAL + ["--attack", "patch", "--fit-n", "5"], CAL + ["--clean-only"], CHECK + ["--out", "c.json"],
                 CERT + ["--radii", "0.1"], EVAL + ["--device", "auto"],
                 ["eval", "--modality", "depth", "--attack", "patch", "--fit-n", "4"]):
        rc, err = run_cli(argv, capsys)
        assert rc == "work", (argv, rc, err)


def test_calibrate_out_naming_the_model_weights_is_refused(no_work, capsys, heads_file):
    """calibrate writes X.safetensors and X.json: neither may be the --model's own files."""
    stem = heads_file.with_suffix("")
    before = heads_file.read_bytes()
    rc, err = run_cli(CAL[:-1] + [str(stem) + ".json", "--model", f"tinybind:{stem}"], capsys)
    assert rc == 2 and "would overwrite an input" in err, err
    assert heads_file.read_bytes() == before


def test_out_inside_the_dataset_root_may_not_overwrite_a_file(no_work, capsys, tmp_path):
    root = tmp_path / "esc"
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "esc50.csv").write_text("filename,fold,target,category\n")
    rc, err = run_cli(["eval", "--modality", "audio", "--data", "esc50", "--root", str(root),
                       "--out", str(root / "meta" / "esc50.csv")], capsys)
    assert rc == 2 and "would overwrite an input" in err, err
    assert run_cli(["eval", "--modality", "audio", "--data", "esc50", "--root", str(root),
                    "--out", str(root / "new.json")], capsys)[0] == "work"  # a new file there is fine


def test_report_out_folder_holding_an_input_as_summary_csv_is_refused(tmp_path, capsys):
    from test_hostile_user import _record

    (tmp_path / "summary.csv").write_text(_record().to_json())
    rc, err = run_cli(["report", str(tmp_path / "summary.csv"), "--out", str(tmp_path)], capsys)
    assert rc == 2 and "would overwrite an input" in err, err
    assert json.loads((tmp_path / "summary.csv").read_text())["n"] == 4


def test_report_reads_a_file_named_twice_through_another_path_once(tmp_path, capsys):
    from test_hostile_user import _record

    (tmp_path / "d").mkdir()
    f = tmp_path / "r.json"
    f.write_text(_record().to_json())
    assert run_cli(["report", str(f), str(tmp_path / "d" / ".." / "r.json"), "--out", str(tmp_path / "rep"), "-q"],
                   capsys)[0] == 0
    assert len((tmp_path / "rep" / "summary.csv").read_text().splitlines()) == 2


def test_library_entry_points_check_before_any_work(no_work):
    """run_eval, run_job and the command functions refuse what the CLI refuses."""
    from robustmm.job import run_job
    from robustmm.job.commands import check_attack_command
    from robustmm.job.eval_command import EvalRequest, run_eval

    with pytest.raises(RobustMMError, match="--batch-size must be >= 1"):
        run_eval(EvalRequest(modality="image", batch_size=0))
    with pytest.raises(RobustMMError, match="--out is empty"):
        run_eval(EvalRequest(modality="image", out=""))
    with pytest.raises(RobustMMError, match="pass one, not both"):
        run_job({}, "r", resume=True, overwrite=True)
    with pytest.raises(RobustMMError, match="--out is empty"):
        run_job({}, "")
    with pytest.raises(RobustMMError, match="--n must be >= 1"):
        check_attack_command(model="tinybind", data="synthscenes", split="test", root=None, n=0, modality="image",
                             steps=1, heads=None, surrogate=None, out=None)


def test_resolve_device_and_check_seed():
    assert resolve_device("cpu") == "cpu" and resolve_device("cpu:0") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("", " cpu", "CPU", "meta", "gpu", "cuda:-1"):
        with pytest.raises(RobustMMError):
            resolve_device(bad)
    check_seed(None)
    check_seed(0)
    check_seed(2**63 - 1)
    for bad in (-1, 2**63, True, 1.5):
        with pytest.raises(RobustMMError, match=r"\[0, 2\*\*63 - 1\]"):
            check_seed(bad)


def test_check_not_an_input_compares_resolved_paths(tmp_path):
    (tmp_path / "m.safetensors").write_text("x")
    ins = input_paths(models=[f"tinybind:{tmp_path / 'm'}", None, "tinybind"], heads=str(tmp_path / "h"))
    for out in (tmp_path / "m.json", tmp_path / "sub" / ".." / "m.safetensors", tmp_path / "h.json"):
        with pytest.raises(RobustMMError, match="would overwrite an input"):
            check_not_an_input([out], ins)
    check_not_an_input([tmp_path / "r.json"], ins)
