"""`gateway log record-disclosure`: disclosures made outside the stream, in the same log.

"We may also share your Personal Information: ... When we are required to provide
information in response to a subpoena, court order, or other applicable law or legal
process, or to comply with a written government request." Such a disclosure is recorded
like any other, so the subject's access report, the recipient's report and Shine the Light
include it, and the log still verifies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.keys import init_worker_key
from gateway.ledger.manual import MANUAL_SHARD
from gateway.ledger.store import open_store
from tests.cli.helpers import ROOT, Env
from tests.ledger.data import ref

POLICY = str(ROOT / "agents.yaml")
COURT = [
    "--recipient",
    "county-court",
    "--legal-name",
    "Court of Common Pleas, Franklin County",
    "--address",
    "345 S High St, Columbus, OH 43215",
    "--role",
    "government",
]


def record(env: Env, *args: str, fmt: str = "json") -> Any:
    return env.run("record-disclosure", *args, "--policy", POLICY, "--format", fmt)


def legal_request(*more: str) -> list[str]:
    return [
        "--kind",
        "legal_request",
        *COURT,
        "--customer",
        "C-1001",
        "--category",
        "user.contact.email",
        "--category",
        "user.behavior.purchase_history",
        "--request-ref",
        "Court order 26-CV-0142",
        "--approved-by",
        "general-counsel",
        "--recorded-by",
        "privacy-office",
        "--disclosed-at",
        "2026-11-20T10:00:00Z",
        *more,
    ]


@pytest.fixture
def keyed(env: Env) -> Env:
    init_worker_key(env.keys)  # record ids are keyed like the workers'
    return env


def test_a_recorded_legal_request_appears_in_the_subjects_access_report(keyed: Env) -> None:
    env = keyed
    res = record(env, *legal_request())
    assert res.exit_code == 0, res.output
    [rec] = orjson.loads(res.output)
    assert rec["outcome"] == "disclosed" and rec["event_type"] == "manual.legal_request"
    assert rec["subject_ref"] == ref("C-1001") and rec["subject_type"] == "consumer"
    assert rec["legal_bases"] == ["legal_obligation"]
    assert rec["purposes"] == ["essential.legal_obligation.legal_process"]
    assert rec["categories_sent"] == ["user.behavior.purchase_history", "user.contact.email"]
    assert rec["reason"] == "Court order 26-CV-0142"
    assert rec["consent_state"]["manual"]["approved_by"] == "general-counsel"
    assert rec["event_id"].startswith("manual-") and len(rec["event_fp"]) == 64
    with open_store(env.url, create=False) as store:
        stored = store.get(rec["record_id"])
    assert stored is not None and stored.shard == MANUAL_SHARD

    # The access report names the court, what it got, on which basis, and the order.
    rep = orjson.loads(env.run("report", "subject", "C-1001", "--format", "json").output)
    court = next(r for r in rep["recipients"] if r["agent"] == "county-court")
    assert court["legal_name"] == "Court of Common Pleas, Franklin County"
    assert court["role"] == "government" and court["disclosures"] == 1
    assert court["categories"] == ["user.behavior.purchase_history", "user.contact.email"]
    assert court["legal_bases"] == ["legal_obligation"]
    assert court["references"] == ["Court order 26-CV-0142"]
    assert court["first_disclosed"] == "2026-11-20T10:00:00Z"  # when made, not recorded
    table = env.run("report", "subject", "C-1001").output
    assert "Court of Common Pleas" in table and "Court order 26-CV-0142" in table
    # The stream's records about the subject are all still there.
    assert rep["records"] == 1 + sum(r.subject_ref == ref("C-1001") for r in env.records)

    # The recipient's report, and the list filtered by it.
    agent = orjson.loads(env.run("report", "agent", "county-court", "--format", "json").output)
    assert agent["records"] == 1 and agent["event_types"] == {"manual.legal_request": 1}
    assert agent["recipient"]["role"] == "government"
    listed = env.run("list", "--event-type", "manual.legal_request", "--format", "json")
    assert [r["record_id"] for r in orjson.loads(listed.output)] == [rec["record_id"]]

    # Signed and checkpointed like every shard: the log verifies.
    res = env.run("verify")
    assert res.exit_code == 0, res.output
    assert str(MANUAL_SHARD) in res.output
    # Not for anyone's marketing: Shine the Light stays empty for the year.
    shine = orjson.loads(
        env.run("report", "shine-the-light", "--year", "2026", "--format", "json").output
    )
    assert shine["third_parties"] == []


def test_several_customers_one_disclosure_and_a_known_recipient(keyed: Env) -> None:
    env = keyed
    res = record(env, *legal_request("--customer", "B-2001", "--customer", "C-1001"))
    assert res.exit_code == 0, res.output
    recs = orjson.loads(res.output)
    assert [(r["subject_ref"], r["subject_type"]) for r in recs] == [
        (ref("C-1001"), "consumer"),
        (ref("B-2001"), "business"),
    ]
    assert len({r["record_id"] for r in recs}) == 2 and len({r["decision_id"] for r in recs}) == 1
    # The court is known now: its short name is enough the next time.
    res = record(
        env,
        "--kind",
        "legal_request",
        "--recipient",
        "county-court",
        "--customer",
        "C-1002",
        "--category",
        "user.name",
        "--request-ref",
        "Subpoena 2026-118",
        "--approved-by",
        "general-counsel",
    )
    assert res.exit_code == 0, res.output
    [again] = orjson.loads(res.output)
    assert again["recipient"]["legal_name"] == "Court of Common Pleas, Franklin County"
    res = record(env, *legal_request(), fmt="table")
    assert res.exit_code == 0 and "recorded 1 disclosure record(s) to county-court" in res.output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("--category", "user.contact.emial"),
            "'user.contact.emial' is not a data category (did you mean user.contact.email",
        ),
        (
            ("--legal-basis", "consent"),
            "a legal_request disclosure does not rest on consent: it rests on legal_obligation",
        ),
        (
            ("--purpose", "essential.legal_obligaton"),
            "'essential.legal_obligaton' is not a data use",
        ),
        (
            ("--purpose", "third_party_sharing.marketing"),
            "is the recipient's own marketing, which the privacy policy promises none",
        ),
        (("--role", "service_provider"), "goes to a recipient of role government or third_party"),
        (("--disclosed-at", "2099-01-01"), "the disclosure time is in the future"),
    ],
)
def test_a_bad_disclosure_is_refused_with_a_clear_message(
    keyed: Env, change: tuple[str, str], message: str
) -> None:
    env = keyed
    args = legal_request()
    flag, value = change
    if flag in args and flag != "--category":
        args[args.index(flag) + 1] = value
    else:
        args = [*args, flag, value]
    with open_store(env.url, create=False) as store:
        before = store.count()
    res = record(env, *args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "C-1001" not in res.output  # no customer id in an error
    with open_store(env.url, create=False) as store:
        assert store.count() == before  # nothing recorded


def test_refusals_that_need_what_the_log_knows(keyed: Env) -> None:
    env = keyed
    # A third party may not get data for marketing (it would be its own marketing).
    res = record(
        env,
        "--kind",
        "consent",
        "--recipient",
        "lens-club",
        "--legal-name",
        "Lens Club Inc.",
        "--address",
        "1 Main St, Dayton, OH",
        "--role",
        "third_party",
        "--customer",
        "C-1001",
        "--category",
        "user.contact.email",
        "--purpose",
        "marketing.communications.email",
        "--request-ref",
        "consent form 77",
        "--approved-by",
        "privacy-office",
    )
    assert res.exit_code == 2 and "own direct marketing" in res.output, res.output
    # A recipient new to the log needs its details.
    res = record(env, *[a for a in legal_request() if a not in COURT[2:]])
    assert res.exit_code == 2
    assert "recipient 'county-court' is new to the log and the policy: give its legal name" in (
        res.output
    )
    # A customer the log never saw: the subject type must be given (the id is not echoed).
    args = legal_request()
    args[args.index("C-1001")] = "C-7777"
    res = record(env, *args)
    assert res.exit_code == 2 and "customer 1 of 1 has no record in the log" in res.output
    assert "C-7777" not in res.output
    res = record(env, *args, "--subject-type", "consumer")
    assert res.exit_code == 0, res.output


def test_recording_needs_the_workers_key(env: Env, tmp_path: Path) -> None:
    res = record(env, *legal_request())
    assert res.exit_code == 2 and "worker.key" in res.output and "gateway keys worker" in res.output


@pytest.mark.postgres
def test_recorded_on_postgres(pg_env: Env) -> None:
    init_worker_key(pg_env.keys)
    res = record(pg_env, *legal_request())
    assert res.exit_code == 0, res.output
    rep = orjson.loads(pg_env.run("report", "subject", "C-1001", "--format", "json").output)
    assert any(r["agent"] == "county-court" for r in rep["recipients"])
    assert pg_env.run("verify").exit_code == 0
