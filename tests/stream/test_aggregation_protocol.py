"""The batch protocol's aggregate windows, driven without faust or a broker (the harness of
``test_protocol``): partials reach the aggregates topic, then the changelog before the
markers, every entry MAC'd; a crash between the two, or after the markers, neither loses
a contribution nor counts one twice; and the combiner's restore from its topic."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from gateway.aggregates import Aggregator, Combiner, Contribution, Partial
from gateway.consent import ConsentState
from gateway.dev.demo import shop_traffic
from gateway.dev.samples import scenario
from gateway.integrity import HEADER_MAC, WorkerMac, header
from gateway.routing import subject_partition
from gateway.runtime import Core
from gateway.stream import aggregation, metrics
from gateway.stream.aggregation import (
    AGG_PREFIX,
    Alignment,
    CombinerService,
    WorkerAggregation,
    topic_mac_ok,
)
from gateway.stream.consent_store import FORWARDED_OFFSET_KEY, OFFSET_KEY, Restored
from tests.stream.test_protocol import (
    CHANGELOG,
    DISCLOSURES,
    PARTITIONS,
    FakeBroker,
    FakeSender,
    Harness,
    Msg,
    Sent,
    _publisher_signers,  # noqa: F401 (autouse: the demo publishers sign the scenario)
    signed,
)

AGG_TOPIC = "t.aggregates"
AGENT = "analytics"


def traffic_messages() -> list[Msg]:
    """The scenario and a morning of shop traffic (enough customers per window for k), as
    signed input messages on their customers' partitions."""
    lines = [orjson.dumps(e) for e in scenario()] + shop_traffic(300, customers=60)
    offsets = dict.fromkeys(range(PARTITIONS), 0)
    out = []
    for line in lines:
        p = subject_partition(orjson.loads(line)["subject"]["customer_id"], PARTITIONS)
        out.append(signed(p, offsets[p], line))
        offsets[p] += 1
    return out


class Crash(Exception):
    pass


class AggHarness(Harness):
    """The protocol with aggregation; its changelog restore reads what ``log`` (the
    changelog entries a broker acknowledged, in order) holds."""

    def __init__(self, core: Core, log: list[Sent] | None = None, **kwargs: Any):
        super().__init__(core, **kwargs)
        self.log = log if log is not None else []
        self.mac = WorkerMac(core.worker_key)
        self.protocol.aggregation = WorkerAggregation(
            core.policy, self.consent, AGG_TOPIC, self.mac
        )

    async def read_changelog(self, partitions: list[int]) -> Restored:
        states: dict[int, dict[str, bytes | ConsentState]] = {p: {} for p in partitions}
        applied: dict[int, int] = {}
        forwarded: dict[int, int] = {}
        aggs: dict[int, dict[str, bytes]] = {p: {} for p in partitions}
        for s in self.log:
            p = s.partition
            if p not in states or s.key is None:
                continue
            assert self.mac.changelog_ok(s.key, s.value, header(s.headers, HEADER_MAC))
            key = s.key.decode()
            if key in (OFFSET_KEY, FORWARDED_OFFSET_KEY):
                into = applied if key == OFFSET_KEY else forwarded
                into[p] = orjson.loads(s.value)["input_offset"]
            elif key.startswith(AGG_PREFIX):
                if s.value is None:
                    aggs[p].pop(key, None)
                else:
                    aggs[p][key] = s.value
            else:
                states[p][key] = s.value
        return Restored(states, applied, forwarded, aggs)

    def changelog_acked(self) -> list[Sent]:
        return [s for s in self.broker.acked if s.topic == CHANGELOG]

    def partials_acked(self) -> list[Sent]:
        return [s for s in self.broker.acked if s.topic == AGG_TOPIC]


def combined(sent: list[Sent], core: Core) -> list[dict[str, Any]]:
    """What a combiner makes of these aggregates-topic messages at the end of input."""
    spec = core.policy.agents[AGENT].aggregate
    assert spec is not None
    c = Combiner(spec, AGENT, PARTITIONS)
    mac = WorkerMac(core.worker_key)
    for s in sent:
        assert s.key is not None
        assert topic_mac_ok(mac, s.key, s.value, header(s.headers, HEADER_MAC))
        if s.key.startswith(b"#p:"):
            c.update(Partial.from_json(orjson.loads(s.value)))
    return [t.body() for t in c.due(final=True)]


