"""Gradient-masking sanity checks: they pass on an honest model, they catch a model or a head that
hides its gradients, and the report flags a calibrated model that passes head-unaware but fails them."""
import torch
from torch import nn

import robustmm
from robustmm.attacks import build_attack
from robustmm.defenses import calibrate
from robustmm.encoders.base import Encoder
from robustmm.evaluation.checks import CHECKS_ATTACK, checks_result, sanity_checks
from robustmm.evaluation.threats import evaluate_threats
from robustmm.report import check_records
from robustmm.report.check_records import is_checks, masking_flags
from robustmm.report.markdown import render


class Quantised(nn.Module):
    """Wraps a head and rounds its output: same predictions, zero gradient (classic masking)."""

    def __init__(self, head: nn.Module, levels: float = 8.0):
        super().__init__()
        self.head, self.levels = head, levels

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.round(self.head(z) * self.levels) / self.levels


class QuantisedInput(Encoder):
    """An input-quantisation "defense": rounds every input to 8 bits before the encoder. The
    predictions barely change, but ``round`` has zero gradient everywhere, so gradient attacks
    started at the clean input never move: a model that masks its gradients completely."""

    def __init__(self, inner: Encoder, levels: float = 255.0):
        super().__init__()
        self.inner, self.levels = inner, levels
        self.name, self.modalities, self.embed_dim = f"{inner.name}+quantised", inner.modalities, inner.embed_dim

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return self.inner.encode(modality, torch.round(x * self.levels) / self.levels, validate=False)

    def encode_text(self, texts):
        return self.inner.encode_text(texts)


def test_zero_gradient_model_fails_the_checks(trained):
    """At half the value range a random start alone destroys accuracy, so the huge-eps check must
    run the attack from the clean input: a model with zero input gradients then keeps its clean
    accuracy there and fails, while its clean accuracy is that of the trained model."""
    data = robustmm.load_dataset("synthscenes", split="test", n=32)
    masked = QuantisedInput(trained)
    x = data.get("image", list(range(4))).requires_grad_(True)
    masked.encode("image", x).sum().backward()
    assert x.grad is not None and x.grad.abs().max() == 0  # really no gradient
    checks = sanity_checks(masked, data, modality="image", attack=build_attack("pgd", steps=5), steps=(1, 5))
    by = {c.name: c for c in checks}
    huge = by["about zero at a huge eps"]
    assert not huge.passed, huge
    assert huge.values["top1"] >= by["non-increasing in eps"].values["clean"] - 0.1  # the attack never moved
    assert not all(c.passed for c in checks)
    row = checks_result(checks, masked, data, modality="image", attack=build_attack("pgd", steps=5))
    assert is_checks(row) and row.metrics["checks_passed"] is False
    assert check_records.failed_checks(row) == [c.name for c in checks if not c.passed]


def test_checks_records_round_trip():
    """The writer (robustmm.evaluation.checks) and the reader (robustmm.report.check_records) agree on the record."""
    assert CHECKS_ATTACK == check_records.CHECKS_ATTACK


def test_checks_pass_on_trained_tinybind(trained):
    data = robustmm.load_dataset("synthscenes", split="test", n=32)
    checks = sanity_checks(trained, data, modality="image", attack=build_attack("pgd", steps=5), steps=(1, 5))
    by = {c.name: c for c in checks}
    assert all(c.passed for c in checks), [(c.name, c.values) for c in checks if not c.passed]
    assert by["about zero at a huge eps"].values["top1"] <= 0.05
    assert by["random noise weaker than the attack"].values["noise"] > by["random noise weaker than the attack"].values["attack"]
    assert "transfer weaker than white-box" not in by  # no surrogate given


def test_masking_head_fails_the_checks_and_is_flagged(trained):
    data = robustmm.load_dataset("synthscenes", split="test", n=48)
    attack = build_attack("pgd", eps=4 / 255, steps=3)
    cal = calibrate(trained, data, modality="image", objective="ce", attack=attack, epochs=40, progress=False)
    cal.heads = {"image": Quantised(cal.heads["image"])}
    bare, unaware, adaptive = evaluate_threats(trained, cal, data, modality="image", attack=attack, progress=False)
    hu, ad = unaware.metrics["attacked"]["zeroshot_top1"], adaptive.metrics["attacked"]["zeroshot_top1"]
    assert hu > bare.metrics["attacked"]["zeroshot_top1"] + 0.05  # it "passes" the head-unaware attack
    assert ad >= hu - 0.05  # ...and PGD through the rounding finds no gradient: the adaptive attack fails too

    masked = trained.with_heads(cal.heads)
    checks = sanity_checks(masked, data, modality="image", attack=attack, surrogate=trained, steps=(1, 3))
    failed = {c.name for c in checks if not c.passed}
    assert "transfer weaker than white-box" in failed  # the bare encoder's examples beat the white-box attack

    bare.attack = {**bare.attack, "nested": True}  # the report reads the bare number from the PGD curve
    row = checks_result(checks, masked, data, modality="image", attack=attack, defense=cal.defense_block())
    flags = masking_flags([bare, unaware, adaptive, row])
    assert len(flags) == 1 and "FAILS the sanity checks" in flags[0].message
    assert "transfer weaker than white-box" in flags[0].message
    report = render([bare, unaware, adaptive, row])
    assert "## Sanity checks" in report and "**FAIL**" in report and "⚠" in report


def test_flags_need_a_head_unaware_gain():
    """No flag for a head that does not beat the bare encoder head-unaware: nothing is claimed."""
    from robustmm.records import Result

    def res(threat, top1, defense=None, nested=None):
        attack = {"name": "pgd", "eps": 4 / 255, **({"nested": True} if nested else {})}
        return Result(model={"name": "m"}, dataset={"name": "d"}, modality="image", attack=attack, defense=defense,
                      threat=threat, metrics={"clean": {"zeroshot_top1": 0.9}, "attacked": {"zeroshot_top1": top1}},
                      n=10, seed=0, timing_s=0.0)

    d = {"name": "calibration", "objective": "ce"}
    assert masking_flags([res("white-box", 0.1, nested=True), res("head-unaware", 0.12, d), res("adaptive", 0.0, d)]) == []
    flags = masking_flags([res("white-box", 0.1, nested=True), res("head-unaware", 0.5, d), res("adaptive", 0.0, d)])
    assert len(flags) == 1 and "ignores the head" in flags[0].message


def test_retrieval_checks_without_a_zero_shot_task(trained):
    """A dataset with no zero-shot task (COCO-like): the checks attack the caption loss and score
    X->text R@1, which must fall with the budget like top-1 does."""
    import copy

    data = copy.copy(robustmm.load_dataset("synthscenes", split="test", n=24, modalities=("audio",)))
    data.tasks = {}
    checks = sanity_checks(trained, data, modality="audio", steps=(1, 3))
    by = {c.name: c for c in checks}
    assert all(c.passed for c in checks), [(c.name, c.values) for c in checks if not c.passed]
    assert by["about zero at a huge eps"].values["x2t_R@1"] <= 0.1
    assert by["non-increasing in eps"].values["clean"] > 0.3  # a real retrieval score, not chance
