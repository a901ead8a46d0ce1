"""Recording a disclosure made outside the stream on the review page: reviewer roles from
the reviewers file, a form for recorders only, and the recorded disclosure in the same
reports as the stream's.

"We may also share your Personal Information: ... When we are required to provide
information in response to a subpoena, court order, or other applicable law or legal
process, or to comply with a written government request." """

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner

from gateway.cli.review import review
from gateway.errors import ConfigError
from gateway.keys import init_worker_key
from gateway.ledger.store import open_store
from gateway.settings import Settings
from gateway.web.auth import Accounts, Credentials, accounts_from_settings, parse_reviewers
from gateway.web.auth import hash_password as make_hash
from gateway.web.config import ReviewConfig, config_from_settings
from tests.ledger.data import database, ref
from tests.web.helpers import PASSWORD, SHARED_LIMITS, USER, Client, Server, make_keys, seed

ROOT = Path(__file__).resolve().parents[2]
CLERK, CLERK_PASSWORD = "clerk", "records office passphrase"

COURT_ORDER = {
    "kind": "legal_request",
    "recipient": "county-court",
    "legal_name": "Court of Common Pleas, Franklin County",
    "address": "345 S High St, Columbus, OH 43215",
    "role": "government",
    "customers": "C-1001\n",
    "categories": "user.contact.email\nuser.behavior.purchase_history",
    "request_ref": "Court order 26-CV-0142",
    "approved_by": "general-counsel",
    "disclosed_at": "2026-11-20T10:00",
}


@dataclass
class Site:
    server: Server
    config: ReviewConfig
    url: str

    def client(self, user: str, password: str) -> Client:
        c = Client(self.server)
        assert c.login(user, password).status == 303
        return c

    def count(self) -> int:
        with open_store(self.url, create=False) as store:
            return store.count()


def reviewers_file(path: Path) -> Path:
    path.write_text(
        "# user:role:hash\n"
        f"{CLERK}:recorder:{make_hash(CLERK_PASSWORD)}\n"
        "\n"
        f"{USER}:viewer:{make_hash(PASSWORD)}\n"
    )
    return path


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """The review page as `gateway review` configures it from a reviewers file with a
    recorder and a viewer, over a seeded log, with the keys recording takes."""
    with database("sqlite", tmp_path) as url:
        keys = make_keys(tmp_path / "keys")
        init_worker_key(keys)
        seed(url, keys, n=200)
        settings = Settings(
            ledger_url=url,
            keys_dir=keys,
            policy_path=ROOT / "agents.yaml",
            reviewers_file=reviewers_file(tmp_path / "reviewers"),
        )
        config = config_from_settings(settings, accounts_from_settings(settings))
        assert config.recorder is not None, config.recorder_problem
        config.limits = SHARED_LIMITS
        server = Server(config)
        try:
            yield Site(server, config, url)
        finally:
            server.close()
            config.close()


def csrf_of(page_text: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]+)"', page_text)
    assert m, "the page carries the session's form token"
    return m[1]


def post(c: Client, form: dict[str, str], csrf: str | None) -> object:
    body = dict(form) if csrf is None else {**form, "csrf": csrf}
    return c.request("POST", "/disclosures/new", form=body, accept="text/html")


