"""The worst-case curve figure (robustmm.report.plots.worst_case) and a smoke run of
experiments/converged_curves.py: the worst case is below every attack and never rises with eps."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from robustmm.records import Result
from robustmm.report.plots.worst_case import attack_series_label, plot_worst_case_curves, worst_case_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "converged_curves.py"


def rec(modality: str, attack: dict, attacked: float, threat: str = "white-box", clean: float = 0.9) -> Result:
    return Result(model={"name": "tinybind"}, dataset={"name": "synthscenes"}, modality=modality, attack=attack,
                  defense=None, threat=threat, metrics={"clean": {"zeroshot_top1": clean},
                                                        "attacked": {"zeroshot_top1": attacked}},
                  n=10, seed=0, timing_s=0.0, versions={"robustmm": "test"})


def curves() -> list[Result]:
    out = []
    for m, grid in (("image", (1 / 255, 4 / 255)), ("audio", (0.001, 0.004))):
        for eps, p, w in zip(grid, (0.6, 0.3), (0.5, 0.1)):
            out.append(rec(m, {"name": "pgd", "eps": eps, "norm": "linf", "steps": 10, "loss": "ce", "nested": True}, p))
            out.append(rec(m, {"name": "worst-case", "eps": eps, "norm": "linf"}, w, threat="worst-case"))
    return out


def test_series_labels_say_which_attack():
    pgd, worst = curves()[:2]
    assert attack_series_label(pgd) == "PGD-10 (CE, nested)"
    assert attack_series_label(worst) == "per-item worst case"
    apgdt = rec("image", {"name": "apgd", "eps": 0.01, "steps": 50, "loss": "dlr-targeted", "n_target_classes": 3}, 0.1)
    assert attack_series_label(apgdt) == "APGD-50 (targeted DLR, 3 targets)"


def test_figure_draws_worst_case_solid_and_the_attack_dashed():
    fig = worst_case_figure(curves())
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.lines]
    assert [ax.get_title() for ax in axes] == ["image", "audio"]
    lines = {ln.get_label(): ln for ln in axes[0].lines}
    assert lines["per-item worst case"].get_linestyle() == "-"
    assert lines["PGD-10 (CE, nested)"].get_linestyle() == "--"
    assert list(lines["per-item worst case"].get_ydata()) == [0.9, 0.5, 0.1]  # clean first
    assert list(lines["PGD-10 (CE, nested)"].get_ydata()) == [0.9, 0.6, 0.3]
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["clean", "1/255", "4/255"]


def test_a_renamed_worst_case_series_is_still_drawn_solid():
    rs = curves()
    for r in rs:
        r.extra["series"] = "worst over three" if r.threat == "worst-case" else "the job's PGD"
    lines = {ln.get_label(): ln for ln in worst_case_figure(rs).axes[0].lines}
    assert lines["worst over three"].get_linestyle() == "-"
    assert lines["the job's PGD"].get_linestyle() == "--"


def test_plot_writes_png_and_svg_and_nothing_for_no_curves(tmp_path):
    paths = plot_worst_case_curves(curves(), tmp_path / "fig")
    assert sorted(p.suffix for p in paths) == [".png", ".svg"]
    assert (tmp_path / "fig.png").read_bytes()[:8] == PNG_MAGIC
    assert plot_worst_case_curves([rec("image", {"name": "sga"}, 0.2)], tmp_path / "none") == []


def _script():
    spec = importlib.util.spec_from_file_location("converged_curves", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_nested_examples_carry_each_items_last_example_forward():
    mod = _script()
    clean = torch.zeros(3, 2)
    store = {0.1: {0: torch.ones(2), 1: torch.ones(2), 2: torch.ones(2)}, 0.2: {1: torch.full((2,), 2.0)}}
    out = mod.nested_examples(store, [0.1, 0.2, 0.4], clean)
    assert out[0.1].tolist() == [[1, 1], [1, 1], [1, 1]]
    assert out[0.2].tolist() == [[1, 1], [2, 2], [1, 1]]  # items 0 and 2 broken at 0.1 keep that example
    assert out[0.4].tolist() == out[0.2].tolist()  # nobody attacked at 0.4
    assert clean.abs().sum() == 0


def test_smoke_run_worst_case_is_below_every_attack_and_monotone(trained, tmp_path, one_thread):
    mod = _script()
    mod.main(["--n", "8", "--modalities", "audio", "--apgd-steps", "3", "--targets", "1", "--pgd-steps", "2",
              "--out", str(tmp_path / "run"), "--docs", str(tmp_path / "docs")])
    rows = json.loads((tmp_path / "docs" / "results" / "converged_curves.json").read_text())["rows"]
    assert [r["eps_label"] for r in rows] == ["0.001", "0.002", "0.004", "0.008", "0.016"]
    for r in rows:
        assert r["worst"] <= min(r["pgd-10"], r["apgd-ce"], r["apgd-t"], r["worst_this_eps"]) + 1e-9
        assert r["worst_this_eps"] <= min(r["pgd-10"], r["apgd-ce"], r["apgd-t"]) + 1e-9
    worst = [r["worst"] for r in rows]
    assert worst == sorted(worst, reverse=True)
    assert (tmp_path / "docs" / "robustness_converged.png").read_bytes()[:8] == PNG_MAGIC
    assert "| audio | 0.016 |" in (tmp_path / "docs" / "results" / "converged_curves.md").read_text()
    (tmp_path / "docs" / "robustness_converged.png").unlink()
    mod.main(["--n", "8", "--modalities", "audio", "--apgd-steps", "3", "--targets", "1", "--pgd-steps", "2",
              "--out", str(tmp_path / "run"), "--docs", str(tmp_path / "docs"), "--resume"])  # nothing left to run
    again = json.loads((tmp_path / "docs" / "results" / "converged_curves.json").read_text())["rows"]
    assert again == rows
    assert (tmp_path / "docs" / "robustness_converged.png").exists()


@pytest.mark.parametrize("bad", [["--n", "0"], ["--targets", "0"], ["--modalities", "text"]])
def test_script_refuses_bad_arguments_before_any_work(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        _script().main([*bad, "--out", str(tmp_path / "run"), "--docs", str(tmp_path / "docs")])
    assert err.value.code == 2
    assert "error: --" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
