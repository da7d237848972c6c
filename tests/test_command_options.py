"""One meaning per option and records that say what ran: `--n` counts items in every command
(certify's noise draws are `--draws`), `--seed` reaches the attack and is recorded, the console
line names the threat once and the heads, heads of another modality are refused, a defense that
changes nothing is refused, and a nested curve on retrieval-only data attacks what still counts."""
import json
import logging

import pytest
import torch

from robustmm.cli import main
from robustmm.errors import RobustMMError


@pytest.fixture
def no_model(monkeypatch):
    import robustmm.encoders

    monkeypatch.setattr(robustmm.encoders, "load_encoder", lambda *a, **k: pytest.fail("model loaded"))


@pytest.fixture
def certify_args(monkeypatch):
    import robustmm.job.commands as commands

    seen = {}

    def fake(**kw):
        seen.update(kw)
        raise RobustMMError("stop")

    monkeypatch.setattr(commands, "certify_command", fake)
    return seen


def test_certify_n_counts_items_and_draws_count_noise(certify_args):
    assert main(["certify", "--modality", "image", "--sigma", "0.1", "--n", "5", "--draws", "64", "--out", "c.json"]) == 2
    assert (certify_args["n"], certify_args["draws"]) == (5, 64)


def test_certify_items_is_a_deprecated_alias_that_warns(certify_args, caplog):
    with caplog.at_level(logging.WARNING):
        assert main(["certify", "--modality", "image", "--sigma", "0.1", "--items", "5", "--out", "c.json"]) == 2
    assert certify_args["n"] == 5
    assert "--items is deprecated: use --n" in caplog.text


@pytest.mark.parametrize("attack", ["apgd", "square", "pgd"])
def test_eval_seed_reaches_the_attack(attack):
    from robustmm.job.eval_command import EvalRequest

    assert EvalRequest(modality="image", attack=attack, seed=7).attack_settings()["seed"] == 7


def test_eval_records_the_seed_of_the_attack(tmp_path, trained, one_thread):
    out = tmp_path / "r.json"
    assert main(["eval", "--modality", "thermal", "--n", "4", "--attack", "apgd", "--steps", "1", "--seed", "7",
                 "--out", str(out), "-q"]) == 0
    d = json.loads(out.read_text())
    assert d["seed"] == 7 and d["attack"]["seed"] == 7


def record(threat, defense):
    from robustmm.records import Result

    rates = {"zeroshot_top1": 0.5, "t2x_R@1": 0.5}
    return Result(model={"name": "tinybind"}, dataset={"name": "synthscenes"}, modality="image",
                  attack={"name": "pgd", "eps": 4 / 255}, defense=defense, threat=threat,
                  metrics={"clean": rates, "attacked": rates}, n=4, seed=0, timing_s=0.0)


def test_result_line_names_the_threat_once_and_the_heads():
    from robustmm.job.eval_command import result_line

    line = result_line(record("adaptive", {"name": "calibration", "objective": "ce"}))
    assert "(adaptive)" in line and "adaptive, adaptive" not in line and "with heads (calibration ce)" in line
    assert "behind jpeg" in result_line(record("adaptive", {"name": "jpeg", "marks": {}}))


@pytest.fixture
def audio_heads(tmp_path):
    from robustmm.encoders.heads import ResidualHead, save_heads

    path = tmp_path / "audio.safetensors"
    save_heads(path, {"audio": ResidualHead(8, 4)}, {"encoder": "tinybind"})
    return path


@pytest.mark.parametrize("argv", [
    ["eval", "--modality", "image"],
    ["certify", "--modality", "image", "--sigma", "0.1", "--out", "c.json"],
    ["check-attack", "--modality", "image"],
])
def test_heads_of_another_modality_are_refused_before_any_work(tmp_path, capsys, no_model, audio_heads, argv,
                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--heads", str(audio_heads)]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds heads for audio, not image" in err and "\n" not in err


def test_a_defense_that_changes_no_embedding_is_refused(rand_encoder, synth_small):
    from robustmm.encoders.heads import ResidualHead
    from robustmm.job.arg_checks import check_defense_changes

    head = ResidualHead(rand_encoder.embed_dim, 4)
    with torch.no_grad():
        head.up.weight.normal_()
    defended = rand_encoder.with_heads({"audio": head})
    with pytest.raises(RobustMMError, match="embeds image exactly like the bare encoder"):
        check_defense_changes(rand_encoder, defended, synth_small, "image")
    check_defense_changes(rand_encoder, defended, synth_small, "audio")


def test_nested_curve_on_retrieval_only_data_attacks_what_its_captions_still_find(trained, one_thread, monkeypatch):
    """x2t R@1 broken for every item (as on real images), t2x R@1 (the headline) not: the items
    its captions still find are attacked at every eps, and each record passes the record checks."""
    import robustmm
    import robustmm.evaluation.curves as curves
    from robustmm.attacks.pgd import PGD
    from robustmm.records import check_record

    monkeypatch.setattr(curves, "x2t_ranks", lambda items, *a, **k: torch.full((len(items),), 99))
    data = robustmm.load_dataset("synthscenes", split="test", n=12)
    data.tasks = {}
    curve = curves.robustness_curve(trained, data, modality="thermal", attack=PGD(steps=2), eps_grid=[1 / 255, 64 / 255],
                                    progress=False)
    last = curve[-1]
    assert last.extra["n_attacked"] > 0
    assert last.attacked("t2x_R@1") < last.clean("t2x_R@1")
    for r in curve:
        check_record(r.to_dict())


def test_calibrate_seed_reaches_the_training_attack(tmp_path, trained, one_thread):
    out = tmp_path / "h.safetensors"
    assert main(["calibrate", "--modality", "thermal", "--n", "8", "--epochs", "1", "--steps", "1", "--seed", "3",
                 "--out", str(out), "-q"]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["attack"]["seed"] == 3 and meta["seed"] == 3


def test_certify_refuses_the_old_items_with_n(certify_args, capsys):
    """`--items 200 --n 512` (the old items + draws) would now certify 512 items: refused in one line."""
    assert main(["certify", "--modality", "image", "--sigma", "0.1", "--items", "200", "--n", "512", "--out", "c.json"]) == 2
    err = capsys.readouterr().err.strip()
    assert "write --n ITEMS --draws DRAWS" in err and "\n" not in err and not certify_args
