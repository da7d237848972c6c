"""`robustmm certify` (one result record, threat "certified", one-line errors before any work) and
the job's [certification] cell (bare and noise-head per modality, SmoothAdv beside, report table and
plot of certified accuracy against radius)."""
import json
import math

import pytest

from robustmm.cli import main
from robustmm.errors import RobustMMError
from robustmm.job import cell_kinds, parse_config, run_job


@pytest.fixture
def no_model(monkeypatch):
    import robustmm.encoders

    monkeypatch.setattr(robustmm.encoders, "load_encoder", lambda *a, **k: pytest.fail("model loaded"))


@pytest.mark.parametrize("argv, needle", [
    (["--sigma", "0"], "sigma must be a finite number > 0"),
    (["--sigma", "-0.1"], "sigma must be a finite number > 0"),
    (["--sigma", "nan"], "sigma must be a finite number > 0"),
    (["--sigma", "inf"], "sigma must be a finite number > 0"),
    (["--sigma", "0.1", "--n0", "0"], "--n0 must be >= 1"),
    (["--sigma", "0.1", "--draws", "0"], "--draws must be >= 1"),
    (["--sigma", "0.1", "--n", "0"], "--n must be >= 1"),
    (["--sigma", "0.1", "--alpha", "0"], "alpha must lie strictly between 0 and 1"),
    (["--sigma", "0.1", "--alpha", "1"], "alpha must lie strictly between 0 and 1"),
    (["--sigma", "0.1", "--items", "0"], "--n must be >= 1"),
    (["--sigma", "0.1", "--radii", "-1"], "--radii must be finite and >= 0"),
    (["--sigma", "0.1", "--heads", "nope.safetensors"], "heads file not found"),
    (["--sigma", "0.1", "--modality", "smell"], "unknown modality 'smell'"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, no_model, argv, needle):
    argv = ["certify", "--modality", "image", "--out", str(tmp_path / "c.json"), *argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "c.json").exists()


def test_out_is_probed_first(tmp_path, capsys, no_model):
    (tmp_path / "afile").write_text("x")
    assert main(["certify", "--modality", "image", "--sigma", "0.1", "--out", str(tmp_path / "afile" / "c.json")]) == 2
    assert "cannot be written" in capsys.readouterr().err


def test_a_modality_without_a_zero_shot_task_is_refused(tmp_path, capsys, no_model, monkeypatch, synth_small):
    import robustmm.data

    untasked = synth_small.subset(list(range(4)))
    untasked.tasks = {}
    monkeypatch.setattr(robustmm.data, "load_dataset", lambda *a, **k: untasked)
    assert main(["certify", "--modality", "image", "--sigma", "0.1", "--out", str(tmp_path / "c.json")]) == 2
    assert "has no zero-shot task for 'image'" in capsys.readouterr().err


def test_certify_writes_a_certified_record_equal_to_the_library(tmp_path, trained, capsys, one_thread):
    import robustmm
    from robustmm.evaluation.certification import certify_dataset

    out = tmp_path / "{model}-{modality}.json"
    assert main(["certify", "--modality", "pointcloud", "--n", "4", "--sigma", "0.02", "--draws", "24", "--n0", "6",
                 "--alpha", "0.01", "--smoothadv", "2", "--out", str(out)]) == 0
    assert "certified top-1 r=0:" in capsys.readouterr().out
    d = json.loads((tmp_path / "tinybind-pointcloud.json").read_text())
    assert d["schema"] == "robustmm.result/1" and d["threat"] == "certified" and d["n"] == 4
    assert {k: d["defense"][k] for k in ("name", "sigma", "n", "n0", "alpha")} == {
        "name": "randomized-smoothing", "sigma": 0.02, "n": 24, "n0": 6, "alpha": 0.01}
    cert = d["metrics"]["certified"]
    assert list(cert["top1"]) == ["0", "0.008", "0.016", "0.032"] and cert["radii"][0] == 0
    assert cert["unreachable"] == ["0.032"] and cert["top1"]["0.032"] is None  # 24 draws reach 0.0187 at most
    reached = [v for v in cert["top1"].values() if v is not None]
    assert all(0 <= v <= 1 for v in reached)
    assert reached == sorted(reached, reverse=True)  # never rises with the radius
    assert d["metrics"]["empirical"]["n_items"] == 2 and set(d["metrics"]["empirical"]["top1"]) == set(cert["top1"])
    direct = certify_dataset(robustmm.load_encoder("tinybind"), robustmm.load_dataset("synthscenes", n=4),
                             modality="pointcloud", sigma=0.02, n=24, n0=6, alpha=0.01, progress=False)
    assert direct.metrics["certified"]["top1"] == cert["top1"]


@pytest.fixture(scope="module")
def job(tmp_path_factory, trained, one_thread):
    out = tmp_path_factory.mktemp("job") / "o"
    raw = {k.name: {"enabled": False} for k in cell_kinds() if k.name not in ("attacks", "certification")}
    raw |= {"report": {"examples": False},
            "run": {"quick_n": 6, "quick_attack_n": 6, "batch_size": 6, "modalities": ["audio", "pointcloud"]},
            "certification": {"sigmas": {"pointcloud": [0.02, 0.05]}, "quick_draws": 16, "quick_n0": 4,
                              "quick_train_n": 16, "quick_epochs": 3, "quick_smoothadv_n": 2}}
    return run_job(parse_config(raw), out, quick=True, progress=False), out


def test_cell_certifies_bare_and_noise_head_per_modality_and_sigma(job):
    results, out = job
    assert [r.extra["cell"] for r in results] == [
        "tinybind|audio|certification:sigma=0.01", "tinybind|audio|certification:noise-head:sigma=0.01",
        "tinybind|pointcloud|certification:sigma=0.02", "tinybind|pointcloud|certification:noise-head:sigma=0.02",
        "tinybind|pointcloud|certification:sigma=0.05", "tinybind|pointcloud|certification:noise-head:sigma=0.05"]
    for r in results:
        assert r.threat == "certified" and r.n == 6
        assert (r.defense["n"], r.defense["n0"], r.defense["alpha"]) == (16, 4, 0.001)
        assert set(r.metrics["empirical"]["top1"]) == set(r.metrics["certified"]["top1"])
        heads = r.defense["heads"]
        assert (heads is None) == ("noise-head" not in r.extra["cell"])
        if heads:
            assert heads["noise"] == {"sigma": r.defense["sigma"], "draws": 2} and heads["objective"] == "ce"
    assert (out / "heads" / "tinybind-audio-noise-sigma0.01.safetensors").exists()


def test_report_table_and_plot(job):
    results, out = job
    text = (out / "report.md").read_text()
    section = text.split("## Certified robustness (randomized smoothing)")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| audio") or line.startswith("| pointcloud")]
    assert len(rows) == 6 and sum("ce head (noise-trained)" in r for r in rows) == 3
    first = results[0].metrics["certified"]["top1"]["0"]
    assert f"0: {first:.3f} /" in rows[0]
    assert (out / "plots" / "certified.png").exists() and "plots/certified.png" in text


@pytest.mark.parametrize("table, needle", [
    ({"sigmas": {"image": [0]}}, "[certification] sigmas.image: sigma must be a finite number > 0"),
    ({"sigmas": {"image": []}}, "expected at least one sigma"),
    ({"sigmas": {"smell": [0.1]}}, "unknown modality 'smell'"),
    ({"alpha": 1.0}, "[certification] alpha: must lie strictly between 0 and 1"),
    ({"quick_draws": 0}, "[certification] quick_draws: expected an integer > 0"),
])
def test_bad_sections_are_caught_at_load(table, needle):
    with pytest.raises(RobustMMError) as e:
        parse_config({"certification": table}, "job.toml")
    assert needle in str(e.value)


def test_sigma_values_are_finite_in_the_default_job():
    from robustmm.job import default_config
    from robustmm.job.cells.certification import sigmas_for

    sec = default_config().section("certification")
    for m in ("image", "video", "audio", "depth", "thermal", "pointcloud"):
        assert [s for s in sigmas_for(sec, m) if math.isfinite(s) and s > 0]
