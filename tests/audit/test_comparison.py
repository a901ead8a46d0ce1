"""The comparison's checks of each source, one at a time, on hand-built inputs: each
catches its own kind of gap or warning, and leaves alone what is fine (duplicates,
re-issues, pruned bodies, work still in flight). The per-customer checks of records
against the input are in test_comparison_routing.py and test_reconcile.py."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any, cast

import orjson

from gateway.audit import Expected, ReconcileReport, TopicMessage
from gateway.audit.comparison import (
    Context,
    LedgerContents,
    check_agent_topics,
    check_dead_letter_topic,
    check_disclosure_topic,
    check_ledger,
)
from gateway.audit.expectation import Histories, sha256
from gateway.records import DecisionRecord, Recipient, payload_digest

IN, DISC, DEAD = "gw.events", "gw.disclosures", "gw.dead"
SHIP, MAIL = "shipping.orders", "email.profiles"
T = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
PATHS = ("data.address",)


def sealed(rid: str, n: int = 1) -> bytes:
    """Stands for a sealed agent message: its clear header names the disclosure id; ``n``
    stands for the fresh nonce of each issue."""
    return orjson.dumps({"header": {"disclosure_id": rid}, "nonce": n})


def record(
    rid: str,
    agent: str = "shipping",
    outcome: str = "disclosed",
    *,
    message: bytes | None = None,
    topic: str | None = SHIP,
    event_id: str = "evt-1",
    policy_version: str = "v1",
) -> DecisionRecord:
    disclosed = outcome != "withheld"
    return DecisionRecord(
        record_id=rid,
        decision_id=f"dec-{rid}",
        event_id=event_id,
        event_type="order.placed",
        occurred_at=T,
        recorded_at=T,
        subject_ref="subject-1",
        subject_type="consumer",
        agent=agent,
        recipient=Recipient(name=agent, legal_name="Co", address="-", role="service_provider"),
        outcome=outcome,
        reason=None if disclosed else "not_subscribed",
        paths_sent=list(PATHS) if disclosed else [],
        policy_version=policy_version,
        payload_digest=payload_digest(message) if message is not None and disclosed else None,
        topic=topic if disclosed else None,
    )


def on_topic(topic: str, offset: int, value: bytes, partition: int = 0) -> TopicMessage:
    return TopicMessage(topic, partition, offset, b"k", value)


def logged(*recs: DecisionRecord) -> list[TopicMessage]:
    """The records as copies on the disclosure topic, in order."""
    return [on_topic(DISC, i, r.to_json()) for i, r in enumerate(recs)]


def ledger_of(*recs: DecisionRecord) -> LedgerContents:
    return LedgerContents({r.record_id: r.to_json().decode() for r in recs})


def expected(offset: int, *, raw: bytes, dead_letter: str) -> Expected:
    """A rejected input (its admission's reason ``dead_letter``)."""
    return Expected(on_topic(IN, offset, raw), sha256(raw), None, dead_letter)


def ctx(offsets: dict[tuple[str, int], int] | None = None) -> Context:
    # These checks read neither the input nor the pipeline.
    return Context(cast(Any, None), Histories(), offsets)


def found(report: ReconcileReport) -> list[tuple[str, str | None]]:
    return [(f.kind, f.record_id) for f in report.findings]


# --- the disclosure topic ---------------------------------------------------------------


def test_disclosure_topic_indexes_records_and_counts_redelivered_copies() -> None:
    m1, m2 = sealed("r1", 1), sealed("r1", 2)
    report = ReconcileReport()
    copies = logged(record("r1", message=m1), record("r1", message=m2))
    topic = check_disclosure_topic(copies, None, report)
    assert not report.findings and report.duplicates["disclosure_topic"] == 1
    assert len(topic.copies["r1"]) == 2
    assert set(topic.by_digest) == {payload_digest(m1), payload_digest(m2)}


def test_disclosure_topic_reports_unreadable_entries_as_malformed() -> None:
    report = ReconcileReport()
    topic = check_disclosure_topic([on_topic(DISC, 7, b"garbage")], None, report)
    assert [(f.kind, f.position) for f in report.findings] == [("malformed", f"{DISC}[0]@7")]
    assert not topic.copies


def test_copies_of_one_record_recording_different_decisions_are_a_conflict() -> None:
    report = ReconcileReport()
    check_disclosure_topic(logged(record("r1"), record("r1", outcome="withheld")), None, report)
    assert found(report) == [("conflict", "r1")]


# --- the ledger store -------------------------------------------------------------------


def test_an_expected_record_on_the_topic_but_not_in_the_ledger_is_unledgered() -> None:
    topic = check_disclosure_topic(logged(record("r1"), record("r2")), None, ReconcileReport())
    report = ReconcileReport()
    check_ledger(topic, ledger_of(record("r1")), ctx(), report)
    assert found(report) == [("unledgered", "r2")]
    assert report.findings[0].position == f"{DISC}[0]@1"  # its first copy on the topic


def test_a_record_the_ledger_sink_has_not_committed_yet_is_pending() -> None:
    topic = check_disclosure_topic(logged(record("r1")), None, ReconcileReport())
    report = ReconcileReport()
    check_ledger(topic, ledger_of(), ctx({(DISC, 0): 0}), report)
    assert not report.findings and [f.kind for f in report.pending] == ["unledgered"]
    report = ReconcileReport()
    check_ledger(topic, ledger_of(), ctx({(DISC, 0): 1}), report)
    assert found(report) == [("unledgered", "r1")] and not report.pending


# --- the agent topics -------------------------------------------------------------------


def agent_check(
    messages: dict[str, list[TopicMessage]],
    topic_records: list[DecisionRecord],
    ledger: LedgerContents,
) -> tuple[ReconcileReport, dict[str, set[str]]]:
    report = ReconcileReport()
    topic = check_disclosure_topic(logged(*topic_records), None, report)
    sent = check_agent_topics(messages, topic, ledger, ctx(), report)
    return report, sent


def test_a_logged_disclosure_passes_and_is_counted_as_sent() -> None:
    m = sealed("r1")
    rec = record("r1", message=m)
    report, sent = agent_check({"shipping": [on_topic(SHIP, 0, m)]}, [rec], ledger_of(rec))
    assert not report.findings and sent == {"shipping": {"r1"}}


def test_a_message_without_a_record_of_its_bytes_is_unlogged() -> None:
    report, sent = agent_check({"shipping": [on_topic(SHIP, 0, sealed("r9"))]}, [], ledger_of())
    assert found(report) == [("unlogged", "r9")] and not sent
    assert report.findings[0].what == "no record of these exact bytes on the disclosure topic"


def test_a_message_whose_claimed_id_is_logged_for_other_bytes_is_unlogged() -> None:
    rec = record("r1", message=sealed("r1", 1))
    report, _ = agent_check(
        {"shipping": [on_topic(SHIP, 0, sealed("r1", 2))]}, [rec], ledger_of(rec)
    )
    assert found(report) == [("unlogged", "r1")]
    assert "a record with the id it claims exists, for other bytes" in report.findings[0].what


def test_a_message_on_the_wrong_topic_or_logged_as_a_withholding_is_unlogged() -> None:
    m = sealed("r1")
    rec = record("r1", message=m)
    report, _ = agent_check({"email": [on_topic(MAIL, 0, m)]}, [rec], ledger_of(rec))
    assert found(report) == [("unlogged", "r1")]
    assert "for agent 'shipping'" in report.findings[0].what
    report, _ = agent_check({"shipping": [on_topic("shipping.v2", 0, m)]}, [rec], ledger_of(rec))
    assert found(report) == [("unlogged", "r1")]
    assert f"on {SHIP!r}, not a disclosure on this topic" in report.findings[0].what
    # A withholding whose digest matches (made up, so that the digest lookup hits).
    held = record("r2", outcome="withheld").model_copy(update={"payload_digest": payload_digest(m)})
    report, _ = agent_check({"shipping": [on_topic(SHIP, 0, m)]}, [held], ledger_of(held))
    assert found(report) == [("unlogged", "r2")] and "withheld" in report.findings[0].what


def test_a_sent_disclosure_the_ledger_does_not_hold_is_unledgered() -> None:
    m = sealed("r1")
    rec = record("r1", message=m)
    report, sent = agent_check({"shipping": [on_topic(SHIP, 0, m)]}, [rec], ledger_of())
    assert found(report) == [("unledgered", "r1")] and sent == {"shipping": {"r1"}}


def test_a_sent_disclosure_the_ledger_records_as_a_withholding_is_unlogged() -> None:
    m = sealed("r1")
    rec = record("r1", message=m)
    report, _ = agent_check(
        {"shipping": [on_topic(SHIP, 0, m)]}, [rec], ledger_of(record("r1", outcome="withheld"))
    )
    assert found(report) == [("unlogged", "r1")]
    assert "the ledger records a withheld" in report.findings[0].what


def test_a_re_issued_message_is_fine_unless_its_decision_differs_from_the_ledger() -> None:
    first, again = sealed("r1", 1), sealed("r1", 2)
    rec_first, rec_again = record("r1", message=first), record("r1", message=again)
    msgs = {"shipping": [on_topic(SHIP, 0, first), on_topic(SHIP, 1, again)]}
    report, _ = agent_check(msgs, [rec_first, rec_again], ledger_of(rec_first))
    assert not report.findings and report.reissued == 1
    assert report.duplicates["agent:shipping"] == 1  # both claim r1
    # Re-sent under another decision (other paths) than the ledger's copy records.
    rec_other = rec_again.model_copy(update={"paths_sent": ["data.address", "data.phone"]})
    report, _ = agent_check(msgs, [rec_first, rec_other], ledger_of(rec_first))
    assert ("conflict", "r1") in found(report) and report.reissued == 1


def test_a_disclosure_whose_ledger_body_was_pruned_is_not_compared() -> None:
    m = sealed("r1")
    rec = record("r1", message=m)
    pruned = LedgerContents({"r1": None})
    report, _ = agent_check({"shipping": [on_topic(SHIP, 0, m)]}, [rec], pruned)
    assert not report.findings and report.reissued == 0


# --- the dead-letter topic ----------------------------------------------------------------


def test_dead_letters_are_counted_by_input_digest_and_extra_copies_are_duplicates() -> None:
    raw = b"{not json"
    letter = orjson.dumps({"digest": sha256(raw), "reason": "not_json"})
    dead = [on_topic(DEAD, 0, letter), on_topic(DEAD, 1, letter), on_topic(DEAD, 2, b"[]")]
    report = ReconcileReport()
    exp = [expected(0, raw=raw, dead_letter="not_json")]
    seen = check_dead_letter_topic(dead, exp, report)
    assert seen == {sha256(raw): Counter({"not_json": 2})}
    assert report.duplicates["dead_letter_topic"] == 1
    assert [(f.kind, f.position) for f in report.findings] == [("malformed", f"{DEAD}[0]@2")]
