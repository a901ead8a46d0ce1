"""End to end in a real browser: ``gateway review`` runs as a subprocess on a free loopback
port against a seeded SQLite ledger, and headless Chromium logs in, filters, opens the
access-request report and looks at the charts. Screenshots go to /tmp/review-*.png."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from gateway.ledger.query import RecordFilter, list_records
from gateway.ledger.reports import subject_report
from gateway.ledger.store import open_store
from gateway.web.auth import hash_password
from tests.ledger_data import ref
from tests.test_web import make_keys, seed

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
USER = "auditor"
PASSWORD = "browser test password"
WAIT = 15  # seconds for any one thing to appear


@dataclass
class Review:
    url: str
    db: str


@pytest.fixture(scope="module")
def review(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Review]:
    tmp = tmp_path_factory.mktemp("review-browser")
    keys = make_keys(tmp / "keys")
    db = f"sqlite:///{tmp / 'ledger.db'}"
    seed(db, keys)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        GATEWAY_REVIEWER_USER=USER,
        GATEWAY_REVIEWER_PASSWORD=hash_password(PASSWORD),
        PYTHONUNBUFFERED="1",
    )
    cmd = [sys.executable, "-m", "gateway.cli.review", "--db", db, "--keys-dir", str(keys)]
    proc = subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", "--port", "0"],
        cwd=tmp,  # no stray .env
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: Queue[str] = Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout or ()], daemon=True).start()
    try:
        try:
            first = lines.get(timeout=30)
        except Empty:
            proc.kill()
            pytest.fail(
                f"gateway review did not start: {proc.stderr.read() if proc.stderr else ''}"
            )
        m = re.search(r"review page: (http://127\.0\.0\.1:\d+/)", first)
        assert m, first
        yield Review(m[1], db)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def driver() -> Iterator[WebDriver]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.fail("headless tests need chromium and chromedriver in /usr/bin")
    profile = tempfile.mkdtemp(prefix="review-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-quic",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        drv.set_page_load_timeout(30)
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


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

    drv.find_element(By.ID, "username").send_keys(USER)
    drv.find_element(By.ID, "password").send_keys("not the password")
    drv.find_element(By.ID, "login").click()
    _wait(drv).until(ec.presence_of_element_located((By.ID, "login-error")))

    drv.find_element(By.ID, "password").send_keys(PASSWORD)
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
