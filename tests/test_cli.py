"""The robustmm command line: listings, one-line errors with exit code 2, eval and run outputs."""
import json
import subprocess
import sys

import pytest

from robustmm.cli import main


@pytest.mark.parametrize("what, expect", [("models", "tinybind"), ("datasets", "synthscenes"),
                                          ("modalities", "pointcloud"), ("attacks", "")])
def test_list(capsys, what, expect):
    assert main(["list", what]) == 0
    assert expect in capsys.readouterr().out


@pytest.mark.parametrize("argv, needle", [
    (["eval", "--model", "tinybnd", "--modality", "image"], "did you mean 'tinybind'"),
    (["eval", "--model", "tinybind:/nonexistent/x", "--modality", "image"], "not found"),
    (["eval", "--modality", "smell"], "unknown modality 'smell'"),
    (["eval", "--data", "synthscenes", "--modality", "image", "--eps", "-1", "--attack", "pgd"], "--eps must be >= 0"),
    (["run", "/nonexistent/job.toml"], "config file not found"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_console_script_error_has_no_traceback():
    p = subprocess.run([sys.executable, "-m", "robustmm", "eval", "--model", "nope", "--modality", "image"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_run_clean_only_job(tmp_path, trained, capsys):
    cfg = tmp_path / "clean.toml"
    cfg.write_text("[run]\nquick_n = 30\n[pgd]\nenabled = false\n[patch]\nenabled = false\n[sga]\nenabled = false\n"
                   "[xmai]\nenabled = false\n[calibration]\nenabled = false\n[checks]\nenabled = false\n"
                   "[report]\nexamples = false\n")
    assert main(["run", str(cfg), "--quick", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "pointcloud" in out and "zero-shot top-1" in out
    rows = [json.loads(line) for line in (tmp_path / "o" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["threat"] == "clean" for r in rows)


def test_eval_writes_schema_json(tmp_path, trained, capsys):
    out = tmp_path / "{model}_{modality}.json"
    assert main(["eval", "--model", "tinybind", "--data", "synthscenes", "--modality", "audio", "--n", "40",
                 "-q", "--out", str(out)]) == 0
    d = json.loads((tmp_path / "tinybind_audio.json").read_text())
    assert d["schema"] == "robustmm.result/1" and d["modality"] == "audio" and d["n"] == 40


@pytest.mark.slow  # the whole default job (every attack, calibration): minutes on 2 cores
def test_run_quick_writes_everything_and_resumes(tmp_path, trained, capsys):
    out = tmp_path / "run"
    assert main(["run", "--quick", "--out", str(out), "-q"]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["modality"] for r in rows if r["threat"] == "clean"} == {"image", "video", "audio", "depth", "thermal", "pointcloud"}
    assert (out / "summary.csv").read_text().count("\n") == len(rows) + 1
    report = (out / "report.md").read_text()
    for section in ("Clean evaluation", "Per-modality vulnerability", "Attack comparison", "Calibration heads",
                    "Sanity checks"):
        assert section in report
    assert (out / "plots" / "robustness_top1.png").exists() and (out / "plots" / "gallery_image.png").exists()
    # a second run refuses to clobber; --resume finishes without duplicating rows
    assert main(["run", "--quick", "--out", str(out), "-q"]) == 2
    assert main(["run", "--quick", "--out", str(out), "-q", "--resume"]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == len(rows)
