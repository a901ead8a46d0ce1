"""Aggregates end to end through the core: consent before aggregation, sealed tables and
their records, nothing about an individual in what the analytics agent decrypts, and the
replay's tables independent of how many subject partitions share the work."""

from __future__ import annotations

import copy
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.aggregates import AggregateSet, emit
from gateway.consent import ConsentState
from gateway.dev.samples import random_events, scenario, to_jsonl
from gateway.policy import parse_policy
from gateway.policy_tools import offline_engine
from gateway.replay import replay
from gateway.routing import subject_partition
from gateway.runtime import Core
from gateway.sdk.reader import AgentReader
from tests.conftest import Run, event, walk_values, with_aggregates

ROOT = Path(__file__).resolve().parent.parent


def visit(sample: dict, customer: str, n: int, at: str = "2026-05-04T10:00:00Z") -> dict:
    ev = copy.deepcopy(sample["site.visit"])
    ev["subject"]["customer_id"] = customer
    ev["event_id"] = f"evt-agg-visit-{customer}-{n:04d}"
    ev["occurred_at"] = at
    return ev


def consent(data: dict, customer: str, n: int) -> dict:
    return event("consent.changed", {"source": "account", **data}, customer=customer, n=n)


# --- consent before aggregation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"objection": True}, "objection"),
        ({"gpc": True}, "gpc"),
    ],
)
def test_an_objection_or_gpc_stops_contributions_from_that_moment(
    run: Run, sample: dict, change: dict, reason: str
) -> None:
    cid = f"C-agg-{reason}"
    before = run.send(visit(sample, cid, 1))
    assert [r.outcome for r in before.records] == ["contributed"] and before.contributions
    run.send(consent(change, cid, 2))
    after = run.send(visit(sample, cid, 3))
    assert after.contributions == []
    assert [(r.outcome, r.reason) for r in after.records] == [("withheld", reason)]


def test_gpc_sent_by_the_browser_with_the_visit_stops_it_contributing(
    run: Run, sample: dict
) -> None:
    ev = visit(sample, "C-agg-gpc-visit", 1)
    ev["data"]["gpc"] = True
    out = run.send(ev)
    assert out.contributions == []
    assert [(r.outcome, r.reason) for r in out.records] == [("withheld", "gpc")]


def test_an_erased_subject_contributes_nothing_more(run: Run, sample: dict) -> None:
    cid = "C-agg-erased"
    run.send(visit(sample, cid, 1))
    run.send(event("erasure.requested", {"request_id": "DSR-agg"}, customer=cid, n=2))
    after = run.send(visit(sample, cid, 3))
    assert after.contributions == []
    assert [r.reason for r in after.records] == ["subject_erased"]


def test_an_rx_line_enters_the_aggregates_only_with_an_opt_in_the_policy_honours(
    run: Run, sample: dict
) -> None:
    order = copy.deepcopy(sample["order.placed"])
    order["subject"]["customer_id"] = cid = "C-agg-rx"
    (c,) = run.send(order).contributions
    assert [d for d, _ in c.rows["product_categories"]] == [("frames",)]
    # The default policy gives analytics no health category at all: even the customer's
    # opt-in for analytics lets no Rx line in.
    grant = {"sensitive": [{"scope": "agent", "target": "analytics", "granted": True}]}
    run.send(consent(grant, cid, 5))
    order["event_id"] = "evt-agg-rx-again-0001"
    (c,) = run.send(order).contributions
    assert [d for d, _ in c.rows["product_categories"]] == [("frames",)]
    # A policy that permits it to analytics: only with the opt-in.
    text = (ROOT / "agents.yaml").read_text()
    text = text.replace(
        "          user.behavior.purchase_history: send\n\n  reseller:",
        "          user.behavior.purchase_history: send\n"
        "          user.health_and_medical.vision_correction: send\n\n  reseller:",
    )
    engine = offline_engine(parse_policy(text))
    body = {k: v for k, v in order.items() if k != "event_id"}
    body["occurred_at"] = "2026-03-02T09:00:00Z"

    def categories(state: ConsentState) -> list[tuple[str, ...]]:
        d = engine.decide("analytics", "order.placed", body, "consumer", state, date(2026, 3, 2))
        assert d.outcome == "contributed" and d.contribution is not None
        return [dims for dims, _ in d.contribution["product_categories"]]

    assert categories(ConsentState(subject_type="consumer")) == [("frames",)]
    opted = ConsentState(subject_type="consumer", sensitive=frozenset({"agent:analytics"}))
    assert categories(opted) == [("lenses",), ("frames",)]


# --- sealed, logged, nothing individual ----------------------------------------------------


