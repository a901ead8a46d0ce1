""" "Verified" is never stale for long: the log is verified again on a schedule, and the
dashboard re-runs a verification older than a minute, so tampering shows without anyone
clicking "Verify now"; verification runs off the event loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.web import config as web_config
from gateway.web.config import ReviewConfig
from tests.web.helpers import Client, Seeded, Server, review_config


def tamper(s: Seeded) -> None:
    eng = sa.create_engine(s.url)
    with eng.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE ledger_records SET body = replace(body, 'contract', 'consent')"
                " WHERE record_id = :r"
            ),
            {"r": s.records[12].record_id},
        )
    eng.dispose()


@contextmanager
def serving(s: Seeded, **kw: Any) -> Iterator[tuple[ReviewConfig, Client]]:
    config = review_config(s.store, s.keys, **kw)
    server = Server(config)
    try:
        c = Client(server)
        assert c.login().status == 303
        yield config, c
    finally:
        server.close()


def status(page: str) -> str:
    return page.split('id="verify-status" data-status="', 1)[1].split('"', 1)[0]


def test_the_dashboard_reverifies_a_result_older_than_a_minute(fresh: Seeded) -> None:
    with serving(fresh) as (config, c):
        assert status(c.page("/").text) == "ok"
        tamper(fresh)
        assert status(c.page("/").text) == "ok"  # verified a moment ago: shown as it is
        v = config._verified
        assert v is not None and v.started_at is not None
        v.checked_at -= timedelta(seconds=61)
        v.started_at -= timedelta(seconds=61)
        assert status(c.page("/").text) == "failed"  # no "Verify now" needed


def test_the_log_is_reverified_on_a_schedule(fresh: Seeded) -> None:
    with serving(fresh, verify_every=0.3) as (_config, c):
        assert c.get("/verify?format=json").json()["report"]["ok"] is True
        tamper(fresh)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            # The verification page shows the last result (kept for minutes): only the
            # schedule can have changed it.
            if c.get("/verify?format=json").json()["report"]["ok"] is False:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the scheduled verification did not notice the tampering")


def test_verification_does_not_hold_up_other_pages(
    fresh: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = threading.Event()
    real = web_config.verify_log

    def slow(*args: Any, **kwargs: Any) -> Any:
        started.set()
        time.sleep(1.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(web_config, "verify_log", slow)
    with serving(fresh, verify_every=0) as (_config, c):
        other = Client(c.server, cookie=c.cookie)
        dash = threading.Thread(target=lambda: c.page("/"))
        dash.start()
        assert started.wait(10)
        t0 = time.monotonic()
        assert other.get("/agents?format=json").status == 200
        assert time.monotonic() - t0 < 1.0  # served while the verification runs
        dash.join(20)
