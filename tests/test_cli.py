"""The robustmm command line: listings, one-line errors with exit code 2, eval and run outputs."""
import json
import subprocess
import sys

import pytest
from _tiny import NO_PATCH_SGA_XMAI  # noqa: E402  (tests/ is on sys.path)

from robustmm.cli import main


@pytest.mark.parametrize("what, expect", [("models", "tinybind"), ("datasets", "synthscenes"),
                                          ("modalities", "pointcloud"), ("attacks", "pgd")])
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


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    """Files a user might pass by mistake: broken TOML, broken results, truncated heads."""
    d = tmp_path_factory.mktemp("bad")
    (d / "broken.toml").write_text("[run\nmodel = ")
    (d / "unknown_model.toml").write_text('[run]\nmodel = "tinybnd"\n')
    (d / "unknown_modality.toml").write_text('[run]\nmodalities = ["imagee"]\n')
    (d / "results.jsonl").write_text('{"schema": "robustmm.result/1"\nnot json\n{}\n')
    (d / "other.json").write_text('{"schema": "something-else"}')
    (d / "heads.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    (d / "heads.json").write_text(json.dumps({"format": "robustmm.heads/1", "encoder": "tinybind",
                                              "heads": {"image": {"dim": 384, "hidden": 128}}}))
    (d / "afile").write_text("x")
    (d / "typo_section.toml").write_text("[pdg]\nsteps = 3\n")
    (d / "typo_key.toml").write_text("[pgd]\nstesp = 3\n")
    return d


# every way a user can get the command line wrong: one line on stderr, exit code 2, no traceback
AUDIT = [
    (["eval", "--modality", "image", "--n", "abc"], "invalid int value"),
    (["eval"], "--modality"),
    (["frobnicate"], "invalid choice"),
    (["eval", "--modality", "image", "--norm", "l3"], "invalid choice"),
    (["eval", "--data", "synthscene", "--modality", "image"], "did you mean 'synthscenes'"),
    (["eval", "--modality", "imag"], "did you mean 'image'"),
    (["eval", "--modality", "image", "--attack", "pgdd"], "did you mean 'pgd'"),
    (["eval", "--modality", "image", "--attack", "pgd", "--eps", "nan"], "eps"),
    (["eval", "--modality", "image", "--n", "0"], "n must be"),
    (["eval", "--modality", "image", "--split", "validation"], "split"),
    (["eval", "--modality", "image", "--data", "coco", "--root", "/nonexistent"], "/nonexistent"),
    (["eval", "--modality", "image", "--model", "open_clip:ViT-B-32@laion2b_s34b_b79k"], "weights"),
    (["eval", "--modality", "image", "--heads", "/nonexistent/h.safetensors"], "not found"),
    (["eval", "--modality", "image", "--heads", "{bad}/heads.safetensors"], "corrupted or truncated"),
    (["eval", "--modality", "image", "--device", "cuda:7"], "cuda"),
    (["calibrate", "--modality", "image", "--objective", "infonc", "--out", "{bad}/h.safetensors"], "did you mean 'infonce'"),
    (["run", "{bad}/broken.toml"], "invalid TOML"),
    (["run", "{bad}/unknown_model.toml", "--out", "{bad}/o1"], "did you mean 'tinybind'"),
    (["run", "{bad}/unknown_modality.toml", "--out", "{bad}/o2"], "did you mean 'image'"),
    (["run", "--quick", "--out", "{bad}/afile"], "afile"),
    (["report", "{bad}/results.jsonl", "--out", "{bad}/r"], "not valid JSON"),
    (["report", "{bad}/other.json", "--out", "{bad}/r"], "robustmm.result/1"),
    (["report", "/nonexistent.jsonl", "--out", "{bad}/r"], "nonexistent"),
    (["check-attack", "--modality", "text"], "'text' is not one"),
    (["run", "--out", "runs/{modell}"], "unknown template field {modell}; use {model} {data} {config}"),
    (["calibrate", "--modality", "image", "--out", "{bad}/{mod}.safetensors"], "unknown template field {mod}"),
    (["run", "{bad}/typo_section.toml"], "did you mean '[pgd]'"),
    (["run", "{bad}/typo_key.toml"], "did you mean 'steps'"),
]


