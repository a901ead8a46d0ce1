"""Logins that hold: failures limited per client and per user name before any password is
checked, a cap on checks in flight, pages that stay fast under a flood of logins, and
no weak reviewer password made with ``gateway review --hash-password``.

The servers here count the password checks they make (``Watched`` credentials), so a test
can tell "refused before the password was checked" from "checked and found wrong"."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from click.testing import CliRunner

from gateway.cli.review import review
from gateway.settings import Settings
from gateway.web.auth import COOKIE_NAME, Credentials, password_problem
from gateway.web.auth import hash_password as make_hash
from gateway.web.config import ReviewConfig, config_from_settings
from gateway.web.throttle import LoginLimits, LoginThrottle, Refused
from tests.web.helpers import PASSWORD, USER, Client, Resp, Seeded, Server


@dataclass
class Probe:
    """What a ``Watched`` credential saw: checks made, and most at once."""

    delay: float = 0.0
    calls: int = 0
    running: int = 0
    most: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Watched(Credentials):
    """The reviewer's credentials, counting every password check (and optionally slow)."""

    probe: Probe = field(default_factory=Probe, compare=False, repr=False)

    def check(self, user: str, password: str) -> bool:
        p = self.probe
        with p.lock:
            p.calls += 1
            p.running += 1
            p.most = max(p.most, p.running)
        try:
            time.sleep(p.delay)
            return super().check(user, password)
        finally:
            with p.lock:
                p.running -= 1


def watched(probe: Probe) -> Watched:
    base = Credentials.parse(USER, make_hash(PASSWORD))
    return Watched(base.user, salt=base.salt, hashed=base.hashed, probe=probe)


@contextmanager
def serving(lite: Seeded, probe: Probe, **settings: Any) -> Iterator[Server]:
    """The review page over ``lite``'s ledger, configured from ``settings`` as `gateway
    review` would be (the defaults unless given), with watched credentials."""
    config = config_from_settings(
        Settings(ledger_url=lite.url, keys_dir=lite.keys, **settings), watched(probe)
    )
    config.failure_delay = 0.05
    server = Server(config)
    try:
        yield server
    finally:
        server.close()
        config.store.close()


def guess(server: Server, user: str, password: str, client: str | None = None) -> Resp:
    headers = {"X-Forwarded-For": client} if client else {}
    return Client(server).request(
        "POST", "/login", form={"username": user, "password": password}, headers=headers
    )


# -- limits before the password is checked ----------------------------------------------


def test_failures_per_account_are_refused_before_the_password_is_checked(lite: Seeded) -> None:
    probe = Probe()
    with serving(lite, probe) as server:
        for i in range(5):
            assert guess(server, USER, f"wrong {i}").status == 401
        assert probe.calls == 5
        # Over the limit: even the right password is not looked at.
        resp = guess(server, USER, PASSWORD)
        assert resp.status == 429 and COOKIE_NAME not in resp.cookies()
        assert probe.calls == 5
        assert 800 <= int(resp.headers["Retry-After"]) <= 900  # until the first failure expires
        assert 'id="login-refused"' in resp.text and "for this user name" in resp.text
        # Another user name from the same address is still checked (the client's own
        # limit is higher), and fails as it should.
        assert guess(server, "someone", PASSWORD).status == 401
        assert probe.calls == 6


def test_failures_per_client_are_refused_whatever_the_user_name(lite: Seeded) -> None:
    probe = Probe()
    with serving(lite, probe) as server:
        for i in range(20):
            assert guess(server, f"user{i}", "wrong").status == 401
        resp = guess(server, "a-new-name", "wrong")
        assert resp.status == 429 and "from this address" in resp.text
        resp = guess(server, USER, PASSWORD)
        assert resp.status == 429 and COOKIE_NAME not in resp.cookies()
        assert probe.calls == 20


def test_parallel_guesses_cannot_find_the_password(lite: Seeded) -> None:
    probe = Probe()
    with serving(lite, probe) as server:
        guesses = [f"guess {i}" for i in range(299)] + [PASSWORD]
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(lambda pw: guess(server, USER, pw), guesses))
        statuses = [a.status for a in answers]
        # Attempts count from the moment they are admitted: however many arrive at once,
        # no more passwords are checked than the per-account limit allows.
        assert probe.calls <= 5 and statuses.count(401) == probe.calls
        assert statuses.count(429) == 300 - probe.calls
        assert not any(COOKIE_NAME in a.cookies() for a in answers)


# -- a cap on checks in flight ----------------------------------------------------------


def test_pending_logins_are_capped(lite: Seeded) -> None:
    probe = Probe(delay=0.6)  # a slow hash: the checks are in flight together
    with serving(lite, probe, review_trust_proxy="127.0.0.1") as server:

        def one(i: int) -> tuple[Resp, float]:
            started = time.monotonic()
            resp = guess(server, f"user{i}", "wrong", client=f"198.51.100.{i}")
            return resp, time.monotonic() - started

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(one, range(12)))
        checked = [t for r, t in answers if r.status == 401]
        refused = [(r, t) for r, t in answers if r.status == 429]
        assert probe.most <= 4 and len(checked) == probe.calls <= 4
        assert len(refused) >= 8
        for r, took in refused:
            assert r.headers["Retry-After"] == "1" and "being checked" in r.text
            assert took < 0.5  # refused at once, not queued behind the slow checks
        # Once the burst has passed, the reviewer logs in at once.
        started = time.monotonic()
        assert guess(server, USER, PASSWORD, client="203.0.113.9").status == 303
        assert time.monotonic() - started < 0.6 + 0.5


