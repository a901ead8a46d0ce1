"""Reconciliation of an aggregate-only agent (`gateway.audit.aggregation`).

The simulated worker drives the analytics agent's windows as the offline replay does
(one :class:`~gateway.aggregates.AggregateSet` over the subject partitions) and writes
each emitted table as a record-then-message pair. Every event the agent subscribes to has
a ``contributed`` record, checked like any per-event record; every table an
``aggregated`` record naming a declared window, from at least k customers, and the last
revision of each window the input closes is the table the input gives.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.aggregates import AggregateTable, emit
from gateway.audit import ReconcileReport, TopicMessage, reconcile
from gateway.audit.aggregation import parse_reason
from gateway.cli.audit import _print
from gateway.cli.common import console
from gateway.dev.samples import random_events
from gateway.integrity import HEADER_MAC
from gateway.policy import TableSpec
from gateway.records import DecisionRecord
from gateway.replay import replay
from gateway.routing import subject_partition
from gateway.runtime import Core, build_core
from tests.audit.sim import IN, PARTITIONS, Sim, keyed


def _shuffled() -> tuple[list[bytes], list[bytes]]:
    """600 events over 300 customers, about two and a half hours: 5-minute windows at and
    around k=10 customers (some sent, some not), hourly ones well above it. Every 40th
    event is published 12 places later (a few minutes: within the grace), so windows that
    ended get later revisions, and the publication order is not the events' time order."""
    events = list(random_events(600, seed=5, customers=300))
    for i in range(0, len(events) - 12, 40):
        events.insert(i + 12, events.pop(i))
    return keyed(events)


EVENTS = _shuffled()
AGENT = "analytics"


def build(core: Core, drop: str | None = None, *, keyed_right: bool = True) -> Sim:
    """The simulated run, published as publishers keying by customer id do (each event on
    its customer's subject partition; ``keyed_right`` False: on some other partition, to
    be forwarded); ``drop``: an event id whose contributions never reach the windows (a
    worker that logged the contribution but lost it)."""
    sim = Sim(core)
    raws, keys = EVENTS
    ms = [
        sim.publish(
            raw,
            keys[i],
            partition=subject_partition(keys[i].decode(), PARTITIONS) if keyed_right else None,
        )
        for i, raw in enumerate(raws)
    ]
    for m in ms:
        sim.process(m, contribute=orjson.loads(m.value)["event_id"] != drop)
    sim.close()
    return sim


@pytest.fixture(scope="module")
def built(core: Core) -> Sim:
    return build(core)


@pytest.fixture
def agg(built: Sim) -> Sim:
    """A private copy of the built run, to damage."""
    return Sim(
        built.core,
        inputs=list(built.inputs),
        disclosures=list(built.disclosures),
        dead=list(built.dead),
        agents={k: list(v) for k, v in built.agents.items()},
        ledger=dict(built.ledger),
        tables=list(built.tables),
    )


def records(sim: Sim, outcome: str) -> Iterator[tuple[int, DecisionRecord]]:
    for i, m in enumerate(sim.disclosures):
        if b'"outcome":"' + outcome.encode() + b'"' in m.value:
            yield i, DecisionRecord.from_json(m.value)


def relog(sim: Sim, index: int, rec: DecisionRecord) -> None:
    """Replace the record at ``index`` of the disclosure topic (MAC and ledger copy
    included: what a worker would have written)."""
    value = rec.to_json()
    old = sim.disclosures[index]
    headers = tuple(h for h in old.headers or () if h[0] != HEADER_MAC)
    sim.disclosures[index] = replace(
        old, value=value, headers=(*headers, (HEADER_MAC, sim.mac.record(value)))
    )
    sim.ledger.pop(DecisionRecord.from_json(old.value).record_id, None)
    sim.ledger[rec.record_id] = value.decode()


def drop_pair(sim: Sim, table: AggregateTable) -> None:
    """Take a sent table's record and message off the topics and the ledger."""
    _, logged, sent = next(x for x in sim.tables if x[0] is table)
    sim.disclosures.remove(logged)
    sim.ledger.pop(DecisionRecord.from_json(logged.value).record_id)
    sim.agents[AGENT].remove(sent)
    sim.tables = [x for x in sim.tables if x[0] is not table]