def test_partials_go_to_the_combiner_then_to_the_changelog_before_the_markers(
    core: Core,
) -> None:
    h = AggHarness(core)
    h.run(traffic_messages())
    effects = h.effects
    first_changelog = next(
        i for i, e in enumerate(effects) if e[0] == "sent" and e[2].topic == CHANGELOG
    )
    last_partial_ack = max(
        i for i, e in enumerate(effects) if e[0] == "acked" and e[2].topic == AGG_TOPIC
    )
    assert last_partial_ack < first_changelog
    cl = h.changelog_acked()
    keys = [s.key.decode() for s in cl if s.key is not None]
    windows = [i for i, k in enumerate(keys) if k.startswith(AGG_PREFIX)]
    markers = [i for i, k in enumerate(keys) if k in (OFFSET_KEY, FORWARDED_OFFSET_KEY)]
    assert windows and markers and max(windows) < min(markers)
    # One partition for the combiner; every entry MAC'd (a changelog MAC is not an
    # aggregates-topic MAC, and the other way round).
    for s in h.partials_acked():
        assert s.partition == 0
        assert s.key is not None
        assert topic_mac_ok(h.mac, s.key, s.value, header(s.headers, HEADER_MAC))
        assert not h.mac.changelog_ok(s.key, s.value, header(s.headers, HEADER_MAC))
    for s in cl:
        assert s.key is not None
        assert h.mac.changelog_ok(s.key, s.value, header(s.headers, HEADER_MAC))
    assert combined(h.partials_acked(), core), "the traffic gives some window"
    # The operators' gauge: the windows the partitions' aggregators hold open.
    aggregation = h.protocol.aggregation
    assert aggregation is not None
    held = sum(len(a[AGENT].windows) for _, a in aggregation._parts.values())
    assert held > 0
    assert metrics.AGGREGATE_OPEN_WINDOWS.labels(AGENT, "partitions")._value.get() == held


@pytest.mark.parametrize("crash_at", ["changelog", "after_markers"])
def test_a_crash_neither_loses_nor_double_counts_a_contribution(core: Core, crash_at: str) -> None:
    messages = traffic_messages()
    clean = AggHarness(core)
    for i in range(0, len(messages), 7):
        # (the partitions are restored once, with the first batch)
        clean.run(messages[i : i + 7], restore=(0, 1) if i == 0 else ())
    want = combined(clean.partials_acked(), core)

    half = len(messages) // 2
    first = AggHarness(core)
    first.run(messages[: half - 7])
    topic_log = list(first.partials_acked())

    async def crash(kind: str) -> None:
        if kind == "changelog":
            raise Crash

    batch = messages[half - 7 : half]
    if crash_at == "changelog":
        # Partials acknowledged by the aggregates topic, then the worker dies before its
        # changelog entries and markers.
        first.broker.before = crash
        with pytest.raises(Crash):
            first.run(batch, restore=())
        topic_log = list(first.partials_acked())
    else:
        first.run(batch, restore=())  # markers written; the input offsets never committed
        topic_log = list(first.partials_acked())
    # A new worker restores the partitions from the changelog and gets the input again
    # from the last committed offsets: the whole batch and the rest.
    second = AggHarness(core, log=first.changelog_acked())
    second.run(messages[half - 7 : half + 3])
    second.run(messages[half + 3 :], restore=())
    got = combined(topic_log + second.partials_acked(), core)
    assert got == want


def traffic_partials(core: Core) -> list[tuple[Any, Any, Any]]:
    """The aggregates topic after the traffic went through the protocol: what a combiner
    reads, as (key, value, headers)."""
    h = AggHarness(core)
    h.run(traffic_messages())
    return [(s.key, s.value, s.headers) for s in h.partials_acked()]


class Reader:
    """The aggregates topic as a combiner reads it: everything at the first fetch."""

    def __init__(self, items: list[tuple[Any, Any, Any]]):
        self.items = items

    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    async def fetch(self) -> list[tuple[Any, Any, Any]]:
        await asyncio.sleep(0.001)  # as a broker's fetch does, it waits
        out, self.items = self.items, []
        return out

    async def at_end(self) -> bool:
        return not self.items


def service(
    core: Core, items: list[tuple[Any, Any, Any]], broker: FakeBroker, idle: float = 0.0
) -> CombinerService:
    return CombinerService(
        core.pipeline,
        Reader(items),
        FakeSender(broker),
        topic=AGG_TOPIC,
        disclosure_topic=DISCLOSURES,
        partitions=PARTITIONS,
        mac=WorkerMac(core.worker_key),
        idle_seconds=idle,  # 0: every partition caught up at once, everything closes
    )


