"""report.html: the same tables and figures as report.md in one self-contained page (no network,
inline CSS and script, figures by relative path) with sortable tables; checked as text here and in
a real headless Chromium (tests/_browser.py), which skips without one unless CI requires it."""
import re

import pytest
from _browser import check_page, new_driver, require_browser

from robustmm.records import Result
from robustmm.report.blocks import numeric_value, parse_blocks
from robustmm.report.html import markdown_to_html

MODEL, DATA = {"name": "tinybind"}, {"name": "synthscenes", "split": "test"}


def rec(modality, attack=None, threat="clean", clean=0.8, attacked=None, defense=None, n=16, model=None):
    metrics = {"clean": {"zeroshot_top1": clean, "t2x_R@1": clean - 0.1}, "attacked": None, "delta": None, "asr": None}
    if attacked is not None:
        metrics["attacked"] = {"zeroshot_top1": attacked, "t2x_R@1": attacked}
        metrics["asr"] = round(1 - attacked / clean, 3)
    return Result(model=model or dict(MODEL), dataset=dict(DATA), modality=modality, attack=attack, defense=defense,
                  threat=threat, metrics=metrics, n=n, seed=0, timing_s=0.5)


def records():
    """Clean rows, nested PGD curves on two modalities, a defended row and a single-budget attack."""
    from robustmm.modalities import MODALITIES

    out = []
    for m, c in (("image", 0.9), ("audio", 0.7)):
        out.append(rec(m, clean=c))
        for i, eps in enumerate(MODALITIES[m].eps_grid):
            out.append(rec(m, {"name": "pgd", "eps": eps, "norm": "linf", "steps": 5, "nested": True}, "white-box",
                           clean=c, attacked=c * 0.5 ** (i + 1)))
    mid = MODALITIES["image"].middle_eps
    out.append(rec("image", {"name": "apgd", "eps": mid, "steps": 5, "loss": "ce"}, "white-box", 0.9, 0.05))
    out.append(rec("image", {"name": "pgd", "eps": mid, "steps": 5}, "adaptive", 0.85, 0.4,
                   defense={"name": "jpeg", "quality": 75}))
    return out


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    """A report folder written by write_report (summary.csv, plots/, report.md/.html/.tex)."""
    from robustmm.job.runner import write_report

    out = tmp_path_factory.mktemp("report")
    write_report(records(), out)
    return out


def test_numeric_value_reads_plain_and_labelled_numbers():
    assert numeric_value("0.412") == 0.412
    assert numeric_value("**0.125**") == 0.125
    assert numeric_value("4/255: **0.120** (PGD-5: 0.200)") == 0.12
    assert numeric_value("12%") == pytest.approx(0.12)
    assert numeric_value("4/255") == pytest.approx(4 / 255) and numeric_value("0.002") == 0.002
    assert numeric_value("—") is None and numeric_value("pgd (zero-shot loss)") is None


def test_markdown_to_html_turns_every_block_into_html():
    md = ("# Title\n\nSome **bold** and `code` & <tags>.\n\n## Section one\n\n| name | score |\n|---|---|\n"
          "| a_b | 0.5 |\n| c | — |\n\n- item *one*\n- item two\n\n![plots/x.png](plots/x.png)\n\n## Two\n\n```\nraw <b>\n```\n")
    html = markdown_to_html(md)
    assert '<table class="sortable">' in html and '<th scope="col">score</th>' in html
    assert '<td data-value="0.5" class="num">0.5</td>' in html and "<td>—</td>" in html
    assert "<strong>bold</strong>" in html and "<code>code</code>" in html and "&amp; &lt;tags&gt;" in html
    assert "<li>item <em>one</em></li>" in html and '<img src="plots/x.png"' in html
    assert "<pre><code>raw &lt;b&gt;\n</code></pre>" not in html and "<pre><code>raw &lt;b&gt;</code></pre>" in html
    assert '<a href="#section-one">Section one</a>' in html  # the contents


