"""End to end in a real browser: ``gateway review`` runs as a subprocess on a free loopback
port against a seeded SQLite ledger, and headless Chromium logs in, filters, opens the
access-request report and looks at the charts (screenshots in /tmp/review-*.png); then every
page at 400 and 1366 pixels wide: nothing wider than the screen, no table scrolling
sideways, chart text of 11 pixels or more, a compact header (full-page screenshots in the
test's temporary directory, their paths printed)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from gateway.ledger.query import RecordFilter, list_records
from gateway.ledger.reports import subject_report
from gateway.ledger.store import open_store
from tests.ledger.data import ref
from tests.web.helpers import Review

pytestmark = pytest.mark.browser

WAIT = 15  # seconds for any one thing to appear


def _wait(drv: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(drv, WAIT)


def _screenshot(drv: WebDriver, name: str) -> Path:
    # The whole page: make the window as tall as the document first.
    height = drv.execute_script("return document.documentElement.scrollHeight")
    drv.set_window_size(1400, min(max(int(height), 800), 6000))
    path = Path(f"/tmp/review-{name}.png")
    assert drv.save_screenshot(str(path))
    drv.set_window_size(1400, 1000)
    return path


def _csp_errors(drv: WebDriver) -> list[str]:
    return [
        e["message"]
        for e in drv.get_log("browser")
        if "Content Security Policy" in e["message"] or "Refused to" in e["message"]
    ]


def test_review_in_a_browser(review: Review, driver: WebDriver) -> None:
    drv, base = driver, review.url

    # Without a session the browser lands on the login page, which remembers where to go.
    drv.get(base + "records?agent=shipping")
    _wait(drv).until(ec.presence_of_element_located((By.ID, "username")))
    assert "/login" in drv.current_url
    assert "records" not in drv.find_element(By.TAG_NAME, "main").text.lower()

    drv.find_element(By.ID, "username").send_keys(review.user)
    drv.find_element(By.ID, "password").send_keys("not the password")
    drv.find_element(By.ID, "login").click()
    _wait(drv).until(ec.presence_of_element_located((By.ID, "login-error")))

    drv.find_element(By.ID, "password").send_keys(review.password)
    drv.find_element(By.ID, "login").click()
    _wait(drv).until(ec.presence_of_element_located((By.ID, "records")))
    assert drv.current_url.endswith("/records?agent=shipping")

    # Filter by customer id: the page shows exactly that subject's records.
    drv.get(base + "records")
    field = _wait(drv).until(ec.element_to_be_clickable((By.ID, "f-subject")))
    field.send_keys("B-2001")
    Select(drv.find_element(By.NAME, "per_page")).select_by_value("200")
    drv.find_element(By.ID, "f-submit").click()
    _wait(drv).until(ec.url_contains("subject_ref="))
    assert "B-2001" not in drv.current_url  # swapped for the pseudonym
    with open_store(review.db, create=False) as store:
        want = [
            r.record_id
            for r in list_records(store, RecordFilter(subject_ref=ref("B-2001")), limit=None)
        ]
        report = subject_report(store, ref("B-2001"))
    count = drv.find_element(By.ID, "record-count").text
    assert int(count.replace(",", "")) == len(want)
    rows = drv.find_elements(By.CSS_SELECTOR, "#records tbody tr")
    assert [r.get_attribute("data-record-id") for r in rows] == want[:200]
    _screenshot(drv, "records")
    if len(want) > 200:
        drv.find_element(By.ID, "next-page").click()
        _wait(drv).until(ec.url_contains("page=2"))
        rows = drv.find_elements(By.CSS_SELECTOR, "#records tbody tr")
        assert [r.get_attribute("data-record-id") for r in rows] == want[200:400]

    # The access-request report for that subject, from the link on the list.
    drv.find_element(By.LINK_TEXT, ref("B-2001")).click()
    _wait(drv).until(ec.presence_of_element_located((By.ID, "subject-report")))
    assert drv.find_element(By.ID, "subject-ref").text == ref("B-2001")
    agents = [
        td.text for td in drv.find_elements(By.CSS_SELECTOR, "#recipients tbody td:nth-child(2)")
    ]
    assert agents == [s.agent for s in report.recipients]
    assert "Lens Partners Wholesale GmbH" in drv.page_source  # the reseller, marketing
    _screenshot(drv, "subject")

    # The dashboard: three charts, drawn as SVG and an HTML heat table, and a clean log.
    drv.get(base)
    _wait(drv).until(ec.presence_of_element_located((By.CSS_SELECTOR, "svg.line-chart polyline")))
    assert len(drv.find_elements(By.CSS_SELECTOR, "svg.chart")) >= 2
    assert drv.find_elements(By.CSS_SELECTOR, "svg.bar-chart rect")
    assert drv.find_elements(By.CSS_SELECTOR, "table.heat td.h6")
    status = drv.find_element(By.ID, "verify-status")
    assert status.get_attribute("data-status") == "ok" and "Verified" in status.text
    chart = drv.find_element(By.CSS_SELECTOR, "svg.line-chart")
    assert chart.size["width"] > 600 and chart.size["height"] > 150  # laid out, not collapsed
    assert _csp_errors(drv) == []  # the page needs nothing the policy forbids
    _screenshot(drv, "dashboard")

    # Logging out ends the session for this browser.
    drv.find_element(By.ID, "logout").click()
    _wait(drv).until(ec.presence_of_element_located((By.ID, "username")))
    drv.get(base + "agents")
    _wait(drv).until(ec.presence_of_element_located((By.ID, "username")))
    assert "/login" in drv.current_url


# -- any screen ---------------------------------------------------------------------------

NARROW, WIDE = 400, 1366

# Every rendered element must lie within the page's width. Elements inside a box that
# clips or scrolls sideways (an SVG, a visually hidden table head) are that box's business;
# such boxes are listed separately when they do scroll, since a table that scrolls
# sideways hides columns.
_LAYOUT_JS = """
const W = document.documentElement.clientWidth;
const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
  + (e.classList.length ? '.' + [...e.classList].join('.') : '');
