"""The worst-case ensemble in `robustmm run` ([ensemble]: bare and adaptive through every calibrated
head, parts alone, per-item worst case) and in `robustmm check-attack`; the new checks (ensemble no
weaker than its parts, Square much stronger than APGD flagged as masking) and their report rows."""
import json

import pytest

from robustmm.cli import main
from robustmm.errors import RobustMMError
from robustmm.evaluation.checks import ensemble_checks
from robustmm.job import cell_kinds, parse_config, run_job
from robustmm.records import Result
from robustmm.report.markdown import render


def only(*kinds: str, **sections) -> dict:
    raw = {k.name: {"enabled": False} for k in cell_kinds() if k.name not in ("attacks", *kinds)}
    raw["report"] = {"examples": False}
    return raw | sections


@pytest.fixture(scope="module")
def job(tmp_path_factory, trained, one_thread):
    out = tmp_path_factory.mktemp("job") / "o"
    config = parse_config(only("ensemble", "calibration",
                               run={"quick_n": 16, "quick_attack_n": 16, "batch_size": 16, "modalities": ["image"]},
                               calibration={"quick_train_n": 64, "epochs": 10, "clean_control": False},
                               ensemble={"quick_steps": 3, "quick_n_queries": 20}))
    return run_job(config, out, quick=True, progress=False), out


def _attacked(r):
    return r.metrics["attacked"]["zeroshot_top1"]


def test_cells_and_records(job):
    results, _ = job
    cells = {}
    for r in results:
        cells.setdefault(r.extra["cell"], []).append(r)
    assert set(cells) == {"tinybind|image|calibration:ce", "tinybind|image|ensemble", "tinybind|image|ensemble:calibration:ce"}
    bare = cells["tinybind|image|ensemble"]
    assert [(r.attack["name"], r.threat, r.extra.get("ensemble_part")) for r in bare] == [
        ("ensemble", "white-box", None), ("apgd", "white-box", "apgd-ce"), ("apgd", "white-box", "apgd-t"),
        ("fab", "white-box", "fab-t"), ("square", "white-box", "square")]
    assert bare[0].attack["version"] == "cheap" and all(p["steps"] == 3 for p in bare[0].attack["parts"][:3])
    assert bare[0].attack["parts"][2]["n_target_classes"] == 3 and bare[0].attack["parts"][2]["early_stop"]
    assert bare[0].attack["parts"][3]["n_queries"] == 20 and bare[0].n == 12  # quick_n
    heads = cells["tinybind|image|ensemble:calibration:ce"]
    assert [r.threat for r in heads] == ["head-unaware", "adaptive", "worst-case"] + ["adaptive"] * 4
    assert all(r.defense["name"] == "calibration" and r.defense["objective"] == "ce" for r in heads)
    # the ensemble is at most the minimum of its parts; the worst case at most each threat
    for group in (bare, heads[1:2] + heads[3:]):
        assert _attacked(group[0]) <= min(_attacked(r) for r in group[1:])
    assert _attacked(heads[2]) <= min(_attacked(heads[0]), _attacked(heads[1]))
    names = [c["name"] for c in bare[0].extra["ensemble_checks"]]
    assert names == ["ensemble no weaker than its parts", "Square not much stronger than APGD"]
    assert heads[1].extra["ensemble_checks"][0]["passed"]