def identifiers(core: Core, events: list[dict[str, Any]]) -> set[str]:
    """Every value that could single a person out that the run produced: the events'
    identifiers and free text, every pseudonym and key the gateway derived for them."""
    out: set[str] = set()
    p = core.pipeline
    for e in events:
        cid = e["subject"]["customer_id"]
        out |= {cid, e["event_id"], p.subject_ref(cid)}
        for agent in core.policy.agents:
            out.add(p.message_key(agent, cid).decode())
            out.add(p.aggregate_subject(agent, cid))
        data = e["data"]
        for key in ("session_id", "order_id", "contact_email", "contact_phone", "request_id"):
            if isinstance(data.get(key), str):
                out.add(data[key])
        device = data.get("device") or {}
        for key in ("ip", "device_id", "hardware_model"):
            if isinstance(device.get(key), str):
                out.add(device[key])
        for addr in [data.get("shipping_address") or {}, *(data.get("addresses") or [])]:
            for key in ("street", "postal_code", "city"):
                if isinstance(addr.get(key), str):
                    out.add(addr[key])
        for v in walk_values(data.get("name") or {}) + walk_values(data.get("recipient") or {}):
            if isinstance(v, str):
                out.add(v)
        for q in data.get("search_queries") or []:
            out.add(q)
        if isinstance(data.get("referrer"), str):
            out.add(data["referrer"])
        # Exact times (finer than any window; a time on the 5-minute grid is a window
        # bound, which tables do state).
        at = datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00"))
        if int(at.timestamp()) % 300:
            out.add(e["occurred_at"])
    return {x for x in out if len(x) >= 3}


def test_nothing_about_an_individual_reaches_the_analytics_agent(
    core: Core, readers: dict[str, AgentReader]
) -> None:
    events = [*scenario(), *random_events(2500, seed=11, customers=120)]
    results = with_aggregates(core, events)
    sent = [m for r in results for m in r.messages if m.agent == "analytics"]
    assert len(sent) > 10
    assert {m.kind for m in sent} == {"aggregate"}
    secrets = identifiers(core, events)
    published_rows = 0
    for m in sent:
        body = readers["analytics"].opener.open(m.value).json()
        assert m.key.decode() not in secrets
        text = orjson.dumps(body).decode()
        strings = {v for v in walk_values(body) if isinstance(v, str)}
        leaked = {s for s in secrets if s in strings or s in text}
        assert not leaked, sorted(leaked)[:5]
        # Times: only window bounds, on the window's grid.
        for t in re.findall(r"\d{4}-\d\d-\d\dT[\d:]+Z", text):
            assert t in (body["window"]["start"], body["window"]["end"])
        # Every published row meets the threshold.
        for table in body["tables"]:
            for row in table["rows"]:
                assert row["customers"] >= 10
                published_rows += 1
        assert body["contributing_customers"] >= 10
    assert published_rows > 100


def test_each_table_is_a_disclosure_record_stating_its_window_and_suppression(
    core: Core, readers: dict[str, AgentReader]
) -> None:
    events = random_events(1500, seed=12, customers=80)
    results = with_aggregates(core, list(events))
    pairs = [(rec, m) for r in results for rec, m in zip(r.records, r.messages, strict=False)]
    agg = [(rec, m) for rec, m in pairs if rec.outcome == "aggregated"]
    assert agg
    for rec, m in agg:
        body = readers["analytics"].opener.open(m.value).json()
        assert rec.record_id == m.disclosure_id == body["_gateway"]["disclosure_id"]
        assert rec.topic == "agent.analytics" and rec.payload_digest and rec.key_id
        assert rec.subject_type == "aggregate" and rec.subject_ref == ""
        assert f"revision {body['revision']}" in (rec.reason or "")
        assert f"{body['contributing_customers']} contributing customers" in (rec.reason or "")
        suppressed = sum(t["suppressed"] for t in body["tables"])
        assert f"{suppressed} entries suppressed" in (rec.reason or "")
        assert "pages.page" in rec.paths_sent and "order_regions.order_total" in rec.paths_sent


# --- replay: the same tables whatever the partitions -----------------------------------------


def final_bodies(path: Path) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for line in path.read_bytes().splitlines():
        body = orjson.loads(line)
        key = (body["window"]["start"], body["window"]["size"])
        if key not in out or out[key]["revision"] < body["revision"]:
            out[key] = body
    return out


def replay_tables(core: Core, src: Path, out: Path, partitions: int) -> dict[Any, Any]:
    replay(core.pipeline, src, out, partitions=partitions)
    return final_bodies(out / "aggregates.jsonl")


def test_replay_of_the_sample_events_sends_no_small_window(core: Core, tmp_path: Path) -> None:
    got = replay_tables(core, ROOT / "gateway/data/sample_events.jsonl", tmp_path / "a", 1)
    # Three visits and five orders from a handful of customers: below k in every window.
    assert got == {}
    records = [orjson.loads(x) for x in (tmp_path / "a/records.jsonl").read_bytes().splitlines()]
    contributed = [r for r in records if r["outcome"] == "contributed"]
    assert contributed and all(r["agent"] == "analytics" for r in contributed)
    assert not any(r["agent"] == "analytics" and r["outcome"] == "disclosed" for r in records)


