"""Security promises end to end, on what the real core produces.

* Confidentiality between agents: no agent opens another agent's message.
* Integrity and context: a tampered, replayed, re-targeted or re-bound message is refused
  (or, for a replay, dropped as a duplicate) by the agent reader.
* The disclosure log: an edited record, a deleted record and a forged checkpoint are found
  by `gateway log verify` (exit status 1), with and without the signing key.
* The review page: every route refuses unauthenticated and wrong-credential requests, and
  filter parameters cannot inject into the query (SQLite and PostgreSQL) or the page.
* Keys: private key files are created 0600 and never printed or logged.
"""

from __future__ import annotations

import base64
import itertools
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from gateway.cli import main
from gateway.consent import ConsentState
from gateway.crypto import SigningKey
from gateway.dev.samples import random_events, scenario
from gateway.errors import CryptoError
from gateway.keys import demo_agent_keys_dir, demo_agent_private_key, load_signing_key
from gateway.ledger import schema as t
from gateway.ledger.checkpoints import Checkpoint
from gateway.ledger.store import LedgerStore, open_store
from gateway.pipeline import AgentMessage, EventResult
from gateway.runtime import Core
from gateway.sdk.reader import AgentReader, Received
from gateway.settings import Settings
from gateway.web.auth import COOKIE_NAME
from tests.conftest import with_aggregates
from tests.ledger.data import database

# --- what the core produced --------------------------------------------------------------


@pytest.fixture(scope="module")
def outcomes(core: Core) -> list[EventResult]:
    # Enough random traffic after the scenario for analytics' aggregate tables to pass k.
    return with_aggregates(core, [*scenario(), *random_events(600, seed=5, customers=60)])


@pytest.fixture(scope="module")
def messages(outcomes: list[EventResult]) -> list[AgentMessage]:
    msgs = [m for o in outcomes for m in o.messages]
    assert len({m.agent for m in msgs}) == 5
    return msgs


def fresh_reader(settings: Settings, agent: str) -> AgentReader:
    return AgentReader(
        agent, demo_agent_private_key(settings.keys_dir, agent), settings.signing_public_key_path
    )


def test_no_agent_can_open_another_agents_message(
    settings: Settings, messages: list[AgentMessage]
) -> None:
    agents = sorted({m.agent for m in messages})
    readers = {a: fresh_reader(settings, a) for a in agents}
    opened = 0
    for m in messages:
        for other in agents:
            if other == m.agent:
                assert isinstance(readers[other].read(m.value), Received)
                opened += 1
                continue
            with pytest.raises(CryptoError):
                readers[other].read(m.value)
    assert opened == len(messages)


def test_a_foreign_private_key_cannot_decrypt_even_with_the_header_rewritten(
    settings: Settings, messages: list[AgentMessage]
) -> None:
    # An attacker holding the email agent's key rewrites a shipping message's header to
    # say "email": the ciphertext's data key is wrapped for shipping and the header is
    # authenticated, so nothing opens.
    m = next(m for m in messages if m.agent == "shipping")
    forged = m.value.replace(b'"agent":"shipping"', b'"agent":"email"')
    assert forged != m.value
    with pytest.raises(CryptoError):
        fresh_reader(settings, "email").read(forged)


def _flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