def test_a_recorder_records_a_court_order_and_every_report_shows_it(site: Site) -> None:
    c = site.client(CLERK, CLERK_PASSWORD)
    form_page = c.page("/disclosures/new")
    assert form_page.status == 200 and 'id="disclosure-form"' in form_page.text
    assert 'id="nav-record"' in form_page.text
    csrf = csrf_of(form_page.text)
    before = site.count()

    # The form is posted like every other: without its token nothing happens.
    resp = c.request("POST", "/disclosures/new", form=COURT_ORDER, accept="text/html")
    assert resp.status == 403 and site.count() == before

    resp = c.request(
        "POST", "/disclosures/new", form={**COURT_ORDER, "csrf": csrf}, accept="text/html"
    )
    assert resp.status == 303, resp.text
    location = resp.headers["Location"]
    assert location.startswith("/records/") and "C-1001" not in location
    assert site.count() == before + 1
    record = c.get(location + "?format=json").json()
    rec = record["record"]
    assert rec["event_type"] == "manual.legal_request" and rec["outcome"] == "disclosed"
    assert rec["subject_ref"] == ref("C-1001")
    assert rec["consent_state"]["manual"]["recorded_by"] == CLERK
    assert rec["occurred_at"] == "2026-11-20T10:00:00Z"

    # The subject's access report, as data and as the page.
    rep = c.get("/subject?" + urlencode({"subject": "C-1001", "format": "json"}), follow=True)
    court = next(r for r in rep.json()["recipients"] if r["agent"] == "county-court")
    assert court["legal_bases"] == ["legal_obligation"] and court["role"] == "government"
    assert court["references"] == ["Court order 26-CV-0142"]
    page = c.page("/subject?" + urlencode({"subject": "C-1001"}), follow=True)
    assert "Court of Common Pleas, Franklin County" in page.text
    assert "request Court order 26-CV-0142" in page.text
    # The recipient's report.
    agent = c.get("/agents/county-court?format=json").json()
    assert agent["records"] == 1 and agent["event_types"] == {"manual.legal_request": 1}
    # The log still verifies, the new shard with the rest.
    dashboard = c.page("/")
    assert c.request("POST", "/verify", form={"csrf": csrf_of(dashboard.text)}).status == 303
    verification = c.get("/verify?format=json").json()
    assert verification["report"]["ok"] is True
    assert -1 in {s["shard"] for s in verification["report"]["shards"]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"categories": "user.contact.emial"}, "is not a data category"),
        ({"legal_basis": "consent"}, "legal_request disclosure does not rest on consent"),
        ({"purposes": "third_party_sharing.marketing"}, "own marketing"),
        ({"request_ref": ""}, "request reference (e.g. the court order"),
        ({"disclosed_at": "yesterday"}, "not a date and time"),
    ],
)
def test_a_bad_disclosure_comes_back_with_what_to_fix(
    site: Site, change: dict[str, str], message: str
) -> None:
    c = site.client(CLERK, CLERK_PASSWORD)
    csrf = csrf_of(c.page("/disclosures/new").text)
    before = site.count()
    resp = c.request(
        "POST",
        "/disclosures/new",
        form={**COURT_ORDER, **change, "csrf": csrf},
        accept="text/html",
    )
    assert resp.status == 400
    assert 'id="disclosure-error"' in resp.text and message in resp.text
    # The form comes back as it was sent.
    assert "Court of Common Pleas, Franklin County" in resp.text
    assert site.count() == before


def test_a_viewer_cannot_record(site: Site) -> None:
    c = site.client(USER, PASSWORD)
    dashboard = c.page("/")
    assert dashboard.status == 200 and 'id="nav-record"' not in dashboard.text
    assert c.page("/disclosures/new").status == 403
    before = site.count()
    resp = c.request(
        "POST",
        "/disclosures/new",
        form={**COURT_ORDER, "csrf": csrf_of(dashboard.text)},
        accept="text/html",
    )
    assert resp.status == 403 and "recorder account" in resp.text
    assert c.get("/disclosures/new").status == 403
    assert site.count() == before
    # Not logged in: the login page, as everywhere.
    assert Client(site.server).page("/disclosures/new").status == 303


