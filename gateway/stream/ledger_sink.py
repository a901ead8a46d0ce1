"""The ledger sink: the disclosure topic into the disclosure log store.

Its work per record is a database write, so it stays an ordinary faust agent taking the
topic in batches: records are appended per shard (the disclosure topic's partition), a
record already in the store counts as a duplicate (a replay after a restart) and is not
appended again.

The sink logs only what a gateway worker wrote and never stops on a message it cannot
log. A message without a valid worker MAC (``gateway-mac``, :class:`WorkerMac`), one
that is not a record, and a record the store rejects (isolated from the records around
it, which are appended) are *quarantined* (gateway.ledger.quarantine): kept in the ledger
database outside the log, counted (``gateway_ledger_quarantined_total``) and listed by
``gateway log quarantine``; the sink then carries on. When the store itself cannot take
anything (database down or locked, the log altered behind the gateway), nothing is
quarantined: the sink waits and retries the batch, and its lag and stall show on the
health pages (:class:`SinkProgress`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import faust
import orjson

from gateway.erasure import HEADER_KIND, ErasureRequest, is_erasure_request
from gateway.integrity import HEADER_MAC, WorkerMac, header, header_pairs
from gateway.ledger.quarantine import (
    Quarantined,
    Reason,
    add_quarantined,
    append_isolating,
    describe_error,
)
from gateway.ledger.store import LedgerStore
from gateway.records import DecisionRecord
from gateway.runtime import Core
from gateway.settings import Settings
from gateway.stream import metrics
from gateway.stream.notices import ErasureNotifier, Item
from gateway.stream.sender import BatchSender

log = logging.getLogger("gateway.stream")

# A worker's control message on the disclosure topic (HEADER_KIND names what it is) is
# not a record: one of a known kind is passed over, not quarantined.
CONTROL_KINDS: Final = frozenset({b"erasure_request"})

_RETRY_FIRST: Final = 0.5
_RETRY_MAX: Final = 10.0


@dataclass(frozen=True)
class SinkMessage:
    """One message of the disclosure topic, as the sink needs it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def of(cls, message: Any) -> SinkMessage:
        return cls(
            message.topic,
            message.partition,
            message.offset,
            message.key,
            message.value if message.value is not None else b"",
            tuple(header_pairs(message.headers)),
        )


@dataclass
class SinkBatch:
    """What one batch came to."""

    appended: int = 0
    duplicates: int = 0
    control: int = 0
    # The workers' control messages (MAC verified, a known HEADER_KIND, e.g. erasure
    # requests), in the order read: for the caller to act on once ``process`` returned,
    # when every record of the batch (those before each request included) is in the log.
    controls: list[SinkMessage] = field(default_factory=list)
    # Newly quarantined (a position quarantined before, read again, is not in here).
    quarantined: list[Quarantined] = field(default_factory=list)


class LedgerSink:
    """The sink's work on a batch of messages, without faust: sort out what may not be
    logged, append the rest, quarantine the rest of the rest. Synchronous (run it in a
    thread); a store fault is raised, and the whole batch may then be processed again
    (appends and quarantine are both idempotent)."""

    def __init__(self, store: LedgerStore, mac: WorkerMac):
        self.store = store
        self.mac = mac

    def process(self, messages: Sequence[SinkMessage]) -> SinkBatch:
        out = SinkBatch()
        aside: list[Quarantined] = []
        by_shard: dict[int, list[tuple[SinkMessage, DecisionRecord]]] = {}
        for m in messages:
            got = header(m.headers, HEADER_MAC)
            if got is None or not self.mac.record_ok(m.value, got):
                reason: Reason = "unsigned" if got is None else "bad_mac"
                what = "no worker MAC" if got is None else "a worker MAC that does not verify"
                aside.append(
                    Quarantined(
                        m.topic,
                        m.partition,
                        m.offset,
                        reason,
                        f"{what}: not written by a gateway worker",
                        m.value,
                        m.key,
                        mac_ok=False,
                        record_id=_claimed_id(m.value),
                    )
                )
                continue
            kind = header(m.headers, HEADER_KIND)
            try:
                if kind in CONTROL_KINDS:
                    # Checked here, so that whoever acts on it gets a valid request.
                    ErasureRequest.from_json(m.value)
                    out.control += 1
                    out.controls.append(m)
                    continue
                if kind is not None:
                    raise ValueError(f"unknown message kind {kind[:40]!r}")
                rec = DecisionRecord.from_json(m.value)
            except Exception as exc:
                aside.append(
                    Quarantined(
                        m.topic,
                        m.partition,
                        m.offset,
                        "malformed",
                        describe_error(exc),
                        m.value,
                        m.key,
                        mac_ok=True,
                        record_id=_claimed_id(m.value),
                    )
                )
                continue
            by_shard.setdefault(m.partition, []).append((m, rec))
        for shard, items in sorted(by_shard.items()):
            done = append_isolating(self.store, [rec for _, rec in items], shard)
            out.appended += done.appended
            out.duplicates += done.duplicates
            for index, error in done.rejected:
                m, rec = items[index]
                aside.append(
                    Quarantined(
                        m.topic,
                        m.partition,
                        m.offset,
                        "unstorable",
                        describe_error(error),
                        m.value,
                        m.key,
                        mac_ok=True,
                        record_id=rec.record_id,
                    )
                )
        out.quarantined = add_quarantined(self.store, aside)
        return out


