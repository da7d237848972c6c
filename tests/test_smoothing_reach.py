"""The largest certifiable radius of a Monte Carlo budget, and the report and figure that mark
radii beyond it."""
import math

import pytest

from robustmm.evaluation.certification.reach import is_reachable, max_certified_radius, min_draws_for, reachable_radii
from robustmm.job.cells.certification import job_radii
from robustmm.records import Result
from robustmm.report.consistency import radius_reach
from robustmm.report.defense_tables import certification_section
from robustmm.report.plots.certified import certified_steps, plot_certified


def test_max_certified_radius_is_sigma_times_the_quantile_of_alpha_to_the_one_over_n():
    assert max_certified_radius(0.12, 64, 0.001) == pytest.approx(0.1522, abs=1e-4)
    assert max_certified_radius(0.01, 64, 0.001) == pytest.approx(0.0127, abs=1e-4)
    assert max_certified_radius(0.02, 64, 0.001) == pytest.approx(0.0254, abs=1e-4)
    assert max_certified_radius(1.0, 1, 0.4) == 0.0  # alpha ** (1/n) below 1/2: nothing certifiable


def test_reachable_radii_and_min_draws_agree():
    top = max_certified_radius(0.12, 64, 0.001)
    assert reachable_radii([0.0, 0.05, 0.1, 0.2], top) == [0.0, 0.05, 0.1]
    assert is_reachable(top, top) and not is_reachable(top * 1.001, top)
    n = min_draws_for(0.2, 0.12, 0.001)
    assert is_reachable(0.2, max_certified_radius(0.12, n, 0.001))
    assert not is_reachable(0.2, max_certified_radius(0.12, n - 1, 0.001))


@pytest.mark.parametrize("modality,sigma,draws", [("image", 0.12, 64), ("audio", 0.01, 64), ("pointcloud", 0.02, 32)])
def test_job_radii_are_all_reachable_and_end_at_the_largest(modality, sigma, draws):
    radii = job_radii(modality, sigma, draws, 0.001)
    top = max_certified_radius(sigma, draws, 0.001)
    assert all(is_reachable(r, top) for r in radii)
    assert radii[-1] == pytest.approx(top, rel=1e-2) and radii == sorted(radii)


def certified_record(top1, *, sigma=0.12, n=64, with_max=True, per_item=None):
    cert = {"radii": [float(k) for k in top1], "top1": dict(top1), "abstain": 0.0}
    if with_max:
        cert["max_radius"] = max_certified_radius(sigma, n, 0.001)
    return Result(model={"name": "m"}, dataset={"name": "d"}, modality="image", attack=None,
                  defense={"name": "randomized-smoothing", "sigma": sigma, "n": n, "n0": 16, "alpha": 0.001},
                  threat="certified", metrics={"clean": {"zeroshot_top1": 0.9}, "certified": cert}, n=4, seed=0, timing_s=0.0,
                  extra={"per_item": per_item} if per_item else {})


def test_certified_table_marks_unreachable_radii_not_zero():
    old = certified_record({"0": 0.9, "0.05": 0.6, "0.2": 0.0}, with_max=False)  # a record from before max_radius
    assert radius_reach(old)[1] == {"0.2"}
    text = "\n".join(certification_section([old]))
    assert "0.2: n/r¹" in text and "0.2: 0.000" not in text and "not reachable with this n" in text
    ok = certified_record({"0": 0.9, "0.05": 0.6, "0.15": 0.2})
    assert "n/r" not in "\n".join(certification_section([ok]))


def test_certified_steps_follow_the_per_item_radii_and_stop_at_the_largest_radius():
    items = {"label": [0, 1, 2, 3], "pred": [0, 1, 2, 0], "radius": [0.01, 0.05, 0.15, 0.3]}
    xs, ys = certified_steps(certified_record({"0": 0.75}, per_item=items), 0.15)
    assert xs[0] == 0 and ys[0] == 0.75 and xs[-1] == 0.15
    assert (xs[1], ys[1]) == (0.01, 0.5) and (xs[2], ys[2]) == (0.05, 0.25)
    assert not math.isnan(ys[-1]) and ys[-1] == 0.25


def test_plot_certified_draws_without_error(tmp_path):
    items = {"label": [0, 1, 2, 3], "pred": [0, 1, 2, 0], "radius": [0.01, 0.05, 0.15, 0.3]}
    paths = plot_certified([certified_record({"0": 0.75, "0.05": 0.5, "0.2": 0.0}, per_item=items)], tmp_path)
    assert {p.suffix for p in paths} == {".png", ".svg"}