async def rounds(svc: CombinerService, n: int) -> None:
    task = asyncio.ensure_future(svc.run())
    for _ in range(n):
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_the_combiner_restores_from_its_topic_and_emits_nothing_twice(core: Core) -> None:
    topic = traffic_partials(core)

    effects: list[tuple[Any, ...]] = []
    b1 = FakeBroker(effects)
    asyncio.run(rounds(service(core, topic, b1), 20))
    records = [s for s in b1.acked if s.topic == DISCLOSURES]
    messages = [s for s in b1.acked if s.topic == core.policy.agents[AGENT].topic]
    emitted = [s for s in b1.acked if s.topic == AGG_TOPIC]
    assert records and len(records) == len(messages) == len(emitted)
    # record acknowledged before its message is sent
    first_msg = next(i for i, e in enumerate(effects) if e[0] == "sent" and e[2] in messages)
    first_rec = next(i for i, e in enumerate(effects) if e[0] == "acked" and e[2] in records)
    assert first_rec < first_msg
    # A restart reads the topic again, with the emissions: it emits nothing new.
    b2 = FakeBroker([])
    again = topic + [(s.key, s.value, s.headers) for s in emitted]
    asyncio.run(rounds(service(core, again, b2), 20))
    assert not b2.acked
    # A crash after a record, before its emission was noted: the same record again.
    b3 = FakeBroker([])
    asyncio.run(rounds(service(core, topic, b3), 20))

    def ids(sent: list[Sent]) -> list[bytes | None]:
        return [header(s.headers, "record_id") for s in sent if s.topic == DISCLOSURES]

    assert ids(b3.acked) == ids(records)


def test_the_combiner_emits_a_rounds_tables_in_three_acknowledged_sends(core: Core) -> None:
    # A worker catching up on a backlog closes many windows per round: one round trip per
    # table and step fell behind (measured: over a thousand windows held open). Whatever
    # the number of tables, a round is three sends, in the protocol's order.
    topic = traffic_partials(core)
    effects: list[tuple[Any, ...]] = []
    broker = FakeBroker(effects)
    attempts: list[str] = []
    inner = broker.attempt

    async def attempt(items: Any, partitions: Any = None) -> list[BaseException | None]:
        attempts.append(items[0][0])
        return await inner(items, partitions)

    broker.attempt = attempt  # type: ignore[method-assign]
    asyncio.run(rounds(service(core, topic, broker), 20))
    agent_topic = core.policy.agents[AGENT].topic
    records = [s for s in broker.acked if s.topic == DISCLOSURES]
    assert len(records) > 3  # many tables were due in the one round
    assert attempts == [DISCLOSURES, agent_topic, AGG_TOPIC]
    order = [(e[0], e[2].topic) for e in effects]
    last_record_ack = max(i for i, e in enumerate(order) if e == ("acked", DISCLOSURES))
    first_message = order.index(("sent", agent_topic))
    last_message_ack = max(i for i, e in enumerate(order) if e == ("acked", agent_topic))
    first_entry = order.index(("sent", AGG_TOPIC))
    assert last_record_ack < first_message and last_message_ack < first_entry


def test_the_combiner_reports_the_windows_it_holds_open(core: Core) -> None:
    topic = traffic_partials(core)
    svc = service(core, topic, FakeBroker([]), idle=3600.0)  # no partition counts as idle
    asyncio.run(rounds(svc, 5))
    held = len(svc.combiners[AGENT].latest)
    assert held > 0  # the last windows wait for every partition's watermark
    # It holds the cells of every open window of every partition, not their event keys
    # (a partition's recount needs those, combining does not).
    partials = [p for parts in svc.combiners[AGENT].latest.values() for p in parts.values()]
    assert partials and all(p.subjects and not p.events for p in partials)
    assert metrics.AGGREGATE_OPEN_WINDOWS.labels(AGENT, "combiner")._value.get() == held
    # ... and the partitions' watermarks that hold them: the lowest is the one to look at.
    reported = {p: svc.reported[(AGENT, p)] for p in range(PARTITIONS)}
    gauge = metrics.AGGREGATE_WATERMARK
    assert {p: gauge.labels(AGENT, str(p))._value.get() for p in reported} == reported
    oldest = min(svc.combiners[AGENT].latest)
    assert sum(oldest) + svc.combiners[AGENT].grace > min(reported.values())


def test_a_batch_whose_partitions_are_restored_meanwhile_writes_what_it_counted(
    core: Core,
) -> None:
    """The batch's markers go out for every partition it read; so must the partials of
    what it counted, even if its partitions were revoked and restored while it was out
    (a rebalance keeping them here): else a restore skips those events by the markers,
    and their contributions are lost."""
    messages = traffic_messages()
    clean = AggHarness(core)
    clean.run(messages)
    want = combined(clean.partials_acked(), core)

    h = AggHarness(core)
    rebalanced = False

    async def rebalance(kind: str) -> None:
        nonlocal rebalanced
        if kind == "log" and not rebalanced:
            rebalanced = True
            h.consent.revoke([0, 1])
            await h.consent.restore([0, 1])

    h.broker.before = rebalance
    h.run(messages)
    assert rebalanced
    assert combined(h.partials_acked(), core) == want


# --- event-time alignment of the partitions behind on a backlog --------------------------


