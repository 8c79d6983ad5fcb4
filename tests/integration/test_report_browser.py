"""The report in a real browser: Debian's chromium, headless, driven by Playwright's Python package
(never a downloaded browser: executable_path is /usr/bin/chromium).

On a run directory shaped like a real one (tests/unit/test_report_pages.make_run: three hosts in
three KVM modes, every verdict, workload rates in both modes, a migration with heartbeat logs, a
hang's forensics): report.html and every cell page load without console errors; each filter
shows exactly the cells it should; every link resolves to a file (or an anchor) that exists;
the charts render as non-empty SVG. A screenshot of the matrix is kept in the test's tmp_path."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from harness.report.layout import kvm_mode
from harness.report.overview import filter_attrs
from unit.test_report_pages import make_run

CHROMIUM = "/usr/bin/chromium"
# As root Chromium needs --no-sandbox; the rest keep a headless run off the network and quiet.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]


def _browser_or_skip():
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no {CHROMIUM}: Debian's chromium is not installed (scripts/bootstrap.sh installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright's Python package is not installed (pip install '.[test]')")
    return sync_playwright


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    sync_playwright = _browser_or_skip()
    out = tmp_path_factory.mktemp("report")
    results = make_run(out)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield out, results, browser
        finally:
            browser.close()


def open_page(browser, path: Path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, errors


def test_report_loads_without_errors_and_a_screenshot_is_kept(site, tmp_path):
    out, results, browser = site
    page, errors = open_page(browser, out / "report.html")
    shot = tmp_path / "matrix.png"
    page.locator("h2#matrix").scroll_into_view_if_needed()
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot of the report: {shot}")
    assert shot.stat().st_size > 10_000
    assert errors == []
    assert page.locator("#f-count").inner_text() == f"{len(results['cells'])} of {len(results['cells'])} cells shown"


def _visible_ids(page) -> list[str]:
    return page.eval_on_selector_all("tr.ck-cell:not([hidden])", "els => els.map(e => e.id)")


def test_each_filter_shows_exactly_its_cells(site):
    out, results, browser = site
    page, errors = open_page(browser, out / "report.html")
    attrs = {c["id"]: filter_attrs(c, kvm_mode(results, c)) for c in results["cells"]}
    keys = page.eval_on_selector_all("#filters select", "els => els.map(e => e.dataset.key)")
    assert keys == ["host", "kvm", "ic_mode", "kernel_irqchip", "cpu", "cpu_compat", "guest_xive", "verdict"]
    for key in keys:
        values = page.eval_on_selector_all(f"#f-{key} option", "els => els.map(e => e.value)")[1:]
        assert sorted(values) == sorted({a[key] for a in attrs.values()})
        for v in values:
            page.select_option(f"#f-{key}", v)
            want = [cid for cid, a in attrs.items() if a[key] == v]
            assert _visible_ids(page) == want, (key, v)
            # The matrix shows the same cells, and only the rows that still hold one.
            shown = page.eval_on_selector_all("div.ck-cell:not([hidden]) a[href^='#']",
                                              "els => els.map(e => e.getAttribute('href').slice(1))")
            assert sorted(shown) == sorted(want), (key, v)
            assert page.locator("#f-count").inner_text() == f"{len(want)} of {len(attrs)} cells shown"
        page.select_option(f"#f-{key}", "")
    # Two filters at once: their intersection.
    page.select_option("#f-host", "powernv9")
    page.select_option("#f-verdict", "SKIP")
    assert _visible_ids(page) == [cid for cid, a in attrs.items() if a["host"] == "powernv9" and a["verdict"] == "SKIP"]
    hidden_rows = page.eval_on_selector_all("tr.mrow[hidden]", "els => els.length")
    assert hidden_rows > 0
    assert errors == []


def _links(page) -> list[str]:
    return page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")


def _check_links(page, where: Path) -> int:
    n = 0
    for href in _links(page):
        u = urlparse(href)
        assert u.scheme == "file", f"{where}: a link off the archive: {href}"
        target = Path(unquote(u.path))
        assert target.exists(), f"{where}: {href} names no file"
        if u.fragment and target == where:
            assert page.locator(f"[id='{u.fragment}']").count() == 1, f"{where}: no element #{u.fragment}"
        n += 1
    return n


def test_every_link_resolves_and_every_cell_page_loads(site):
    out, results, browser = site
    page, errors = open_page(browser, out / "report.html")
    assert _check_links(page, out / "report.html") > 3 * len(results["cells"])
    for c in results["cells"]:
        p = out / "cells" / c["id"] / "index.html"
        cell_page, cell_errors = open_page(browser, p)
        assert _check_links(cell_page, p) >= 1
        assert cell_errors == [], c["id"]
        cell_page.close()
    assert errors == []


def _svg_ok(page, selector: str) -> None:
    boxes = page.eval_on_selector_all(selector, """els => els.map(e => {
        const r = e.getBoundingClientRect();
        return [r.width, r.height, e.querySelectorAll('path, rect, text, use').length];
    })""")
    assert boxes, f"no {selector}"
    for w, h, parts in boxes:
        assert w > 100 and h > 50 and parts > 10, (selector, w, h, parts)


def test_charts_render(site):
    out, results, browser = site
    page, errors = open_page(browser, out / "report.html")
    _svg_ok(page, "#chart-rates svg")
    _svg_ok(page, "#chart-downtime svg")
    mig = next(c for c in results["cells"] if c["migration"])
    cell_page, cell_errors = open_page(browser, out / "cells" / mig["id"] / "index.html")
    _svg_ok(cell_page, ".hop figure.chart svg")
    assert cell_page.locator(".hop figure.chart svg").count() == 2
    assert errors == [] and cell_errors == []


def test_the_cell_page_searches_its_logs(site):
    out, results, browser = site
    mig = next(c for c in results["cells"] if c["migration"])
    page, errors = open_page(browser, out / "cells" / mig["id"] / "index.html")
    page.fill("#logsearch", "caskit# machine B")
    hits = page.eval_on_selector_all("span.ln.hit", "els => els.map(e => e.textContent)")
    assert hits == ["#caskit# machine B"]
    assert page.locator("#logcount").inner_text() == "1 matching line(s)"
    assert page.eval_on_selector_all("span.ln:not([hidden])", "els => els.length") == 1
    page.fill("#logsearch", "")
    assert page.eval_on_selector_all("span.ln[hidden]", "els => els.length") == 0
    assert errors == []

