"""Aggregate-only agents in the stream: windows per subject partition in the worker that
holds it, combined across partitions in one place, emitted sealed and logged.

The core (:mod:`gateway.aggregates`) gives the classes and the protocol; this module runs
them on the broker with the at-least-once guarantees of the batch protocol
(:mod:`gateway.stream.protocol`).

**Per subject partition** (:class:`WorkerAggregation`, used by the batch protocol). The
worker holding a subject partition keeps one :class:`~gateway.aggregates.Aggregator` per
aggregate agent for it, with the same lifetime as the partition's consent states: built
from the consent changelog when the partition is restored (``ConsentStore.restore``
keeps the ``#agg`` entries it read), dropped when it is revoked (the store's generation
changes, so the next batch builds them again from the changelog). In step 3 each decided
event advances the partition's watermark and adds its contributions. Then:

a. with the batch's agent messages (step 5), the partials the batch changed and a
   heartbeat per (agent, partition) with the partition's watermark go to the *aggregates
   topic* (below), acknowledged;
b. in step 6, in the same changelog send as the batch's consent changes and BEFORE
   the progress markers: each changed open window's partial (key ``#agg:AGENT:SIZE:START``),
   the partition's watermark (``#agg:AGENT``), and a tombstone for each window the
   aggregator expired (past end + grace: its last partial went out in (a) already), each
   with a worker MAC like every changelog entry.

A crash before (b)'s markers re-delivers the batch against the partials as they were
before it (a window's partial and the marker go to the same changelog partition in one
send); the aggregator's per-window event keys skip whatever a restored partial holds, so
the re-decided events count once, and the partials they produce are the same snapshots
(same ``seq``) the combiner may have already seen from (a): latest-wins makes them
harmless. A crash after the markers skips the events; their partials are durable in both
places. A batch whose partitions are revoked or restored while it is out still writes
the windows of the aggregators IT counted in (with its markers, as for consent): a new
owner either restored before those writes (and decides the events again, getting the
same partials) or after them (and skips the events, having the partials).

**Combination** (:class:`CombinerService`). Partials, heartbeats and what the combiner
emitted meet on the aggregates topic ``<app id>-aggregates``: ONE partition (so one
order), compacted (the latest snapshot per key is all that matters). The combiner runs
in the worker that holds subject partition 0 of the input (started when faust assigns
it, stopped when it is revoked): faust's group gives that partition to exactly one live
worker, so no second consumer group and no second membership protocol are needed, and a
rebalance moves the combiner with partition 0. (A worker that has lost partition 0 but
does not know it yet could emit too: its tables are the same tables with the same record
ids, recognisable duplicates.) It reads the aggregates topic from the start with a
group-less consumer: that is its restore -- the partials rebuild every open window, and
the ``#e`` entries (what was emitted: revision, content digest, closed, what each entry
released) bring back the revisions, so a window emitted before the crash is not emitted
again unless it changed (then with the next revision), and a table emitted again after a
crash mid-emission is the same table with the same record id. It emits only once it has
read to the end (as the consent restore does).

Every message on the aggregates topic carries a worker MAC (the changelog key, over the
message's key and value under the label ``aggregates``, so it never passes for a consent
changelog entry or the other way round): a partial, heartbeat or emission entry without
a valid one is ignored, counted (``gateway_aggregate_rejected_total``) and logged.

**Emission.** For the tables due in a round :func:`~gateway.aggregates.emit` makes:
their ``aggregated`` records to the disclosure topic (with the record MAC, as every
record) acknowledged, THEN their sealed messages to the agents' topics, acknowledged,
then their ``#e`` entries. A crash in between emits the same tables again: same record
ids, same disclosure ids.

**Watermarks and idle partitions.** The combiner's watermark is the lowest of the
partitions' watermarks (each partition's latest ``occurred_at``, carried by its partials
and heartbeats). A partition that has no events would hold every window open forever, so:
a partition whose reported watermark has not moved for ``GATEWAY_AGGREGATE_IDLE_SECONDS``
(by the combiner's clock; a partition never heard from counts from when the combiner
finished its restore) counts as *caught up*: for that emission round its watermark is
taken as the highest of (every partition's watermark, the wall clock minus the idle
time). Once all partitions are idle, every window whose end (+ grace) the wall clock has
passed is emitted (and closed): the last windows of a burst of traffic go out without
waiting for more events. A partition that resumes holds windows back again, except those
closed meanwhile: its events for those are too late (``gateway_aggregate_ignored_total``).
Pick the idle time well above a rebalance (session timeout + restore): a partition whose
worker died is idle until it is restored elsewhere; and above the longest a partition
with a backlog waits for its next batch (a worker catching up on many partitions): the
rule sees no difference between no events and events not yet read (measured: 4 s was too
short for one worker catching up on 10,000 events over 6 partitions on 2 busy CPUs).

**Alignment.** The combiner holds a window until the slowest partition's event time has
passed it, so the windows it holds grow with how far apart in event time the partitions
are read. Live, they are read as they come and stay close; behind on a backlog, a worker
reads its partitions unevenly (measured on a million-event backlog: 22,000-44,000 events
apart, 4,700-8,400 windows held, the worker's memory growing with them). So the lane
pauses an input partition of its own that is behind (:data:`~gateway.stream.lane.ALIGN_BACKLOG`
events or more waiting) and more than the longest window and its grace ahead of the
slowest partition behind, until that one catches up (:class:`Alignment`). A partition
that is not behind is never paused and never holds the others back: an import of old
events on one partition does not delay live traffic on the others. Each worker aligns
the partitions it holds; workers do not align with each other.

Known limits: an event too late for its window is noted (``late``) without an event key
in the core's aggregator, so a crash between (a) and (b) in a batch that holds one counts
it late twice; closed windows' ``#e`` entries stay on the compacted topic (one per window
and agent), and are read at every combiner restore.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, cast

import orjson

from gateway.aggregates import AggregateTable, Aggregator, Combiner, Partial, emit, parse_window
from gateway.integrity import HEADER_MAC, WorkerMac, header
from gateway.kafka.clients import PRODUCER_MAX_REQUEST_BYTES
from gateway.stream import metrics
from gateway.stream.consent_store import AGGREGATE_KEY_PREFIX

if TYPE_CHECKING:
    from gateway.aggregates import Contribution
    from gateway.pipeline import Pipeline
    from gateway.policy import AggregateSpec, Policy
    from gateway.settings import Settings
    from gateway.stream.consent_store import ConsentStore
    from gateway.stream.protocol import Item, Sender

log = logging.getLogger("gateway.stream")

# Changelog keys of a partition's aggregates: '#' is never in a customer id.
AGG_PREFIX = AGGREGATE_KEY_PREFIX
# Aggregates topic keys: a partial, a heartbeat, an emission.
PARTIAL_PREFIX = "#p:"
HEARTBEAT_PREFIX = "#h:"
EMITTED_PREFIX = "#e:"
# The MAC label of the aggregates topic (inside the changelog MAC's key part).
_MAC_LABEL = b"aggregates\x1f"
# A window's partial is one message, a full snapshot that grows as the window fills
# (measured with agents.yaml's analytics agent: 1 MiB after 20,000 events in an hour on one
# partition, 2 MiB after 50,000): past half the producer's request limit, the worker says
# so while there is time to act (see BENCHMARKS.md, "aggregate partials grow").
PARTIAL_WARN_BYTES = PRODUCER_MAX_REQUEST_BYTES // 2


def aggregates_topic(settings: Settings) -> str:
    """The topic where partitions' partials meet the combiner (one partition)."""
    return f"{settings.app_id}-aggregates"