def test_a_partition_ahead_of_the_slowest_behind_is_paused_until_it_catches_up() -> None:
    a = Alignment(drift=4200, backlog=1000)
    times = {0: 10_000, 1: 10_000 + 4200, 2: 10_000 + 4201, 3: 90_000}
    lags = {0: 5000, 1: 5000, 2: 5000, 3: 5000}
    # Within the drift of the slowest (0): read on; past it: paused.
    assert a.update(times, lags) == {2, 3}
    # The slowest catches up: the ones within its drift again are resumed.
    assert a.update({**times, 0: 12_000}, lags) == {3}
    # It is no longer behind on a backlog (its lag fell): nothing holds the others back.
    assert a.update(times, {**lags, 0: 999}) == {3}
    assert a.update({1: 10_000, 3: 90_000}, {1: 999, 3: 5000}) == set()


def test_live_partitions_are_never_paused_and_never_hold_others_back() -> None:
    a = Alignment(drift=60, backlog=1000)
    # 0 is live (little lag) and far behind in event time (a quiet customer base, or an
    # import of old events elsewhere): 1 and 2, both behind on a backlog, read on.
    assert a.update({0: 0, 1: 50_000, 2: 50_030}, {0: 3, 1: 4000, 2: 4000}) == set()
    # A live partition far ahead is not paused either: its events are not late.
    assert a.update({0: 99_999, 1: 50_000, 2: 50_030}, {0: 3, 1: 4000, 2: 4000}) == set()
    # A partition behind that has decided no event yet has no event time: it does not count.
    assert a.update({1: 50_000}, {0: 4000, 1: 4000}) == set()


def test_the_drift_is_the_longest_window_and_its_grace(core: Core) -> None:
    h = AggHarness(core)
    aggregation = h.protocol.aggregation
    assert aggregation is not None
    spec = core.policy.agents[AGENT].aggregate
    assert spec is not None and spec.windows == ["5m", "1h"] and spec.grace == "10m"
    assert aggregation.drift() == 3600 + 600
    h.run(traffic_messages())
    times = aggregation.event_times()
    assert set(times) == set(range(PARTITIONS))
    for p, t in times.items():
        assert t == max(a.watermark or 0 for a in aggregation.aggregators(p).values())


class _Windows(WorkerAggregation):
    """The worker's aggregators without a consent store: empty ones per partition."""

    def __init__(self, core: Core):
        super().__init__(core.policy, None, AGG_TOPIC, WorkerMac(core.worker_key))  # type: ignore[arg-type]
        self._fresh: dict[int, dict[str, Aggregator]] = {}

    def aggregators(self, partition: int) -> dict[str, Aggregator]:
        if partition not in self._fresh:
            self._fresh[partition] = {a: Aggregator(s, a, partition) for a, s in self.specs.items()}
        return self._fresh[partition]

    def count_open(self) -> None:
        pass


def test_a_partial_nearing_the_request_limit_is_measured_and_named_once(
    core: Core, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A window's partial is a full snapshot, written whole with each batch: past the
    # producer's request limit it cannot be written. The gauge shows how close the
    # largest is, and past half the limit (here lowered to 8 KiB) the worker names the
    # window and what to do, once.
    monkeypatch.setattr(aggregation, "PARTIAL_WARN_BYTES", 8 * 1024)
    owner = _Windows(core)
    start = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    spec = owner.specs[AGENT]
    table = next(iter(spec.tables))
    dims = tuple("x" for _ in spec.tables[table].dimensions)

    def batch(first: int, n: int) -> int:
        b = owner.batch()
        for i in range(first, first + n):
            at = start + timedelta(seconds=i)
            key = f"{i:032x}"
            b.event(0, at, [Contribution(AGENT, key, key, at, {table: [(dims, {})]})])
        topic_items, _ = b.outputs(CHANGELOG)
        return max(len(v) for t, k, v, _h in topic_items if k and k.startswith(b"#p:"))

    with caplog.at_level(logging.WARNING, logger="gateway.stream"):
        small = batch(0, 10)
        assert metrics.AGGREGATE_PARTIAL_BYTES.labels(AGENT)._value.get() == small
        assert not [r for r in caplog.records if "request limit" in r.getMessage()]
        big = batch(10, 200)  # the hour's window, and a 5 minutes' one, past 8 KiB
        assert big > 8 * 1024 > small
        assert metrics.AGGREGATE_PARTIAL_BYTES.labels(AGENT)._value.get() == big
        named = [r.getMessage() for r in caplog.records if "request limit" in r.getMessage()]
        assert named and all("shorter windows" in m for m in named)
        assert any("3600 s" in m for m in named)
        again = len(named)
        batch(210, 10)  # the same hour again: already named
        hour = [r.getMessage() for r in caplog.records if "3600 s" in r.getMessage()]
        assert len(hour) == 1 and again >= 1
