"""The leaderboard site (`robustmm leaderboard ENTRIES --out site/`) in a real browser: every page
loads without console errors, every image loads, nothing is fetched from outside the site, and the
sortable tables sort. Skipped until `robustmm.report.leaderboard` exists in this tree."""
import pytest
from _browser import artifacts_dir, check_site, require_browser

pytest.importorskip("robustmm.report.leaderboard", reason="robustmm.report.leaderboard is not in this tree")


@pytest.fixture(scope="module")
def job_folder(tmp_path_factory, rand_encoder):
    """A real `robustmm run` on a random TinyBind (clean and PGD curves on thermal, 8 items): one entry."""
    from robustmm.cli import main
    from robustmm.job.registry import cell_kinds

    d = tmp_path_factory.mktemp("entry")
    rand_encoder.save(d / "model")
    off = "".join(f"[{k.name}]\nenabled = false\n" for k in cell_kinds()
                  if k.name not in ("clean", "pgd", "run", "report", "attacks"))
    (d / "job.toml").write_text(f'[run]\nmodel = "tinybind:{d / "model"}"\nquick_n = 8\nmodalities = ["thermal"]\n'
                                f"batch_size = 8\n[report]\nexamples = false\n{off}")
    assert main(["run", str(d / "job.toml"), "--quick", "--out", str(d / "out"), "--quiet"]) == 0
    return d / "out"


def test_leaderboard_site_works_in_a_browser(job_folder, tmp_path):
    from robustmm.cli import main

    require_browser()
    site = tmp_path / "site"
    # ENTRIES: the job's folder (adjust here if the leaderboard command takes its entries otherwise)
    assert main(["leaderboard", str(job_folder), "--out", str(site)]) == 0
    reports = check_site(site, artifacts_dir(tmp_path / "screenshots"))
    print("screenshots:", *[r.screenshot for r in reports])
    assert len(reports) >= 2  # the index and one page per entry
    assert [p for r in reports for p in r.problems] == []
    assert any(r.sortable_tables for r in reports) and any(r.images for r in reports)