def aggregate_specs(policy: Policy) -> dict[str, AggregateSpec]:
    return {n: a.aggregate for n, a in policy.agents.items() if a.aggregate is not None}


def topic_mac(mac: WorkerMac, key: bytes, value: bytes | None) -> bytes:
    return mac.changelog(_MAC_LABEL + key, value)


def topic_mac_ok(mac: WorkerMac, key: bytes, value: bytes | None, got: bytes | None) -> bool:
    return mac.changelog_ok(_MAC_LABEL + key, value, got)


def is_aggregate_key(key: str) -> bool:
    """A consent changelog key of a partition's aggregates (not a customer)."""
    return key.startswith(AGG_PREFIX)


def _window_key(agent: str, size: int, start: int) -> str:
    return f"{AGG_PREFIX}{agent}:{size}:{start}"


def _watermark_key(agent: str) -> str:
    return f"{AGG_PREFIX}{agent}"


# --- the partitions' side -------------------------------------------------------------------


class WorkerAggregation:
    """The aggregators of the subject partitions this worker holds (see the module
    docstring)."""

    def __init__(self, policy: Policy, consent: ConsentStore, topic: str, mac: WorkerMac):
        self.specs = aggregate_specs(policy)
        self.consent = consent
        self.topic = topic
        self.mac = mac
        # partition -> (the consent store's generation they were built at, per agent)
        self._parts: dict[int, tuple[int, dict[str, Aggregator]]] = {}
        self._warned: set[tuple[str, int, tuple[int, int]]] = set()

    def aggregators(self, partition: int) -> dict[str, Aggregator]:
        """The partition's aggregators, built from its restored changelog entries when
        the partition was (re)assigned since they were last built."""
        gen = self.consent.generation(partition)
        got = self._parts.get(partition)
        if got is not None and got[0] == gen:
            return got[1]
        entries = self.consent.take_aggregate_entries(partition)
        aggs: dict[str, Aggregator] = {}
        windows: dict[str, list[Partial]] = {}
        for k, v in entries.items():
            parts = k[len(AGG_PREFIX) :].rsplit(":", 2)
            if len(parts) == 3:
                windows.setdefault(parts[0], []).append(Partial.from_json(orjson.loads(v)))
        for agent, spec in self.specs.items():
            agg = Aggregator(spec, agent, partition)
            agg.restore(windows.get(agent, ()))
            wm = entries.get(_watermark_key(agent))
            if wm is not None:
                agg.advance(int(orjson.loads(wm)["watermark"]))
            aggs[agent] = agg
        # Partitions revoked since: their aggregators go with their consent states.
        for p in [p for p, (g, _) in self._parts.items() if g != self.consent.generation(p)]:
            del self._parts[p]
        self._parts[partition] = (gen, aggs)
        return aggs

    def batch(self) -> AggregateBatch:
        return AggregateBatch(self)

    def event_times(self) -> dict[int, int]:
        """Each held partition's event time: the latest ``occurred_at`` decided on it
        (epoch seconds), for the partitions that have decided an event."""
        out: dict[int, int] = {}
        for p, (gen, aggs) in self._parts.items():
            if gen != self.consent.generation(p):
                continue
            marks = [a.watermark for a in aggs.values() if a.watermark is not None]
            if marks:
                out[p] = max(marks)
        return out

    def drift(self) -> int:
        """How far (seconds of event time) a partition may run ahead of the slowest one
        with a backlog: the longest window and its grace."""
        return max(
            (
                max(int(parse_window(w).total_seconds()) for w in spec.windows)
                + int(parse_window(spec.grace).total_seconds())
                for spec in self.specs.values()
            ),
            default=0,
        )

    def warn_large(self, agent: str, partition: int, window: tuple[int, int], size: int) -> None:
        """Say, once per window, that a window's partial is past PARTIAL_WARN_BYTES."""
        key = (agent, partition, window)
        if key in self._warned:
            return
        if len(self._warned) >= 10_000:  # bounded: old windows are long closed
            self._warned.clear()
        self._warned.add(key)
        log.warning(
            "aggregate window of %s (%d s from %d) on subject partition %d: its partial is "
            "%d KiB, past half the producer's %d KiB request limit. A partial holds every "
            "event and customer key its window counted and is written whole with each batch; "
            "one past the limit cannot be written and the batch fails. Give the agent "
            "shorter windows (its aggregate 'windows' in the policy) or the topics more "
            "partitions.",
            agent,
            window[0],
            window[1],
            partition,
            size // 1024,
            PRODUCER_MAX_REQUEST_BYTES // 1024,
        )

    def count_open(self) -> None:
        """Update the open-windows gauge of the partitions' side."""
        for agent in self.specs:
            held = sum(len(aggs[agent].windows) for _, aggs in self._parts.values())
            metrics.AGGREGATE_OPEN_WINDOWS.labels(agent, "partitions").set(held)


