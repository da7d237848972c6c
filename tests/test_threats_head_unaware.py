"""The worst case over threats includes the head-unaware transfer of every stronger attack.

A head can mask a strong attack's gradient while the same attack, made on the bare encoder,
transfers to the head intact. The toy below is exactly that attacker: through the head it moves
nothing, on the bare encoder it breaks items. Before the fix the stronger attacks ran adaptively
only, so the worst case never saw its bare-encoder examples and called every item robust.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from test_defenses_numbers import _result

import robustmm
from robustmm.attacks.base import Attack
from robustmm.batch import Batch
from robustmm.defenses import calibrate
from robustmm.errors import RobustMMError
from robustmm.evaluation.threats import evaluate_threats, reusable, threat_flags


class Still(Attack):
    """Returns the input unchanged (a scoring attack that breaks nothing)."""

    name = "still"

    def settings(self) -> dict[str, Any]:
        return {}

    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        return batch.replace(x=batch.x.clone())


class BreaksOnlyBare(Attack):
    """A stronger attack whose gradient the head masks: on ``bare`` it swaps each item's input for
    its neighbour's (another scene), through anything else it moves nothing. Counts its bare calls."""

    name = "bare-only"

    def __init__(self, bare: Any):
        self.bare, self.bare_calls = bare, 0

    def settings(self) -> dict[str, Any]:
        return {}

    def __call__(self, encoder: Any, batch: Batch) -> Batch:
        if encoder is not self.bare:
            return batch.replace(x=batch.x.clone())
        self.bare_calls += 1
        return batch.replace(x=batch.x.roll(1, 0).clone())


@pytest.fixture(scope="module")
def cell(trained):
    train = robustmm.load_dataset("synthscenes", split="train", n=32, modalities=("image",))
    data = robustmm.load_dataset("synthscenes", split="val", n=24, modalities=("image",))
    cal = calibrate(trained, train, modality="image", objective="ce", epochs=2, clean_only=True, progress=False)
    return data, cal


def test_only_the_head_unaware_stronger_attack_breaks_items_and_the_worst_case_sees_it(trained, cell):
    data, cal = cell
    toy = BreaksOnlyBare(trained)
    rs = evaluate_threats(trained, cal, data, modality="image", attack=Still(), stronger={"bare-only": toy},
                          threats=("head-unaware", "adaptive", "worst-case"), batch_size=8, progress=False)
    assert [r.threat for r in rs] == ["head-unaware", "adaptive", "adaptive", "head-unaware", "worst-case"]
    unaware, adaptive, strong_adaptive, strong_unaware, worst = rs
    assert strong_unaware.extra["stronger_attack"] == "bare-only"
    clean = unaware.clean("zeroshot_top1")
    # every threat but the transferred stronger attack leaves the items as they were
    for r in (unaware, adaptive, strong_adaptive):
        assert r.attacked("zeroshot_top1") == pytest.approx(clean)
    assert strong_unaware.attacked("zeroshot_top1") < clean - 0.2
    assert "head-unaware:bare-only" in worst.extra["worst_case_of"]
    assert worst.extra["broken_by"]["head-unaware:bare-only"] > 0
    # the worst case is at most the transfer's score (items broken by it stay broken), well below clean
    assert worst.attacked("zeroshot_top1") <= strong_unaware.attacked("zeroshot_top1") + 1e-9
    assert worst.attacked("zeroshot_top1") < clean - 0.2
    # the transfer beating the adaptive run of the same attack is flagged
    flagged = {(f.weaker, f.stronger) for f in threat_flags(rs[:4])}
    assert ("head-unaware:bare-only", "adaptive:bare-only") in flagged


def test_no_head_unaware_threat_no_transferred_stronger_run(trained, cell):
    data, cal = cell
    toy = BreaksOnlyBare(trained)
    rs = evaluate_threats(trained, cal, data, modality="image", attack=Still(), stronger={"bare-only": toy},
                          threats=("adaptive", "worst-case"), batch_size=8, progress=False)
    assert [r.threat for r in rs] == ["adaptive", "adaptive", "worst-case"] and toy.bare_calls == 0


def test_a_reusable_stronger_attack_makes_its_bare_examples_once_for_every_call(trained, cell):
    data, cal = cell
    toy = BreaksOnlyBare(trained)
    shared = reusable(toy)
    scores = []
    for _ in range(2):  # e.g. two heads scored against the same bare-encoder examples
        rs = evaluate_threats(trained, cal, data, modality="image", attack=Still(), stronger={"bare-only": shared},
                              threats=("head-unaware", "worst-case"), batch_size=8, progress=False)
        scores.append(rs[-1].attacked("zeroshot_top1"))
    assert toy.bare_calls == 3  # 24 items in batches of 8, made once
    assert scores[0] == scores[1]


def test_transfer_names_the_bare_encoder_attack_of_a_stronger_one(trained, cell):
    data, cal = cell
    toy = BreaksOnlyBare(trained)  # e.g. the same attack without early stopping
    rs = evaluate_threats(trained, cal, data, modality="image", attack=Still(), stronger={"s": Still()},
                          transfer={"s": toy}, threats=("head-unaware", "worst-case"), batch_size=8, progress=False)
    assert [(r.threat, r.extra.get("stronger_attack")) for r in rs[:3]] == [
        ("head-unaware", None), ("adaptive", "s"), ("head-unaware", "s")]
    assert toy.bare_calls == 3 and rs[2].attacked("zeroshot_top1") < rs[1].attacked("zeroshot_top1") - 0.2
    assert rs[-1].extra["broken_by"]["head-unaware:s"] > 0
    with pytest.raises(RobustMMError, match="names no stronger attack"):
        evaluate_threats(trained, cal, data, modality="image", attack=Still(), stronger={"s": Still()},
                         transfer={"t": toy}, progress=False)
    assert toy.bare_calls == 3  # refused before any attack ran


def test_a_transferred_stronger_attack_ranks_as_head_unaware():
    rows = [_result("head-unaware", 0.7), _result("adaptive", 0.5), _result("adaptive", 0.1, "apgd-t-50"),
            _result("head-unaware", 0.3, "apgd-t-50")]
    pairs = [(f.weaker, f.stronger) for f in threat_flags(rows)]
    # it beats the adaptive APGD-50 (flagged); it is not itself an adaptive attack beaten by the transfer
    assert pairs == [("head-unaware:apgd-t-50", "adaptive")]


def test_select_consistency_puts_the_stronger_attack_in_the_worst_case(monkeypatch, tmp_path):
    path = Path(__file__).resolve().parents[1] / "experiments" / "select_consistency.py"
    spec = importlib.util.spec_from_file_location("select_consistency_stronger", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(sys, "argv", ["x", "--modalities", "depth", "--n-train", "24", "--n-val", "12", "--n-test", "12",
                                      "--steps", "1", "--train-steps", "1", "--epochs", "2", "--weights", "4",
                                      "--regularisers", "label-free", "--stronger", "apgd-t", "--stronger-steps", "2",
                                      "--stronger-early-stop", "--out", str(tmp_path / "s.json")])
    mod.main()
    out = json.loads((tmp_path / "s.json").read_text())
    for row in out["grid_val"] + out["test"]:
        v = row["per_modality"]["depth"]
        assert {"adaptive:apgd-t-2", "head-unaware:apgd-t-2"} <= set(v)
        assert v["worst_case"] <= min(v["head_unaware"], v["adaptive"], v["adaptive:apgd-t-2"],
                                      v["head-unaware:apgd-t-2"]) + 1e-9
    assert "head-unaware:apgd-t-2" in (tmp_path / "s.md").read_text()
