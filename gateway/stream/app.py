"""The faust app: input topic -> consent table + policy core -> disclosure topic, then agent
topics; and the ledger sink: disclosure topic -> disclosure log store.

faust's per-event machinery is the throughput cost to beat: for every message its
consumer creates two tasks (``wait_first``), passes it through the conductor and a stream
queue, and wakes the agent -- about 200 µs of Python per event on a small core, more than
the policy work. So the gateway's input topic takes a *batch lane*: faust's own consumer
(group membership, fetching, flow control, offsets, commits) hands each fetched batch of
input messages straight to the gateway, which acknowledges them itself, only after every
output of the batch is acknowledged by the broker. Outputs go out as hand-built producer
batches per topic partition (see :class:`BatchSender`) rather than one ``send`` each. The
ledger sink, whose work per record is a database write, stays an ordinary batched agent.

The consent table is changelog-backed and keyed by customer id, like the input topic, so
a subject's events and state share a partition.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, Sequence
from time import monotonic
from typing import Any

import faust
import orjson
from aiokafka.partitioner import DefaultPartitioner
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.records import DecisionRecord
from gateway.runtime import Core
from gateway.settings import Settings
from gateway.stream import metrics
from gateway.stream.batch import BatchProcessor, Item
from gateway.stream.consent_store import OFFSET_KEY, ConsentStore, offset_marker

log = logging.getLogger("gateway.stream")

CONSENT_TABLE = "consent"


def changelog_topic(settings: Settings) -> str:
    return f"{settings.app_id}-{CONSENT_TABLE}-changelog"


# --- the batch lane -----------------------------------------------------------------------

Lane = Callable[[list[Message]], Awaitable[None]]


# faust asks the broker to hold an empty fetch for up to 1.5 s. Kafka answers as soon as
# data arrives; Tansu (the embedded broker) does not, so an event that arrived while the
# partitions were idle waited up to 1.5 s (measured: p50 1.6 s at 1k events/s). Much
# shorter is no good either: Tansu's memory storage scans a partition's record batches on
# each fetch within the wait, and with 5 ms a consumer stalls for good once a partition
# holds some thousands of batches (reproduced with a plain aiokafka consumer). 25 ms
# keeps the added latency to a few ms, survives a million-event backlog, and costs an
# idle worker ~5 % of a core (and Tansu as much). Under load nothing changes: every
# fetch finds data at once. A ``fetch_max_wait_ms`` setting, when there is one,
# overrides it.
FETCH_MAX_WAIT_MS = 25


class LaneConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read when the consumer starts, so setting it here is enough.
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms",
                                              FETCH_MAX_WAIT_MS)
        return consumer


class LaneConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer, except that messages of topics with a *lane*
    (``app.batch_lanes``: topic -> handler) go to that handler a fetched batch at a time
    instead of one by one through the conductor, a stream queue and an agent.

    This is faust's own ``_drain_messages`` loop with that one change: the same fetch
    (flow control, rebalance generations, paused partitions), the same read-offset and
    gap bookkeeping, each lane message tracked as pending (``track_message``) before it
    is handed over; the handler acknowledges it (``consumer.ack``) when done, and faust
    commits acknowledged offsets as usual. Other topics are delivered exactly as before.
    """

    def _new_consumer_thread(self) -> LaneConsumerThread:
        return LaneConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - I/O loop
        lanes: dict[str, Lane] = getattr(self.app, "batch_lanes", None) or {}
        if not lanes:
            await super()._drain_messages(fetcher)
            return
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        track = self.track_message
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                ait = getmany(timeout=1.0)
                # As faust does: getmany may return at once for a long time.
                await self.sleep(0)
                if self.should_stop:
                    continue
                batches: dict[str, list[Message]] = {}
                async for tp, message in ait:
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is not None and offset < r_offset:
                        continue  # read before a seek back: faust drops these too
                    gap = offset - (r_offset or 0)
                    if gap > 1 and r_offset and acks_enabled_for(message.topic):
                        await self._add_gap(tp, r_offset + 1, offset)
                    if message.topic in lanes:
                        track(message)
                        batches.setdefault(message.topic, []).append(message)
                    else:
                        await self._maybe_commit_every()
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    set_read_offset(tp, offset)
                for topic, messages in batches.items():
                    await lanes[topic](messages)
                await self._maybe_commit_every()
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _maybe_commit_every(self) -> None:
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()