@dataclass
class AggregateBatch:
    """What one batch did to the partitions' aggregators (step 3), and what step 6
    writes for it."""

    owner: WorkerAggregation
    # (partition, agent) -> the windows the batch changed
    touched: dict[tuple[int, str], set[tuple[int, int]]] = field(default_factory=dict)
    # (partition, agent) -> the aggregator the batch added to. Kept: if the partition is
    # revoked or restored while the batch is out, step 6 must still write what THIS
    # batch counted (its markers go out too), not a rebuilt aggregator's windows.
    used: dict[tuple[int, str], Aggregator] = field(default_factory=dict)
    _outputs: tuple[list[Item], list[tuple[Item, int]]] | None = None

    def event(
        self, partition: int, occurred_at: datetime, contributions: Iterable[Contribution]
    ) -> None:
        """One event decided on ``partition``: every agent's watermark moves, and its
        contributions are added."""
        aggs = self.owner.aggregators(partition)
        by_agent = {c.agent: c for c in contributions}
        for agent, agg in aggs.items():
            self.used[(partition, agent)] = agg
            windows = self.touched.setdefault((partition, agent), set())
            c = by_agent.get(agent)
            if c is not None:
                windows.update(p.window for p in agg.add(c))
            agg.advance(occurred_at)

    @property
    def partitions(self) -> set[int]:
        return {p for p, _ in self.touched}

    def outputs(self, cl_topic: str) -> tuple[list[Item], list[tuple[Item, int]]]:
        """Step 6: (the aggregates topic's messages, the entries for the changelog topic
        ``cl_topic`` with their partitions). Expires the windows past end + grace; made
        once per batch (steps 5 and 6 each take their part)."""
        if self._outputs is None:
            self._outputs = self._make_outputs(cl_topic)
        return self._outputs

    def _make_outputs(self, cl_topic: str) -> tuple[list[Item], list[tuple[Item, int]]]:
        owner = self.owner
        topic_items: list[Item] = []
        changelog: list[tuple[Item, int]] = []
        largest: dict[str, int] = {}
        for (partition, agent), windows in sorted(self.touched.items()):
            agg = self.used[(partition, agent)]
            if agg.watermark is None:
                continue
            live = {w: agg.windows[w] for w in windows if w in agg.windows}
            expired = {p.window: p for p in agg.expire()}
            for w in sorted(windows):
                partial = live.get(w) or expired.get(w)
                if partial is None:
                    continue
                partial.watermark = max(partial.watermark, agg.watermark)
                value = orjson.dumps(partial.to_json())
                largest[agent] = max(largest.get(agent, 0), len(value))
                if len(value) > PARTIAL_WARN_BYTES:
                    owner.warn_large(agent, partition, w, len(value))
                tkey = f"{PARTIAL_PREFIX}{agent}:{partition}:{w[0]}:{w[1]}".encode()
                topic_items.append(
                    (owner.topic, tkey, value, [(HEADER_MAC, topic_mac(owner.mac, tkey, value))])
                )
                if w not in expired:
                    ckey = _window_key(agent, *w).encode()
                    changelog.append(
                        (
                            (
                                cl_topic,
                                ckey,
                                value,
                                [(HEADER_MAC, owner.mac.changelog(ckey, value))],
                            ),
                            partition,
                        )
                    )
            hkey = f"{HEARTBEAT_PREFIX}{agent}:{partition}".encode()
            hval = orjson.dumps({"watermark": agg.watermark})
            topic_items.append(
                (owner.topic, hkey, hval, [(HEADER_MAC, topic_mac(owner.mac, hkey, hval))])
            )
            wkey = _watermark_key(agent).encode()
            changelog.append(
                ((cl_topic, wkey, hval, [(HEADER_MAC, owner.mac.changelog(wkey, hval))]), partition)
            )
            for w in sorted(expired):
                ckey = _window_key(agent, *w).encode()
                # A tombstone: compaction forgets the window.
                tomb = (cl_topic, ckey, None, [(HEADER_MAC, owner.mac.changelog(ckey, None))])
                changelog.append((cast("Item", tomb), partition))
        for agent, size in largest.items():
            metrics.AGGREGATE_PARTIAL_BYTES.labels(agent).set(size)
        owner.count_open()
        return topic_items, changelog


