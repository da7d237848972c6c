"""The report's consistency check: a headline above an attack of its own cell, or a certified
number at a radius the budget cannot reach, fails it; consistent records pass."""
from robustmm.job.runner import log_consistency
from robustmm.records import Result
from robustmm.report.consistency import check_consistency, headline_problems, headlines
from robustmm.report.markdown import render

EPS = 4 / 255
MODEL, DATA = {"name": "tinybind"}, {"name": "synthscenes", "split": "test"}


def record(attack, top1, *, n=300, threat="white-box", defense=None, metrics=None, extra=None):
    m = {"clean": {"zeroshot_top1": 0.98}, "attacked": {"zeroshot_top1": top1}, "delta": None, "asr": None}
    return Result(model=MODEL, dataset=DATA, modality="depth", attack=attack, defense=defense, threat=threat,
                  metrics=m | (metrics or {}), n=n, seed=0, timing_s=1.0, extra=extra or {})


def pgd_curve(top1):
    return record({"name": "pgd", "eps": EPS, "steps": 10, "nested": True}, top1)


def ensemble(top1):
    return record({"name": "ensemble", "eps": EPS, "steps": 10}, top1, n=32)


def worst(robust):
    return record({"name": "worst-case", "eps": EPS, "of": ["pgd-10", "apgd-ce", "apgd-t"]}, sum(robust) / len(robust),
                  threat="worst-case", extra={"robust": robust})


def certified(top1, max_radius=None):
    cert = {"top1": top1, "abstain": 0.0} | ({} if max_radius is None else {"max_radius": max_radius})
    return Result(model=MODEL, dataset=DATA, modality="image", attack=None,
                  defense={"name": "randomized-smoothing", "sigma": 0.12, "n": 64, "n0": 16, "alpha": 0.001},
                  threat="certified", metrics={"clean": {"zeroshot_top1": 0.9}, "certified": cert}, n=24, seed=0,
                  timing_s=1.0)


def test_check_consistency_fails_on_the_default_jobs_records():
    # the default job as it was: PGD-10 headlines depth 0.497 at 4/255, the ensemble gives 0.000, and the
    # certificates report 0.000 at a radius 64 draws cannot reach
    records = [pgd_curve(0.497), ensemble(0.0), certified({"0": 0.8, "0.05": 0.6, "0.1": 0.3, "0.2": 0.0})]
    problems = check_consistency(records)
    assert {p.rule for p in problems} == {"headline", "certificate"}
    assert any("0.497 > ensemble-10" in p.message for p in problems)
    assert any("radius 0.2" in p.message for p in problems)
    assert "**FAILED: 2 problem(s).**" in render(records)
    assert not log_consistency(records)


def test_check_consistency_passes_on_consistent_records():
    robust = [0] * 300  # the worst case breaks every item the ensemble breaks, and more
    records = [pgd_curve(0.497), ensemble(0.0), worst(robust),
               certified({"0": 0.8, "0.05": 0.6, "0.1": 0.3, "0.2": None}, max_radius=0.1522)]
    assert check_consistency(records) == []
    assert "**Passed.**" in render(records)
    assert log_consistency(records)


def test_headline_is_the_worst_case_and_is_compared_on_the_attacks_items():
    robust = [0] * 32 + [1] * 268  # robust on 0.89 of all items, but on none of the ensemble's 32
    records = [pgd_curve(0.95), ensemble(0.0), worst(robust)]
    (head,) = headlines(records).values()
    assert head.threat == "worst-case"
    assert headline_problems(records) == []
    records[-1] = worst([1] + [0] * 299)  # one of the ensemble's items survives the worst case only
    assert [p.rule for p in headline_problems(records)] == ["headline"]
