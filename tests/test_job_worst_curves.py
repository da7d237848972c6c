"""The [worst_curves] cell in `robustmm run`: per modality one worst-case record per eps of the
grid, never above the job's PGD curve nor, on the ensemble's items, the ensemble; the report
headlines it and the consistency check passes."""
import pytest

from robustmm.job import cell_kinds, parse_config, run_job
from robustmm.report.consistency import check_consistency


def only(*kinds: str, **sections) -> dict:
    raw = {k.name: {"enabled": False} for k in cell_kinds() if k.name not in ("attacks", *kinds)}
    raw["report"] = {"examples": False}
    return raw | sections


@pytest.fixture(scope="module")
def job(tmp_path_factory, trained, one_thread):
    out = tmp_path_factory.mktemp("job") / "o"
    config = parse_config(only("pgd", "ensemble", "worst_curves",
                               run={"quick_n": 12, "quick_attack_n": 12, "batch_size": 12, "modalities": ["audio"]},
                               pgd={"quick_steps": 2, "retrieval": False},
                               ensemble={"quick_steps": 2, "quick_n_queries": 5, "quick_n": 6, "calibrated": False,
                                         "check_parts": False},
                               worst_curves={"quick_steps": 2}))
    return run_job(config, out, quick=True, progress=False), out


def top1(r):
    return r.metrics["attacked"]["zeroshot_top1"]


def test_worst_curve_cell_records_and_bounds(job):
    results, out = job
    worst = sorted((r for r in results if r.extra["cell"] == "tinybind|audio|worst-curve"), key=lambda r: r.attack["eps"])
    pgd = sorted((r for r in results if r.extra["cell"] == "tinybind|audio|pgd-curve"), key=lambda r: r.attack["eps"])
    (ens,) = [r for r in results if r.extra["cell"] == "tinybind|audio|ensemble"]
    assert len(worst) == len(pgd) == 5 and all(r.threat == "worst-case" for r in worst)
    assert all(top1(w) <= top1(p) for w, p in zip(worst, pgd))
    at = next(w for w in worst if abs(w.attack["eps"] - ens.attack["eps"]) < 1e-12)
    assert "ensemble" in at.attack["of"] and sum(at.extra["robust"][: ens.n]) / ens.n <= top1(ens)
    assert set(worst[0].attack["parts"]) == {"pgd-2", "apgd-ce", "apgd-t"}
    assert check_consistency(results) == []
    report = (out / "report.md").read_text()
    assert "per-item worst case, white-box" in report and "**Passed.**" in report and "the weaker attack" in report
    assert (out / "plots" / "robustness_worst.png").exists()