class Alignment:
    """Which input partitions to pause so that a worker behind on a backlog reads its
    partitions evenly in event time (see the module docstring, *Alignment*).

    A partition counts as *behind* when ``backlog`` or more of its events wait. Among the
    partitions behind, one whose event time is more than ``drift`` seconds past the
    slowest one's is paused until that one catches up. A partition that is not behind
    (live traffic) is never paused, and it does not hold the others back."""

    def __init__(self, drift: int, backlog: int):
        self.drift = drift
        self.backlog = backlog
        self.paused: set[int] = set()

    def update(self, event_times: dict[int, int], lags: dict[int, int]) -> set[int]:
        """The partitions to pause now (the held ones: ``lags`` names them)."""
        behind = {p for p, lag in lags.items() if lag >= self.backlog and p in event_times}
        if len(behind) < 2:
            self.paused = set()
            return self.paused
        slowest = min(event_times[p] for p in behind)
        self.paused = {p for p in behind if event_times[p] > slowest + self.drift}
        return self.paused


# --- the combiner ---------------------------------------------------------------------------


def _released_json(released: dict[str, dict[Any, bool]] | None) -> dict[str, Any] | None:
    if released is None:
        return None
    return {t: [[list(k), v] for k, v in entries.items()] for t, entries in released.items()}


