"""Reconciliation (`gateway.audit`, `gateway audit reconcile`).

The pure comparison is driven by a simulated worker that writes exactly what the stream
worker writes — records, then sealed messages, then dead letters, with the same keys — so
each fault the reconciliation must find can be injected precisely: a dropped record, a
message without its record, a re-targeted or edited message, a ledger that lost a record
or records a withholding, a missing dead letter. At-least-once redelivery must come out as
duplicates, never as gaps.
"""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from gateway.audit import Finding, TopicMessage, claimed_disclosure_id, compare, expect
from gateway.dev.samples import random_events
from gateway.records import DecisionRecord
from gateway.runtime import Core
from tests.audit.sim import DEAD, DISC, IN, PARTITIONS, SCENARIO, Sim, first_message, keyed

# --- a healthy deployment ---------------------------------------------------------------


def test_a_clean_run_reconciles_exactly(ran: Sim) -> None:
    rep = ran.report()
    assert rep.ok(strict=True), [f.to_dict() for f in rep.findings]
    assert rep.counts["inputs"] == len(SCENARIO[0]) + 2
    assert rep.counts["expected_dead_letters"] == 2
    requests = [m for m in ran.disclosures if b"erasure_request" in m.value]
    assert (
        rep.counts["expected_records"]
        == rep.counts["records_checked"]
        == len(ran.disclosures) - len(requests)
        == len(ran.ledger)
    )
    assert rep.counts["expected_messages"] == rep.counts["agent_messages"] > 0
    assert not any(rep.duplicates.values()) and rep.reissued == 0
    # the bundled scenario exercises withholdings and an erasure (its request logged)
    outcomes = {DecisionRecord.from_json(b).outcome for b in ran.ledger.values() if b}
    assert outcomes == {"disclosed", "withheld"} and len(requests) == 1


def test_redelivery_after_a_crash_is_duplicates_not_gaps(ran: Sim) -> None:
    # A worker killed after releasing a batch but before committing it: the batch runs
    # again on a restored consent state. New records and freshly sealed messages appear
    # (same ids, other bytes); the ledger keeps the first copies.
    again = Sim(ran.core, states={})
    for m in ran.inputs[:8]:
        out = again.process(m, records=False, messages=False, dead=False)
        for r in out.records:
            ran._put(ran.disclosures, DISC, r.subject_ref.encode(), r.to_json())
        for msg in out.messages:
            ran._put(ran.agents[msg.agent], msg.topic, msg.key, msg.value)
    rep = ran.report()
    assert rep.ok(strict=True), [f.to_dict() for f in rep.findings]
    assert rep.duplicates["disclosure_topic"] > 0
    assert sum(v for k, v in rep.duplicates.items() if k.startswith("agent:")) > 0
    assert rep.reissued == sum(v for k, v in rep.duplicates.items() if k.startswith("agent:"))


def test_republished_input_is_a_duplicate(sim: Sim) -> None:
    raws, keys = SCENARIO
    sim.run(raws + raws[:3], keys + keys[:3])
    rep = sim.report()
    assert rep.ok(strict=True) and rep.duplicates["input_republished"] == 3


# --- gaps: each fault found, by kind ------------------------------------------------------


def test_a_record_missing_from_the_disclosure_topic_is_a_lost_event(ran: Sim) -> None:
    gone = ran.disclosures.pop(5)
    rec = DecisionRecord.from_json(gone.value)
    del ran.ledger[rec.record_id]
    rep = ran.report()
    (lost,) = rep.of("lost")
    assert lost.event_id == rec.event_id and rec.agent in lost.what
    assert not rep.ok()


def test_an_event_processed_not_at_all_is_lost(sim: Sim) -> None:
    raws, keys = SCENARIO
    ms = [sim.publish(r, k) for r, k in zip(raws, keys, strict=True)]
    skipped = ms[-2]  # an order shipped: every agent subscribed to it owes a record
    for m in ms:
        if m is not skipped:
            sim.process(m)
    rep = sim.report()
    assert [f.position for f in rep.of("lost")] == [skipped.position]


def test_a_missing_agent_message_is_a_lost_disclosure(ran: Sim) -> None:
    m = ran.agents["shipping"].pop(0)
    rep = ran.report()
    (lost,) = rep.of("lost")
    assert "no message to shipping" in lost.what
    assert lost.event_id is not None and claimed_disclosure_id(m.value)


def test_a_missing_dead_letter_is_lost_and_a_repeated_one_a_duplicate(ran: Sim) -> None:
    dead = ran.dead.pop()
    rep = ran.report()
    # (unsigned: the signature is checked before the bytes are parsed)
    assert [f.what for f in rep.of("lost")] == ["no dead letter (unsigned)"]
    ran.dead += [dead, dead]
    rep = ran.report()
    assert rep.ok(strict=True) and rep.duplicates["dead_letter_topic"] == 1