def _claimed_id(value: bytes) -> str | None:
    """The record id a message claims, if it has one (for the quarantine listing)."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    rid = doc.get("record_id") if isinstance(doc, dict) else None
    return rid if isinstance(rid, str) else None


class SinkProgress:
    """How far the sink is: per assigned partition of the disclosure topic, the next
    offset it has not dealt with, its lag behind the partition's end, and whether it is
    *stalled*: records waiting (lag > 0) and no progress for ``stall_seconds``."""

    def __init__(self, topic: str, stall_seconds: float):
        self.topic = topic
        self.stall_seconds = stall_seconds
        self.next_offset: dict[int, int] = {}
        self.lag: dict[int, int] = {}
        # When the sink last moved on (or had nothing to do, or got new partitions).
        self.last_progress = time.monotonic()
        self.stalled = False
        # The error of the batch being retried, if any.
        self.error: str | None = None
        self.batches = 0
        self.assigned: list[int] = []

    def done(self, messages: Iterable[SinkMessage]) -> None:
        for m in messages:
            if m.offset + 1 > self.next_offset.get(m.partition, -1):
                self.next_offset[m.partition] = m.offset + 1
        self.batches += 1
        self.error = None
        self.last_progress = time.monotonic()

    def reassigned(self, partitions: Iterable[int]) -> None:
        """New assignment: what another sink did meanwhile is not known here."""
        self.assigned = sorted(partitions)
        for p in list(self.next_offset):
            if p not in self.assigned:
                del self.next_offset[p]
        for p in list(self.lag):
            if p not in self.assigned:
                del self.lag[p]
                metrics.SINK_LAG.remove(str(p))
        self.last_progress = time.monotonic()

    def observe(self, consumer: Any) -> None:
        """Update lag and stall from the consumer's view of the partitions' ends (the
        high-water marks of its fetches, which are right on every broker we run on)."""
        try:
            tps = [tp for tp in consumer.assignment() if tp.topic == self.topic]
        except Exception:  # not started yet
            return
        for tp in tps:
            try:
                end = consumer.highwater(tp)
            except Exception:
                end = None
            if end is None or end < 0:
                continue
            start = self.next_offset.get(tp.partition)
            if start is None:
                # Nothing dealt with since the assignment: it starts at the group's
                # committed offset (faust keeps it; private, so best effort).
                committed = getattr(consumer, "_committed_offset", {}).get(tp)
                start = committed if isinstance(committed, int) and committed > 0 else 0
            self.lag[tp.partition] = max(0, end - start)
            metrics.SINK_LAG.labels(str(tp.partition)).set(self.lag[tp.partition])
        now = time.monotonic()
        if self.total_lag() == 0:
            self.last_progress = now  # nothing waiting: idle, not stalled
        self.stalled = now - self.last_progress > self.stall_seconds
        metrics.SINK_STALLED.set(1 if self.stalled else 0)

    def total_lag(self) -> int:
        return sum(self.lag.values())

    def view(self) -> dict[str, Any]:
        return {
            "lag": self.total_lag(),
            "lag_by_partition": {str(p): n for p, n in sorted(self.lag.items())},
            "stalled": self.stalled,
            "seconds_since_progress": round(time.monotonic() - self.last_progress, 1),
            "stall_seconds": self.stall_seconds,
            "error": self.error,
        }


def add_ledger_sink(
    app: faust.App, settings: Settings, core: Core | None, stats: dict[str, int]
) -> SinkProgress:
    """Append the disclosure topic's records to the disclosure log store, and sign a
    checkpoint when caught up (at most every 2 s) and every 10 s. Returns the sink's
    progress, for the health pages."""
    from gateway.keys import load_signing_key, load_worker_key, worker_key_path
    from gateway.ledger import open_store

    signer = core.signing_key if core is not None else load_signing_key(settings.signing_key_path)
    worker_key = (
        core.worker_key if core is not None else load_worker_key(worker_key_path(settings.keys_dir))
    )
    store = open_store(
        settings.ledger_url,
        signer=signer,
        checkpoint_every=settings.checkpoint_every,
        origin=settings.log_origin,
    )
    sink = LedgerSink(store, WorkerMac(worker_key))
    # Erasure notices need the policy, the agents' keys and the sealers: the core. (A sink
    # started without one -- a tool, a test -- logs requests and sends nothing.)
    notifier = None
    if core is not None:
        sender = BatchSender(app)

        async def send(items: Sequence[Item], what: str) -> None:
            await sender.send(items, what=what)

        async def log_records(records: Sequence[DecisionRecord], shard: int) -> None:
            await asyncio.to_thread(store.append, list(records), shard)

        notifier = ErasureNotifier(core.pipeline, store, send, log_records)
    progress = SinkProgress(settings.disclosure_topic, settings.sink_stall_seconds)
    source = app.topic(
        settings.disclosure_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    async def process(messages: list[SinkMessage]) -> SinkBatch:
        """The batch, retried until the store takes it: the sink never skips a record
        because the store is down, and never crashes (faust would restart the agent on
        the same batch, with nothing to show for it)."""
        delay = _RETRY_FIRST
        while True:
            try:
                # The store is synchronous (SQLAlchemy): keep the event loop free.
                return await asyncio.to_thread(sink.process, messages)
            except Exception as exc:
                progress.error = describe_error(exc)
                metrics.LEDGER_RETRIES.inc()
                log.error(
                    "the ledger sink cannot store a batch of %d message(s) (partitions %s),"
                    " retrying in %.1f s: %s",
                    len(messages),
                    ",".join(str(p) for p in sorted({m.partition for m in messages})),
                    delay,
                    progress.error,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)

    @app.agent(source, name="ledger-sink")
    async def ledger_agent(stream: faust.StreamT) -> None:
        # faust's stream interface does not declare noack_take; its Stream has it.
        async for events in cast(faust.Stream, stream).noack_take(1000, within=0.05):
            messages = [SinkMessage.of(e.message) for e in events]
            result = await process(messages)
            # Every record of the batch is in the log now, those before each erasure
            # request included: its notices can be built (and are sent before the batch
            # is acknowledged, so a crash sends them again, under the same ids).
            for control in result.controls:
                if notifier is not None and is_erasure_request(control.headers):
                    request = ErasureRequest.from_json(control.value)
                    await notifier.notify(request, control.partition)
            metrics.LEDGER_DUPLICATES.inc(result.duplicates)
            metrics.LEDGER_APPENDED.inc(result.appended)
            for q in result.quarantined:
                metrics.LEDGER_QUARANTINED.labels(q.reason).inc()
                if q.reason == "malformed":
                    metrics.LEDGER_MALFORMED.inc()
                # Where and why, never the content.
                log.warning(
                    "quarantined the message at %s partition %d offset %d (%s): %s",
                    q.topic,
                    q.partition,
                    q.offset,
                    q.reason,
                    q.error,
                )
            stats["ledger_appended"] += result.appended
            stats["ledger_seen"] += len(messages)
            stats["ledger_quarantined"] += len(result.quarantined)
            for e in events:
                await stream.ack(e)
            progress.done(messages)
            # Caught up (a short batch): sign a checkpoint over what is in, at most every
            # couple of seconds, so a quiet log is never long without one.
            loop_time = asyncio.get_running_loop().time()
            if len(events) < 1000 and loop_time - last_checkpoint[0] > 2.0:
                last_checkpoint[0] = loop_time
                try:
                    await asyncio.to_thread(store.checkpoint)
                except Exception as exc:  # the next batch or the timer tries again
                    log.error(
                        "the ledger sink could not sign a checkpoint: %s", describe_error(exc)
                    )

    last_checkpoint = [0.0]

    @app.timer(interval=10.0)
    async def checkpoint() -> None:
        try:
            await asyncio.to_thread(store.checkpoint)
        except Exception as exc:  # a timer that raises would stop the worker
            log.error("the ledger sink could not sign a checkpoint: %s", describe_error(exc))

    @app.timer(interval=1.0)
    async def watch() -> None:
        progress.observe(app.consumer)

    # faust calls these as handler(app, partitions, signal=...).
    @app.on_partitions_assigned.connect
    async def _assigned(*args: Any, **kwargs: Any) -> None:
        _app, assigned = args
        progress.reassigned(tp.partition for tp in assigned if tp.topic == progress.topic)

    return progress