def test_report_shows_the_adaptive_ensemble_beside_the_head_unaware_number(job):
    results, out = job
    text = (out / "report.md").read_text()
    cal = text.split("## Calibration heads")[1].split("\n## ")[0]
    header = next(line for line in cal.splitlines() if line.startswith("| modality"))
    row = next(line for line in cal.splitlines() if line.startswith("| image"))
    cols = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")]))
    by = {(r.extra["cell"], r.threat, r.extra.get("ensemble_part")): r for r in results}
    ens = lambda t: f'{_attacked(by[("tinybind|image|ensemble:calibration:ce", t, None)]):.3f}'  # noqa: E731
    assert cols["**ensemble, adaptive**"] == ens("adaptive") and cols["ensemble, head-unaware"] == ens("head-unaware")
    assert cols["ensemble, worst case"] == ens("worst-case")
    assert cols["ensemble, no head"] == f'{_attacked(by[("tinybind|image|ensemble", "white-box", None)]):.3f}'
    # the PGD columns still come from the calibration cell, not from the ensemble's records
    assert cols["robust, adaptive"] == f'{_attacked(by[("tinybind|image|calibration:ce", "adaptive", None)]):.3f}'
    assert "Worst-case ensemble checks" in text and "tinybind + ce head (adaptive)" in text


def test_ensemble_checks_fail_when_they_should():
    ok = ensemble_checks({"apgd-ce": 0.2, "apgd-t": 0.15, "square": 0.3}, 0.1)
    assert [c.passed for c in ok] == [True, True]
    weaker = ensemble_checks({"apgd-ce": 0.2, "square": 0.3}, 0.25)
    assert not weaker[0].passed and "apgd-ce" in weaker[0].detail
    masked = ensemble_checks({"apgd-ce": 0.7, "apgd-t": 0.6, "square": 0.45}, 0.4)
    assert masked[0].passed and not masked[1].passed and masked[1].values == {"square": 0.45, "apgd-t": 0.6}
    assert ensemble_checks({"apgd-ce": 0.7, "square": 0.61}, 0.6)[1].passed  # 9 points: within the margin
    assert len(ensemble_checks({"apgd-ce": 0.5}, 0.5)) == 1  # no Square part: no masking check


def test_a_failed_ensemble_check_is_a_report_flag():
    checks = [c.__dict__ for c in ensemble_checks({"apgd-ce": 0.7, "square": 0.3}, 0.3)]
    r = Result(model={"name": "m"}, dataset={"name": "d", "split": "test"}, modality="image",
               attack={"name": "ensemble", "eps": 4 / 255}, defense=None, threat="white-box",
               metrics={"clean": {"zeroshot_top1": 0.9}, "attacked": {"zeroshot_top1": 0.3}, "asr": 0.6}, n=10, seed=0,
               timing_s=0.0,
               extra={"ensemble_checks": checks})
    text = render([r])
    assert "**FAIL** (square 0.30 / apgd-ce 0.70)" in text
    assert "- ⚠ m / image: Square not much stronger than APGD FAILS" in text


@pytest.mark.parametrize("table, needle", [
    ({"version": "cheep"}, "did you mean 'cheap'"),
    ({"attacks": ["apgd-x"]}, "apgd-x"),
    ({"steps": -1}, "[ensemble] steps: expected an integer >= 0"),
    ({"quick_n": 0}, "[ensemble] quick_n: expected an integer > 0"),
])
def test_bad_sections_are_caught_at_load(table, needle):
    with pytest.raises(RobustMMError) as e:
        parse_config({"ensemble": table}, "job.toml")
    assert needle in str(e.value)


def test_check_attack_runs_the_ensemble_and_its_checks(tmp_path, rand_encoder, one_thread):
    rand_encoder.save(tmp_path / "model")
    common = ["check-attack", "--model", f"tinybind:{tmp_path / 'model'}", "--modality", "thermal", "--n", "6",
              "--steps", "1", "-q"]
    assert main([*common, "--out", str(tmp_path / "c.json")]) in (0, 1)
    names = [c["name"] for c in json.loads((tmp_path / "c.json").read_text())["checks"]]
    assert names[-2:] == ["ensemble no weaker than its parts", "Square not much stronger than APGD"]
    assert main([*common, "--ensemble", "none", "--out", str(tmp_path / "n.json")]) in (0, 1)
    assert not any("ensemble" in c["name"] for c in json.loads((tmp_path / "n.json").read_text())["checks"])