@pytest.mark.parametrize("argv, needle", AUDIT, ids=[" ".join(a[:2]) + f" #{i}" for i, (a, _) in enumerate(AUDIT)])
def test_cli_audit_one_line_errors(capsys, bad_files, argv, needle):
    argv = [a.replace("{bad}", str(bad_files)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err, err
    assert "\n" not in err and "Traceback" not in err


def test_console_script_error_has_no_traceback():
    p = subprocess.run([sys.executable, "-m", "robustmm", "eval", "--model", "nope", "--modality", "image"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_run_clean_only_job(tmp_path, trained, capsys):
    cfg = tmp_path / "clean.toml"
    cfg.write_text("[run]\nquick_n = 30\n[pgd]\nenabled = false\n[patch]\nenabled = false\n[sga]\nenabled = false\n"
                   "[xmai]\nenabled = false\n[calibration]\nenabled = false\n[checks]\nenabled = false\n"
                   "[ensemble]\nenabled = false\n[certification]\nenabled = false\n[input_defenses]\nenabled = false\n"
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
    clean_modalities = {r["modality"] for r in rows if r["threat"] == "clean"}
    assert clean_modalities == {"image", "video", "audio", "depth", "thermal", "pointcloud"}
    assert (out / "summary.csv").read_text().count("\n") == len(rows) + 1
    report = (out / "report.md").read_text()
    for section in ("Clean evaluation", "Per-modality vulnerability", "Attack comparison", "Calibration heads",
                    "Sanity checks"):
        assert section in report
    assert (out / "plots" / "robustness_worst.png").exists() and (out / "plots" / "gallery_image.png").exists()
    # a second run refuses to clobber; --resume finishes without duplicating rows
    assert main(["run", "--quick", "--out", str(out), "-q"]) == 2
    assert main(["run", "--quick", "--out", str(out), "-q", "--resume"]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == len(rows)


def test_run_amp_marks_every_attack(tmp_path, rand_encoder):
    """`run --amp`: PGD curves, calibration and the checks all run under bfloat16 autocast (on CPU
    here), say so in their records, and still stay inside the budget."""
    rand_encoder.save(tmp_path / "model")
    cfg = tmp_path / "amp.toml"
    cfg.write_text(f"""
[run]
model = "tinybind:{tmp_path / 'model'}"
quick_n = 12
quick_attack_n = 12
modalities = ["thermal"]
batch_size = 12
[pgd]
quick_steps = 1
{NO_PATCH_SGA_XMAI}
[calibration]
quick_train_n = 12
epochs = 2
quick_steps = 1
clean_control = false
[checks]
quick_n = 12
quick_steps = [1, 2]
surrogate = ""
[ensemble]
quick_steps = 1
quick_n_queries = 5
quick_n = 6
[certification]
enabled = false
[report]
examples = false
""")
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--quick", "--amp", "--out", str(out), "-q"]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    attacked = [r for r in rows if r["attack"]]
    assert {r["extra"]["cell"].split("|", 2)[2] for r in attacked} >= {"pgd-curve", "calibration:ce", "checks"}
    for r in attacked:
        a = r["attack"]["base"] if r["attack"]["name"] == "sanity-checks" else r["attack"]
        assert a.get("amp") == "bfloat16", r["extra"]["cell"]


def test_run_out_is_templated(tmp_path, trained):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("[run]\nquick_n = 8\nmodalities = [\"audio\"]\n[pgd]\nenabled = false\n" + NO_PATCH_SGA_XMAI +
                   "[calibration]\nenabled = false\n[checks]\nenabled = false\n[ensemble]\nenabled = false\n"
                   "[certification]\nenabled = false\n[report]\nexamples = false\n")
    assert main(["run", str(cfg), "--quick", "-q", "--out", str(tmp_path / "{config}-{model}-{data}")]) == 0
    assert (tmp_path / "tiny-tinybind-synthscenes" / "results.jsonl").exists()


def test_eval_curve_then_report_then_check_attack(tmp_path, rand_encoder, capsys):
    """The success paths of `eval --eps A B` (a nested curve), `report` and `check-attack`."""
    rand_encoder.save(tmp_path / "model")
    model = f"tinybind:{tmp_path / 'model'}"
    common = ["--model", model, "--modality", "thermal", "--n", "8"]
    assert main(["eval", *common, "--attack", "pgd", "--eps", "0.01", "0.03", "--steps", "1", "-q",
                 "--out", str(tmp_path / "curve.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "curve.jsonl").read_text().splitlines()]
    assert [r["attack"]["eps"] for r in rows] == [0.01, 0.03] and all(r["attack"]["steps"] == 1 for r in rows)
    assert main(["report", str(tmp_path / "curve.jsonl"), "--out", str(tmp_path / "rep"), "-q"]) == 0
    assert (tmp_path / "rep" / "summary.csv").read_text().count("\n") == 3
    assert "thermal" in (tmp_path / "rep" / "report.md").read_text()
    assert main(["check-attack", *common, "--steps", "1", "-q", "--out", str(tmp_path / "checks.json")]) in (0, 1)
    checks = json.loads((tmp_path / "checks.json").read_text())
    assert checks and "Traceback" not in capsys.readouterr().err


def test_run_help_lists_wait(capsys):
    assert main(["run", "--help"]) == 0
    assert "--wait" in capsys.readouterr().out
