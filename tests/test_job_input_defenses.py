"""Input defenses in `robustmm eval --defense` and the job's [input_defenses] cell: clean, naive and
adaptive (BPDA / EOT) records side by side, the undefended reference, the report table, and the
one-line errors (unknown defense or setting, bad values, BPDA/EOT with nothing to do, EOT samples)."""
import json

import pytest

from robustmm.cli import main
from robustmm.encoders.input_transforms import build_defense
from robustmm.errors import RobustMMError
from robustmm.job import cell_kinds, parse_config, run_job
from robustmm.job.cells.input_defenses import adaptive_for, parse_settings
from robustmm.job.context import JobContext
from robustmm.job.runner import job_cells


def only(kind: str, **sections) -> dict:
    """A job with every cell kind off except ``kind`` (and whatever ``sections`` set)."""
    raw = {k.name: {"enabled": False} for k in cell_kinds() if k.name not in ("attacks", kind)}
    raw["report"] = {"examples": False}
    return raw | sections


@pytest.fixture(scope="module")
def job_results(tmp_path_factory, trained, one_thread):
    out = tmp_path_factory.mktemp("job") / "o"
    config = parse_config(only("input_defenses", run={"quick_n": 16, "quick_attack_n": 16, "batch_size": 16,
                                                      "modalities": ["image", "audio"]},
                               input_defenses={"quick_n": 16, "quick_steps": 5,
                                               "settings": {"jpeg": {"quality": 60}}}))
    return run_job(config, out, quick=True, progress=False), out


def test_cell_writes_clean_naive_and_adaptive_per_defense(job_results):
    results, _ = job_results
    by = {}
    for r in results:
        by.setdefault(r.defense["name"], {})[r.threat] = r
    assert set(by) == {"bit-depth", "jpeg", "random-resize-pad"}  # image only: audio is not in the default modalities
    for name, rs in by.items():
        assert set(rs) == {"clean", "white-box", "adaptive"}
        settings = {"quality": 60} if name == "jpeg" else {}
        assert all(r.defense == build_defense(name, **settings).describe() for r in rs.values())
        assert all(r.modality == "image" and r.n == 16 for r in rs.values())
        ref = rs["white-box"].extra["undefended"]
        assert ref["clean"] > 0.5 and ref["attacked"] < ref["clean"]
    assert by["bit-depth"]["adaptive"].attack.get("bpda") and "eot_samples" not in by["bit-depth"]["adaptive"].attack
    assert by["jpeg"]["adaptive"].attack.get("bpda")
    assert by["random-resize-pad"]["adaptive"].attack.get("eot_samples") == 2  # quick_eot_samples
    assert not by["random-resize-pad"]["adaptive"].attack.get("bpda")
    assert "bpda" not in by["bit-depth"]["white-box"].attack  # naive is the plain attack
    # BPDA takes back what rounding hid: the adaptive attack is stronger than the naive one
    top1 = {t: r.metrics["attacked"]["zeroshot_top1"] for t, r in by["bit-depth"].items() if t != "clean"}
    assert top1["adaptive"] < top1["white-box"]


def test_report_has_the_naive_vs_adaptive_table(job_results):
    _, out = job_results
    text = (out / "report.md").read_text()
    section = text.split("## Input defenses: naive vs adaptive")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| image")]
    assert len(rows) == 3
    assert any("jpeg (quality=60)" in r and "BPDA" in r for r in rows)
    assert any("random-resize-pad" in r and "EOT-2" in r for r in rows)
    # the input-defense records stay out of the undefended attack comparison
    assert "## Attack comparison" not in text


def test_cells_follow_run_modalities_and_skip_what_does_not_apply(trained):
    cfg = parse_config(only("input_defenses", run={"modalities": ["audio", "thermal"]},
                            input_defenses={"modalities": ["audio"]}))  # image here: refused (test_config_meanings.py)
    assert [c.key for c in job_cells(JobContext(cfg, quick=True))] == ["tinybind|audio|input-defense:bit-depth"]


@pytest.mark.parametrize("table, needle", [
    ({"defenses": ["jpg"]}, "did you mean 'jpeg'"),
    ({"settings": {"jpeg": {"qualty": 5}}}, "did you mean 'quality'"),
    ({"settings": {"jpeg": {"quality": 500}}}, "[input_defenses] settings.jpeg: jpeg: quality must be an integer"),
    ({"settings": {"jpeg": 3}}, "settings.jpeg: expected a table of keys"),
    ({"defenses": ["jpeg"], "settings": {"bit-depth": {"bits": 2}}}, "unknown defense in [input_defenses] settings"),
    ({"eot_samples": 0}, "[input_defenses] eot_samples: expected an integer > 0, got 0"),
    ({"attack": "pgdd"}, "did you mean 'pgd'"),
])
def test_bad_sections_are_caught_at_load(table, needle):
    with pytest.raises(RobustMMError) as e:
        parse_config({"input_defenses": table}, "job.toml")
    assert needle in str(e.value)