const out = [];
for (const el of document.querySelectorAll('body *')) {
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) continue;
  let inside = false;
  for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
    if (getComputedStyle(a).overflowX !== 'visible') { inside = true; break; }
  }
  if (!inside && (r.right > W + 1 || r.left < -1))
    out.push(name(el) + ' ' + Math.round(r.left) + '..' + Math.round(r.right));
}
const scrolling = [...document.querySelectorAll('body *')].filter(e => {
  const s = getComputedStyle(e);
  return ['auto', 'scroll'].includes(s.overflowX) && e.scrollWidth > e.clientWidth + 1;
}).map(name);
const sizes = [...document.querySelectorAll('svg.chart text')]
  .filter(t => t.getBoundingClientRect().width > 0)
  .map(t => parseFloat(getComputedStyle(t).fontSize) * t.getScreenCTM().a);
const header = document.querySelector('header.top').getBoundingClientRect().height;
return {width: W, inner: window.innerWidth, scroll: document.documentElement.scrollWidth,
        wide: out.slice(0, 12), scrolling: scrolling, text: sizes, header: header};
"""


def _viewport(drv: WebDriver, width: int, height: int = 900) -> None:
    drv.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def _full_page(drv: WebDriver, path: Path) -> Path:
    shot = drv.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def _check_layout(drv: WebDriver, width: int, what: str) -> dict[str, Any]:
    got: dict[str, Any] = drv.execute_script(_LAYOUT_JS)
    assert got["inner"] == width, (what, got["inner"])
    assert got["scroll"] <= got["inner"], f"{what}: the page is {got['scroll']}px wide"
    assert got["wide"] == [], f"{what}: wider than the screen: {got['wide']}"
    assert got["scrolling"] == [], f"{what}: scrolls sideways: {got['scrolling']}"
    if got["text"]:
        assert min(got["text"]) >= 11, f"{what}: chart text {min(got['text']):.1f}px"
    if width == NARROW:
        assert got["header"] <= 120, f"{what}: the header takes {got['header']}px"
    return got


def test_review_on_any_screen(review: Review, driver: WebDriver, tmp_path: Path) -> None:
    drv, base = driver, review.url
    with open_store(review.db, create=False) as store:
        rec = list_records(store, RecordFilter(outcome="withheld"), limit=1)[0]
    pages = {
        "dashboard": "",
        "dashboard-days": "?since=2024-03-01&until=2024-03-10",
        "records": "records?outcome=withheld&per_page=25",
        "records-all": "records?per_page=50",
        "record": f"records/{rec.record_id}",
        "subject": f"subject?subject_ref={ref('B-2001')}",
        "agents": "agents",
        "agent": "agents/reseller",
        "shine": "shine-the-light?year=2024",
        "verify": "verify",
    }
    shots, measured = [], []
    for width in (NARROW, WIDE):
        _viewport(drv, width)
        drv.delete_all_cookies()
        drv.get(base + "login")
        _wait(drv).until(ec.presence_of_element_located((By.ID, "username")))
        _check_layout(drv, width, f"login at {width}px")
        shots.append(_full_page(drv, tmp_path / f"login-{width}.png"))
        drv.find_element(By.ID, "username").send_keys(review.user)
        drv.find_element(By.ID, "password").send_keys(review.password)
        drv.find_element(By.ID, "login").click()
        _wait(drv).until(ec.presence_of_element_located((By.ID, "verify-status")))
        for name, path in pages.items():
            drv.get(base + path)
            _wait(drv).until(ec.presence_of_element_located((By.TAG_NAME, "footer")))
            got = _check_layout(drv, width, f"{name} at {width}px")
            smallest = f"{min(got['text']):.1f}px" if got["text"] else "-"
            measured.append(
                f"{name}@{width}: header {got['header']:.0f}px, chart text >= {smallest}"
            )
            if name.startswith("dashboard"):
                assert got["text"], "the dashboard's charts have text"
            shots.append(_full_page(drv, tmp_path / f"{name}-{width}.png"))
            if name == "records":
                # Withheld records say why, in their own column.
                reasons = drv.find_elements(By.CSS_SELECTOR, "#records td.reason")
                assert reasons and all(r.text == rec.reason for r in reasons)
            if name == "subject":
                # Nothing cut off: every column of the report is on the screen.
                heads = drv.find_elements(By.CSS_SELECTOR, "#recipients td")
                assert heads and all(h.is_displayed() for h in heads)
                if width == WIDE:
                    labels = [
                        th.text.lower()
                        for th in drv.find_elements(By.CSS_SELECTOR, "#recipients th")
                    ]
                    assert "legal bases" in labels and "first / last disclosed" in labels
            if name == "dashboard-days":
                cols = drv.find_elements(By.CSS_SELECTOR, "svg.over-time g.period")
                assert 1 <= len(cols) <= 20  # a column per day, not a dot per record
    print("measured:", *measured, "screenshots:", *shots, sep="\n  ")