class LaneTransport(faust_aiokafka.Transport):
    Consumer = LaneConsumer


class GatewayApp(faust.App):
    """A faust app whose consumer knows batch lanes (see :class:`LaneConsumer`)."""

    batch_lanes: dict[str, Lane]
    fetch_max_wait_ms: int

    def _new_transport(self) -> Any:
        return LaneTransport(self.conf.broker_consumer, self)


class BatchSender:
    """Sends many messages at once on faust's aiokafka producer, as hand-built batches
    (``create_batch``/``send_batch``) per topic partition: aiokafka's ``send`` costs tens
    of µs of Python per message (a future, partitioning, accumulator bookkeeping, and
    with linger 0 often a produce request of its own); appending to a batch costs a few.

    Partitions are chosen as ``send`` chooses them (murmur2 of the key over the topic's
    partitions), so no message lands anywhere else than it did; keys repeat per subject,
    so the choice is cached (bounded).
    """

    _CACHE_MAX = 200_000

    def __init__(self, app: faust.App):
        self.app = app
        self._partitioner = DefaultPartitioner()
        self._partition_of: dict[tuple[str, int, bytes], int] = {}

    async def send_many(self, items: Sequence[Item],
                        partitions: Sequence[int | None] | None = None
                        ) -> list[BaseException | None]:
        """Send ``items``; per item, None once the broker acknowledged it, or the error."""
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        topic_parts: dict[str, list[int]] = {}
        groups: dict[tuple[str, int], list[int]] = {}
        cache = self._partition_of
        for i, (topic, key, _value, _headers) in enumerate(items):
            p = partitions[i] if partitions is not None else None
            if p is None:
                parts = topic_parts.get(topic)
                if parts is None:
                    parts = topic_parts[topic] = list(await producer.partitions_for(topic))
                ck = (topic, len(parts), key) if key is not None else None
                p = cache.get(ck) if ck is not None else None  # type: ignore[arg-type]
                if p is None:
                    p = self._partitioner(key, parts, parts)
                    if ck is not None:
                        if len(cache) >= self._CACHE_MAX:
                            cache.clear()  # bounded: memory stays flat
                        cache[ck] = p
            groups.setdefault((topic, p), []).append(i)
        sent: list[tuple[Any, list[int]]] = []
        for (topic, p), idxs in groups.items():
            batch = producer.create_batch()
            in_batch: list[int] = []
            for i in idxs:
                _, key, value, headers = items[i]
                if batch.append(key=key, value=value, timestamp=None,
                                headers=headers or []) is None:
                    if in_batch:
                        batch.close()
                        sent.append((await producer.send_batch(batch, topic, partition=p),
                                     in_batch))
                        batch, in_batch = producer.create_batch(), []
                    if batch.append(key=key, value=value, timestamp=None,
                                    headers=headers or []) is None:
                        # Larger than a whole batch: the ordinary send takes it alone.
                        sent.append((await producer.send(topic, value, key=key, partition=p,
                                                         headers=headers), [i]))
                        continue
                in_batch.append(i)
            if in_batch:
                batch.close()
                sent.append((await producer.send_batch(batch, topic, partition=p), in_batch))
        results: list[BaseException | None] = [None] * len(items)
        outcomes = await asyncio.gather(*(f for f, _ in sent), return_exceptions=True)
        for (_, idxs), outcome in zip(sent, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                for i in idxs:
                    results[i] = outcome
        return results


# --- the app --------------------------------------------------------------------------------

# Python's cyclic GC runs after every 700 net container allocations; a batch of events
# allocates hundreds of thousands, nearly all freed by reference counting, and each
# collection also walks the batch still in flight and faust's long-lived objects: about
# a tenth of a worker's time went to collections that found next to nothing. Fewer,
# larger young collections, and start-up objects frozen out of the collector's view.
_GC_THRESHOLDS = (20_000, 50, 100)


def _tune_gc() -> None:
    gc.set_threshold(*_GC_THRESHOLDS)
    gc.freeze()



def create_app(settings: Settings, core: Core | None, *, gateway: bool = True,
               ledger: bool = True) -> faust.App:
    brokers = [f"kafka://{h.strip()}" for h in settings.bootstrap_servers.split(",")]
    app = GatewayApp(
        settings.app_id,
        broker=brokers,
        store="memory://",
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        producer_acks=-1,
        # One batch per topic partition and phase (see BatchSender): aiokafka queues one
        # batch per partition at a time, so small batches would wait on each other.
        producer_max_batch_size=512 * 1024,
        producer_max_request_size=2 * 1024 * 1024,
        consumer_auto_offset_reset="earliest",
        # faust fetches up to 4 MiB per partition; the lane holds a whole fetch until it
        # is processed, so with a backlog on every partition the worker's RSS jumped by
        # tens of MiB per fetch. 1 MiB is still thousands of events per partition.
        consumer_max_fetch_size=1024 * 1024,
        processing_guarantee="at_least_once",
        broker_commit_interval=1.0,
        # No faust tables (see consent_store): nothing for faust to recover.
        # A new group member gets its assignment after about half the session timeout on
        # some brokers (Tansu), and a killed worker's partitions move only after it: keep
        # it at the smallest value stock Kafka accepts (group.min.session.timeout.ms).
        broker_session_timeout=6.0,
        broker_heartbeat_interval=2.0,
        stream_wait_empty=False,
        # The web server serves health and metrics on loopback; faust's own table and
        # router views would expose consent state, so they are off.
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_tables_enabled=False,
        web_router_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        logging_config=None,
    )
    app.batch_lanes = {}
    app.fetch_max_wait_ms = getattr(settings, "fetch_max_wait_ms", FETCH_MAX_WAIT_MS)
    _tune_gc()

    @app.task
    async def _started() -> None:
        gc.freeze()  # what faust and the clients built while starting, too

    state: dict[str, Any] = {"processed": 0, "ledger_appended": 0, "ledger_seen": 0}

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "roles": [r for r, on in
                                                   (("gateway", gateway), ("ledger", ledger))
                                                   if on], **state})

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type; the exposition format is UTF-8.
        return web.bytes(generate_latest(metrics.REGISTRY),
                         content_type=CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4")

    if gateway:
        if core is None:
            raise ValueError("the gateway role needs the policy core")
        _add_gateway_agent(app, settings, core, state)
    if ledger:
        _add_ledger_agent(app, settings, core, state)
    app.gateway_state = state  # type: ignore[attr-defined]
    return app


def _add_gateway_agent(app: GatewayApp, settings: Settings, core: Core,
                       state: dict[str, Any]) -> None:
    source = app.topic(settings.input_topic, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw",
                       partitions=settings.partitions)
    consent = ConsentStore(settings.bootstrap_servers, changelog_topic(settings))

    def mine(tps: Any) -> list[int]:
        return [tp.partition for tp in tps if tp.topic == settings.input_topic]

    @app.on_partitions_revoked.connect
    async def _revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        consent.revoke(mine(revoked))

    @app.on_partitions_assigned.connect
    async def _assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        await consent.restore(mine(assigned))

    sender = BatchSender(app)

    async def send(topic: str, key: bytes | None, value: bytes,
                   headers: list[tuple[str, bytes]] | None) -> Any:
        return await app.producer.send(topic, key, value, None, None, headers)

    processor = BatchProcessor(core.pipeline, send,
                               disclosure_topic=settings.disclosure_topic,
                               dead_letter_topic=settings.dead_letter_topic,
                               release_before_log=settings.unsafe_release_before_log,
                               phase_delay=settings.test_phase_delay_ms / 1000,
                               send_many=sender.send_many)
    if settings.unsafe_release_before_log:
        log.warning("GATEWAY_UNSAFE_RELEASE_BEFORE_LOG is set: agent messages are released "
                    "BEFORE their records are logged (test switch; never in production)")

    async def gateway_lane(messages: list[Message]) -> None:
        for i in range(0, len(messages), settings.batch_max):
            await _process_batch(app, settings, messages[i:i + settings.batch_max],
                                 processor, sender, consent, state)

    # Subscribed like an agent's topic (faust joins the group for it and commits its
    # offsets), but consumed through the lane.
    app.topics.add(source)
    app.batch_lanes[settings.input_topic] = gateway_lane


async def _process_batch(app: faust.App, settings: Settings, messages: Sequence[Message],
                         processor: BatchProcessor, sender: BatchSender,
                         consent: ConsentStore, state: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    messages = await _owned_and_ready(app, settings, messages, consent)
    if not messages:
        return
    ack = app.consumer.ack
    # Events whose effects the consent state already holds (decided before a rebalance or
    # a crash, offsets not yet committed): their outputs and state are durable. Deciding
    # them again against the newer state could decide differently under the same ids,
    # so they are only acknowledged.
    done = [m for m in messages if m.offset <= consent.applied(m.partition)]
    if done:
        for m in done:
            ack(m)
        state["processed"] += len(done)
        messages = [m for m in messages if m.offset > consent.applied(m.partition)]
        if not messages:
            return
    metrics.EVENTS_IN.inc(len(messages))
    partitions = [m.partition for m in messages]
    generations = {p: consent.generation(p) for p in set(partitions)}
    decide_started = loop.time()
    result = processor.decide([m.value for m in messages], partitions, consent.get)
    metrics.BATCH_PHASE_SECONDS.labels("decide").observe(loop.time() - decide_started)
    await processor.release(result)
    # Consent changes go to the changelog only now that the outputs they shaped are
    # acknowledged, each to the partition of the event that caused it (co-partitioning),
    # followed by that partition's progress marker (last, in the same record batch).
    last: dict[int, int] = {}
    for m in messages:
        last[m.partition] = max(last.get(m.partition, -1), m.offset)
    writes = [(partitions[idx], customer_id, orjson.dumps(value.to_dict()), value)
              for customer_id, (value, idx) in result.changes.items()]
    if writes:
        changelog_started = loop.time()
        topic = changelog_topic(settings)
        marked = sorted({p for p, _, _, _ in writes})
        await _send_retrying(
            sender,
            [(topic, cid.encode(), raw, None) for _, cid, raw, _ in writes]
            + [(topic, OFFSET_KEY.encode(), offset_marker(last[p]), None) for p in marked],
            [p for p, _, _, _ in writes] + marked)
        metrics.BATCH_PHASE_SECONDS.labels("changelog").observe(
            loop.time() - changelog_started)
    # A partition revoked or restored while the batch was out: the state here is gone or
    # was re-read from the changelog. Its events stay unacknowledged for whoever holds
    # the partition now, who skips them by the marker if this batch's writes made it.
    stale = {p for p, g in generations.items() if consent.generation(p) != g}
    for p, cid, raw, value in writes:
        if p not in stale:
            consent.set_local(p, cid, raw, value)
    for p, offset in last.items():
        if p not in stale:
            consent.set_applied(p, offset)
    if stale:
        messages = [m for m in messages if m.partition not in stale]
    for m in messages:
        ack(m)
    _observe_lag(app, messages)
    _stream_active(app, messages)
    state["processed"] += len(messages)
    state["subjects"] = consent.size()
    metrics.EVENTS_DONE.inc(len(messages))
    metrics.BATCH_SIZE.observe(len(messages))
    metrics.BATCH_SECONDS.observe(loop.time() - started)


async def _send_retrying(sender: BatchSender, items: list[Item], partitions: list[int],
                         max_delay: float = 5.0) -> None:
    """Send until every item is acknowledged, retrying the rest with backoff (the batch
    is held meanwhile, as for its other outputs)."""
    delay = 0.05
    while items:
        outcomes = await sender.send_many(items, partitions)
        failed = [i for i, o in enumerate(outcomes) if o is not None]
        if not failed:
            return
        metrics.SEND_RETRIES.inc()
        log.warning("broker did not acknowledge %d of %d consent changes (%s); retrying in "
                    "%.2fs", len(failed), len(items), type(outcomes[failed[0]]).__name__,
                    delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)
        items = [items[i] for i in failed]
        partitions = [partitions[i] for i in failed]


async def _owned_and_ready(app: faust.App, settings: Settings, messages: Sequence[Message],
                           consent: ConsentStore) -> Sequence[Message]:
    """The messages of partitions still assigned to us, once their consent state is
    restored. A partition revoked meanwhile is left to its new owner (its messages are
    not acknowledged, so it reads them again); waiting for its state would never end."""
    while True:
        assigned = {tp.partition for tp in app.consumer.assignment()
                    if tp.topic == settings.input_topic}
        if any(m.partition not in assigned for m in messages):
            messages = [m for m in messages if m.partition in assigned]
        if not messages or consent.ready(m.partition for m in messages):
            return messages
        await asyncio.sleep(0.05)


def _stream_active(app: faust.App, messages: Sequence[Message]) -> None:
    """Tell faust's monitor the input partitions are being processed: its stall detector
    reads the time a stream last took an event, which the lane bypasses, and would log
    "Stream has not started processing" for every partition after five minutes."""
    inbound = app.monitor.stream_inbound_time
    now = monotonic()
    for tp in {m.tp for m in messages}:
        inbound[tp] = now


def _observe_lag(app: faust.App, messages: Sequence[Message]) -> None:
    last: dict[TP, int] = {}
    for m in messages:
        last[m.tp] = max(last.get(m.tp, -1), m.offset)
    for tp, offset in last.items():
        try:
            highwater = app.consumer.highwater(tp)
        except Exception:  # lag is best effort: it never fails a batch
            continue
        metrics.LAG.labels(str(tp.partition)).set(max(0, (highwater or 0) - offset - 1))


def _add_ledger_agent(app: faust.App, settings: Settings, core: Core | None,
                      state: dict[str, Any]) -> None:
    from gateway.keys import load_signing_key
    from gateway.ledger import open_store

    signer = core.signing_key if core is not None else load_signing_key(
        settings.signing_key_path)
    store = open_store(settings.ledger_url, signer=signer,
                       checkpoint_every=settings.checkpoint_every)
    source = app.topic(settings.disclosure_topic, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw",
                       partitions=settings.partitions)

    @app.agent(source, name="ledger-sink")
    async def ledger_agent(stream: faust.StreamT) -> None:
        async for events in stream.noack_take(1000, within=0.05):
            by_shard: dict[int, list[DecisionRecord]] = {}
            for e in events:
                try:
                    rec = DecisionRecord.from_json(e.value)
                except (ValueError, TypeError):
                    # Not a record (a stray producer): counted and skipped, never crashes
                    # the sink; its content is not logged.
                    metrics.LEDGER_MALFORMED.inc()
                    log.warning("skipped a malformed message on the disclosure topic at "
                                "partition %d offset %d", e.message.partition,
                                e.message.offset)
                    continue
                by_shard.setdefault(e.message.partition, []).append(rec)
            for shard, records in sorted(by_shard.items()):
                # The store is synchronous (SQLAlchemy): keep the event loop free.
                result = await asyncio.to_thread(store.append, records, shard)
                dup = len(result.duplicates)
                metrics.LEDGER_DUPLICATES.inc(dup)
                metrics.LEDGER_APPENDED.inc(len(records) - dup)
                state["ledger_appended"] += len(records) - dup
                state["ledger_seen"] += len(records)
            for e in events:
                await stream.ack(e)
            # Caught up (a short batch): sign a checkpoint over what is in, at most every
            # couple of seconds, so a quiet log is never long without one.
            loop_time = asyncio.get_running_loop().time()
            if len(events) < 1000 and loop_time - last_checkpoint[0] > 2.0:
                last_checkpoint[0] = loop_time
                await asyncio.to_thread(store.checkpoint)

    last_checkpoint = [0.0]

    @app.timer(interval=10.0)
    async def checkpoint() -> None:
        await asyncio.to_thread(store.checkpoint)

    app.ledger_store = store  # type: ignore[attr-defined]
