"""A real browser for tests: headless Chromium driven by chromedriver through selenium.

:func:`check_page` opens one HTML file by its ``file://`` URL and reports what a reader would
meet: the browser console's errors, every ``<img>`` that did not load, every request that left the
page's own folder tree (the pages must work offline), and, for each ``<table class="sortable">``,
whether clicking a header sorted the rows. It saves a screenshot, and works on any page (the
job's report.html, a leaderboard site's pages), so one test per page kind is one call.

Without chromium, chromedriver or selenium the tests skip with the reason, unless
``ROBUSTMM_REQUIRE_BROWSER=1`` (CI sets it), when they fail instead. Screenshots go to
``ROBUSTMM_BROWSER_ARTIFACTS`` (CI: ``.ci-artifacts/browser``, git-ignored) or the test's tmp folder.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

#: the names Debian and others give the browser and its driver
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVERS = ("chromedriver",)


def find_browser() -> tuple[str | None, str | None, str]:
    """(browser binary, chromedriver binary, why not) -- the reason is empty when both are there."""
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver = next((shutil.which(d) for d in DRIVERS if shutil.which(d)), None)
    try:
        import selenium  # noqa: F401
    except ImportError:
        return browser, driver, "selenium is not installed (pip install -e '.[test]')"
    missing = [name for name, path in (("chromium", browser), ("chromedriver", driver)) if path is None]
    if missing:
        return browser, driver, (f"{' and '.join(missing)} not on PATH (Debian: apt-get install -y chromium "
                                 "chromium-driver)")
    return browser, driver, ""


def require_browser() -> tuple[str, str]:
    """The browser and driver paths; skips the test when either is missing, or fails it when
    ``ROBUSTMM_REQUIRE_BROWSER=1`` (so CI cannot pass without running the browser tests)."""
    browser, driver, why = find_browser()
    if why:
        if os.environ.get("ROBUSTMM_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test cannot run and ROBUSTMM_REQUIRE_BROWSER=1: {why}")
        pytest.skip(f"no browser for the browser tests: {why}")
    assert browser and driver
    return browser, driver


def artifacts_dir(default: Path) -> Path:
    """Where screenshots go: ``ROBUSTMM_BROWSER_ARTIFACTS`` when set, else ``default``."""
    d = Path(os.environ.get("ROBUSTMM_BROWSER_ARTIFACTS") or default)
    d.mkdir(parents=True, exist_ok=True)
    return d


@dataclass
class TableSort:
    """What clicking one header of a sortable table did: the column's keys before and after."""

    table: int
    column: int
    header: str
    numeric: bool
    before: list[Any]
    after: list[Any]
    aria_sort: str | None

    @property
    def sorted(self) -> bool:
        """Whether the column reads in order after the click, ascending or (a leaderboard's best
        first) descending, as its ``aria-sort`` says when it says; empty cells last."""
        keys = [k for k in self.after if k is not None]
        if not all(k is not None for k in self.after[:len(keys)]):
            return False
        if self.aria_sort in ("ascending", "descending"):
            return keys == sorted(keys, reverse=self.aria_sort == "descending")
        return keys in (sorted(keys), sorted(keys, reverse=True))


@dataclass
class PageReport:
    """What :func:`check_page` found on one page."""

    url: str
    title: str = ""
    console_errors: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    images: int = 0
    tables: int = 0
    sortable_tables: int = 0
    sorts: list[TableSort] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def problems(self) -> list[str]:
        """Every failure, one line each (empty: the page is fine)."""
        out = [f"console error: {e}" for e in self.console_errors]
        out += [f"image did not load: {s}" for s in self.broken_images]
        out += [f"request outside the page's folder: {u}" for u in self.outside_requests]
        out += [f"table {s.table} column {s.column} ({s.header!r}) not sorted after a click: {s.after}"
                for s in self.sorts if not s.sorted]
        out += [f"table {s.table}: the clicked header has aria-sort={s.aria_sort!r}" for s in self.sorts
                if s.aria_sort not in ("ascending", "descending")]
        return out


def new_driver(width: int = 1400, height: int = 1000) -> Any:
    """A headless Chromium (no sandbox: tests may run as root in a container) that keeps the
    console's log, so SEVERE entries can be read back."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = require_browser()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--allow-file-access-from-files", "--disable-extensions",
                "--no-first-run", "--no-default-browser-check", "--disable-background-networking"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


_CELL_KEYS = """
const [table, col] = arguments;
const body = table.tBodies[0];
if (!body) return [false, []];
const rows = Array.from(body.rows);
const empty = c => !c || ["", "\\u2014"].includes(c.textContent.trim());
const numeric = rows.some(r => r.cells[col] && r.cells[col].hasAttribute("data-value")) &&
  rows.every(r => empty(r.cells[col]) || r.cells[col].hasAttribute("data-value"));
