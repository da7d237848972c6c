"""One budget parser for the CLI, job files and the Python API: fractions as people write them
(``4/255``), and a budget wider than the modality's domain refused in one line."""
import pytest

import robustmm.modalities as modalities
from robustmm.cli import main
from robustmm.errors import BudgetError


@pytest.mark.parametrize("text, value", [("4/255", 4 / 255), (" 8 / 255 ", 8 / 255), ("0.01", 0.01), (0.5, 0.5),
                                         (0, 0.0), ("1e-3", 0.001)])
def test_parse_budget_reads_numbers_and_fractions(text, value):
    assert modalities.parse_budget(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["4/0", "four", "-1", "nan", "inf", True, None, "4/255/2", "-4/255"])
def test_parse_budget_refuses_in_one_line(bad):
    with pytest.raises(BudgetError) as e:
        modalities.parse_budget(bad, "--eps")
    assert str(e.value).startswith("--eps must") and "\n" not in str(e.value)


def test_check_budget_refuses_a_budget_wider_than_the_domain():
    with pytest.raises(BudgetError, match=r"eps 4 exceeds the image domain \[0, 1\].*did you mean 4/255\?"):
        modalities.get_modality("image").check_budget(4.0)
    with pytest.raises(BudgetError, match="exceeds the audio domain"):
        modalities.get_modality("audio").check_budget(4.0)
    assert modalities.get_modality("image").check_budget(16 / 255) == 16 / 255
    assert modalities.get_modality("image").check_budget(4.0, "l2") == 4.0  # L2 sums over coordinates: not bounded


def test_attacks_take_fractions():
    from robustmm.attacks.apgd import APGD
    from robustmm.attacks.pgd import PGD

    assert PGD(eps="4/255").eps == pytest.approx(4 / 255)
    assert APGD(eps="2/255").eps == pytest.approx(2 / 255)


def test_job_file_takes_fractions():
    from robustmm.job import parse_config

    job = parse_config({"sga": {"eps": "2/255"}, "attacks": {"pgd": {"eps": ["4/255", 8 / 255]}}}, "job.toml")
    assert job.section("sga").eps == pytest.approx(2 / 255)
    assert job.tables()["attacks.pgd"].eps == pytest.approx([4 / 255, 8 / 255])


def test_job_file_refuses_a_budget_beyond_the_domain():
    from robustmm.job import parse_config
    from robustmm.job.sections import ConfigError

    with pytest.raises(ConfigError, match=r"job.toml: \[attacks.pgd\] eps: eps 4 exceeds the image domain.*4/255"):
        parse_config({"run": {"modalities": ["image"]}, "attacks": {"pgd": {"eps": [4]}}}, "job.toml")


def test_eval_accepts_a_fraction_and_records_its_value(tmp_path, capsys, trained, one_thread):
    out = tmp_path / "r.json"
    assert main(["eval", "--modality", "thermal", "--n", "4", "--attack", "pgd", "--steps", "1", "--eps", "4/255",
                 "--out", str(out), "-q"]) == 0
    import json

    assert json.loads(out.read_text())["attack"]["eps"] == pytest.approx(4 / 255)


@pytest.mark.parametrize("argv", [
    ["eval", "--modality", "image", "--attack", "pgd", "--eps", "4"],
    ["calibrate", "--modality", "image", "--eps", "4", "--out", "h.safetensors"],
])
def test_a_budget_beyond_the_domain_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, argv):
    import robustmm.encoders

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(robustmm.encoders, "load_encoder", lambda *a, **k: pytest.fail("model loaded"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "exceeds the image domain" in err and "did you mean 4/255?" in err and "\n" not in err


@pytest.mark.parametrize("name", ["pgd", "apgd", "square"])
def test_python_attacks_refuse_a_budget_beyond_the_domain(name, trained, synth_small):
    import robustmm
    from robustmm.attacks import build_attack

    with pytest.raises(BudgetError, match="did you mean 4/255"):
        robustmm.evaluate(trained, synth_small.head(2), modality="image", attack=build_attack(name, eps=4), progress=False)
    assert build_attack(name, eps="4/255").resolve("image").eps == pytest.approx(4 / 255)