def test_without_what_recording_takes_the_form_says_why(tmp_path: Path) -> None:
    with database("sqlite", tmp_path) as url:
        keys = make_keys(tmp_path / "keys")  # no worker key
        seed(url, keys, n=20)
        settings = Settings(
            ledger_url=url,
            keys_dir=keys,
            policy_path=ROOT / "agents.yaml",
            reviewers_file=reviewers_file(tmp_path / "reviewers"),
        )
        config = config_from_settings(settings, accounts_from_settings(settings))
        assert config.recorder is None and config.recorder_problem is not None
        assert "worker.key" in config.recorder_problem
        config.limits = SHARED_LIMITS
        server = Server(config)
        try:
            c = Client(server)
            assert c.login(CLERK, CLERK_PASSWORD).status == 303
            resp = c.get("/disclosures/new")
            assert resp.status == 503 and "cannot be recorded here" in resp.json()["error"]
            assert c.get("/records?format=json").status == 200  # reading works as before
        finally:
            server.close()
            config.close()


# -- accounts -------------------------------------------------------------------------------


def test_the_reviewers_file(tmp_path: Path) -> None:
    accounts = parse_reviewers(reviewers_file(tmp_path / "r").read_text(), "r")
    assert [(a.user, a.role) for a in accounts] == [(CLERK, "recorder"), (USER, "viewer")]
    ring = Accounts(accounts)
    assert ring.check(CLERK, CLERK_PASSWORD) == accounts[0]
    assert ring.check(CLERK, PASSWORD) is None and ring.check("nobody", PASSWORD) is None
    for line, message in [
        ("alice:viewer", "user:role:hash"),
        ("alice:admin:" + make_hash("x" * 12), "role 'admin' is not viewer or recorder"),
        ("alice:viewer:a plain password", "hashes only"),
        ("alice:viewer:scrypt$zz$00", "scrypt$<salt hex>$<64 hex digits>"),
        ("al ice:viewer:" + make_hash("x" * 12), "user name"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)) as e:
            parse_reviewers(f"# accounts\n{line}\n", "reviewers")
        assert str(e.value).startswith("reviewers:2: ")
        assert "a plain password" not in str(e.value)
    twice = f"bob:viewer:{make_hash('x' * 12)}\nbob:recorder:{make_hash('y' * 12)}\n"
    with pytest.raises(ConfigError, match="configured twice"):
        Accounts(parse_reviewers(twice, "r"))


def test_accounts_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GATEWAY_REVIEWER_USER", "GATEWAY_REVIEWER_PASSWORD", "GATEWAY_REVIEWERS_FILE"):
        monkeypatch.delenv(name, raising=False)
    path = reviewers_file(tmp_path / "reviewers")
    # The single account of before keeps what it had: it reads.
    single = accounts_from_settings(Settings(reviewer_user="ann", reviewer_password="pw-pw-pw-1"))
    assert [(a.user, a.role) for a in single.accounts] == [("ann", "viewer")]
    both = accounts_from_settings(
        Settings(reviewer_user="ann", reviewer_password="pw-pw-pw-1", reviewers_file=path)
    )
    assert [(a.user, a.role) for a in both.accounts] == [
        ("ann", "viewer"),
        (CLERK, "recorder"),
        (USER, "viewer"),
    ]
    assert [a.user for a in both.recorders] == [CLERK]
    file_only = accounts_from_settings(Settings(reviewers_file=path))
    assert len(file_only.accounts) == 2
    with pytest.raises(ConfigError, match="GATEWAY_REVIEWER_PASSWORD not set"):
        accounts_from_settings(Settings(reviewer_user="ann", reviewers_file=path))
    with pytest.raises(ConfigError, match="GATEWAY_REVIEWERS_FILE"):
        accounts_from_settings(Settings(reviewers_file=tmp_path / "missing"))
    # Given bare credentials, a page's configuration has one viewer.
    assert Accounts.of(Credentials.parse("ann", "pw")).accounts[0].role == "viewer"


def test_a_hash_from_the_command_makes_a_reviewers_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(review, ["--hash-password"], input=CLERK_PASSWORD + "\n")
    assert res.exit_code == 0, res.output
    [account] = parse_reviewers(f"{CLERK}:recorder:{res.output.strip()}\n", "r")
    assert Accounts([account]).check(CLERK, CLERK_PASSWORD) == account
