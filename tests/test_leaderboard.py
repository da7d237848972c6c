"""The leaderboard site: one page per entry, images on disk, sortable tables, nothing from the network."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from robustmm.cli import main
from robustmm.job.bench_entry import check_entry
from robustmm.job.leaderboard import entry_files, leaderboard_command
from robustmm.report.leaderboard import entry_slug, render_site

GRIDS = {"image": [1 / 255, 4 / 255, 16 / 255], "audio": [0.001, 0.004]}


def make_entry(name: str, robust: float, *, defense: str | None = None, certified: bool = False) -> dict:
    """A schema-valid entry with made-up numbers (``robust`` scales every robust accuracy)."""
    mods = {}
    for m, grid in GRIDS.items():
        curve = [{"eps": e, "robust": round(robust / (i + 1), 4), "cost": {"forward": 10 * (i + 1), "backward": 8},
                  "wall_s": 1.0} for i, e in enumerate(grid)]
        mods[m] = {"defended": defense is not None and m == "image", "n": 100, "clean": 0.9, "robust": curve,
                   "headline_eps": grid[1], "headline": curve[1]["robust"], "cost": {"forward": 60, "backward": 24},
                   "certified": None if not certified else {
                       "sigma": 0.12, "n": 50, "cost": None,
                       "curve": [{"radius": 0.0, "accuracy": 0.8}, {"radius": 0.05, "accuracy": 0.5},
                                 {"radius": 0.2, "accuracy": None}]}}
    per = {m: v["headline"] for m, v in mods.items()}
    return {"schema": "robustmm.entry/1",
            "model": {"name": name, "model": "tinybind", "parameters": 1000, "trained_parameters": 10,
                      "trainable_share": 0.01, "weights_sha256": "0" * 64,
                      "defense": None if defense is None else {"name": defense, "kind": "input transform", "settings": {}}},
            "headline": {"robust": sum(per.values()) / len(per), "clean": 0.9, "per_modality": per,
                         "defended_modalities": [m for m, v in mods.items() if v["defended"]]},
            "modalities": mods,
            "provenance": {"robustmm": "0.1.0", "torch": "2", "git_commit": None, "machine": {"platform": "test"},
                           "date": "2026-01-01T00:00:00Z", "seed": 0, "command": "robustmm bench tinybind",
                           "protocol": {"name": "mm-v1", "version": "1.0", "sha256": "a" * 64, "quick": False}}}


class _Tags(HTMLParser):
    """Every start tag with its attributes, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags(path: Path) -> list[tuple[str, dict[str, str | None]]]:
    p = _Tags()
    p.feed(path.read_text(encoding="utf-8"))
    return p.tags


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(site folder, entry files, pages) for three entries, one of them certified."""
    root = tmp_path_factory.mktemp("lb")
    files = []
    for name, robust, kw in [("bare", 0.3, {}), ("jpeg", 0.5, {"defense": "jpeg"}),
                             ("smoothing", 0.4, {"defense": "smoothing", "certified": True})]:
        entry = make_entry(name, robust, **kw)
        check_entry(entry)
        (root / "entries").mkdir(exist_ok=True)
        files.append(root / "entries" / f"{name}.json")
        files[-1].write_text(json.dumps(entry))
    pages = leaderboard_command([str(root / "entries")], str(root / "site"))
    return root / "site", files, pages


def html_pages(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.html"))


def test_render_site_one_page_per_entry(site):
    folder, files, pages = site
    assert sorted(p.name for p in pages) == sorted(f"{f.stem}.html" for f in files)
    assert (folder / "index.html").exists()
    links = [a["href"] for t, a in tags(folder / "index.html") if t == "a"]
    for f in files:
        assert f"entries/{f.stem}.html" in links


def test_render_site_every_img_exists(site):
    folder = site[0]
    n = 0
    for page in html_pages(folder):
        for t, a in tags(page):
            if t == "img":
                n += 1
                assert (page.parent / a["src"]).resolve().is_file(), (page, a["src"])
                assert a.get("alt")
    assert n >= 3 + 2  # a curve per entry, a certified curve, an overview per modality
    assert (folder / "img" / "smoothing-certified.png").is_file()
    assert not (folder / "img" / "bare-certified.png").exists()


def test_render_site_makes_no_network_reference(site):
    for page in html_pages(site[0]):
        text = page.read_text(encoding="utf-8")
        for t, a in tags(page):
            for key in ("src", "href"):
                assert not re.match(r"\s*(https?:)?//", a.get(key) or ""), (page, t, a)
        assert not re.search(r"(src|href)\s*=\s*[\"']?\s*https?://", text, re.I)
        assert "@import" not in text and "url(" not in text
        assert not any(t == "iframe" or (t == "link" and a.get("href") != "data:,") for t, a in tags(page))


def test_render_site_sortable_tables(site):
    folder = site[0]
    index = folder / "index.html"
    text = index.read_text(encoding="utf-8")
    assert text.count('<table class="sortable"') == 1 + len(GRIDS)
    assert "<script>" in text and "addEventListener" in text
    cells = [a for t, a in tags(index) if t == "td" and "data-value" in a]
    assert cells and all(float(a["data-value"]) == float(a["data-value"]) for a in cells)
    # the overall table is ordered by the headline, best first
    order = re.findall(r'<td class="name"><a href="entries/([^"]+)\.html"', text.split('id="overall"')[1].split("</table>")[0])
    assert order == ["jpeg", "smoothing", "bare"]
    cert_page = (folder / "entries" / "smoothing.html").read_text(encoding="utf-8")
    assert 'id="certified"' in cert_page and '<td class="na">n/a</td>' in cert_page


def test_entry_slug_is_unique_and_safe():
    taken: set[str] = set()
    assert entry_slug("a/b c.json", taken) == "b-c"
    assert entry_slug("x/b c.json", taken) == "b-c-2"
    assert entry_slug("../<x>.json") == "x"


def test_leaderboard_cli_refuses_an_invalid_entry(tmp_path, capsys):
    entry = make_entry("bad", 0.2)
    entry["headline"]["robust"] = "high"
    (tmp_path / "bad.json").write_text(json.dumps(entry))
    assert main(["leaderboard", str(tmp_path / "bad.json"), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "entry.headline.robust" in err
    assert not (tmp_path / "site" / "index.html").exists()


def test_leaderboard_cli_writes_the_site(tmp_path, capsys):
    (tmp_path / "e.json").write_text(json.dumps(make_entry("one", 0.2)))
    assert main(["leaderboard", str(tmp_path / "e.json"), "--out", str(tmp_path / "site")]) == 0
    assert "1 entries" in capsys.readouterr().out
    assert (tmp_path / "site" / "entries" / "e.html").is_file()


def test_entry_files_refuses_an_empty_folder(tmp_path):
    from robustmm.errors import EntryError

    with pytest.raises(EntryError, match="no entry files"):
        entry_files([str(tmp_path)])


def test_render_site_warns_about_mixed_protocols(tmp_path):
    a, b = make_entry("a", 0.2), make_entry("b", 0.3)
    b["provenance"]["protocol"]["sha256"] = "b" * 64
    render_site([("a.json", a), ("b.json", b)], tmp_path)
    assert "not comparable" in (tmp_path / "index.html").read_text(encoding="utf-8")
