"""Defenses: per-item worst case over threats and the weaker-beats-stronger flags,
hyperparameters selected on val, the label-free (paper) regulariser, and FARE's frozen target."""
import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import robustmm
from robustmm.attacks import build_attack
from robustmm.attacks.memo import MemoAttack
from robustmm.defenses import calibrate
from robustmm.defenses import fare as fare_mod
from robustmm.defenses.objectives import CalibBatch, consistency, label_free_consistency, parse_objective, parse_spec
from robustmm.errors import RobustMMError, UnknownNameError
from robustmm.evaluation.threats import evaluate_threats, threat_flags
from robustmm.evaluation.worst_case import RecordingAttack
from robustmm.metrics import zeroshot_correct
from robustmm.records import THREATS, Result

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- 13.1 worst case over threats
@pytest.fixture(scope="module")
def image_cell(trained):
    train = robustmm.load_dataset("synthscenes", split="train", n=64, modalities=("image",))
    data = robustmm.load_dataset("synthscenes", split="val", n=48, modalities=("image",))
    cal = calibrate(trained, train, modality="image", objective="ce", attack=build_attack("pgd", steps=2), epochs=10,
                    progress=False)
    return train, data, cal


def test_worst_case_is_the_per_item_and_over_every_threat(trained, image_cell):
    _, data, cal = image_cell
    memo = MemoAttack(build_attack("pgd", steps=3, loss="ce").resolve("image"))
    unaware, adaptive, worst = evaluate_threats(trained, cal, data, modality="image", attack=memo, batch_size=48,
                                                threats=("head-unaware", "adaptive", "worst-case"), progress=False)
    assert worst.threat == "worst-case" and "worst-case" in THREATS
    assert worst.extra["worst_case_of"] == ["clean", "head-unaware", "adaptive"]
    # independent check: the examples the memo made (bare source first, then through the head)
    calibrated = trained.with_heads(cal.heads)
    task = data.tasks["image"]
    centers = calibrated.class_embeddings(task.prompts())
    with torch.no_grad():
        ok = zeroshot_correct(calibrated.encode("image", data.get("image", slice(None))), centers, task.labels)
        for out in memo.outputs():
            ok &= zeroshot_correct(calibrated.encode("image", out.x), centers, task.labels)
    assert len(memo.outputs()) == 2
    assert worst.attacked("zeroshot_top1") == pytest.approx(ok.float().mean().item())
    assert worst.attacked("zeroshot_top1") <= min(unaware.attacked("zeroshot_top1"), adaptive.attacked("zeroshot_top1"))
    assert worst.clean("zeroshot_top1") == unaware.clean("zeroshot_top1")


def test_worst_case_covers_stronger_attacks_and_needs_a_threat(trained, image_cell):
    _, data, cal = image_cell
    rs = evaluate_threats(trained, cal, data, modality="image", attack=build_attack("pgd", steps=1),
                          threats=("adaptive", "worst-case"), stronger={"pgd-4": build_attack("pgd", steps=4)},
                          progress=False)
    assert [r.threat for r in rs] == ["adaptive", "adaptive", "worst-case"]
    assert rs[1].extra["stronger_attack"] == "pgd-4"
    assert rs[2].extra["worst_case_of"] == ["clean", "adaptive", "adaptive:pgd-4"]
    assert rs[2].attacked("zeroshot_top1") <= min(r.attacked("zeroshot_top1") for r in rs[:2])
    with pytest.raises(RobustMMError, match="worst-case"):
        evaluate_threats(trained, cal, data, modality="image", attack=build_attack("pgd", steps=1),
                         threats=("white-box", "worst-case"), progress=False)
    with pytest.raises(RobustMMError, match="unknown threat"):
        evaluate_threats(trained, cal, data, modality="image", attack=build_attack("pgd", steps=1), threats=("bogus",))


def test_recording_attack_refuses_caption_attacks():
    with pytest.raises(RobustMMError, match="input attacks"):
        RecordingAttack(build_attack("sga"))


def _result(threat: str, top1: float, stronger: str | None = None) -> Result:
    return Result(model={"name": "m"}, dataset={"name": "d"}, modality="depth", attack={"name": "pgd"},
                  defense={"name": "calibration"}, threat=threat,
                  metrics={"clean": {"zeroshot_top1": 0.97}, "attacked": {"zeroshot_top1": top1}}, n=300, seed=0,
                  timing_s=0.0, extra={"stronger_attack": stronger} if stronger else {})