def test_html_has_no_outside_reference(report_dir):
    html = (report_dir / "report.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(not re.match(r"^[a-z]+:|^//", r) for r in refs), refs
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_report_html_shows_the_tables_and_figures_of_report_md(report_dir):
    md = (report_dir / "report.md").read_text()
    html = (report_dir / "report.html").read_text()
    blocks = parse_blocks(md)
    tables = [b for b in blocks if b.kind == "table"]
    images = [b.src for b in blocks if b.kind == "image"]
    assert tables and images
    assert html.count('<table class="sortable">') == len(tables)
    assert re.findall(r'<img src="([^"]+)"', html) == images
    assert all((report_dir / src).is_file() and src.startswith("plots/") for src in images)
    for t in tables:
        for h in t.headers:
            assert f">{h}</th>" in html.replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&"), h
    assert (report_dir / "report.tex").is_file()


def test_html_escapes_record_text(tmp_path):
    from robustmm.job.runner import write_report

    rs = [rec("image", model={"name": "<script>alert(1)</script>"})]
    write_report(rs, tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# --- in a real browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    require_browser()
    driver = new_driver()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, rand_encoder):
    """A real `robustmm run` on a random TinyBind: clean and PGD curves on thermal, 8 items."""
    from robustmm.cli import main
    from robustmm.job.registry import cell_kinds

    d = tmp_path_factory.mktemp("run")
    rand_encoder.save(d / "model")
    off = "".join(f"[{k.name}]\nenabled = false\n" for k in cell_kinds()
                  if k.name not in ("clean", "pgd", "run", "report", "attacks"))
    (d / "job.toml").write_text(f'[run]\nmodel = "tinybind:{d / "model"}"\nquick_n = 8\nmodalities = ["thermal"]\n'
                                f"batch_size = 8\n[report]\nexamples = false\n{off}")
    assert main(["run", str(d / "job.toml"), "--quick", "--out", str(d / "out"), "--quiet"]) == 0
    return d / "out"


def screenshots(tmp_path):
    from _browser import artifacts_dir

    return artifacts_dir(tmp_path / "screenshots")


def test_report_html_of_a_job_run_works_in_a_browser(tiny_run, browser, tmp_path):
    report = check_page(tiny_run / "report.html", screenshots(tmp_path), driver=browser)
    print(f"screenshot: {report.screenshot}")
    assert report.problems == []
    assert report.title == "robustmm report"
    assert report.images >= 1 and report.sortable_tables >= 2 and report.sorts
    assert report.screenshot is not None and report.screenshot.stat().st_size > 10_000


def test_report_html_of_write_report_works_in_a_browser(report_dir, browser, tmp_path):
    report = check_page(report_dir / "report.html", screenshots(tmp_path), driver=browser)
    print(f"screenshot: {report.screenshot}")
    assert report.problems == []
    assert report.images >= 3 and any(s.numeric for s in report.sorts)


def test_sortable_tables_sort_numbers_as_numbers_and_empty_cells_last(tmp_path, browser):
    from selenium.webdriver.common.by import By

    md = "# t\n\n| name | score |\n|---|---|\n| a | 10 |\n| b | — |\n| c | 9 |\n| d | 0.5 |\n"
    page = tmp_path / "t.html"
    page.write_text(markdown_to_html(md))
    browser.get(page.as_uri())
    header = browser.find_elements(By.CSS_SELECTOR, "thead th")[1]

    def column():
        return [row.find_elements(By.TAG_NAME, "td")[1].text for row in browser.find_elements(By.CSS_SELECTOR, "tbody tr")]

    header.click()
    assert column() == ["0.5", "9", "10", "—"] and header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert column() == ["10", "9", "0.5", "—"] and header.get_attribute("aria-sort") == "descending"


def test_check_page_reports_a_missing_image_and_a_console_error(tmp_path, browser):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><title>x</title></head><body><img src="plots/none.png">'
                    "<script>console.error('boom')</script></body></html>")
    report = check_page(page, driver=browser)
    assert report.broken_images == ["plots/none.png"]
    assert any("boom" in e for e in report.console_errors)
    assert len(report.problems) >= 2
