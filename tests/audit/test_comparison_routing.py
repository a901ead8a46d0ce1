"""Reconciliation under subject routing (issue 11 item 4): one customer's events published
on several partitions and decided on the customer's subject partition in an arrival order
the auditor cannot see. The audit accepts every order the routing allows and fails on what
no order gives: a reused event id (either order), a record of no input event, a consent
state the customer never had, an erasure ignored, work overdue.

Pure and fast: the simulated deployment (:mod:`tests.audit.sim`) decides each event when
the test says it arrives.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.consent import ConsentState, Stamp
from gateway.dev.samples import scenario
from gateway.pipeline import DuplicateCache
from gateway.routing import subject_partition
from tests.audit.sim import PARTITIONS, Sim

CID = "C-8100"


def ev(n: int, etype: str, data: dict[str, Any], *, minute: int | None = None) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"evt-route-{n:04d}",
            "event_type": etype,
            "schema_version": 1,
            "occurred_at": f"2026-04-02T09:{n if minute is None else minute:02d}:00Z",
            "subject": {"customer_id": CID, "type": "consumer"},
            "data": data,
        }
    )


PROFILE = {"name": {"first": "Ida", "last": "Lo"}, "emails": ["ida@example.com"]}
ORDER = next(e["data"] for e in scenario() if e["event_type"] == "order.placed")
ERASE = next(e["data"] for e in scenario() if e["event_type"] == "erasure.requested")


def findings(sim: Sim) -> list[tuple[str, str]]:
    return [(f.kind, f.what) for f in sim.report().findings]


@pytest.fixture
def spread(sim: Sim) -> tuple[Sim, list]:
    """A customer's registration, opt-in, profile update, opt-out, order and another
    profile update, published round-robin over the three partitions."""
    raws = [
        ev(1, "customer.registered", PROFILE),
        ev(2, "consent.changed", {"marketing": "opt_in"}),
        ev(3, "customer.updated", PROFILE),
        ev(4, "consent.changed", {"marketing": "opt_out"}),
        ev(5, "order.placed", ORDER),
        ev(6, "customer.updated", {**PROFILE, "title": "Dr"}),
    ]
    ms = [sim.publish(r, CID.encode(), partition=i % PARTITIONS) for i, r in enumerate(raws)]
    return sim, ms


def test_the_events_are_valid(sim: Sim) -> None:
    # the events below are admitted (signed, schema-valid): otherwise nothing below
    # would test routing
    for raw in (ev(5, "order.placed", ORDER), ev(4, "erasure.requested", ERASE)):
        out = sim.process(sim.publish(raw, CID.encode()))
        assert out.dead_letter is None and (out.records or out.erasure_request)


@pytest.mark.parametrize(
    "arrival",
    [
        [0, 1, 2, 3, 4, 5],  # as published
        [2, 5, 0, 3, 1, 4],  # partition 2 first, then 0, then 1
        [0, 3, 2, 1, 4, 5],  # the opt-out before the opt-in: the opt-in is superseded
        [1, 4, 0, 2, 3, 5],
    ],
)
def test_routed_events_of_one_customer_reconcile_in_any_order_the_routing_allows(
    spread: tuple[Sim, list], arrival: list[int]
) -> None:
    sim, ms = spread
    assert len({m.partition for m in ms}) == PARTITIONS
    for i in arrival:
        sim.process(ms[i])
    rep = sim.report()
    assert rep.ok(strict=True), [f.to_dict() for f in rep.findings]
    assert rep.counts["customers"] == 1 and rep.counts["records_checked"] > 0


def test_a_worker_deciding_per_input_partition_fails_the_audit(
    spread: tuple[Sim, list],
) -> None:
    # What the gateway did before subject routing: each input partition its own consent
    # table. The opt-out (partition 0) never reaches the order (partition 1): the order
    # is decided as if the customer had never registered nor opted out.
    sim, ms = spread
    pipeline = sim.core.pipeline
    for m in ms:
        got = pipeline.admit(m.value, m.headers)
        assert not isinstance(got, Exception) and hasattr(got, "event")
        out = pipeline.decide(
            got,  # type: ignore[arg-type]
            sim.states.setdefault(100 + m.partition, {}),
            seen=sim.seen.setdefault(100 + m.partition, DuplicateCache()),
        )
        for r in out.records:
            sim.log_record(r.to_json(), r.subject_ref.encode(), [])
            sim.ledger.setdefault(r.record_id, r.to_json().decode())
        for msg in out.messages:
            sim._put(sim.agents.setdefault(msg.agent, []), msg.topic, msg.key, msg.value)
    rep = sim.report()
    assert rep.of("impossible_state") and not rep.ok()


@pytest.mark.parametrize("first", [0, 1])
def test_a_reused_event_id_fails_in_either_order(sim: Sim, first: int) -> None:
    a = sim.publish(ev(7, "customer.updated", PROFILE), CID.encode(), partition=0)
    b = sim.publish(
        ev(7, "customer.updated", {**PROFILE, "title": "Dr"}, minute=8), CID.encode(), partition=1
    )
    for m in (a, b) if first == 0 else (b, a):
        sim.process(m)
    rep = sim.report()
    (f,) = rep.of("event_id_reused")
    assert f.event_id == "evt-route-0007" and "2 different events" in f.what
    # the second to arrive was rejected (its dead letter explained); nothing else is wrong
    assert [x.kind for x in rep.findings] == ["event_id_reused"] and not rep.ok()


def test_a_record_of_no_input_event_is_forged(sim: Sim) -> None:
    ms = sim.run([ev(5, "order.placed", ORDER)], [CID.encode()])
    # A worker (or anyone with the workers' key) decides an event nobody published, and
    # one that was published unsigned (which must be dead-lettered, never decided).
    ghost = ev(9, "order.placed", {**ORDER, "order_id": "O-9"})
    unsigned = sim.publish(ev(10, "order.placed", {**ORDER, "order_id": "O-10"}), signed=False)
    for raw in (ghost, unsigned.value):
        out = sim.core.pipeline.process(raw, {}, verify=False)
        for r in out.records:
            sim.log_record(r.to_json(), r.subject_ref.encode(), [])
            sim.ledger.setdefault(r.record_id, r.to_json().decode())
    sim.process(unsigned)  # its dead letter, as the worker writes it
    rep = sim.report()
    forged = rep.of("forged")
    assert forged and {f.event_id for f in forged} == {"evt-route-0009", "evt-route-0010"}
    assert not rep.ok() and ms


def test_a_record_decided_against_a_state_the_customer_never_had_is_impossible(
    sim: Sim,
) -> None:
    # The worker's table says the customer opted in (stamped by an event that does not
    # exist): its records are what the engine decides under that state, but no event of
    # the customer gives it.
    m = sim.publish(ev(3, "customer.updated", PROFILE), CID.encode())
    p = subject_partition(CID, PARTITIONS)
    bogus = ConsentState(
        marketing="opt_in", marketing_stamp=Stamp("2026-04-02T08:00:00.000000Z", "evt-none")
    )
    sim.states[p] = {CID: bogus}
    sim.process(m)
    rep = sim.report()
    assert not rep.of("conflict")  # the decision is the engine's under that state
    assert {f.kind for f in rep.findings} == {"impossible_state"}
    assert all("evt-none" in f.what for f in rep.findings) and not rep.ok()


def test_an_ignored_erasure_fails_the_audit(sim: Sim) -> None:
    # The erasure (partition 1) is decided and its request logged; then the order
    # (partition 0) is decided against a table that lost it.
    erase = sim.publish(ev(4, "erasure.requested", ERASE), CID.encode(), partition=1)
    order = sim.publish(ev(5, "order.placed", ORDER), CID.encode(), partition=0)
    sim.process(erase)
    sim.states = {}
    sim.process(order)
    rep = sim.report()
    bad = rep.of("impossible_state")
    assert bad and all("after the subject's erasure" in f.what for f in bad)
    assert not rep.ok()


def test_an_erasure_dropped_before_an_order_on_its_partition_fails_the_audit(sim: Sim) -> None:
    erase = sim.publish(ev(4, "erasure.requested", ERASE), CID.encode(), partition=0)
    order = sim.publish(ev(5, "order.placed", ORDER), CID.encode(), partition=0)
    sim.process(order)  # the erasure never decided
    rep = sim.report()
    assert any("misses event evt-route-0004" in f.what for f in rep.of("impossible_state"))
    assert [f.position for f in rep.of("lost")] == [erase.position]


def test_missing_outputs_are_pending_then_overdue(sim: Sim) -> None:
    now = 1_800_000_000_000
    young = sim.publish(ev(5, "order.placed", ORDER), CID.encode(), timestamp_ms=now - 10_000)
    old = sim.publish(
        ev(6, "order.placed", {**ORDER, "order_id": "O-6"}),
        CID.encode(),
        timestamp_ms=now - 3_600_000,
    )
    sim.offsets = {}  # nothing committed yet
    sim.now_ms = now
    rep = sim.report()
    assert [f.position for f in rep.pending] == [young.position]
    assert [f.position for f in rep.of("overdue")] == [old.position]
    assert "after more than 300 s" in rep.of("overdue")[0].what and not rep.ok()
    # committed past both (on the partition that decides them): lost, however young
    p = subject_partition(CID, PARTITIONS)
    if young.partition == p:
        sim.offsets = {("in.events", q): 10 for q in range(PARTITIONS)}
        rep = sim.report()
        assert {f.position for f in rep.of("lost")} >= {young.position}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_any_interleaving_the_routing_allows_reconciles(core: Any, seed: int) -> None:
    # Random customers' events published on random partitions (no key discipline at all),
    # decided in a random interleaving of the partitions (each partition in its order),
    # with some events republished, old consent changes re-sent under new ids, opt-ins
    # and grants, erasures: the audit finds nothing wrong, ever.
    import random

    from gateway.dev.samples import random_events

    rng = random.Random(seed)
    sim = Sim(core)
    events = list(random_events(300, seed=seed, customers=12))
    customers = sorted({e["subject"]["customer_id"] for e in events})
    for n, cid in enumerate(customers):
        base = {"schema_version": 1, "subject": {"customer_id": cid, "type": "consumer"}}
        at = f"2026-03-02T09:{rng.randrange(60):02d}:00Z"
        events.append(
            {
                **base,
                "event_id": f"evt-prop-{seed}-{n}-in",
                "event_type": "consent.changed",
                "occurred_at": at,
                "data": {
                    "marketing": rng.choice(["opt_in", "opt_out"]),
                    "sensitive": [
                        {"scope": "agent", "target": "email", "granted": rng.random() < 0.5}
                    ],
                },
            }
        )
        if n % 4 == 0:
            events.append(
                {
                    **base,
                    "event_id": f"evt-prop-{seed}-{n}-erase",
                    "event_type": "erasure.requested",
                    "occurred_at": f"2026-03-02T09:{rng.randrange(60):02d}:30Z",
                    "data": ERASE,
                }
            )
    rng.shuffle(events)
    ms = []
    for e in events:
        raw = orjson.dumps(e)
        ms.append(sim.publish(raw, b"x", partition=rng.randrange(PARTITIONS)))
        if rng.random() < 0.05:  # a producer retry: the same bytes again, anywhere
            ms.append(sim.publish(raw, b"x", partition=rng.randrange(PARTITIONS)))
    queues = {p: [m for m in ms if m.partition == p] for p in range(PARTITIONS)}
    while any(queues.values()):
        p = rng.choice([p for p, q in queues.items() if q])
        sim.process(queues[p].pop(0))
    rep = sim.report()
    assert rep.ok(strict=True), [f.to_dict() for f in rep.findings][:5]
    assert rep.counts["records_checked"] > 0


def test_records_written_before_they_carried_the_event_are_warnings_not_failures(
    sim: Sim,
) -> None:
    # A deployment upgraded from before records carried event_fp and consent_state: its
    # old records cannot be re-decided (a warning), and their events are not lost.
    sim.run([ev(5, "order.placed", ORDER)], [CID.encode()])
    old = []
    for m in sim.disclosures:
        doc = orjson.loads(m.value)
        del doc["event_fp"], doc["consent_state"]
        old.append(orjson.dumps(doc))
    sim.disclosures.clear()
    for value in old:
        sim.log_record(value, b"k", [])
        sim.ledger[orjson.loads(value)["record_id"]] = value.decode()
    rep = sim.report()
    assert rep.ok() and not rep.ok(strict=True)
    assert {f.kind for f in rep.findings} == {"unchecked"}


def test_a_ledger_copy_recording_another_decision_than_the_topic_is_a_conflict(
    sim: Sim,
) -> None:
    sim.run([ev(5, "order.placed", ORDER)], [CID.encode()])
    rid, body = next(
        (k, v) for k, v in sim.ledger.items() if v and orjson.loads(v)["outcome"] == "disclosed"
    )
    doc = orjson.loads(body or "")
    doc.update(outcome="withheld", reason="not_subscribed", paths_sent=[])
    sim.ledger[rid] = orjson.dumps(doc).decode()
    rep = sim.report()
    assert any(
        f.kind == "conflict" and f.record_id == rid and "the ledger records withheld" in f.what
        for f in rep.findings
    )
    assert not rep.ok()


def test_a_registration_rejected_for_its_declared_type_is_not_required_later(sim: Sim) -> None:
    # Registered as a consumer (partition 2); a second registration declaring a business
    # (partition 0) is dead-lettered subject_type_mismatch; an order after it on
    # partition 0 need not hold it.
    first = sim.publish(ev(1, "customer.registered", PROFILE), CID.encode(), partition=2)
    doc = orjson.loads(ev(2, "customer.registered", PROFILE))
    doc["subject"]["type"] = "business"
    second = sim.publish(orjson.dumps(doc), CID.encode(), partition=0)
    order = sim.publish(ev(3, "order.placed", ORDER), CID.encode(), partition=0)
    for m in (first, second, order):
        sim.process(m)
    assert orjson.loads(sim.dead[0].value)["reason"] == "subject_type_mismatch"
    rep = sim.report()
    assert rep.ok(strict=True), [f.to_dict() for f in rep.findings]
