"""Like with like: the calibration table's "no head" number must come from the
head's own attack (settings, steps, budget, items, seed), never from the nested robustness curve,
where an item broken at a smaller eps counts as broken at every larger one. The job writes that
record, the report picks it, and anything else is shown marked as not comparable."""
import pytest

from robustmm.job import cell_kinds, parse_config, run_job
from robustmm.records import Result
from robustmm.report.baseline import no_head_baseline, setting_differences
from robustmm.report.check_records import masking_flags
from robustmm.report.markdown import render
from robustmm.report.plots import plot_calibration

EPS = 4 / 255
HEAD_ATTACK = {"name": "pgd", "eps": EPS, "norm": "linf", "steps": 10, "step_size": EPS / 4, "random_start": True,
               "loss": "ce", "seed": 0}
CAL = {"name": "calibration", "objective": "ce"}
MODEL = {"name": "tinybind", "weights": "tinybind.safetensors"}
DATA = {"name": "synthscenes", "split": "test"}


def res(threat, attacked, *, attack=None, defense=None, n=100, clean=0.9, model=None) -> Result:
    return Result(model=model or dict(MODEL), dataset=dict(DATA), modality="depth", attack=attack or dict(HEAD_ATTACK),
                  defense=defense, threat=threat, n=n, seed=0, timing_s=0.0,
                  metrics={"clean": {"zeroshot_top1": clean}, "attacked": {"zeroshot_top1": attacked}, "asr": None})


def curve(attacked: float, **changes) -> Result:
    """The PGD-curve record at the head's eps: nested, and here with fewer steps."""
    return res("white-box", attacked, attack={**HEAD_ATTACK, "steps": 5, "nested": True, **changes})


def heads(hu: float = 0.62, ad: float = 0.55) -> list[Result]:
    head_model = {**MODEL, "heads": ["depth"]}
    return [res("head-unaware", hu, defense=CAL, clean=0.88, model={**head_model, "source": dict(MODEL)}),
            res("adaptive", ad, defense=CAL, clean=0.88, model=head_model)]


def calibration_row(text: str) -> dict[str, str]:
    cal = text.split("## Calibration heads")[1].split("\n## ")[0]
    header = next(line for line in cal.splitlines() if line.startswith("| modality"))
    row = next(line for line in cal.splitlines() if line.startswith("| depth"))
    return dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")]))


def test_the_table_takes_the_bare_record_of_the_heads_attack_not_the_curve():
    matching = res("white-box", 0.47, clean=0.91)
    for order in ([curve(0.13), matching], [matching, curve(0.13)]):
        cols = calibration_row(render([*order, *heads()]))
        assert cols["robust, no head"] == "0.470"
        assert cols["clean top-1"] == "0.910 → 0.880"
        assert cols["robust, head-unaware"] == "0.620" and cols["robust, adaptive"] == "0.550"


@pytest.mark.parametrize("other, needle", [
    (curve(0.13), "nested robustness curve; steps 5 vs 10"),
    (curve(0.13, steps=10), "nested robustness curve"),
    (res("white-box", 0.13, attack={**HEAD_ATTACK, "steps": 50}), "steps 50 vs 10"),
    (res("white-box", 0.13, n=300), "n 300 vs 100"),
    (res("white-box", 0.13, attack={**HEAD_ATTACK, "seed": 1}), "seed 1 vs 0"),
])
def test_any_other_no_head_number_is_marked_not_comparable(other, needle):
    text = render([other, *heads()])
    cols = calibration_row(text)
    assert cols["robust, no head"] == "0.130 †"
    note = next(line for line in text.splitlines() if line.startswith("- depth / ce, robust, no head"))
    assert f"not comparable ({needle}" in note and note.endswith("value first)." if " vs " in needle else "curve).")


def test_setting_differences():
    hu = heads()[0]
    assert setting_differences(res("white-box", 0.4), hu) == []  # the heads/source wrapping is not a difference
    assert setting_differences(curve(0.1), hu) == ["nested robustness curve", "steps 5 vs 10"]
    assert no_head_baseline([res("white-box", 0.4, attack={**HEAD_ATTACK, "eps": 8 / 255})], hu) == (None, [])
    ens = {"name": "ensemble", "eps": EPS, "parts": [{"name": "apgd", "steps": 3}]}
    ran = lambda a, b: {**ens, "ran": [{"part": "apgd-ce", "attacked": a, "broken": b}]}  # noqa: E731
    assert setting_differences(res("white-box", 0.1, attack=ran(10, 8)), res("adaptive", 0.3, attack=ran(10, 5))) == []


def test_masking_flags_compare_with_the_matching_bare_number():
    """Head-unaware 0.62 beats the curve's 0.13 by far but not the matching 0.60: no gain, no flag."""
    hs = heads(hu=0.62, ad=0.30)
    assert masking_flags([res("white-box", 0.60), curve(0.13), *hs]) == []
    flags = masking_flags([curve(0.13), *hs])
    assert len(flags) == 1 and "no-head number not comparable: nested robustness curve" in flags[0].message


def test_the_calibration_plot_uses_only_the_matching_bare_record(tmp_path):
    svg = [p for p in plot_calibration([curve(0.13), *heads()], tmp_path) if p.suffix == ".svg"][0].read_text()
    assert "0.13" not in svg  # the curve's number is not a "no head" bar
    svg = [p for p in plot_calibration([curve(0.13), res("white-box", 0.47), *heads()], tmp_path / "b")
           if p.suffix == ".svg"][0].read_text()
    assert "0.47" in svg and "0.13" not in svg


def test_a_calibrated_clean_eval_is_listed_as_clean_only():
    """`robustmm eval --heads H` without an attack writes a calibrated record with threat 'clean'."""
    clean = Result(model=dict(MODEL), dataset=dict(DATA), modality="depth", attack=None, defense=dict(CAL),
                   threat="clean", n=100, seed=0, timing_s=0.0, metrics={"clean": {"zeroshot_top1": 0.875}, "attacked": None})
    cols = calibration_row(render([clean]))
    assert cols["eps"] == "clean only" and cols["clean top-1"] == "0.875" and cols["robust, adaptive"] == "—"


def test_the_job_writes_the_matching_bare_record_and_the_report_uses_it(tmp_path, trained, one_thread):
    raw = {k.name: {"enabled": False} for k in cell_kinds() if k.name not in ("attacks", "pgd", "calibration")}
    raw |= {"report": {"examples": False}, "pgd": {"retrieval": False, "quick_steps": 2},
            "run": {"quick_n": 24, "quick_attack_n": 24, "batch_size": 24, "modalities": ["depth"]},
            "calibration": {"quick_train_n": 32, "epochs": 3, "quick_steps": 3, "clean_control": False}}
    results = run_job(parse_config(raw), tmp_path / "o", quick=True, progress=False)
    cell = [r for r in results if r.extra["cell"] == "tinybind|depth|calibration:ce"]
    assert [(r.threat, r.defense is None) for r in cell] == [("white-box", True), ("head-unaware", False),
                                                             ("adaptive", False)]
    bare, hu = cell[0], cell[1]
    assert bare.extra["baseline_for"] == "calibration" and setting_differences(bare, hu) == []
    cols = calibration_row((tmp_path / "o" / "report.md").read_text())
    assert cols["robust, no head"] == f"{bare.metrics['attacked']['zeroshot_top1']:.3f}"
    at_eps = [r for r in results if (r.attack or {}).get("nested") and abs(r.attack["eps"] - hu.attack["eps"]) < 1e-12]
    assert at_eps and setting_differences(at_eps[0], hu)  # the curve (PGD-2, nested) is not comparable