def test_tampered_messages_are_refused(settings: Settings, messages: list[AgentMessage]) -> None:
    m = next(m for m in messages if m.agent == "payments")
    reader = fresh_reader(settings, "payments")
    doc = orjson.loads(m.value)
    ct = base64.b64decode(doc["ciphertext"])
    tampered = [
        # one bit of the ciphertext
        orjson.dumps({**doc, "ciphertext": base64.b64encode(_flip(ct, len(ct) // 2)).decode()}),
        # the agent's reference or the disclosure id in the header (re-binding elsewhere)
        orjson.dumps({**doc, "header": {**doc["header"], "ref": "0" * 24}}),
        orjson.dumps({**doc, "header": {**doc["header"], "disclosure_id": "0" * 32}}),
        # the key envelope's signature, and truncation
        orjson.dumps({**doc, "envelope": {**doc["envelope"], "sig": doc["envelope"]["sig"][::-1]}}),
        m.value[:-20],
        b"",
    ]
    for bad in tampered:
        with pytest.raises(CryptoError):
            reader.read(bad)
    assert isinstance(reader.read(m.value), Received)  # the original still opens


def test_replays_are_dropped_and_ciphertext_swaps_refused(
    settings: Settings, messages: list[AgentMessage]
) -> None:
    ship = [m for m in messages if m.agent == "shipping"]
    assert len(ship) >= 2
    reader = fresh_reader(settings, "shipping")
    first = reader.read(ship[0].value)
    assert isinstance(first, Received)
    assert reader.read(ship[0].value) is None  # the same message again: a duplicate
    assert reader.duplicates == 1
    # The ciphertext of one event under the header of another (same agent, same key):
    # the header is the AEAD's associated data, so it does not open.
    a, b = orjson.loads(ship[0].value), orjson.loads(ship[1].value)
    with pytest.raises(CryptoError):
        fresh_reader(settings, "shipping").read(orjson.dumps({**b, "ciphertext": a["ciphertext"]}))


def test_a_message_re_targeted_to_another_topic_is_refused_by_that_agent(
    settings: Settings, messages: list[AgentMessage]
) -> None:
    # Replayed into another agent's topic, whose reader sees someone else's message.
    m = next(m for m in messages if m.agent == "analytics")
    got = list(fresh_reader(settings, "email").read_many([("agent.email[0]@7", m.value)]))
    assert len(got) == 1 and not isinstance(got[0], Received)
    assert got[0].foreign  # recognised as addressed to another agent


# --- the disclosure log ----------------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path: Path, core: Core, outcomes: list[EventResult]) -> Iterator[tuple[str, Path]]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    records = [r for o in outcomes for r in o.records]
    with open_store(url, signer=core.signing_key, checkpoint_every=10) as store:
        store.append(records[: len(records) // 2], shard=0)
        store.append(records[len(records) // 2 :], shard=1)
        store.checkpoint()
    yield url, core.settings.keys_dir


def verify(url: str, keys: Path, *extra: str) -> Any:
    return CliRunner().invoke(
        main, ["log", "verify", "--db", url, "--keys-dir", str(keys), "--format", "json", *extra]
    )


def sql(url: str, stmt: str, **params: Any) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(stmt), params)
    engine.dispose()


def public_keys(keys: Path, tmp: Path) -> Path:
    """A key directory with the gateway's public key only: what an auditor holds."""
    d = tmp / "public-keys"
    d.mkdir()
    (d / "gateway-signing.pub").write_bytes((keys / "gateway-signing.pub").read_bytes())
    return d


def test_an_intact_log_verifies(ledger: tuple[str, Path]) -> None:
    url, keys = ledger
    res = verify(url, keys)
    assert res.exit_code == 0, res.output
    assert orjson.loads(res.output)["ok"] is True


@pytest.mark.parametrize("auditor", ["signing key", "public key only"])
def test_an_edited_record_is_detected(
    ledger: tuple[str, Path], tmp_path: Path, auditor: str
) -> None:
    url, keys = ledger
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rid, body = conn.execute(
            sa.text(
                "SELECT record_id, body FROM ledger_records WHERE outcome = 'disclosed' "
                "ORDER BY shard, seq LIMIT 1"
            )
        ).one()
    engine.dispose()
    # Rewrite history: the disclosure becomes a withholding.
    edited = body.replace('"outcome":"disclosed"', '"outcome":"withheld"')
    sql(url, "UPDATE ledger_records SET body = :b WHERE record_id = :r", b=edited, r=rid)
    k = keys if auditor == "signing key" else public_keys(keys, tmp_path)
    res = verify(url, k)
    assert res.exit_code == 1, res.output
    report = orjson.loads(res.output)
    assert report["ok"] is False and report["problems"]


def test_a_deleted_record_is_detected(ledger: tuple[str, Path], tmp_path: Path) -> None:
    url, keys = ledger
    sql(
        url,
        "DELETE FROM ledger_terms WHERE record_id IN (SELECT record_id FROM "
        "ledger_records WHERE shard = 1 AND seq = 3)",
    )
    sql(url, "DELETE FROM ledger_records WHERE shard = 1 AND seq = 3")
    for k in (keys, public_keys(keys, tmp_path)):
        res = verify(url, k)
        assert res.exit_code == 1, res.output


def test_a_forged_checkpoint_is_detected(ledger: tuple[str, Path], tmp_path: Path) -> None:
    url, keys = ledger
    signer = load_signing_key(keys / "gateway-signing.key")
    # A checkpoint claiming another root, signed by an attacker's key under our key id.
    cp = Checkpoint.sign(SigningKey.generate(), 0, 5, b"\x42" * 32)
    store: LedgerStore = open_store(url, create=False)
    with store.engine.begin() as conn:
        conn.execute(
            t.checkpoints.insert().values(
                shard=0,
                tree_size=5,
                root_hash=cp.root_hash,
                timestamp=cp.timestamp,
                key_id=signer.key_id,
                signature=cp.signature,
            )
        )
    store.close()
    for k in (keys, public_keys(keys, tmp_path)):
        res = verify(url, k)
        assert res.exit_code == 1, res.output
        kinds = {p["kind"] for p in orjson.loads(res.output)["problems"]}
        assert "forged_checkpoint" in kinds


def test_a_re_signed_root_cannot_be_passed_off(ledger: tuple[str, Path]) -> None:
    # An edit whose checkpoint root is recomputed but signed with another key.
    url, keys = ledger
    sql(url, "UPDATE ledger_checkpoints SET root_hash = :h WHERE shard = 1", h=b"\x07" * 32)
    res = verify(url, keys)
    assert res.exit_code == 1, res.output


# --- the review page ------------------------------------------------------------------------

ROUTES_GET = [
    "/",
    "/records",
    "/records?format=json",
    "/records/x",
    "/subject",
    "/subject?subject=C-1001&format=json",
    "/agents",
    "/agents/email",
    "/shine-the-light",
    "/verify",
]
ROUTES_POST = ["/verify", "/logout"]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, core: Core
) -> Iterator[Any]:
    from tests.web.helpers import Seeded, Server, review_config

    tmp = tmp_path_factory.mktemp(f"sec-{request.param}")
    states: dict[str, ConsentState] = {}
    records = [
        r
        for e in scenario()
        for r in core.pipeline.process(orjson.dumps(e), states, verify=False).records
    ]
    with database(request.param, tmp) as url:
        with open_store(url, signer=core.signing_key) as s:
            s.append(records, shard=0)
            s.checkpoint()
        store = open_store(url, create=False)
        server = Server(review_config(store, core.settings.keys_dir))
        try:
            yield Seeded(url, core.settings.keys_dir, records, store, server)
        finally:
            server.close()
            store.close()


def test_the_review_page_refuses_unauthenticated_requests(site: Any) -> None:
    anon = site.client(login=False)
    for path in ROUTES_GET:
        for accept in ("application/json", "text/html"):
            r = anon.request("GET", path, accept=accept)
            assert r.status in (303, 401), (path, r.status)
            assert b"record_id" not in r.body and b"subject_ref" not in r.body
            if r.status == 303:
                assert r.headers["Location"].startswith("/login")
    for path in ROUTES_POST:
        r = anon.request("POST", path, form={}, headers={"Origin": anon.server.url})
        assert r.status in (303, 401, 403), (path, r.status)


# (Not "the password + NUL bytes": scrypt keys HMAC with the password, and HMAC pads short
# keys with zero bytes, so trailing NULs are the same password; that gains a guesser nothing.)
@pytest.mark.parametrize(
    "user,password",
    [
        ("reviewer", "wrong"),
        ("root", "correct horse battery staple"),
        ("", ""),
        ("reviewer' --", "x' OR '1'='1"),
        ("reviewer", "correct horse battery stapl"),
        ("Reviewer", "correct horse battery staple"),
    ],
)
def test_the_review_page_refuses_wrong_credentials(site: Any, user: str, password: str) -> None:
    c = site.client(login=False)
    r = c.login(user, password)
    assert c.cookie is None and COOKIE_NAME not in r.cookies()
    assert c.get("/records?format=json").status in (303, 401)
    # A forged session cookie gets nowhere either.
    c.cookie = "forged." + "A" * 40
    assert c.get("/records?format=json").status in (303, 401)


INJECTIONS = [
    "' OR '1'='1",
    "shipping' --",
    "x' UNION SELECT body FROM ledger_records --",
    "'; DELETE FROM ledger_records; --",
    "%",
    "_",
    "*",
    "\\",
    "shipping%",
    "<script>alert(1)</script>",
    '"><svg onload=alert(1)>',
]


def test_filter_parameters_cannot_inject(site: Any) -> None:
    c = site.client()
    before = site.store.count()
    everything = len(orjson.loads(c.get("/records?format=json&per_page=500").body))
    assert everything > 0
    for param, value in itertools.product(
        ["agent", "outcome", "category", "purpose", "event_type", "subject", "subject_ref"],
        INJECTIONS,
    ):
        for accept in ("application/json", "text/html"):
            q = urlencode({param: value, "format": "json" if "json" in accept else "html"})
            r = c.request("GET", "/records?" + q, accept=accept, follow=True)
            assert r.status in (200, 400), (param, value, r.status)
            assert b"<script>alert(1)</script>" not in r.body
            assert b"<svg onload" not in r.body
            if r.status == 200 and accept == "application/json":
                # Junk never widens a filter to other records.
                assert orjson.loads(r.body) == [], (param, value)
    assert site.store.count() == before  # nothing deleted or added


# --- keys --------------------------------------------------------------------------------


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def secrets_of(keys: Path) -> list[str]:
    """Every private key as it is stored and in the forms a leak would take (the demo
    agents' keys live beside the keys directory)."""
    out: list[str] = []
    for p in [
        keys / "gateway-signing.key",
        keys / "pseudonym.key",
        *sorted((keys / "agents").glob("*.key")),
        *sorted(demo_agent_keys_dir(keys).glob("*.key")),
    ]:
        text = p.read_text().strip()
        out.append(text)
        body = "".join(line for line in text.splitlines() if "-----" not in line)
        if body:
            out.append(body[:24])  # any chunk of the PEM body
            try:
                raw = base64.b64decode(body)
                out += [raw[-32:].hex(), base64.b64encode(raw[-32:]).decode()[:24]]
            except ValueError:
                pass
    return [s for s in out if s]


def test_keys_are_created_0600_and_never_printed(tmp_path: Path) -> None:
    old = os.umask(0)  # a create-then-chmod implementation would leave 0666 files behind
    try:
        keys = tmp_path / "keys"
        runner = CliRunner()
        r1 = runner.invoke(main, ["keys", "init", "--keys-dir", str(keys)])
        out = str(demo_agent_keys_dir(keys))
        r2 = runner.invoke(
            main, ["keys", "agent", "shipping", "--keys-dir", str(keys), "--out", out]
        )
        r3 = runner.invoke(main, ["keys", "show", "--keys-dir", str(keys)])
    finally:
        os.umask(old)
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.output + r2.output
    for p in (
        keys / "gateway-signing.key",
        keys / "pseudonym.key",
        demo_agent_keys_dir(keys) / "shipping.key",
    ):
        assert _mode(p) == 0o600, (p, oct(_mode(p)))
    assert _mode(keys) & 0o077 == 0
    printed = r1.output + r2.output + r3.output
    for s in secrets_of(keys):
        assert s not in printed


@pytest.mark.slow
@pytest.mark.broker
def test_a_worker_never_logs_key_material(broker, topic_prefix: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.stream.helpers import Env, Worker

    env = Env.create(tmp_path, broker.bootstrap, topic_prefix)
    lines = [orjson.dumps(e) for e in scenario()]
    with Worker(env, extra_env={"GATEWAY_DEK_ROTATE_MESSAGES": "3"}) as w:
        with env.publisher() as pub:
            pub.publish_many(enumerate(lines, 1))
        w.wait_processed(len(lines))
    log = w.log_path.read_text(errors="replace")
    assert "Worker" in log  # the log is there and not empty
    for s in secrets_of(env.settings.keys_dir):
        assert s not in log
