"""Fixtures of the review page's tests: seeded ledgers with the app serving them, a clean
environment for the `gateway review` command, and for the browser test the command run as
a real process plus a headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, Queue

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from gateway.web.auth import hash_password
from tests.web.helpers import Review, Seeded, make_keys, seed, seeded

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    with seeded("sqlite", tmp_path_factory.mktemp("web-sqlite")) as s:
        yield s


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    with seeded("postgresql", tmp_path_factory.mktemp("web-pg")) as s:
        yield s


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def backend(request: pytest.FixtureRequest) -> Seeded:
    """Both back ends: the same queries must answer the same on each."""
    return request.getfixturevalue("lite" if request.param == "sqlite" else "pg")


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env with credentials
    return tmp_path


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Seeded]:
    with seeded("sqlite", tmp_path) as s:
        yield s


@pytest.fixture(scope="module")
def review(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Review]:
    tmp = tmp_path_factory.mktemp("review-browser")
    keys = make_keys(tmp / "keys")
    db = f"sqlite:///{tmp / 'ledger.db'}"
    seed(db, keys)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        GATEWAY_REVIEWER_USER=Review.user,
        GATEWAY_REVIEWER_PASSWORD=hash_password(Review.password),
        PYTHONUNBUFFERED="1",
    )
    cmd = [sys.executable, "-m", "gateway.cli.review", "--db", db, "--keys-dir", str(keys)]
    proc = subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", "--port", "0"],
        cwd=tmp,  # no stray .env
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
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
