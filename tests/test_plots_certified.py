"""certified.png draws what its caption promises: certified top-1 as a step function of the radius
(steps-post), SmoothAdv's empirical top-1 dashed steps where records carry it (and only then named in
the title), and the model, data and items in the title."""
import pytest

import robustmm.report.plots.certified as certified
from robustmm.evaluation.certification.reach import max_certified_radius
from robustmm.records import Result

ITEMS = {"label": [0, 1, 2, 3], "pred": [0, 1, 2, 0], "radius": [0.01, 0.05, 0.15, 0.3]}


def record(empirical=None):
    metrics = {"clean": {"zeroshot_top1": 0.9},
               "certified": {"radii": [0.0, 0.05], "top1": {"0": 0.75, "0.05": 0.5}, "abstain": 0.0,
                             "max_radius": max_certified_radius(0.12, 64, 0.001)}}
    if empirical:
        metrics["empirical"] = {"top1": empirical, "n_items": 4}
    return Result(model={"name": "tinybind"}, dataset={"name": "synthscenes", "split": "test"}, modality="image",
                  attack=None, defense={"name": "randomized-smoothing", "sigma": 0.12, "n": 64, "n0": 16, "alpha": 0.001},
                  threat="certified", metrics=metrics, n=4, seed=0, timing_s=0.0, extra={"per_item": ITEMS})


@pytest.fixture
def drawn(monkeypatch):
    """Keep the Figure that plot_certified saves, to read its lines back."""
    figures = []

    def keep(fig, stem):
        figures.append(fig)
        return []

    monkeypatch.setattr(certified, "save_figure", keep)
    return figures


def test_certified_curve_is_a_step_function_and_smoothadv_is_dashed(drawn, tmp_path):
    certified.plot_certified([record({"0": 0.75, "0.05": 0.75, "0.1": 0.5})], tmp_path)
    ax = drawn[0].axes[0]
    styles = {(ln.get_drawstyle(), ln.get_linestyle()) for ln in ax.lines if len(ln.get_xdata()) > 1}
    assert ("steps-post", "-") in styles and ("steps-post", "--") in styles
    title = drawn[0].get_suptitle()
    assert "SmoothAdv" in title and "tinybind on synthscenes" in title and "n = 4" in title


def test_no_smoothadv_records_no_smoothadv_promise(drawn, tmp_path):
    certified.plot_certified([record()], tmp_path)
    ax = drawn[0].axes[0]
    assert not any(ln.get_linestyle() == "--" for ln in ax.lines)
    assert "SmoothAdv" not in drawn[0].get_suptitle()
    assert not any("SmoothAdv" in t.get_text() for t in ax.get_legend().get_texts())