def test_adaptive_for_picks_bpda_eot_or_both_and_refuses_nonsense(trained):
    from robustmm.attacks import build_attack
    from robustmm.attacks.bpda import BPDA
    from robustmm.attacks.eot import EOT
    from robustmm.encoders.input_transforms import defend

    pgd = build_attack("pgd")
    assert isinstance(adaptive_for(defend(trained, "bit-depth"), pgd), BPDA)
    eot = adaptive_for(defend(trained, "random-resize-pad"), pgd, eot_samples=3)
    assert isinstance(eot, EOT) and eot.samples == 3 and not isinstance(eot.inner, BPDA)
    with pytest.raises(RobustMMError, match="nothing|no non-differentiable step"):
        adaptive_for(defend(trained, "random-resize-pad"), pgd, mode="bpda")
    with pytest.raises(RobustMMError, match="not randomized"):
        adaptive_for(defend(trained, "jpeg"), pgd, mode="eot")
    with pytest.raises(RobustMMError, match="EOT samples must be an integer >= 1"):
        adaptive_for(defend(trained, "random-resize-pad"), pgd, eot_samples=0)


def test_randomized_defenses_are_attacked_without_early_stopping(trained):
    """An item broken in the draws an early-stopping attack saw is not broken for good against a
    randomized defense, so both the naive and the adaptive attack run every step there (the
    ensemble, which early-stops by default, included); deterministic defenses keep the setting."""
    from robustmm.attacks import build_attack
    from robustmm.encoders.input_transforms import defend
    from robustmm.job.cells.input_defenses import judged_on_every_draw

    for name in ("ensemble", "apgd", "pgd"):
        attack = build_attack(name, early_stop=True)
        eot = adaptive_for(defend(trained, "random-resize-pad"), attack, eot_samples=2)
        assert eot.settings()["early_stop"] is False, name
        assert adaptive_for(defend(trained, "bit-depth"), attack).settings()["early_stop"] is True, name
        assert judged_on_every_draw(attack).settings()["early_stop"] is False
    noise = build_attack("noise")
    assert judged_on_every_draw(noise) is noise  # nothing to switch off


def test_parse_settings():
    assert parse_settings(["quality=50", "max_scale=1.5", "name=x"]) == {"quality": 50, "max_scale": 1.5, "name": "x"}
    with pytest.raises(RobustMMError, match="KEY=VALUE"):
        parse_settings(["quality"])


@pytest.mark.parametrize("argv, needle", [
    (["--defense", "jpg"], "did you mean 'jpeg'"),
    (["--defense", "jpeg", "--defense-setting", "qualty=5"], "did you mean 'quality'"),
    (["--defense", "jpeg", "--defense-setting", "quality=0"], "quality must be an integer in [1, 95]"),
    (["--defense", "random-resize-pad", "--attack", "pgd", "--adaptive", "bpda"], "no non-differentiable step"),
    (["--defense", "random-resize-pad", "--attack", "pgd", "--adaptive", "--eot-samples", "0"], "EOT samples must be"),
    (["--defense", "jpeg", "--adaptive"], "--adaptive needs --attack"),
    (["--defense-setting", "quality=5"], "need --defense"),
    (["--defense", "jpeg", "--heads", "h.safetensors"], "exclude each other"),
])
def test_eval_defense_errors_are_one_line_before_any_work(capsys, monkeypatch, argv, needle):
    import robustmm.encoders

    monkeypatch.setattr(robustmm.encoders, "load_encoder", lambda *a, **k: pytest.fail("model loaded"))
    assert main(["eval", "--modality", "image", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_eval_defense_adaptive_writes_naive_and_adaptive(tmp_path, trained, capsys, one_thread):
    out = tmp_path / "r.jsonl"
    assert main(["eval", "--modality", "image", "--n", "8", "--attack", "pgd", "--steps", "2", "--defense", "bit-depth",
                 "--defense-setting", "bits=4", "--adaptive", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["threat"] for r in rows] == ["white-box", "adaptive"]
    assert all(r["defense"] == {"name": "bit-depth", "bits": 4, "marks": ["non-differentiable"]} for r in rows)
    assert rows[1]["attack"]["bpda"] is True and "BPDA" in capsys.readouterr().out
