"""Worst-case curves: per item and per budget the strongest of PGD's nested sweep, APGD-CE and
APGD-T, never above any of them, never rising with eps; and the job cell that runs them."""
import pytest
import torch

from robustmm.attacks import build_attack
from robustmm.evaluation import robustness_curve
from robustmm.evaluation.worst_curve import SweepRecorder, nested_examples, worst_case_curve
from robustmm.modalities import get_modality


@pytest.fixture(scope="module")
def curves(trained):
    import robustmm

    enc, data = robustmm.load_encoder("tinybind"), robustmm.load_dataset("synthscenes", split="test", n=16)
    grid = sorted(get_modality("audio").eps_grid)[:3]
    torch.set_num_threads(1)
    rec = SweepRecorder(build_attack("pgd", steps=3))
    pgd = robustness_curve(enc, data, modality="audio", attack=rec, eps_grid=grid, batch_size=16, progress=False)
    pgd_x = nested_examples(rec.store, grid, data.get("audio", torch.arange(len(data))))

    def attacks(eps):
        ens = build_attack("ensemble", attacks=["apgd-ce", "apgd-t"], version="standard", eps=eps, steps=3,
                           early_stop=True).resolve("audio")
        return {label: p.resolve("audio") for label, p in ens.parts}

    worst = worst_case_curve(enc, data, modality="audio", attacks=attacks, pgd_examples=pgd_x, pgd_label="pgd-3",
                             grid=grid, batch_size=16)
    return pgd, worst


def top1(r):
    return r.metrics["attacked"]["zeroshot_top1"]


def test_worst_case_curve_is_below_pgd_and_never_rises(curves):
    pgd, worst = curves
    assert [r.attack["eps"] for r in worst] == [r.attack["eps"] for r in pgd]
    for p, w in zip(pgd, worst):
        assert w.threat == "worst-case" and w.attack["name"] == "worst-case" and top1(w) <= top1(p) + 1e-9
        assert sum(w.extra["robust"]) / w.n == pytest.approx(top1(w))  # per-item verdicts agree with the score
    assert [top1(w) for w in worst] == sorted((top1(w) for w in worst), reverse=True)
    robust = [w.extra["robust"] for w in worst]
    assert all(b <= a for r0, r1 in zip(robust, robust[1:]) for a, b in zip(r0, r1))  # once broken, broken


def test_worst_case_curve_attacks_only_the_items_still_robust(curves):
    pgd, worst = curves
    for w in worst:
        assert set(w.extra["n_attacked"]) <= {"apgd-ce", "apgd-t"}
        assert all(k <= w.n for k in w.extra["n_attacked"].values())
    assert worst[-1].extra["n_attacked"].get("apgd-ce", 0) <= sum(worst[-2].extra["robust"])
