"""The review page behind a TLS proxy: the browser's https origin is same-origin when it is
the configured external origin or when a trusted proxy says so, the session cookie is
Secure there, and forwarded headers from anyone but the trusted proxy change nothing."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.settings import Settings
from gateway.web.auth import COOKIE_NAME, Credentials
from gateway.web.auth import hash_password as make_hash
from gateway.web.config import config_from_settings
from gateway.web.proxy import as_the_browser_sees_it, parse_origin, parse_proxies
from tests.web.helpers import PASSWORD, USER, Client, Resp, Seeded, Server

EXTERNAL = "https://review.example.com"


@contextmanager
def serving(lite: Seeded, **settings: Any) -> Iterator[Server]:
    config = config_from_settings(
        Settings(ledger_url=lite.url, keys_dir=lite.keys, **settings),
        Credentials.parse(USER, make_hash(PASSWORD)),
    )
    server = Server(config)
    try:
        yield server
    finally:
        server.close()
        config.store.close()


def login(c: Client, headers: dict[str, str]) -> Resp:
    return c.request(
        "POST",
        "/login",
        form={"username": USER, "password": PASSWORD, "next": "/"},
        headers={"Sec-Fetch-Site": "same-origin", **headers},
    )


def cookie_attrs(resp: Resp) -> set[str]:
    value = resp.cookies()[COOKIE_NAME]
    return {a.strip().split("=")[0].lower() for a in value.split(";")[1:]}


def logout_form(c: Client, headers: dict[str, str]) -> Resp:
    page = c.page("/", headers=headers)
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    return c.request("POST", "/logout", form={"csrf": csrf}, headers=headers)


def test_posts_work_behind_a_trusted_proxy(lite: Seeded) -> None:
    via_proxy = {
        "Origin": EXTERNAL,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "review.example.com",
        "X-Forwarded-For": "203.0.113.7",
    }
    with serving(lite, review_trust_proxy="127.0.0.1, ::1") as server:
        c = Client(server)
        resp = login(c, via_proxy)
        assert resp.status == 303, resp.text
        assert "secure" in cookie_attrs(resp)  # the browser is on https
        c.cookie = resp.cookies()[COOKIE_NAME].split(";", 1)[0].split("=", 1)[1]
        assert logout_form(c, via_proxy).status == 303  # every post, not only the login
        # Another site is still another site.
        evil = {**via_proxy, "Origin": "https://evil.example"}
        assert login(Client(server), evil).status == 403
        # The proxy's plain-http origin is not the browser's any more.
        plain = {**via_proxy, "Origin": f"http://{server.host}:{server.port}"}
        assert login(Client(server), plain).status == 403


def test_posts_work_at_the_external_origin(lite: Seeded) -> None:
    with serving(lite, review_external_origin=EXTERNAL + "/") as server:
        resp = login(Client(server), {"Origin": EXTERNAL})
        assert resp.status == 303 and "secure" in cookie_attrs(resp)
        assert login(Client(server), {"Origin": "https://evil.example"}).status == 403
        # Reached directly (an operator on the machine itself), it still works.
        direct = login(Client(server), {"Origin": f"http://{server.host}:{server.port}"})
        assert direct.status == 303


def test_forwarded_headers_from_anyone_else_change_nothing(lite: Seeded) -> None:
    spoofed = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "review.example.com"}
    with serving(lite, review_trust_proxy="192.0.2.1") as server:
        assert login(Client(server), {**spoofed, "Origin": EXTERNAL}).status == 403
        resp = login(Client(server), spoofed)
        assert resp.status == 303 and "secure" not in cookie_attrs(resp)
    with serving(lite) as server:  # no proxy configured at all
        assert login(Client(server), {**spoofed, "Origin": EXTERNAL}).status == 403


def test_the_client_address_comes_from_the_trusted_proxy_only() -> None:
    proxies = parse_proxies("10.0.0.0/8,127.0.0.1")
    seen = as_the_browser_sees_it(
        "127.0.0.1", ["6.6.6.6, 203.0.113.7", "10.1.2.3"], ["https"], ["a.example"], proxies
    )
    # The right-most address that is not a proxy: the one the proxy itself saw.
    assert (seen.remote, seen.scheme, seen.host) == ("203.0.113.7", "https", "a.example")
    assert as_the_browser_sees_it("8.8.8.8", ["1.2.3.4"], ["https"], [], proxies).remote is None
    junk = as_the_browser_sees_it("127.0.0.1", ["nonsense"], ["gopher"], ["a b"], proxies)
    assert (junk.remote, junk.scheme, junk.host) == (None, None, None)
    assert proxies[0] == ipaddress.ip_network("10.0.0.0/8")


@pytest.mark.parametrize(
    "bad", ["review.example.com", "ftp://x.example", "https://x.example/app", "https://"]
)
def test_bad_proxy_settings_say_what_to_give(bad: str, lite: Seeded) -> None:
    with pytest.raises(ConfigError, match=r"GATEWAY_REVIEW_EXTERNAL_ORIGIN.*e\.g\. https://"):
        parse_origin(bad)
    with pytest.raises(ConfigError, match=r"GATEWAY_REVIEW_TRUST_PROXY: 'proxy\.local'"):
        parse_proxies("127.0.0.1, proxy.local")
    with pytest.raises(ConfigError, match="GATEWAY_REVIEW_EXTERNAL_ORIGIN"):
        config_from_settings(
            Settings(ledger_url=lite.url, review_external_origin=bad),
            Credentials.parse(USER, PASSWORD),
        )
    assert parse_origin("HTTPS://Review.Example.com:8443/") == "https://review.example.com:8443"