return [numeric, rows.map(r => {
  const c = r.cells[col];
  if (empty(c)) return null;
  return numeric ? parseFloat(c.getAttribute("data-value")) : c.textContent.trim().toLowerCase();
})];
"""


def _pick_column(driver: Any, table: Any, headers: list[Any]) -> int:
    """The first column whose values are not already in ascending order (so a click must show),
    numeric columns first (they exercise ``data-value``); else 0."""
    candidates = []
    for j in range(len(headers)):
        numeric, keys = driver.execute_script(_CELL_KEYS, table, j)
        present = [k for k in keys if k is not None]
        if len(set(map(str, present))) > 1 and present != sorted(present):
            candidates.append((not numeric, j))
    return min(candidates)[1] if candidates else 0


def check_page(path: str | Path, screenshot_dir: str | Path | None = None, driver: Any = None,
               sort_tables: int = 3) -> PageReport:
    """Open ``path`` (an HTML file) by its ``file://`` URL in headless Chromium and report what is
    wrong: console errors (SEVERE), images that did not load (not complete or naturalWidth 0),
    requests leaving the page's folder tree, and for the first ``sort_tables`` sortable tables
    whether a click on a header sorted the rows ascending. A full-page screenshot goes to
    ``screenshot_dir`` when given. ``driver``: reuse an open one (it is left open), else one is
    started and quit."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    path = Path(path).resolve()
    own = new_driver() if driver is None else driver
    report = PageReport(url=path.as_uri())
    try:
        own.get(report.url)
        WebDriverWait(own, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
        own.execute_script("Array.from(document.images).forEach(i => { i.loading = 'eager'; });")
        WebDriverWait(own, 30).until(lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete)"))
        report.title = own.title
        report.images = own.execute_script("return document.images.length")
        report.broken_images = own.execute_script(
            "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
            ".map(i => i.getAttribute('src'))")
        root = path.parent.as_uri()
        resources = own.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        report.outside_requests = [u for u in resources if not u.startswith(root + "/") and not u.startswith("data:")]
        report.tables = len(own.find_elements(By.TAG_NAME, "table"))
        sortable = own.find_elements(By.CSS_SELECTOR, "table.sortable")
        report.sortable_tables = len(sortable)
        for ti, table in enumerate(sortable[:sort_tables]):
            headers = table.find_elements(By.CSS_SELECTOR, "thead th")
            if not headers or not table.find_elements(By.CSS_SELECTOR, "tbody tr"):
                continue
            col = _pick_column(own, table, headers)
            numeric, before = own.execute_script(_CELL_KEYS, table, col)
            own.execute_script("arguments[0].scrollIntoView({block: 'center'});", headers[col])
            headers[col].click()
            _, after = own.execute_script(_CELL_KEYS, table, col)
            report.sorts.append(TableSort(ti, col, headers[col].text, numeric, before, after,
                                          headers[col].get_attribute("aria-sort")))
        if screenshot_dir is not None:
            out = Path(screenshot_dir)
            out.mkdir(parents=True, exist_ok=True)
            height = own.execute_script("return Math.min(document.documentElement.scrollHeight, 16000)")
            own.set_window_size(1400, max(800, int(height)))
            own.execute_script("window.scrollTo(0, 0);")
            report.screenshot = out / f"{path.parent.name}_{path.stem}.png"
            own.save_screenshot(str(report.screenshot))
        report.console_errors = [e.get("message", str(e)) for e in own.get_log("browser") if e.get("level") == "SEVERE"]
    finally:
        if driver is None:
            own.quit()
    return report


def check_site(folder: str | Path, screenshot_dir: str | Path | None = None) -> list[PageReport]:
    """:func:`check_page` on every ``*.html`` under ``folder`` (a static site: the leaderboard's
    index and entry pages), in one browser; one report per page, in path order."""
    pages = sorted(Path(folder).rglob("*.html"))
    if not pages:
        return []
    driver = new_driver()
    try:
        return [check_page(p, screenshot_dir, driver=driver) for p in pages]
    finally:
        driver.quit()