def kinds(rep: ReconcileReport) -> set[str]:
    return {f.kind for f in rep.findings}


def last_revisions(sim: Sim) -> dict[tuple[int, int], AggregateTable]:
    out: dict[tuple[int, int], AggregateTable] = {}
    for t, _, _ in sim.tables:
        out[(t.size, t.start)] = t
    return out


# --- a healthy run -------------------------------------------------------------------------


def test_a_run_with_aggregate_tables_reconciles_exactly(agg: Sim) -> None:
    # Failed before the audit knew aggregate agents: each table's record was "forged"
    # (no input event) and its message "unlogged" (its record no disclosure).
    rep = agg.report()
    assert rep.ok(strict=True), [f.to_dict() for f in rep.findings]
    n = len(agg.tables)
    assert n > 10 and rep.counts["aggregate_records"] == n
    assert rep.counts["expected_messages"] == rep.counts["agent_messages"]
    assert len(agg.agents[AGENT]) == n
    # Every event the agent subscribes to was decided for it: contributed or withheld.
    contributed = sum(1 for _ in records(agg, "contributed"))
    assert contributed > 100
    assert rep.counts["records_checked"] == rep.counts["expected_records"]
    # Most windows closed by the input's own watermark were compared; sizes both sent.
    assert rep.counts["aggregate_windows_closed"] > 10
    assert {t.size for t, _, _ in agg.tables} == {300, 3600}
    assert any(t.revision > 0 for t, _, _ in agg.tables)


def test_other_intermediate_revisions_are_not_a_gap(agg: Sim) -> None:
    # A stream run sends other intermediate revisions than the replay (when partials
    # reach the combiner differs); only the last one per window must be the same table.
    last = last_revisions(agg)
    for t, _, _ in list(agg.tables):
        if last[(t.size, t.start)] is not t:
            drop_pair(agg, t)
    # ... and numbers the last one otherwise.
    t = next(t for t in last.values() if t.size == 300)
    drop_pair(agg, t)
    agg.emit([replace(t, revision=t.revision + 3)])
    rep = agg.report()
    assert rep.ok(strict=True), [f.to_dict() for f in rep.findings]


def test_a_table_sent_again_after_a_crash_is_a_duplicate(agg: Sim) -> None:
    # Redelivered after a crash: the same table gives the same record id; its message is
    # sealed afresh (other bytes), its record copy names them, the ledger keeps the first.
    for t, _, _ in agg.tables[:3]:
        agg.emit([t])
    rep = agg.report()
    assert rep.ok(strict=True), [f.to_dict() for f in rep.findings]
    assert rep.duplicates["disclosure_topic"] == 3 and rep.duplicates[f"agent:{AGENT}"] == 3
    assert rep.reissued == 3


# --- contributed records: checked as every per-event record --------------------------------


def test_a_contribution_recorded_as_a_withholding_is_a_conflict(agg: Sim) -> None:
    i, rec = next(records(agg, "contributed"))
    relog(agg, i, rec.model_copy(update={"outcome": "withheld", "reason": "objection"}))
    rep = agg.report()
    (f,) = rep.of("conflict")
    assert f.record_id == rec.record_id and f.agent == AGENT
    assert "engine decides contributed" in f.what


def test_a_withholding_recorded_as_a_contribution_is_a_conflict(agg: Sim) -> None:
    withheld = [(i, r) for i, r in records(agg, "withheld") if r.agent == AGENT]
    assert withheld, "the sample has analytics withholdings (GPC, objections, erasure)"
    i, rec = withheld[0]
    relog(agg, i, rec.model_copy(update={"outcome": "contributed", "reason": None}))
    rep = agg.report()
    assert [f.record_id for f in rep.of("conflict")] == [rec.record_id]


def test_a_missing_contribution_record_is_a_lost_event(agg: Sim) -> None:
    i, rec = next(records(agg, "contributed"))
    del agg.disclosures[i]
    del agg.ledger[rec.record_id]
    rep = agg.report()
    (f,) = rep.of("lost")
    assert f.event_id == rec.event_id and f"no record for {AGENT}" in f.what