def test_a_message_released_before_its_record_is_unlogged(sim: Sim) -> None:
    # The broken ordering: the message goes out, the worker dies before logging; the
    # redelivered event is logged and sent again under the same id. The id is in the log
    # now, but the first bytes the agent received never were.
    raws, keys = SCENARIO
    ms = [sim.publish(r, k) for r, k in zip(raws, keys, strict=True)]
    target = next(i for i, m in enumerate(ms) if b"order.placed" in m.value)
    for i, m in enumerate(ms):
        if i == target:
            sim.process(m, records=False, unsafe=True)  # crash after the release
            sim.states, sim.seen = {}, {}
            for m2 in ms[: i + 1]:  # restart: state restored from scratch, redelivery
                sim.process(m2, messages=m2 is m)
            continue
        sim.process(m)
    rep = sim.report()
    unlogged = rep.of("unlogged")
    assert unlogged and all("no record of these exact bytes" in f.what for f in unlogged)
    assert all("a record with the id it claims exists" in f.what for f in unlogged)
    assert not rep.of("lost") and not rep.ok()


def test_a_message_moved_to_another_agents_topic_is_unlogged(ran: Sim) -> None:
    m = first_message(ran, "shipping")
    ran.agents["email"].append(replace(m, topic=ran.topics["email"], offset=10_000))
    rep = ran.report()
    (f,) = rep.of("unlogged")
    assert f.agent == "email" and "for agent 'shipping'" in f.what


def test_an_edited_message_is_unlogged(ran: Sim) -> None:
    m = first_message(ran)
    ran.agents["shipping"][0] = replace(m, value=m.value.replace(b'"v":1', b'"v": 1', 1))
    rep = ran.report()
    assert [f.record_id for f in rep.of("unlogged")] == [claimed_disclosure_id(m.value)]
    assert [f.what for f in rep.of("lost")] == ["no message to shipping"]


def test_a_message_without_any_record_is_unlogged(ran: Sim) -> None:
    forged = b'{"header": {"disclosure_id": "forged-id"}}'
    ran.agents["email"].append(TopicMessage(ran.topics["email"], 0, 999, b"k", forged))
    rep = ran.report()
    assert [f.record_id for f in rep.of("unlogged")] == ["forged-id"]


def test_a_ledger_that_lost_a_record_is_unledgered(ran: Sim) -> None:
    rid = next(iter(ran.ledger))
    del ran.ledger[rid]
    rep = ran.report()
    assert {f.record_id for f in rep.of("unledgered")} == {rid}
    assert not rep.ok()


def test_a_ledger_recording_a_withholding_for_a_sent_message_is_unlogged(ran: Sim) -> None:
    m = first_message(ran)
    rid = claimed_disclosure_id(m.value) or ""
    rec = DecisionRecord.from_json(ran.ledger[rid] or "")
    ran.ledger[rid] = (
        rec.model_copy(
            update={"outcome": "withheld", "payload_digest": None, "reason": "not_subscribed"}
        )
        .to_json()
        .decode()
    )
    rep = ran.report()
    (f,) = rep.of("unlogged")
    assert f.record_id == rid and "the ledger records a withheld" in f.what


def test_pending_work_is_not_a_gap_until_committed(ran: Sim) -> None:
    # Nothing committed yet: every shortfall is in flight, none is a loss. (A withholding
    # is dropped: a disclosure's message without its record would be a gap at once.)
    ran.disclosures.pop(
        next(
            i
            for i, m in enumerate(ran.disclosures)
            if DecisionRecord.from_json(m.value).outcome == "withheld"
        )
    )
    ran.ledger.clear()
    ran.offsets = {}
    rep = ran.report()
    assert rep.ok() and not rep.ok(strict=True) and rep.pending
    # Committed past everything: now they are gaps.
    ran.offsets = {(t, p): 10**6 for t in (IN, DISC) for p in range(PARTITIONS)}
    rep = ran.report()
    assert rep.of("lost") and rep.of("unledgered") and not rep.pending


# --- reused ids, forged records, conflicts: failures ----------------------------------


def test_a_reused_event_id_is_a_failure(sim: Sim) -> None:
    raws, keys = SCENARIO
    sim.run(raws, keys)
    order = next(orjson.loads(r) for r in raws if b"order.placed" in r)
    order["data"]["notes"] = "a different event under the same id"
    sim.run([orjson.dumps(order)], [order["subject"]["customer_id"].encode()])
    rep = sim.report()
    (f,) = rep.of("event_id_reused")
    assert f.event_id == order["event_id"] and not rep.ok()
    # the worker rejected the second one, which is what its input explains
    assert not rep.of("conflict") and not rep.of("lost")