def test_threat_flags_catch_a_weaker_threat_beating_a_stronger_one():
    # a measured depth/l2 row: adaptive 0.610 above head-unaware 0.573
    rows = [_result("white-box", 0.507), _result("head-unaware", 0.573), _result("adaptive", 0.610)]
    flags = threat_flags(rows)
    assert [(f.row, f.weaker, f.stronger) for f in flags] == [(2, "head-unaware", "adaptive")]
    assert "head-unaware (0.573) beats adaptive (0.610)" in flags[0].message()
    assert threat_flags(rows, tolerance=0.05) == []
    ok = [_result("head-unaware", 0.61), _result("adaptive", 0.57), _result("adaptive", 0.43, "pgd-50"),
          _result("worst-case", 0.42)]
    assert threat_flags(ok) == []
    bad = ok[:2] + [_result("adaptive", 0.60, "pgd-50")]
    assert [(f.weaker, f.stronger) for f in threat_flags(bad)] == [("adaptive", "adaptive:pgd-50")]


# ---------------------------------------------------------------- 13.2 hyperparameters chosen on val
def test_select_consistency_scores_val_before_it_touches_test(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("select_consistency", ROOT / "experiments" / "select_consistency.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    calls = []
    real = mod.evaluate_threats

    def spy(enc, cal, data, **kw):
        calls.append((data.split, cal.meta["consistency_weight"]))
        return real(enc, cal, data, **kw)

    monkeypatch.setattr(mod, "evaluate_threats", spy)
    monkeypatch.setattr(sys, "argv", ["x", "--modalities", "depth", "--n-train", "24", "--n-val", "12", "--n-test", "12",
                                      "--steps", "1", "--train-steps", "1", "--epochs", "2", "--weights", "0", "4",
                                      "--regularisers", "label-free", "--out", str(tmp_path / "s.json")])
    mod.main()
    splits = [s for s, _ in calls]
    assert splits == ["val", "val", "test", "test"]  # selected weight, then weight 8 as a reference
    out = __import__("json").loads((tmp_path / "s.json").read_text())
    assert {r["weight"] for r in out["grid_val"]} == {0.0, 4.0} and out["test"][0]["role"] == "selected on val"
    assert calls[2][1] == out["selected"]["label-free"]


# ---------------------------------------------------------------- 13.3 the paper's label-free setting
def test_parse_spec_regulariser_suffix():
    assert parse_spec("ce+0.5*l2@label-free") == ({"ce": 1.0, "l2": 0.5}, "label-free")
    assert parse_spec("l2") == ({"l2": 1.0}, None)
    assert parse_objective("ce@label-free") == {"ce": 1.0}
    with pytest.raises(UnknownNameError, match="regulariser"):
        parse_objective("ce@labelfree")
    with pytest.raises(RobustMMError):
        parse_objective("1.2.3*ce")


def test_label_free_regulariser_reads_no_labels_centers_or_captions():
    g = torch.Generator().manual_seed(0)
    u = lambda *s: torch.nn.functional.normalize(torch.randn(*s, generator=g), dim=-1)  # noqa: E731
    clean, out = u(8, 16), u(8, 16)
    full = CalibBatch(clean, u(8, 16), u(8, 16), torch.arange(8) % 3, u(3, 16))
    bare = CalibBatch(clean, u(8, 16), u(8, 16) * 0 + 1, None, None)
    assert torch.equal(label_free_consistency(out, full), label_free_consistency(out, bare))
    assert not torch.equal(consistency(out, full), consistency(out, dataclasses.replace(full, labels=full.labels.flip(0))))


def _shuffled(data, modality):
    task = data.tasks[modality]
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(1))
    tasks = {**data.tasks, modality: dataclasses.replace(task, labels=task.labels[perm])}
    return dataclasses.replace(data, tasks=tasks, captions=[data.captions[i] for i in perm.tolist()])


@pytest.mark.parametrize("objective", ["l2", "infonce"])
def test_label_free_training_gives_identical_heads_with_shuffled_labels(rand_encoder, synth_small, objective):
    g = torch.Generator().manual_seed(0)
    clean = torch.nn.functional.normalize(torch.randn(len(synth_small), rand_encoder.embed_dim, generator=g), dim=-1)
    adv = torch.nn.functional.normalize(clean + 0.5 * torch.randn(len(synth_small), rand_encoder.embed_dim, generator=g), dim=-1)
    shuffled = _shuffled(synth_small, "image")
    kw = dict(modality="image", epochs=5, batch_size=8, embeddings=(clean, adv), consistency_weight=4.0, progress=False)

    def heads(data, spec):
        return calibrate(rand_encoder, data, objective=spec, **kw).heads["image"].state_dict()

    a, b = heads(synth_small, f"{objective}@label-free"), heads(shuffled, f"{objective}@label-free")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the supervised regulariser reads labels: the same check tells the two apart
    s1, s2 = heads(synth_small, objective), heads(shuffled, objective)
    assert not all(torch.equal(s1[k], s2[k]) for k in s1)


def test_label_free_meta_and_comparable_clean_control(rand_encoder, synth_small):
    attack = build_attack("pgd", steps=1)
    cal = calibrate(rand_encoder, synth_small, modality="image", objective="l2", regulariser="label-free", attack=attack,
                    epochs=2, progress=False)
    ctrl = calibrate(rand_encoder, synth_small, modality="image", objective="l2@label-free", clean_only=True, epochs=2,
                     progress=False)
    for c in (cal, ctrl):
        assert c.meta["regulariser"] == "label-free" and c.meta["uses_labels"] is False
        assert c.defense_block()["regulariser"] == "label-free"
    assert calibrate(rand_encoder, synth_small, modality="image", objective="ce@label-free", clean_only=True, epochs=1,
                     progress=False).meta["uses_labels"] is True  # the ce objective itself reads labels
    with pytest.raises(RobustMMError, match="names regulariser"):
        calibrate(rand_encoder, synth_small, modality="image", objective="l2@label-free", regulariser="supervised")


# ---------------------------------------------------------------- 13.7 FARE's frozen target
def test_fare_inner_attack_targets_the_frozen_original(monkeypatch, rand_encoder, synth_small):
    seen = []
    real = fare_mod.fare_inner_attack

    def spy(tuned, modality, x, target, **kw):
        with torch.no_grad():
            seen.append((target.clone(), tuned.encode(modality, x), rand_encoder.encode(modality, x)))
        return real(tuned, modality, x, target, **kw)

    monkeypatch.setattr(fare_mod, "fare_inner_attack", spy)
    before = {k: v.clone() for k, v in rand_encoder.state_dict().items()}
    tuned = fare_mod.fare_finetune(rand_encoder, synth_small, modality="thermal", epochs=1, lr=1e-2, batch_size=16,
                                   steps=2, progress=False)
    rep = tuned.training_info
    assert rep["steps"] == 2 and len(seen) == 2
    target, tuned_clean, original_clean = seen[1]  # after one update the two towers differ
    assert not torch.allclose(tuned_clean, original_clean, atol=1e-4)
    assert torch.allclose(target, original_clean)
    assert all(torch.equal(before[k], v) for k, v in rand_encoder.state_dict().items())


def test_fare_inner_attack_pushes_away_from_the_given_target_inside_the_ball(synth_small):
    from _tiny import tiny_tinybind

    rand_encoder = tiny_tinybind(synth_small)
    x = synth_small.get("thermal", torch.arange(8))
    with torch.no_grad():
        target = rand_encoder.encode("thermal", x.flip(0))  # another target than the model's own clean embedding
    eps = 8 / 255
    xa = fare_mod.fare_inner_attack(rand_encoder, "thermal", x, target, eps=eps, steps=5,
                                    generator=torch.Generator().manual_seed(0))
    assert (xa - x).abs().max() <= eps + 1e-6 and xa.min() >= 0 and xa.max() <= 1
    with torch.no_grad():
        d0 = (rand_encoder.encode("thermal", x) - target).square().sum(-1).mean()
        d1 = (rand_encoder.encode("thermal", xa) - target).square().sum(-1).mean()
    assert d1 > d0
    assert not any(p.requires_grad for p in rand_encoder.parameters())
