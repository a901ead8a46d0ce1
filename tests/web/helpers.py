"""Helpers for the review page's tests: a seeded ledger, the app served on a thread, and an
HTTP client that keeps the session cookie."""

from __future__ import annotations

import asyncio
import http.client
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson

from gateway.keys import init_gateway_keys, load_signing_key, load_verify_key
from gateway.ledger.store import LedgerStore, open_store
from gateway.records import DecisionRecord
from gateway.web.app import create_app, start_site
from gateway.web.auth import COOKIE_NAME, Credentials
from gateway.web.auth import hash_password as make_hash
from gateway.web.config import ReviewConfig
from gateway.web.throttle import LoginLimits
from tests.ledger.data import MASTER, database, make_records

USER = "reviewer"
PASSWORD = "correct horse battery staple"
FAIL_DELAY = 0.2
# A module's shared server takes every test's logins from one address, the wrong ones of
# the tests of wrong credentials included: its limits leave room for all of them. The
# limits themselves are tested on servers of their own.
SHARED_LIMITS = LoginLimits(per_account=1000, per_client=1000)


def make_keys(keys: Path) -> Path:
    init_gateway_keys(keys)
    # The records' subject refs were made with the test pseudonym key: use it here too.
    os.remove(keys / "pseudonym.key")
    fd = os.open(keys / "pseudonym.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(MASTER.hex())
    return keys


def seed(url: str, keys: Path, n: int = 2000) -> list[DecisionRecord]:
    records = make_records(n, seed=7)
    with open_store(
        url, signer=load_signing_key(keys / "gateway-signing.key"), checkpoint_every=500
    ) as s:
        half = len(records) // 2
        s.append(records[:half], shard=0)
        s.append(records[half:], shard=1)
        s.checkpoint()  # everything covered: verification is clean
    return records


class Server:
    """The review app on 127.0.0.1:<free port>, served by an event loop on a thread."""

    def __init__(self, config: ReviewConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        start = start_site(create_app(config), "127.0.0.1", 0)
        self.runner, self.url = asyncio.run_coroutine_threadsafe(start, self.loop).result(10)
        parts = urlsplit(self.url)
        self.host, self.port = str(parts.hostname), int(parts.port or 80)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Resp:
    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return orjson.loads(self.body)

    def cookies(self) -> dict[str, str]:
        """Set-Cookie name -> the whole header value (value and attributes)."""
        out = {}
        for value in self.headers.get_all("Set-Cookie") or []:
            out[value.split("=", 1)[0]] = value
        return out


@dataclass
class Client:
    server: Server
    cookie: str | None = None
    history: list[str] = field(default_factory=list)

    def request(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        accept: str = "application/json",
        headers: dict[str, str] | None = None,
        follow: bool = False,
    ) -> Resp:
        for _ in range(5):
            conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=30)
            hdrs = {"Accept": accept, **(headers or {})}
            if self.cookie:
                hdrs["Cookie"] = f"{COOKIE_NAME}={self.cookie}"
            body = None
            if form is not None:
                body = urlencode(form)
                hdrs["Content-Type"] = "application/x-www-form-urlencoded"
            try:
                conn.request(method, path, body=body, headers=hdrs)
                r = conn.getresponse()
                resp = Resp(r.status, r.headers, r.read())
            finally:
                conn.close()
            self.history.append(path)
            if follow and resp.status in (301, 302, 303, 307):
                path, method, form = resp.headers["Location"], "GET", None
                continue
            return resp
        raise AssertionError("too many redirects")

    def get(self, path: str, **kw: Any) -> Resp:
        return self.request("GET", path, **kw)

    def page(self, path: str, **kw: Any) -> Resp:
        return self.request("GET", path, accept="text/html,application/xhtml+xml", **kw)

    def login(self, user: str = USER, password: str = PASSWORD, nxt: str = "/") -> Resp:
        resp = self.request(
            "POST", "/login", form={"username": user, "password": password, "next": nxt}
        )
        set_cookie = resp.cookies().get(COOKIE_NAME)
        if resp.status == 303 and set_cookie:
            self.cookie = set_cookie.split(";", 1)[0].split("=", 1)[1]
        return resp


@dataclass
class Seeded:
    url: str
    keys: Path
    records: list[DecisionRecord]
    store: LedgerStore
    server: Server

    def client(self, login: bool = True) -> Client:
        c = Client(self.server)
        if login:
            assert c.login().status == 303
        return c


def review_config(store: LedgerStore, keys: Path, **kw: Any) -> ReviewConfig:
    kw.setdefault("limits", SHARED_LIMITS)
    return ReviewConfig(
        store,
        Credentials.parse(USER, make_hash(PASSWORD)),
        pseudonym_key=MASTER,
        verify_key=load_verify_key(keys / "gateway-signing.pub"),
        failure_delay=FAIL_DELAY,
        **kw,
    )


@contextmanager
def seeded(kind: str, tmp: Path) -> Iterator[Seeded]:
    with database(kind, tmp) as url:
        keys = make_keys(tmp / "keys")
        records = seed(url, keys)
        store = open_store(url, create=False)
        server = Server(review_config(store, keys))
        try:
            yield Seeded(url, keys, records, store, server)
        finally:
            server.close()
            store.close()


@dataclass
class Review:
    """`gateway review` running as a process, and the reviewer who may log in."""

    url: str
    db: str
    user: str = "auditor"
    password: str = "browser test password"