def test_a_reused_event_id_cannot_hide_a_disclosure(sim: Sim) -> None:
    # Two different events under one id: the first is withheld from email (the customer
    # opted out), the second, after an opt-in, is rejected as a reused id (it would
    # otherwise disclose under the first one's id). The audit fails on the reused id.
    cid = "C-7002"

    def ev(eid: str, n: int, etype: str, data: dict) -> bytes:
        return orjson.dumps(
            {
                "event_id": eid,
                "event_type": etype,
                "schema_version": 1,
                "occurred_at": f"2026-04-01T11:{n:02d}:00Z",
                "subject": {"customer_id": cid, "type": "consumer"},
                "data": data,
            }
        )

    profile = {"name": {"first": "Ida", "last": "Lo"}, "emails": ["ida@example.com"]}
    sim.run(
        [
            ev("evt-reuse-0001", 1, "consent.changed", {"marketing": "opt_out"}),
            ev("evt-reuse-0002", 2, "customer.updated", profile),
            ev("evt-reuse-0003", 3, "consent.changed", {"marketing": "opt_in"}),
            ev("evt-reuse-0002", 4, "customer.updated", {**profile, "title": "Dr"}),
        ],
        [cid.encode()] * 4,
    )
    rep = sim.report()
    assert [f.event_id for f in rep.of("event_id_reused")] == ["evt-reuse-0002"]
    assert not rep.of("unlogged") and not rep.ok()


def test_forged_and_malformed_entries_are_reported(ran: Sim) -> None:
    rec = DecisionRecord.from_json(ran.disclosures[0].value)
    other_id = rec.model_copy(update={"record_id": "00000000-0000-5000-8000-000000000000"})
    no_event = rec.model_copy(update={"event_fp": "0" * 64, "record_id": "forged-1"})
    ran.log_record(other_id.to_json(), b"k", [])  # with a valid MAC: an insider
    ran.log_record(no_event.to_json(), b"k", [])
    ran._put(ran.disclosures, DISC, b"k", rec.to_json(), headers=())  # no MAC
    ran.log_record(b"garbage", b"k", [])
    ran._put(ran.dead, DEAD, b"k", b"[]")
    rep = ran.report()
    assert [f.record_id for f in rep.of("conflict")] == [other_id.record_id]
    assert [f.record_id for f in rep.of("forged")] == ["forged-1"]
    assert [f.record_id for f in rep.of("bad_mac")] == [rec.record_id]
    assert len(rep.of("malformed")) == 2
    assert not rep.ok()


@pytest.mark.parametrize("same_partition", [True, False])
def test_reprocessing_with_a_later_consent_state_is_a_failure(
    sim: Sim, same_partition: bool
) -> None:
    # A profile update, then an opt-out of the same customer; a redelivery of the profile
    # update (the duplicate cache lost) against the state *after* the opt-out withholds
    # what was disclosed the first time. Published on one partition, the opt-out cannot
    # have reached the gateway before the update: an impossible state. Published on
    # another, it could have; but then the one event was decided twice, differently.
    cid = "C-7001"

    def ev(n: int, etype: str, data: dict) -> bytes:
        return orjson.dumps(
            {
                "event_id": f"evt-conflict-{n:04d}",
                "event_type": etype,
                "schema_version": 1,
                "occurred_at": f"2026-04-01T10:{n:02d}:00Z",
                "subject": {"customer_id": cid, "type": "consumer"},
                "data": data,
            }
        )

    profile = {"name": {"first": "Ida", "last": "Lo"}, "emails": ["ida@example.com"]}
    update = sim.publish(ev(1, "customer.updated", profile), partition=0)
    optout = ev(2, "consent.changed", {"marketing": "opt_out"})
    later = sim.publish(optout, partition=0 if same_partition else 1)
    sim.process(update)
    sim.process(later)
    sim.seen = {}
    sim.process(update)  # redelivered on the post-opt-out state
    rep = sim.report()
    if same_partition:
        (f,) = rep.of("impossible_state")
        assert "published only after it on partition 0" in f.what
    else:
        (f,) = rep.of("conflict")
        assert "decided more than once" in f.what
    assert f.agent == "email" and not rep.ok()


def test_the_report_carries_no_personal_data(ran: Sim) -> None:
    ran.disclosures.pop(3)
    ran.agents["email"].pop(0)
    text = orjson.dumps(ran.report().to_dict(limit=None)).decode()
    for pii in ("Alice", "Moreno", "alice.moreno@example.com", "4111", "C-1001"):
        assert pii not in text


def test_findings_serialise_without_empty_fields() -> None:
    assert Finding("lost", "x", "t[0]@1").to_dict() == {
        "kind": "lost",
        "what": "x",
        "position": "t[0]@1",
    }


def test_compare_accepts_a_random_mix(core: Core) -> None:
    sim = Sim(core)
    events = list(random_events(400, seed=3, customers=40))
    sim.run(*keyed(events))
    exp = expect(core.pipeline, sim.inputs)
    for name in sim.topics:
        sim.agents.setdefault(name, [])
    rep = compare(
        exp,
        pipeline=core.pipeline,
        disclosures=sim.disclosures,
        ledger=sim.ledger,
        agent_messages=sim.agents,
        dead_letters=sim.dead,
        agent_topics=sim.topics,
        mac=sim.mac,
        partitions=PARTITIONS,
    )
    assert rep.ok(strict=True), [f.to_dict() for f in rep.findings][:5]
    assert rep.counts["events"] == 400
