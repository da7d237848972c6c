"""The leaderboard site (`robustmm leaderboard ENTRIES --out site/`) in a real browser: every page
loads without console errors, every image loads, nothing is fetched from outside the site, and the
sortable tables sort. Rendered from the measured entries in leaderboard/entries/."""
from pathlib import Path

from _browser import artifacts_dir, check_site, require_browser

ENTRIES = sorted((Path(__file__).parent.parent / "leaderboard" / "entries").glob("*.json"))


def test_leaderboard_site_works_in_a_browser(tmp_path):
    from robustmm.cli import main

    require_browser()
    assert ENTRIES, "leaderboard/entries/*.json: the measured entries are missing"
    site = tmp_path / "site"
    assert main(["leaderboard", *map(str, ENTRIES), "--out", str(site)]) == 0
    reports = check_site(site, artifacts_dir(tmp_path / "screenshots"))
    print("screenshots:", *[r.screenshot for r in reports])
    assert len(reports) == len(ENTRIES) + 1  # the index and one page per entry
    assert [p for r in reports for p in r.problems] == []
    assert any(r.sortable_tables for r in reports) and all(r.images for r in reports)