# --- aggregated records and their messages --------------------------------------------------


def test_an_aggregate_message_without_its_record_is_unlogged(agg: Sim) -> None:
    _, logged, sent = agg.tables[0]
    agg.disclosures.remove(logged)
    del agg.ledger[DecisionRecord.from_json(logged.value).record_id]
    rep = agg.report()
    assert [f.position for f in rep.of("unlogged")] == [sent.position]


def test_an_edited_aggregate_message_is_unlogged(agg: Sim) -> None:
    _, _, sent = agg.tables[1]
    doc = orjson.loads(sent.value)
    doc["ciphertext"] = doc["ciphertext"][:-4] + (
        "AAAA" if doc["ciphertext"][-4:] != "AAAA" else "BBBB"
    )
    i = agg.agents[AGENT].index(sent)
    agg.agents[AGENT][i] = replace(sent, value=orjson.dumps(doc))
    rep = agg.report()
    assert sent.position in {f.position for f in rep.of("unlogged")}
    # ... and the table its record describes never reached the agent.
    assert any("no message to analytics" in f.what for f in rep.of("lost"))


def test_an_aggregated_record_without_its_message_is_lost(agg: Sim) -> None:
    _, logged, sent = agg.tables[2]
    agg.agents[AGENT].remove(sent)
    rep = agg.report()
    (f,) = rep.of("lost")
    assert f.record_id == DecisionRecord.from_json(logged.value).record_id
    assert f.position == logged.position and "no message to analytics" in f.what


def test_a_table_below_k_is_a_small_cell(agg: Sim, core: Core) -> None:
    k = core.policy.agents[AGENT].aggregate.k  # type: ignore[union-attr]
    t = agg.tables[0][0]
    agg.emit([replace(t, customers=k - 3, revision=t.revision + 10)])
    agg.emit([replace(t, customers=None, revision=t.revision + 11)])
    rep = agg.report()
    small = rep.of("small_cell")
    assert len(small) == 2 and not rep.ok()
    assert f"sent from {k - 3} contributing customers, below the agent's k={k}" in small[0].what
    assert "sent from fewer than k" in small[1].what
    assert all(f.agent == AGENT for f in small)


def test_a_window_the_policy_does_not_declare_is_undeclared(agg: Sim) -> None:
    t = agg.tables[0][0]
    agg.emit([replace(t, size=600, start=t.start - t.start % 600)])
    rep = agg.report()
    (f,) = rep.of("undeclared_aggregate")
    assert "10m: not one of the agent's windows (5m, 1h)" in f.what


def test_tables_the_policy_does_not_declare_are_undeclared(agg: Sim, core: Core) -> None:
    # A worker running a policy with one more table (say, visits per hour and language)
    # under the deployment's policy version: its records describe tables that version
    # does not declare.
    agent = core.policy.agents[AGENT]
    spec = agent.aggregate
    assert spec is not None
    extra = TableSpec(events=["site.visit"], dimensions=["hour", "language"])
    other = core.policy.model_copy(
        update={
            "agents": {
                **core.policy.agents,
                AGENT: agent.model_copy(
                    update={
                        "aggregate": spec.model_copy(
                            update={"tables": {**spec.tables, "hour_language": extra}}
                        )
                    }
                ),
            }
        }
    )
    rogue = build_core(core.settings, other)
    t = agg.tables[0][0]
    rec, msg = emit(rogue.pipeline, t)
    agg.log_record(rec.to_json(), b"", [])
    agg.ledger[rec.record_id] = rec.to_json().decode()
    agg._put(agg.agents[AGENT], msg.topic, msg.key, msg.value)
    rep = agg.report()
    (f,) = rep.of("undeclared_aggregate")
    assert f.record_id == rec.record_id and "hour_language" in f.what
    assert not rep.of("unlogged")  # the message itself is logged: the table is the fault