def _released_from(doc: dict[str, Any] | None) -> dict[str, dict[Any, bool]] | None:
    if doc is None:
        return None
    return {t: {tuple(k): bool(v) for k, v in entries} for t, entries in doc.items()}


def table_digest(table: AggregateTable) -> str:
    """The digest the core's Combiner keeps per window revision (same formula)."""
    return hashlib.sha256(
        orjson.dumps([table.customers, table.late, table.tables], option=orjson.OPT_SORT_KEYS)
    ).hexdigest()


# Reads the aggregates topic from the start: yields batches of (key, value, headers),
# and tells when it has read to the end.
class TopicReader(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def fetch(self) -> list[tuple[bytes | None, bytes | None, Any]]: ...
    async def at_end(self) -> bool: ...


class KafkaTopicReader:
    """A group-less consumer of the aggregates topic's one partition, from the start."""

    def __init__(
        self, bootstrap: str, topic: str, security: dict[str, Any] | None = None, quiet: float = 2.0
    ):
        self.bootstrap = bootstrap
        self.topic = topic
        self.security = security or {}
        self.quiet = quiet
        self.consumer: Any = None
        self.end: int = 0
        self.empty = False
        self.reached_at: float | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self.tp = TopicPartition(self.topic, 0)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap.split(","),
            enable_auto_commit=False,
            group_id=None,
            **self.security,
        )
        await self.consumer.start()
        self.consumer.assign([self.tp])
        await self.consumer.seek_to_beginning(self.tp)
        self.end = (await self.consumer.end_offsets([self.tp]))[self.tp]

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None

    async def fetch(self) -> list[tuple[bytes | None, bytes | None, Any]]:
        got = await self.consumer.getmany(timeout_ms=200, max_records=5000)
        out = [(m.key, m.value, m.headers) for ms in got.values() for m in ms]
        self.empty = not out
        return out

    async def at_end(self) -> bool:
        # Past the reported end, and then either a fetch found nothing, or `quiet`
        # seconds went by (the workers may never pause): ListOffsets alone under-reports
        # on some brokers (see consent_store).
        if await self.consumer.position(self.tp) < self.end:
            return False
        now = time.monotonic()
        if self.reached_at is None:
            self.reached_at = now
        return self.empty or now - self.reached_at >= self.quiet