def test_pages_stay_fast_under_a_login_flood(lite: Seeded) -> None:
    probe = Probe()
    with serving(lite, probe, review_trust_proxy="127.0.0.1") as server:
        reviewer = Client(server)
        assert reviewer.login().status == 303

        def page_time() -> float:
            started = time.monotonic()
            assert reviewer.get("/agents?format=json").status == 200
            return time.monotonic() - started

        quiet = statistics.median(page_time() for _ in range(5))
        stop = threading.Event()
        sent = [0]

        def flood(worker: int) -> None:
            # Every guess from another address and for another user name: only the cap
            # on checks in flight stands in its way.
            n = 0
            while not stop.is_set():
                n += 1
                guess(server, f"u{worker}-{n}", "wrong", client=f"10.{worker}.{n // 250}.{n % 250}")
                sent[0] += 1

        with ThreadPoolExecutor(40) as pool:
            for w in range(40):
                pool.submit(flood, w)
            time.sleep(1.0)  # let the flood build up
            busy = [page_time() for _ in range(8)]
            stop.set()
        print(f"page: quiet {quiet:.3f}s, under a flood of {sent[0]} logins {busy}")
        assert sent[0] > 100
        assert statistics.median(busy) < 0.5 and max(busy) < 1.5


# -- the throttle on its own ------------------------------------------------------------


def test_throttle_window_and_success() -> None:
    now = [1000.0]
    t = LoginThrottle(LoginLimits(per_account=2, per_client=3, window=60), clock=lambda: now[0])

    def fail(client: str, account: str) -> None:
        a = t.admit(client, account)
        assert not isinstance(a, Refused)
        a.settle(False)

    fail("a", "alice")
    now[0] += 10
    fail("b", "alice")
    refused = t.admit("c", "alice")
    assert isinstance(refused, Refused) and refused.retry_after == 50
    now[0] += 50  # the first failure leaves the window
    attempt = t.admit("c", "alice")
    assert not isinstance(attempt, Refused)
    attempt.settle(True)
    attempt.settle(False)  # settling twice changes nothing
    assert t.failures("account", "alice") == 1 and t.in_flight == 0
    # A success forgives its client's failures, never the account's.
    fail("d", "bob")
    fail("d", "bob")
    ok = t.admit("d", "carol")
    assert not isinstance(ok, Refused)
    ok.settle(True)
    assert t.failures("client", "d") == 0 and t.failures("account", "bob") == 2


def test_throttle_counts_pending_attempts_and_forgets_old_keys() -> None:
    t = LoginThrottle(LoginLimits(per_account=2, max_pending=3), max_keys=5)
    first, second = t.admit("a", "alice"), t.admit("b", "alice")
    assert isinstance(t.admit("c", "alice"), Refused)  # two in flight fill alice's limit
    third = t.admit("c", "bob")
    assert isinstance(t.admit("d", "dave"), Refused)  # three in flight: the cap
    for a in (first, second, third):
        assert not isinstance(a, Refused)
        a.settle(False)
    for i in range(20):
        a = t.admit(f"x{i}", f"name{i}")
        assert not isinstance(a, Refused)
        a.settle(False)
    assert len(t._failures) <= 5


def test_limits_come_from_the_settings(lite: Seeded) -> None:
    config: ReviewConfig = config_from_settings(
        Settings(
            ledger_url=lite.url,
            review_login_account_failures=3,
            review_login_client_failures=7,
            review_login_window_seconds=60,
            review_login_max_pending=2,
            review_verify_every_seconds=30,
        ),
        Credentials.parse(USER, PASSWORD),
    )
    config.store.close()
    assert config.limits == LoginLimits(per_account=3, per_client=7, window=60, max_pending=2)
    assert config.verify_every == 30


# -- the reviewer's password --------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short", "too short"),
        ("123456789", "too short"),
        ("aaaaaaaaaaaaaaaa", "too few different"),
        ("abababababababab", "too few different"),
        ("Password1234!", "common"),
        ("1234567890123", "common"),
        ("correct horse battery staple", "common"),
        ("qwertyuiop", "common"),
    ],
)
def test_weak_passwords_are_refused(no_env: Any, password: str, why: str) -> None:
    assert why in (password_problem(password) or "")
    res = CliRunner().invoke(review, ["--hash-password"], input=password + "\n")
    assert res.exit_code == 2 and why in res.output and "scrypt$" not in res.output
    assert "passphrase" in res.output  # says what to do instead


def test_a_strong_password_is_hashed(no_env: Any) -> None:
    res = CliRunner().invoke(review, ["--hash-password"], input="plum tractor velvet 42\n")
    assert res.exit_code == 0 and res.output.startswith("scrypt$")
    assert password_problem("plum tractor velvet 42") is None