def test_a_table_under_another_policy_version_keeps_its_own_k(agg: Sim, core: Core) -> None:
    # Made under an older policy (other tables, say): not held to this policy's windows
    # and tables, nor recomputed; but to the k it states, and never below the floor.
    older = build_core(core.settings, core.policy.model_copy(update={"digest": "older"}))
    t = agg.tables[0][0]
    fine = emit(older.pipeline, replace(t, size=600, start=t.start - t.start % 600))
    small = emit(older.pipeline, replace(t, customers=4))
    for rec, msg in (fine, small):
        agg.log_record(rec.to_json(), b"", [])
        agg.ledger[rec.record_id] = rec.to_json().decode()
        agg._put(agg.agents[AGENT], msg.topic, msg.key, msg.value)
    rep = agg.report()
    (f,) = rep.findings
    assert f.kind == "small_cell" and f.record_id == small[0].record_id
    assert "below k=10 (policy older)" in f.what
    assert rep.counts["other_policy_records"] == 2


def test_an_edited_aggregated_record_is_a_conflict(agg: Sim) -> None:
    i, rec = next(records(agg, "aggregated"))
    sent = parse_reason(AGENT, rec.reason)
    assert sent is not None and sent.customers is not None
    more = rec.reason.replace(  # type: ignore[union-attr]
        f": {sent.customers} contributing", f": {sent.customers + 30} contributing"
    )
    relog(agg, i, rec.model_copy(update={"reason": more}))
    rep = agg.report()
    (f,) = rep.of("conflict")
    assert f.record_id == rec.record_id and "its id is not the one" in f.what


# --- the last revision of each closed window, recomputed from the input --------------------


def test_a_contribution_the_windows_lost_is_a_mismatch(core: Core, built: Sim) -> None:
    # The worker logged the contribution but it never reached the windows: every record
    # checks out, the tables do not.
    _, rec = next(
        (i, r)
        for i, r in records(built, "contributed")
        # one well inside the input, so its windows close
        if r.occurred_at.timestamp() < built.tables[0][0].start + 3600
    )
    sim = build(core, drop=rec.event_id)
    rep = sim.report()
    bad = rep.of("aggregate_mismatch")
    assert bad and not rep.ok()
    assert {f.agent for f in bad} == {AGENT}
    assert kinds(rep) <= {"aggregate_mismatch", "lost"}
    # Named by the last revision sent for the window, on the disclosure topic.
    assert all(f.record_id and f.position and f.position.startswith("in.disclosures") for f in bad)


def test_a_mismatch_is_pending_until_the_input_is_committed(core: Core, built: Sim) -> None:
    _, rec = next(records(built, "contributed"))
    sim = build(core, drop=rec.event_id)
    sim.offsets = {}  # nothing committed yet: the tables may still be in flight
    rep = sim.report()
    assert rep.ok() and not rep.of("aggregate_mismatch")
    assert any("window" in f.what for f in rep.pending)
    # Everything committed: the gateway is done with those windows, the mismatch stands.
    sim.offsets = {(IN, p): 10_000 for p in range(PARTITIONS)}
    rep = sim.report()
    assert rep.of("aggregate_mismatch") and not rep.pending


def test_a_closed_window_without_its_table_is_lost(agg: Sim) -> None:
    last = last_revisions(agg)
    first = min(last)  # the earliest window: closed by the input's watermark
    for t, _, _ in list(agg.tables):
        if (t.size, t.start) == first:
            drop_pair(agg, t)
    rep = agg.report()
    (f,) = rep.of("lost")
    assert "but no table was sent for it" in f.what and f.agent == AGENT


def test_a_closed_window_sent_with_other_content_is_a_mismatch(agg: Sim) -> None:
    t = min(last_revisions(agg).items())[1]
    body = [dict(tb) for tb in t.tables]
    body[0]["suppressed"] += 1  # one more entry said to be suppressed than the input gives
    agg.emit([replace(t, revision=t.revision + 1, tables=body)])
    rep = agg.report()
    (f,) = rep.of("aggregate_mismatch")
    assert f"the last revision sent ({t.revision + 1}," in f.what


def with_a_late_visit() -> list[dict[str, Any]]:
    """600 sample events, one visit (no GPC) moved 350 events later than its time: past
    the grace of both window sizes."""
    events = list(random_events(600, seed=5, customers=300))
    late = next(
        i
        for i, e in enumerate(events)
        if i > 100 and e["event_type"] == "site.visit" and not e["data"]["gpc"]
    )
    events.insert(late + 350, events.pop(late))
    return events


