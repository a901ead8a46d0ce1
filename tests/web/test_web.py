"""The reviewer web page over real HTTP: the app runs on a loopback port in a thread, on a
ledger seeded with realistic records (SQLite, and PostgreSQL for the filter and injection
tests), and is driven with ``http.client`` exactly as a browser or script would."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import orjson
import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from click.testing import CliRunner

from gateway.cli.review import review
from gateway.errors import ConfigError
from gateway.ledger import render
from gateway.ledger.query import RecordFilter, count_records, get_record, list_records
from gateway.ledger.reports import (
    agent_report,
    categories_by_agent,
    disclosures_over_time,
    shine_the_light_report,
    subject_report,
)
from gateway.ledger.store import LedgerStore
from gateway.settings import Settings
from gateway.web import charts
from gateway.web.app import AccessLog
from gateway.web.auth import COOKIE_NAME, Credentials, Sessions, credentials_from_settings
from gateway.web.auth import hash_password as make_hash
from gateway.web.config import ReviewConfig
from gateway.web.login import safe_next
from tests.ledger.data import ref
from tests.web.helpers import (
    FAIL_DELAY,
    PASSWORD,
    USER,
    Client,
    Resp,
    Seeded,
    Server,
    review_config,
)


def json_ids(resp: Resp) -> list[str]:
    assert resp.status == 200, resp.text
    return [r["record_id"] for r in resp.json()]


def expected_ids(store: LedgerStore, flt: RecordFilter) -> list[str]:
    return [r.record_id for r in list_records(store, flt, limit=None)]


# -- refusing to start --------------------------------------------------------------------


def test_refuses_to_start_without_credentials(no_env: Path, lite: Seeded) -> None:
    runner = CliRunner()
    res = runner.invoke(review, ["--db", lite.url, "--keys-dir", str(lite.keys), "--port", "0"])
    assert res.exit_code == 2
    assert "GATEWAY_REVIEWER_USER and GATEWAY_REVIEWER_PASSWORD not set" in res.output
    assert "--hash-password" in res.output

    res = runner.invoke(
        review, ["--db", lite.url, "--port", "0"], env={"GATEWAY_REVIEWER_USER": "alice"}
    )
    assert res.exit_code == 2 and "GATEWAY_REVIEWER_PASSWORD not set" in res.output
    assert "GATEWAY_REVIEWER_USER" not in res.output.split("not set")[0]

    # Checked before anything else: a missing ledger is not what it complains about.
    res = runner.invoke(review, ["--db", f"sqlite:///{no_env / 'none.db'}"])
    assert res.exit_code == 2 and "GATEWAY_REVIEWER_PASSWORD" in res.output

    res = runner.invoke(
        review,
        ["--db", lite.url],
        env={"GATEWAY_REVIEWER_USER": "alice", "GATEWAY_REVIEWER_PASSWORD": "scrypt$zz$00"},
    )
    assert res.exit_code == 2 and "scrypt$<salt hex>$<64 hex digits>" in res.output

    with pytest.raises(ConfigError, match="GATEWAY_REVIEWER_PASSWORD is empty"):
        credentials_from_settings(Settings(reviewer_user="a", reviewer_password=""))


def test_refuses_a_missing_ledger_with_credentials(no_env: Path) -> None:
    res = CliRunner().invoke(
        review,
        ["--db", f"sqlite:///{no_env / 'none.db'}", "--port", "0"],
        env={"GATEWAY_REVIEWER_USER": "alice", "GATEWAY_REVIEWER_PASSWORD": "pw"},
    )
    assert res.exit_code == 2 and "no ledger at" in res.output


def test_hash_password_option(no_env: Path) -> None:
    res = CliRunner().invoke(review, ["--hash-password"], input="s3cret pass\n")
    assert res.exit_code == 0, res.output
    hashed = res.output.strip()
    assert re.fullmatch(r"scrypt\$[0-9a-f]{32}\$[0-9a-f]{64}", hashed)
    creds = Credentials.parse("alice", hashed)
    assert creds.check("alice", "s3cret pass")
    assert not creds.check("alice", "s3cret pass ")
    assert not creds.check("bob", "s3cret pass")
    res = CliRunner().invoke(review, ["--hash-password"], input="\n")
    assert res.exit_code == 2 and "empty" in res.output


def test_plain_and_hashed_credentials() -> None:
    plain = Credentials.parse("alice", "pw")
    assert plain.check("alice", "pw") and not plain.check("alice", "pW")
    assert not plain.check("alice", "") and not plain.check("", "pw")
    assert "pw" not in repr(plain)
    hashed = Credentials.parse("alice", make_hash("pw", salt=b"\x01" * 16))
    assert hashed.check("alice", "pw") and not hashed.check("alice", "\ud800")


# -- sessions -------------------------------------------------------------------------------


def test_session_tokens() -> None:
    sessions = Sessions(ttl=60)
    token, session = sessions.issue("alice")
    assert sessions.check(token, "alice") == session
    assert sessions.check(token, "bob") is None  # reviewer renamed: old cookies die
    body, mac = token.split(".")
    forged = base64.urlsafe_b64encode(
        orjson.dumps({"u": "alice", "sid": session.sid, "exp": session.expires + 9999})
    )
    assert sessions.check(forged.decode().rstrip("=") + "." + mac, "alice") is None
    assert sessions.check(body + "." + mac[:-2] + "AA", "alice") is None
    assert sessions.check(token, "alice") is not None
    assert Sessions(ttl=60).check(token, "alice") is None  # another process's secret
    for junk in ("", ".", "a.b.c", "%%%.%%%", "x" * 5000):
        assert sessions.check(junk, "alice") is None
    sessions.revoke(session)
    assert sessions.check(token, "alice") is None
    expired = Sessions(ttl=-1)
    token, _ = expired.issue("alice")
    assert expired.check(token, "alice") is None


# -- authentication over HTTP ------------------------------------------------------------


def protected_routes(s: Seeded) -> list[str]:
    rid = s.records[3].record_id
    return [
        "/",
        "/?format=json",
        "/records",
        "/records?agent=shipping&format=csv",
        "/records?subject=C-1001",
        f"/records/{rid}",
        f"/records/{rid}?format=json",
        f"/subject?subject_ref={ref('C-1001')}",
        f"/subject?subject_ref={ref('C-1001')}&format=html",
        "/agents",
        "/agents/shipping",
        "/agents/shipping?format=json",
        "/shine-the-light?year=2024",
        "/verify",
        "/no-such-page",
    ]


def test_every_route_needs_a_session(lite: Seeded) -> None:
    anon = lite.client(login=False)
    for path in protected_routes(lite):
        api = anon.get(path)
        assert api.status == 401, path
        assert api.json()["error"].startswith("authentication required")
        assert COOKIE_NAME not in api.cookies()
        browser = anon.page(path)
        if "format=" in path and "format=html" not in path:
            assert browser.status == 401, path  # a download client, not a page
        else:
            assert browser.status == 303, path
            assert browser.headers["Location"].startswith("/login")
    for path in ("/verify", "/logout"):
        assert anon.request("POST", path, form={"csrf": "x"}).status == 401
    # A garbage cookie and one signed by another process are no better than none.
    for cookie in ("garbage", Sessions().issue(USER)[0]):
        anon.cookie = cookie
        assert anon.get("/").status == 401
        assert anon.get("/records?format=json").status == 401


def test_redirect_to_login_remembers_the_page(lite: Seeded) -> None:
    anon = lite.client(login=False)
    resp = anon.page("/agents/email?since=2024-01-01")
    assert resp.status == 303
    location = urlsplit(resp.headers["Location"])
    assert location.path == "/login"
    assert parse_qs(location.query) == {"next": ["/agents/email?since=2024-01-01"]}
    form = anon.page(resp.headers["Location"])
    assert form.status == 200 and 'value="/agents/email?since=2024-01-01"' in form.text
    login = anon.login(nxt="/agents/email?since=2024-01-01")
    assert login.status == 303 and login.headers["Location"] == "/agents/email?since=2024-01-01"


def test_wrong_credentials_are_refused(lite: Seeded) -> None:
    anon = lite.client(login=False)
    for user, password in (
        (USER, "wrong"),
        ("someone", PASSWORD),
        (USER, ""),
        ("", ""),
        (USER, PASSWORD + "x"),
        (USER, PASSWORD.upper()),
        (USER, "x" * 10_000),
    ):
        started = time.monotonic()
        resp = anon.request("POST", "/login", form={"username": user, "password": password})
        assert resp.status == 401, (user, password)
        assert time.monotonic() - started >= FAIL_DELAY * 0.9
        assert COOKIE_NAME not in resp.cookies()
        assert "Wrong user name or password" in resp.text
    resp = anon.request("POST", "/login", form={"password": PASSWORD})
    assert resp.status == 401
    # The user name is redisplayed, escaped.
    resp = anon.request("POST", "/login", form={"username": "<script>x</script>", "password": "p"})
    assert resp.status == 401 and "<script>x" not in resp.text
    assert "&lt;script&gt;x&lt;/script&gt;" in resp.text
    assert anon.get("/").status == 401


def test_login_sets_a_strict_session_cookie_and_logout_revokes_it(lite: Seeded) -> None:
    c = Client(lite.server)
    resp = c.login()
    assert resp.status == 303 and resp.headers["Location"] == "/"
    cookie = resp.cookies()[COOKIE_NAME]
    attrs = {a.strip().split("=")[0].lower(): a for a in cookie.split(";")[1:]}
    assert "httponly" in attrs and "path" in attrs
    assert attrs["samesite"].strip() == "SameSite=Strict"
    assert attrs["max-age"].strip() == "Max-Age=28800"  # 8 hours
    assert "secure" not in attrs  # plain HTTP on loopback
    dash = c.page("/")
    assert dash.status == 200 and "Log out" in dash.text
    assert c.page("/login").status == 303  # already logged in

    token = c.cookie
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', dash.text)
    assert csrf is not None
    assert c.request("POST", "/logout", form={"csrf": "nope"}).status == 403
    assert c.get("/").status == 200  # a failed logout leaves the session alone
    out = c.request("POST", "/logout", form={"csrf": csrf[1]})
    assert out.status == 303 and out.headers["Location"] == "/login"
    assert 'gw_review=""' in out.cookies()[COOKIE_NAME]
    c.cookie = token  # the old cookie, replayed: revoked on the server
    assert c.get("/").status == 401


def test_cross_site_posts_are_refused(lite: Seeded) -> None:
    anon = lite.client(login=False)
    form = {"username": USER, "password": PASSWORD}
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        resp = anon.request("POST", "/login", form=form, headers=headers)
        assert resp.status == 403 and COOKIE_NAME not in resp.cookies()
    same = {"Origin": f"http://{lite.server.host}:{lite.server.port}"}
    assert anon.request("POST", "/login", form=form, headers=same).status == 303


@pytest.mark.parametrize(
    ("nxt", "expected"),
    [
        ("/records?agent=email", "/records?agent=email"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("/records\r\nSet-Cookie: x=1", "/"),
        ("/login?next=/x", "/"),
        ("", "/"),
    ],
)
def test_no_open_redirect_after_login(lite: Seeded, nxt: str, expected: str) -> None:
    assert safe_next(nxt) == expected
    resp = Client(lite.server).login(nxt=nxt)
    assert resp.status == 303 and resp.headers["Location"] == expected


def test_security_headers_everywhere(lite: Seeded) -> None:
    c = lite.client()
    anon = lite.client(login=False)
    for resp in (
        anon.page("/login"),
        anon.get("/"),
        anon.get("/static/review.css"),
        c.page("/"),
        c.page("/records?agent=NOT+VALID"),
        c.page("/no-such-page"),
        c.get("/records?format=csv&agent=email"),
    ):
        h = resp.headers
        assert h["Content-Security-Policy"].startswith("default-src ")
        assert (
            "script-src 'none'" in h["Content-Security-Policy"]
            or "default-src 'none'" in (h["Content-Security-Policy"])
        )
        assert h["X-Frame-Options"] == "DENY"
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["Cache-Control"] == "no-store"
        assert h["Referrer-Policy"] == "same-origin"
        assert "aiohttp" not in h.get("Server", "")
    css = anon.get("/static/review.css")
    assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")
    page = c.page("/")
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert "<script" not in page.text and " style=" not in page.text  # nothing CSP would block


def test_html_download_allows_only_its_own_stylesheet(lite: Seeded) -> None:
    resp = lite.client().get(f"/subject?subject_ref={ref('B-2001')}&format=html")
    assert resp.status == 200
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    style = re.search(r"<style>(.*?)</style>", resp.text, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style[1].encode()).digest()).decode()
    assert resp.headers["Content-Security-Policy"] == (
        f"default-src 'none'; style-src 'sha256-{digest}'; base-uri 'none';"
        " form-action 'none'; frame-ancestors 'none'"
    )


def test_access_log_leaves_out_query_strings(caplog: pytest.LogCaptureFixture) -> None:
    request = make_mocked_request("GET", "/records?subject=C-1001&agent=email")
    with caplog.at_level(logging.INFO, logger="test.access"):
        AccessLog(logging.getLogger("test.access"), "").log(request, web.Response(), 0.01)
    assert "/records" in caplog.text and "C-1001" not in caplog.text


# -- filters: the same answers as list_records, on both back ends -------------------------

FILTER_CASES: list[tuple[dict[str, str], RecordFilter]] = [
    ({}, RecordFilter()),
    ({"agent": "shipping"}, RecordFilter(agent="shipping")),
    ({"subject": "B-2001"}, RecordFilter(subject_ref=ref("B-2001"))),
    (
        {"subject_ref": ref("C-1002"), "outcome": "withheld"},
        RecordFilter(subject_ref=ref("C-1002"), outcome="withheld"),
    ),
    ({"category": "user.contact"}, RecordFilter(category="user.contact")),
    (
        {"category": "user.contact.address.postal_code"},
        RecordFilter(category="user.contact.address.postal_code"),
    ),
    ({"purpose": "marketing"}, RecordFilter(purpose="marketing")),
    ({"outcome": "erasure_notice"}, RecordFilter(outcome="erasure_notice")),
    (
        {"since": "2024-01-10", "until": "2024-01-20"},
        RecordFilter(
            since=datetime(2024, 1, 10, tzinfo=UTC), until=datetime(2024, 1, 21, tzinfo=UTC)
        ),
    ),
    (
        {"since": "2024-01-05T12:30:00+02:00", "until": "2024-01-15T08:00"},
        RecordFilter(
            since=datetime(2024, 1, 5, 10, 30, tzinfo=UTC),
            until=datetime(2024, 1, 15, 8, 0, tzinfo=UTC),
        ),
    ),
    (
        {"agent": "reseller", "purpose": "third_party_sharing", "subject": "B-2001"},
        RecordFilter(agent="reseller", purpose="third_party_sharing", subject_ref=ref("B-2001")),
    ),
    (
        {"event_type": "order.placed", "agent": "payments", "category": "user.financial"},
        RecordFilter(event_type="order.placed", agent="payments", category="user.financial"),
    ),
    ({"agent": "nobody"}, RecordFilter(agent="nobody")),
    ({"subject": "C-9999"}, RecordFilter(subject_ref=ref("C-9999"))),
]


@pytest.mark.parametrize(("query", "flt"), FILTER_CASES, ids=lambda v: str(v)[:60])
def test_filters_match_list_records(
    backend: Seeded, query: dict[str, str], flt: RecordFilter
) -> None:
    c = backend.client()
    want = expected_ids(backend.store, flt)
    if query and "nobody" not in str(query) and "C-9999" not in str(query):
        assert want, "the case should select something"
    got = json_ids(c.get("/records?" + urlencode({**query, "format": "json"}), follow=True))
    assert got == want

    rows = list(
        csv.DictReader(
            io.StringIO(
                c.get("/records?" + urlencode({**query, "format": "csv"}), follow=True).text
            )
        )
    )
    assert [r["record_id"] for r in rows] == want

    page = c.page("/records?" + urlencode({**query, "per_page": "25"}), follow=True)
    assert page.status == 200
    assert f'<span id="record-count">{len(want):,}</span>' in page.text
    shown = re.findall(r'data-record-id="([^"]+)"', page.text)
    assert shown == want[:25]
    if "subject" in query:
        # The customer id was swapped for its pseudonym: the final URL holds only the ref.
        assert c.history[-1].startswith("/records?") and query["subject"] not in c.history[-1]


def test_pagination(backend: Seeded) -> None:
    c = backend.client()
    flt = RecordFilter(outcome="disclosed")
    total = count_records(backend.store, flt)
    page2 = c.page("/records?outcome=disclosed&per_page=25&page=2")
    shown = re.findall(r'data-record-id="([^"]+)"', page2.text)
    assert shown == [r.record_id for r in list_records(backend.store, flt, limit=25, offset=25)]
    assert f"records 26\u201350 of {total:,}" in page2.text
    assert 'href="/records?outcome=disclosed&amp;per_page=25&amp;page=3"' in page2.text
    beyond = c.page("/records?outcome=disclosed&per_page=25&page=999")
    assert beyond.status == 200 and 'id="no-records"' in beyond.text


JUNK = [
    "' OR 1=1 --",
    "'; DROP TABLE ledger_records; --",
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "shipping\u0000",
    "\u202eevil\u200b",
    "😀 ünïcödé ∑",
    "%",
    "_",
    "user.contact%",
    "../../etc/passwd",
    "9" * 40,
    "2024-13-45",
]
RAW_JUNK = ["%ff%fe%00", "%C0%AE%C0%AE", "%E2%80%AE"]  # invalid UTF-8 and overlong forms
PARAMS = [
    "subject",
    "subject_ref",
    "agent",
    "category",
    "purpose",
    "outcome",
    "event_type",
    "since",
    "until",
    "page",
    "per_page",
    "format",
]


def _check_junk_response(resp: Resp, what: str) -> None:
    assert resp.status in (200, 400, 404), (what, resp.status, resp.text[:300])
    assert b"<script>" not in resp.body and b"<img src=x" not in resp.body, what
    if resp.status == 200 and resp.headers["Content-Type"].startswith("application/json"):
        data = resp.json()
        if isinstance(data, list):
            assert data == [], what  # junk never matches anything


@pytest.mark.parametrize("param", PARAMS)
def test_injection_in_filter_params(backend: Seeded, param: str) -> None:
    c = backend.client()
    before = backend.store.count()
    for value in JUNK:
        for accept in ("application/json", "text/html"):
            q = urlencode({param: value}) + ("&format=json" if param != "format" else "")
            resp = c.request("GET", "/records?" + q, accept=accept, follow=True)
            _check_junk_response(resp, f"{param}={value!r} ({accept})")
    for raw in RAW_JUNK:
        resp = c.get(f"/records?{param}={raw}", follow=True)
        _check_junk_response(resp, f"{param}={raw}")
    assert backend.store.count() == before


def test_junk_in_paths_and_report_params(backend: Seeded) -> None:
    c = backend.client()
    for value in JUNK:
        q = quote(value, safe="")
        for path in (
            f"/records/{q}",
            f"/agents/{q}",
            f"/agents/{q}?format=json",
            f"/agents/email?since={q}",
            f"/shine-the-light?year={q}",
            f"/subject?subject={q}&format=json",
            f"/subject?subject_ref={q}",
            f"/?since={q}&format=json",
            f"/?period={q}",
            f"/verify?format={q}",
        ):
            for accept in ("application/json", "text/html"):
                resp = c.request("GET", path, accept=accept, follow=True)
                _check_junk_response(resp, path)
                if accept == "text/html" and resp.status == 400 and "json" not in path:
                    assert 'id="error"' in resp.text  # a readable page, not a stack trace
    assert c.get("/records/" + "0" * 8 + "-0000-0000-0000-" + "0" * 12).status == 404
    assert c.get("/agents/UPPER").status == 400
    assert c.get("/records?since=2024-02-01&until=2024-01-01&format=json").status == 400


# -- reports and pages match the report functions ---------------------------------------


def _without_generated(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "generated_at"}


@pytest.mark.parametrize("customer", ["C-1001", "B-2001", "C-1004", "C-9999"])
def test_subject_report_matches(lite: Seeded, customer: str) -> None:
    c = lite.client()
    rep = subject_report(lite.store, ref(customer))
    got = c.get("/subject?" + urlencode({"subject": customer, "format": "json"}), follow=True)
    assert _without_generated(got.json()) == _without_generated(rep.to_dict())
    csv_text = c.get(f"/subject?subject_ref={ref(customer)}&format=csv").text
    assert csv_text == render.to_csv(render.subject_document(rep))
    page = c.page("/subject?" + urlencode({"subject": customer}), follow=True)
    assert page.status == 200 and ref(customer) in page.text
    assert customer not in c.history[-1]
    assert f'<dd id="subject-records">{rep.records:,} ' in page.text
    for s in rep.recipients:
        assert f'<td class="mono">{s.agent}</td>' in page.text
    if any(s.agent == "email" for s in rep.recipients):
        assert "MailRelay &lt;Services&gt; &amp; Co" in page.text
        assert "MailRelay <Services>" not in page.text
    if not rep.recipients:
        assert 'id="no-recipients"' in page.text


def test_subject_page_without_a_subject_shows_the_form(lite: Seeded) -> None:
    c = lite.client()
    page = c.page("/subject")
    assert page.status == 200 and 'id="subject-form"' in page.text
    assert c.get("/subject?format=json").status == 400


@pytest.mark.parametrize(
    ("agent", "since", "until"),
    [("email", None, None), ("reseller", "2024-01-01", "2024-12-31"), ("nobody", None, None)],
)
def test_agent_report_matches(
    lite: Seeded, agent: str, since: str | None, until: str | None
) -> None:
    c = lite.client()
    window = {k: v for k, v in (("since", since), ("until", until)) if v}
    rep = agent_report(
        lite.store,
        agent,
        since=datetime.fromisoformat(since).replace(tzinfo=UTC) if since else None,
        until=datetime.fromisoformat(until).replace(tzinfo=UTC) + timedelta(days=1)
        if until
        else None,
    )
    got = c.get(f"/agents/{agent}?" + urlencode({**window, "format": "json"})).json()
    assert _without_generated(got) == _without_generated(rep.to_dict())
    csv_text = c.get(f"/agents/{agent}?" + urlencode({**window, "format": "csv"})).text
    assert csv_text == render.to_csv(render.agent_document(rep))
    page = c.page(f"/agents/{agent}?" + urlencode(window))
    assert page.status == 200 and f'<dd id="agent-records">{rep.records:,} ' in page.text
    if rep.months:
        assert "<svg" in page.text


@pytest.mark.parametrize("year", [2024, 2025, 2019])
def test_shine_the_light_matches(lite: Seeded, year: int) -> None:
    c = lite.client()
    rep = shine_the_light_report(lite.store, year)
    got = c.get(f"/shine-the-light?year={year}&format=json").json()
    assert _without_generated(got) == _without_generated(rep.to_dict())
    doc = render.shine_the_light_document(rep)
    assert c.get(f"/shine-the-light?year={year}&format=csv").text == render.to_csv(doc)
    html = c.get(f"/shine-the-light?year={year}&format=html").text
    assert html.startswith("<!doctype html>") and f"Shine the Light {year}" in html
    page = c.page(f"/shine-the-light?year={year}")
    for p in rep.third_parties:
        assert p.legal_name in page.text
    assert (len(rep.third_parties) > 0) == (year == 2024 or year == 2025)
    for bad in ("1969", "10000", "-1", "2024.5", "twenty"):
        assert c.get(f"/shine-the-light?year={bad}").status == 400


def test_record_detail_matches(lite: Seeded) -> None:
    c = lite.client()
    rec = lite.records[77]
    got = c.get(f"/records/{rec.record_id}?format=json").json()
    stored = get_record(lite.store, rec.record_id)
    assert stored is not None
    assert got["record"] == stored.model_dump(mode="json") == rec.model_dump(mode="json")
    assert (got["shard"], got["index"]) == (0, 77)
    page = c.page(f"/records/{rec.record_id}")
    assert page.status == 200 and rec.record_id in page.text and rec.event_id in page.text
    assert rec.recipient.legal_name.replace("&", "&amp;").replace("<", "&lt;") in page.text


def test_agents_index(lite: Seeded) -> None:
    c = lite.client()
    data = c.get("/agents?format=json").json()
    for agent, outcomes in data.items():
        for outcome, n in outcomes.items():
            assert n == count_records(lite.store, RecordFilter(agent=agent, outcome=outcome))
    page = c.page("/agents")
    assert all(f'href="/agents/{a}"' in page.text for a in data)


# -- dashboard and verification ------------------------------------------------------------


def test_dashboard_matches_the_ledger(lite: Seeded) -> None:
    c = lite.client()
    data = c.get("/?format=json").json()
    store = lite.store
    assert data["totals"]["records"] == count_records(store) == len(lite.records)
    assert data["totals"]["outcomes"]["withheld"] == count_records(
        store, RecordFilter(outcome="withheld")
    )
    assert data["period"] == "month"  # two years of records
    assert data["disclosures_over_time"] == disclosures_over_time(store, period="month")
    assert data["categories_by_agent"] == categories_by_agent(store)
    for agent, outcomes in data["outcomes_by_agent"].items():
        for outcome, n in outcomes.items():
            assert n == count_records(store, RecordFilter(agent=agent, outcome=outcome))
    assert data["verification"]["report"]["ok"] is True

    page = c.page("/")
    assert page.status == 200
    assert page.text.count('<svg class="chart') == 2
    assert 'class="heat"' in page.text and 'data-status="ok"' in page.text
    for agent in data["outcomes_by_agent"]:
        assert f'data-agent="{agent}"' in page.text

    window = c.get("/?since=2024-01-10&until=2024-01-31&format=json").json()
    flt = RecordFilter(
        since=datetime(2024, 1, 10, tzinfo=UTC), until=datetime(2024, 2, 1, tzinfo=UTC)
    )
    assert window["period"] == "day"
    assert window["disclosures_over_time"] == disclosures_over_time(store, flt, period="day")
    assert window["totals"]["records"] == count_records(store, flt)
    assert c.get("/?period=day&format=json").status == 200
    assert c.get("/?period=week&format=json").status == 400


def test_dashboard_shows_tampering(fresh: Seeded) -> None:
    c = fresh.client()
    assert 'data-status="ok"' in c.page("/").text
    target = fresh.records[12]
    eng = sa.create_engine(fresh.url)
    with eng.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE ledger_records SET body = replace(body, 'contract', 'consent')"
                " WHERE record_id = :r"
            ),
            {"r": target.record_id},
        )
    eng.dispose()
    assert 'data-status="ok"' in c.page("/").text  # cached until re-run
    page = c.page("/verify")
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert csrf is not None
    assert c.request("POST", "/verify", form={"csrf": "bad"}).status == 403
    resp = c.request("POST", "/verify", form={"csrf": csrf[1]})
    assert resp.status == 303 and resp.headers["Location"] == "/verify"
    assert 'data-status="failed"' in c.page("/").text
    report = c.get("/verify?format=json").json()["report"]
    assert report["ok"] is False and report["problems"]
    assert 'id="problems"' in c.page("/verify").text


def test_without_keys_the_page_still_works(fresh: Seeded) -> None:
    config = ReviewConfig(
        fresh.store, Credentials.parse(USER, PASSWORD), verify_problem="no public key here"
    )
    server = Server(config)
    try:
        c = Client(server)
        assert c.login().status == 303
        resp = c.get("/records?subject=C-1001&format=json")
        assert resp.status == 503 and "subject reference" in resp.json()["error"]
        assert json_ids(c.get(f"/records?subject_ref={ref('C-1001')}&format=json"))
        page = c.page("/")
        assert page.status == 200 and 'data-status="unavailable"' in page.text
        assert "no public key here" in page.text
    finally:
        server.close()


def test_downloads_are_capped(fresh: Seeded) -> None:
    server = Server(review_config(fresh.store, fresh.keys, max_export=10))
    try:
        c = Client(server)
        c.login()
        resp = c.get("/records?format=json")
        assert resp.status == 400 and "gateway log export" in resp.json()["error"]
        assert len(c.get("/records?format=json&agent=reseller&outcome=disclosed").json()) <= 10
    finally:
        server.close()


# -- charts ---------------------------------------------------------------------------------


def test_charts_escape_and_scale() -> None:
    evil = '<b>"x"&'
    colors = charts.agent_colors([evil, "a"])
    svg = charts.line_chart({evil: {"2024-01": 3, "2024-03": 1}}, "month", colors)
    assert "<b>" not in svg and "&lt;b&gt;&#34;x&#34;&amp;" in svg
    assert svg.count("<circle") == 3  # February is filled in as zero
    bars = charts.stacked_bars({evil: {"disclosed": 5, "withheld": 2}})
    assert "<b>" not in bars and bars.count("<rect") == 3 + 2  # legend + two segments
    assert "No disclosures match" in charts.line_chart({}, "day", {})
    assert "No disclosures match" in charts.stacked_bars({})
    heat = charts.heat_table({"user.name": {"a": 6, "b": 1}, "user.contact": {"a": 0}}, ["c"])
    assert heat.agents == ["a", "b", "c"] and heat.peak == 6
    assert [c.level for c in dict(heat.rows)["user.name"]] == [6, 1, 0]
    assert charts.nice_scale(0) == (1, 1) and charts.nice_scale(7) == (8, 2)
    assert charts.nice_scale(95) == (100, 25) or charts.nice_scale(95)[0] >= 95
    assert charts.periods_between("2024-11", "2025-02", "month") == [
        "2024-11",
        "2024-12",
        "2025-01",
        "2025-02",
    ]