class CombinerService:
    """The combiner of every aggregate agent (see the module docstring): restore from the
    aggregates topic, then combine, apply the idle rule, emit."""

    def __init__(
        self,
        pipeline: Pipeline,
        reader: TopicReader,
        sender: Sender,
        *,
        topic: str,
        disclosure_topic: str,
        partitions: int,
        mac: WorkerMac,
        idle_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self.pipeline = pipeline
        self.reader = reader
        self.sender = sender
        self.topic = topic
        self.disclosure_topic = disclosure_topic
        self.partitions = partitions
        self.mac = mac
        self.idle = idle_seconds
        self.clock = clock
        self.wall = wall
        specs = aggregate_specs(pipeline.policy)
        self.combiners = {n: Combiner(s, n, partitions) for n, s in specs.items()}
        # (agent, partition) -> the watermark the partition reported, and when it moved.
        self.reported: dict[tuple[str, int], int] = {}
        self.moved: dict[tuple[str, int], float] = {}
        self.caught_up_at: float | None = None
        self.emitted = 0

    # --- reading ----------------------------------------------------------------------

    def apply(self, key: bytes | None, value: bytes | None, headers: Any) -> None:
        """One message of the aggregates topic."""
        if key is None or value is None:
            return  # a tombstone (compaction's business)
        if not topic_mac_ok(self.mac, key, value, header(headers, HEADER_MAC)):
            metrics.AGGREGATE_REJECTED.inc()
            log.warning("ignored a message on the aggregates topic without a valid worker MAC")
            return
        k = key.decode()
        doc = orjson.loads(value)
        if k.startswith(PARTIAL_PREFIX):
            # The event keys make a partition's recount idempotent; combining needs only
            # the cells and subjects, and the combiner holds every open window's partial
            # of every partition: it does not keep them.
            doc["events"] = ()
            partial = Partial.from_json(doc)
            c = self.combiners.get(partial.agent)
            if c is None:
                return
            before = c.ignored
            c.update(partial)
            if c.ignored > before:
                metrics.AGGREGATE_IGNORED.labels(partial.agent).inc()
            self._report(partial.agent, partial.partition, partial.watermark)
        elif k.startswith(HEARTBEAT_PREFIX):
            agent, part = k[len(HEARTBEAT_PREFIX) :].rsplit(":", 1)
            c = self.combiners.get(agent)
            if c is None:
                return
            c.heartbeat(int(part), int(doc["watermark"]))
            self._report(agent, int(part), int(doc["watermark"]))
        elif k.startswith(EMITTED_PREFIX):
            self._restore_emitted(doc)

    def _report(self, agent: str, partition: int, watermark: int) -> None:
        key = (agent, partition)
        if watermark > self.reported.get(key, -(2**62)):
            self.reported[key] = watermark
            self.moved[key] = self.clock()
            metrics.AGGREGATE_WATERMARK.labels(agent, str(partition)).set(watermark)

    def _restore_emitted(self, doc: dict[str, Any]) -> None:
        c = self.combiners.get(doc["agent"])
        if c is None:
            return
        key = (int(doc["size"]), int(doc["start"]))
        rev = int(doc["revision"])
        released = _released_from(doc.get("released"))
        if released is not None:
            c.released[key] = released
        if doc["closed"]:
            c.latest.pop(key, None)
            c.dirty.discard(key)
            c.revisions.pop(key, None)
            c.closed[key] = rev
        else:
            # Not marked clean: partials after the emission may have changed it; due()
            # emits it again only if its content differs (then as rev + 1).
            c.revisions[key] = (rev, doc["digest"])

    # --- emitting ---------------------------------------------------------------------

    def due(self) -> list[AggregateTable]:
        """The tables due now, with the idle rule applied for this round."""
        now = self.clock()
        since = self.caught_up_at if self.caught_up_at is not None else now
        out: list[AggregateTable] = []
        for agent, c in self.combiners.items():
            idle = [
                p
                for p in range(self.partitions)
                if now - self.moved.get((agent, p), since) >= self.idle
            ]
            real = dict(c.watermarks)
            if idle:
                forced = max([*real.values(), int(self.wall() - self.idle)])
                for p in idle:
                    c.watermarks[p] = max(real.get(p, forced), forced)
            try:
                out += c.due()
            finally:
                # The real watermarks again: a partition that resumes holds windows back.
                for p in idle:
                    if p in real:
                        c.watermarks[p] = real[p]
                    else:
                        c.watermarks.pop(p, None)
        return out

    async def emit_tables(self, tables: Sequence[AggregateTable]) -> None:
        """The tables' records first, then their sealed messages, then what was emitted:
        three sends, each acknowledged before the next, whatever the number of tables (a
        send per table and step fell behind a worker catching up on a backlog: the
        windows it closes come faster than one round trip each)."""
        if not tables:
            return
        record_mac = self.mac.record
        records: list[Item] = []
        messages: list[Item] = []
        entries: list[Item] = []
        for table in tables:
            rec, msg = emit(self.pipeline, table)
            value = rec.to_json()
            records.append(
                (
                    self.disclosure_topic,
                    rec.subject_ref.encode(),
                    value,
                    [("record_id", rec.record_id.encode()), (HEADER_MAC, record_mac(value))],
                )
            )
            messages.append(
                (msg.topic, msg.key, msg.value, [("disclosure_id", msg.disclosure_id.encode())])
            )
            c = self.combiners[table.agent]
            released = c.released.get((table.size, table.start))
            doc = {
                "agent": table.agent,
                "size": table.size,
                "start": table.start,
                "revision": table.revision,
                "digest": table_digest(table),
                "closed": table.final,
                "released": _released_json(released),
            }
            ekey = f"{EMITTED_PREFIX}{table.agent}:{table.size}:{table.start}".encode()
            evalue = orjson.dumps(doc)
            entries.append(
                (self.topic, ekey, evalue, [(HEADER_MAC, topic_mac(self.mac, ekey, evalue))])
            )
        await self.sender.send(records, what="aggregate records")
        await self.sender.send(messages, what="aggregate messages")
        await self.sender.send(entries, [0] * len(entries), what="aggregate emissions")
        for table in tables:
            metrics.AGGREGATES_EMITTED.labels(table.agent).inc()
        self.emitted += len(tables)

    async def run(self) -> None:
        """Restore, then combine and emit until cancelled."""
        if not self.combiners:
            return
        await self.reader.start()
        try:
            while True:
                for key, value, headers in await self.reader.fetch():
                    self.apply(key, value, headers)
                if self.caught_up_at is None:
                    if not await self.reader.at_end():
                        continue
                    self.caught_up_at = self.clock()
                    log.info("aggregate combiner restored; emitting")
                tables = self.due()
                if tables:
                    await self.emit_tables(tables)
                for agent, c in self.combiners.items():
                    metrics.AGGREGATE_OPEN_WINDOWS.labels(agent, "combiner").set(len(c.latest))
        finally:
            await self.reader.stop()


class CombinerTask:
    """Starts the combiner when this worker is given subject partition 0, stops it when
    that partition is revoked."""

    def __init__(self, make: Callable[[], CombinerService]):
        self.make = make
        self.task: asyncio.Task[None] | None = None
        self.service: CombinerService | None = None

    def start(self) -> None:
        if self.task is not None and not self.task.done():
            return
        self.service = self.make()
        self.task = asyncio.get_running_loop().create_task(self._run(self.service))

    async def _run(self, service: CombinerService) -> None:
        try:
            await service.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - logged; the next assignment starts it again
            log.exception("aggregate combiner failed")

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