def _replay_equivalence(core: Core, tmp_path: Path, n: int, customers: int) -> None:
    src = tmp_path / "events.jsonl"
    src.write_bytes(to_jsonl(random_events(n, seed=21, customers=customers)))
    one = replay_tables(core, src, tmp_path / "p1", 1)
    two = replay_tables(core, src, tmp_path / "p2", 2)
    assert one == two
    rows = sum(len(t["rows"]) for body in one.values() for t in body["tables"])
    assert len(one) > 10 and rows > 100


def test_replay_gives_the_same_tables_with_one_or_two_partitions(
    core: Core, tmp_path: Path
) -> None:
    _replay_equivalence(core, tmp_path, 3000, 600)


@pytest.mark.slow
def test_replay_of_10000_events_over_2000_customers_with_one_or_two_partitions(
    core: Core, tmp_path: Path
) -> None:
    _replay_equivalence(core, tmp_path, 10_000, 2000)


def test_a_worker_crash_mid_window_neither_loses_nor_double_counts(core: Core) -> None:
    """Two subject partitions. Partition 1's worker persists its consent states and its
    aggregator's partials after every batch (the changelog), and is SIGKILLed mid-window
    after processing events it had not persisted yet; it is rebuilt from what it persisted
    and the events since are redelivered. The tables equal an uninterrupted run's."""
    from gateway.aggregates import Aggregator, Partial

    events = list(random_events(3000, seed=31, customers=500))
    spec = core.policy.agents["analytics"].aggregate
    assert spec is not None

    def run(crash_at: int | None) -> dict[Any, Any]:
        states: list[dict[str, ConsentState]] = [{}, {}]
        aggs = AggregateSet(core.policy, 2)
        tables: list[Any] = []
        saved: tuple[int, bytes, dict[str, ConsentState]] | None = None
        i = 0
        while i < len(events):
            raw = orjson.dumps(events[i])
            part = subject_partition(events[i]["subject"]["customer_id"], 2)
            out = core.pipeline.process(raw, states[part], verify=False)
            assert out.event is not None
            tables += aggs.event(part, out.event.occurred_at, out.contributions)
            if part == 1 and i % 150 == 0:  # a batch committed: changelog and offsets
                agg = aggs.aggregators[("analytics", 1)]
                partials = orjson.dumps([p.to_json() for p in agg.partials()])
                saved = (i + 1, partials, copy.deepcopy(states[1]))
            if crash_at is not None and i == crash_at:
                assert saved is not None
                resume, partials, kept = saved
                fresh = Aggregator(spec, "analytics", 1)
                fresh.restore(Partial.from_json(d) for d in orjson.loads(partials))
                aggs.aggregators[("analytics", 1)] = fresh
                states[1] = kept
                # Redelivered from the committed offset: partition 1's events again.
                for ev in events[resume : i + 1]:
                    if subject_partition(ev["subject"]["customer_id"], 2) != 1:
                        continue
                    got = core.pipeline.process(orjson.dumps(ev), states[1], verify=False)
                    assert got.event is not None
                    tables += aggs.event(1, got.event.occurred_at, got.contributions)
                crash_at = None
            i += 1
        tables += aggs.close()
        last: dict[Any, Any] = {}
        for t in tables:
            key = (t.start, t.size)
            if key not in last or last[key].revision < t.revision:
                last[key] = t
        return {k: (t.customers, t.tables) for k, t in last.items()}

    clean = run(None)
    assert run(1720) == clean
    assert sum(len(t["rows"]) for _, ts in clean.values() for t in ts) > 50


def test_every_emitted_table_is_sealed_for_analytics_alone(
    core: Core, readers: dict[str, AgentReader]
) -> None:
    from gateway.errors import CryptoError

    results = with_aggregates(core, list(random_events(1200, seed=13, customers=60)))
    sent = [m for r in results for m in r.messages if m.kind == "aggregate"]
    assert sent
    for m in sent[:5]:
        with pytest.raises(CryptoError):
            readers["payments"].opener.open(m.value)


def test_emitting_the_same_table_again_gives_the_same_record_id(core: Core) -> None:
    from gateway.aggregates import AggregateTable

    table = AggregateTable("analytics", 300, 1_700_000_100, 0, True, 12, 0, [])
    now = datetime(2026, 1, 1, tzinfo=UTC)
    (r1, _), (r2, _) = emit(core.pipeline, table, now), emit(core.pipeline, table, now)
    assert r1.record_id == r2.record_id
    later = AggregateTable("analytics", 300, 1_700_000_100, 1, True, 13, 0, [])
    assert emit(core.pipeline, later, now + timedelta(seconds=1))[0].record_id != r1.record_id
