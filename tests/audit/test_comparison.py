"""The comparison's checks, one at a time, on hand-built inputs: each catches its own kind
of gap or warning, and leaves alone what is fine (duplicates, re-issues, pruned bodies,
work still in flight)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import orjson

from gateway.audit import Expected, ReconcileReport, RecordedDecision, TopicMessage
from gateway.audit.comparison import (
    LedgerContents,
    account_for_inputs,
    check_agent_topics,
    check_dead_letter_topic,
    check_disclosure_topic,
    check_event_ids,
    check_ledger,
    check_replayed_decisions,
    check_unexplained_records,
)
from gateway.audit.expectation import sha256
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
        outcome=outcome,  # type: ignore[arg-type]
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


def expected(
    offset: int,
    records: dict[str, RecordedDecision] | None = None,
    *,
    raw: bytes | None = None,
    event_id: str | None = "evt-1",
    dead_letter: str | None = None,
) -> Expected:
    raw = raw if raw is not None else f"input {offset}".encode()
    return Expected(
        on_topic(IN, offset, raw), sha256(raw), event_id, dead_letter, dict(records or {})
    )


def decided(agent: str = "shipping", outcome: str = "disclosed") -> RecordedDecision:
    return RecordedDecision(agent, outcome, PATHS if outcome != "withheld" else (), ())


def found(report: ReconcileReport) -> list[tuple[str, str | None]]:
    return [(f.kind, f.record_id) for f in report.findings]


# --- the disclosure topic ---------------------------------------------------------------


def test_disclosure_topic_indexes_records_and_counts_redelivered_copies() -> None:
    m1, m2 = sealed("r1", 1), sealed("r1", 2)
    report = ReconcileReport()
    copies = logged(record("r1", message=m1), record("r1", message=m2))
    topic = check_disclosure_topic(copies, report)
    assert not report.findings and report.duplicates["disclosure_topic"] == 1
    assert len(topic.copies["r1"]) == 2
    assert set(topic.by_digest) == {payload_digest(m1), payload_digest(m2)}


def test_disclosure_topic_reports_unreadable_entries_as_malformed() -> None:
    report = ReconcileReport()
    topic = check_disclosure_topic([on_topic(DISC, 7, b"garbage")], report)
    assert [(f.kind, f.position) for f in report.findings] == [("malformed", f"{DISC}[0]@7")]
    assert not topic.copies


def test_copies_of_one_record_recording_different_decisions_are_a_conflict() -> None:
    report = ReconcileReport()
    check_disclosure_topic(logged(record("r1"), record("r1", outcome="withheld")), report)
    assert found(report) == [("conflict", "r1")]


# --- the ledger store -------------------------------------------------------------------


def test_an_expected_record_on_the_topic_but_not_in_the_ledger_is_unledgered() -> None:
    topic = check_disclosure_topic(logged(record("r1"), record("r2")), ReconcileReport())
    exp = [expected(0, {"r1": decided(), "r2": decided("email")})]
    report = ReconcileReport()
    check_ledger(exp, topic, ledger_of(record("r1")), None, report)
    assert found(report) == [("unledgered", "r2")]
    assert report.findings[0].position == f"{DISC}[0]@1"  # its first copy on the topic


def test_a_record_the_ledger_sink_has_not_committed_yet_is_pending() -> None:
    topic = check_disclosure_topic(logged(record("r1")), ReconcileReport())
    exp = [expected(0, {"r1": decided()})]
    report = ReconcileReport()
    check_ledger(exp, topic, ledger_of(), {(DISC, 0): 0}, report)
    assert not report.findings and [f.kind for f in report.pending] == ["unledgered"]
    report = ReconcileReport()
    check_ledger(exp, topic, ledger_of(), {(DISC, 0): 1}, report)
    assert found(report) == [("unledgered", "r1")] and not report.pending


def test_a_record_missing_from_the_topic_too_is_not_the_ledgers_gap() -> None:
    # That input is lost (account_for_inputs says so), not unledgered.
    topic = check_disclosure_topic([], ReconcileReport())
    report = ReconcileReport()
    check_ledger([expected(0, {"r1": decided()})], topic, ledger_of(), None, report)
    assert not report.findings and not report.pending


# --- the agent topics -------------------------------------------------------------------


def agent_check(
    messages: dict[str, list[TopicMessage]],
    topic_records: list[DecisionRecord],
    ledger: LedgerContents,
    expected_ids: set[str] | None = None,
) -> tuple[ReconcileReport, dict[str, set[str]]]:
    report = ReconcileReport()
    topic = check_disclosure_topic(logged(*topic_records), report)
    ids = {r.record_id for r in topic_records} if expected_ids is None else expected_ids
    sent = check_agent_topics(messages, topic, ledger, ids, None, report)
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


def test_a_logged_disclosure_no_input_explains_is_unexpected() -> None:
    m = sealed("r1")
    rec = record("r1", message=m)
    report, _ = agent_check({"shipping": [on_topic(SHIP, 0, m)]}, [rec], ledger_of(rec), set())
    assert found(report) == [("unexpected", "r1")]


# --- the dead-letter topic ----------------------------------------------------------------


def test_dead_letters_are_counted_by_input_digest_and_extra_copies_are_duplicates() -> None:
    raw = b"{not json"
    letter = orjson.dumps({"digest": sha256(raw), "reason": "not_json"})
    dead = [on_topic(DEAD, 0, letter), on_topic(DEAD, 1, letter), on_topic(DEAD, 2, b"[]")]
    report = ReconcileReport()
    exp = [expected(0, raw=raw, event_id=None, dead_letter="not_json")]
    seen = check_dead_letter_topic(dead, exp, report)
    assert seen == Counter({sha256(raw): 2})
    assert report.duplicates["dead_letter_topic"] == 1
    assert [(f.kind, f.position) for f in report.findings] == [("malformed", f"{DEAD}[0]@2")]


# --- every input accounted for --------------------------------------------------------------


def account(
    exp: list[Expected],
    topic_records: list[DecisionRecord],
    sent: dict[str, set[str]] | None = None,
    dead: Counter[str] | None = None,
    offsets: dict[tuple[str, int], int] | None = None,
) -> ReconcileReport:
    report = ReconcileReport()
    topic = check_disclosure_topic(logged(*topic_records), report)
    account_for_inputs(exp, topic, sent or {}, dead or Counter(), offsets, report)
    return report


def lost(report: ReconcileReport) -> list[str]:
    return [f.what for f in report.of("lost")]


def test_an_input_with_all_its_outputs_is_accounted_for() -> None:
    exp = [expected(0, {"r1": decided(), "r2": decided("email", "withheld")})]
    report = account(exp, [record("r1"), record("r2", "email", "withheld")], {"shipping": {"r1"}})
    assert not report.findings and not report.pending
    assert report.counts["events"] == 1 and report.counts["expected_records"] == 2
    assert report.counts["expected_messages"] == 1


def test_an_input_whose_record_or_message_is_missing_is_lost() -> None:
    exp = [expected(0, {"r1": decided(), "r2": decided("email")})]
    report = account(exp, [record("r1")])  # r2 never logged, r1 never sent
    assert lost(report) == ["no message to shipping; no record for email (disclosed)"]
    assert report.findings[0].event_id == "evt-1"


def test_a_rejected_input_without_its_dead_letter_is_lost() -> None:
    raw = b"[1, 2]"
    exp = [expected(i, raw=raw, event_id=None, dead_letter="not_an_object") for i in (0, 1)]
    # Two identical rejected inputs need two dead letters.
    report = account(exp, [], dead=Counter({sha256(raw): 1}))
    assert lost(report) == ["no dead letter (not_an_object)"]
    assert report.findings[0].position == f"{IN}[0]@1"
    assert report.counts["expected_dead_letters"] == 2


def test_missing_outputs_of_uncommitted_input_are_pending() -> None:
    exp = [expected(0, {"r1": decided()}), expected(1, {"r2": decided()}, event_id="evt-2")]
    report = account(exp, [], offsets={(IN, 0): 1})
    assert [f.position for f in report.of("lost")] == [f"{IN}[0]@0"]
    assert [f.position for f in report.pending] == [f"{IN}[0]@1"]


# --- replayed decisions, unexplained records, event ids ------------------------------------


def test_a_record_that_differs_from_the_replay_is_a_conflict() -> None:
    topic = check_disclosure_topic(logged(record("r1", outcome="withheld")), ReconcileReport())
    report = ReconcileReport()
    check_replayed_decisions([expected(0, {"r1": decided()})], topic, "v1", report)
    assert found(report) == [("conflict", "r1")]
    assert report.findings[0].what == "recorded withheld for shipping; the replay decides disclosed"


def test_records_of_another_policy_version_are_not_held_against_the_replay() -> None:
    older = record("r1", outcome="withheld", policy_version="v0")
    topic = check_disclosure_topic(logged(older), ReconcileReport())
    report = ReconcileReport()
    check_replayed_decisions([expected(0, {"r1": decided()})], topic, "v1", report)
    assert not report.findings
    check_replayed_decisions([expected(0, {"r1": decided()})], topic, None, report)
    assert found(report) == [("conflict", "r1")]


def test_a_record_no_input_explains_is_unexpected() -> None:
    topic = check_disclosure_topic(logged(record("r1"), record("r2")), ReconcileReport())
    report = ReconcileReport()
    check_unexplained_records(topic, {"r1"}, report)
    assert found(report) == [("unexpected", "r2")]


def test_republished_inputs_are_duplicates_and_different_ones_under_one_id_are_not() -> None:
    report = ReconcileReport()
    check_event_ids([expected(0, raw=b"a"), expected(1, raw=b"a")], report)
    assert not report.findings and report.duplicates["input_republished"] == 1
    report = ReconcileReport()
    check_event_ids([expected(0, raw=b"a"), expected(1, raw=b"b")], report)
    assert [(f.kind, f.event_id, f.position) for f in report.findings] == [
        ("duplicate_event_id", "evt-1", f"{IN}[0]@1")
    ]