def test_an_event_past_the_grace_is_late_as_the_partition_order_says(core: Core) -> None:
    # One visit published well over an hour after its time (past the 10-minute grace of
    # both window sizes): the worker counts it as late, not in its windows. Its subject
    # partition decided its events in its input partition's offset order, so the
    # auditor's recomputation agrees.
    raws, keys = keyed(with_a_late_visit())
    sim = Sim(core)
    for i, raw in enumerate(raws):
        home = subject_partition(keys[i].decode(), PARTITIONS)
        sim.process(sim.publish(raw, keys[i], partition=home))
    sim.close()
    assert any(t.late for t, _, _ in sim.tables)
    rep = sim.report()
    assert rep.ok(strict=True), [f.to_dict() for f in rep.findings]
    assert rep.counts["aggregate_windows_uncertain"] == 0
    assert rep.counts["aggregate_windows_closed"] > 10


def test_windows_an_unknown_order_could_change_are_not_compared(core: Core) -> None:
    # Events published on other partitions than their customers' are forwarded: a subject
    # partition then interleaves several input partitions in an order the auditor cannot
    # see, so a window an event could have reached late in some order is not compared
    # (here: the worker's order made it late, the auditor's would not).
    raws, keys = keyed(with_a_late_visit())
    sim = Sim(core)
    sim.run(raws, keys)  # partitions by the Sim's own hash of the key
    sim.close()
    assert any(t.late for t, _, _ in sim.tables)
    rep = sim.report()
    assert rep.ok(strict=True), [f.to_dict() for f in rep.findings]
    assert rep.counts["aggregate_windows_uncertain"] > 0


def test_the_offline_replay_reconciles(core: Core, tmp_path: Path) -> None:
    # What `gateway replay` writes (records, every agent's topic file) is what the audit
    # expects of the stream: the replay's own tables pass, a table taken out of its
    # topic file is lost.
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(EVENTS[0]) + b"\n")
    out = tmp_path / "out"
    summary = replay(core.pipeline, events, out, partitions=2)
    assert summary.aggregates

    def lines(path: Path, topic: str) -> list[TopicMessage]:
        return [
            TopicMessage(topic, 0, i, None, raw)
            for i, raw in enumerate(path.read_bytes().splitlines())
        ]

    inputs = lines(events, "file")
    recs = lines(out / "records.jsonl", "records")
    topics = {n: a.topic for n, a in core.policy.agents.items()}
    sent = {n: lines(out / "topics" / f"{t}.jsonl", t) for n, t in topics.items()}

    def audit() -> ReconcileReport:
        return reconcile(
            core.pipeline,
            inputs,
            disclosures=recs,
            ledger={DecisionRecord.from_json(m.value).record_id: m.value.decode() for m in recs},
            agent_messages=sent,
            dead_letters=[],
            agent_topics=topics,
            partitions=2,
        )

    rep = audit()
    assert rep.ok(strict=True), [f.to_dict() for f in rep.findings]
    assert rep.counts["aggregate_records"] == len(summary.aggregates) == len(sent[AGENT])
    sent[AGENT] = sent[AGENT][1:]
    assert [f.kind for f in audit().findings] == ["lost"]


# --- the report -------------------------------------------------------------------------------


def test_text_and_json_name_aggregate_findings(agg: Sim, core: Core) -> None:
    t = agg.tables[0][0]
    agg.emit([replace(t, customers=2, revision=t.revision + 10)])
    rep = agg.report()
    with console.capture() as cap:
        _print(rep, 5)
    text = cap.get()
    assert f"aggregate tables {len(agg.tables)};" in text
    assert "GAP small_cell: 1" in text and "agent=analytics" in text
    assert "GAPS FOUND" in text and "small_cell 1" in text
    doc = rep.to_dict()
    assert doc["summary"]["small_cell"] == 1 and not doc["ok"]
    assert doc["counts"]["aggregate_records"] == len(agg.tables)
    assert any(g["kind"] == "small_cell" for g in doc["gaps"])
