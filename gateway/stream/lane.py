"""The batch lane: the gateway's input topic consumed a fetched batch at a time, through
faust's own consumer, and handed to the batch protocol.

faust's per-event machinery is the throughput cost to beat: for every message its
consumer creates two tasks (``wait_first``), passes it through the conductor and a stream
queue, and wakes the agent -- about 200 µs of Python per event on a small core, more than
the policy work. So the input topic takes a *batch lane*: faust's own consumer (group
membership, fetching, flow control, offsets, commits) hands each fetched batch of input
messages straight to :class:`~gateway.stream.protocol.BatchProtocol`, which acknowledges
them itself, only after every output of the batch is acknowledged by the broker.

The lane overrides private internals of faust's aiokafka consumer (``_drain_messages``,
``_read_offset``, ``track_message``, the consumer thread's ``_create_worker_consumer``):
faust-streaming is pinned below its next minor release in pyproject.toml for this reason;
re-check this module when upgrading it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from time import monotonic
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

from gateway.integrity import WorkerMac
from gateway.kafka.clients import aiokafka_security
from gateway.pipeline import DuplicateCache
from gateway.runtime import Core
from gateway.settings import Settings
from gateway.stream import metrics
from gateway.stream.aggregation import (
    Alignment,
    CombinerService,
    CombinerTask,
    KafkaTopicReader,
    WorkerAggregation,
    aggregate_specs,
    aggregates_topic,
)
from gateway.stream.consent_store import ConsentStore, KafkaChangelog, changelog_topic
from gateway.stream.protocol import BatchProtocol
from gateway.stream.sender import BatchSender
from gateway.stream.signatures import SignatureChecks

log = logging.getLogger("gateway.stream")

# How many input events must wait on a partition for it to count as behind on a backlog
# (and so be read in step with the others behind; see Alignment): twice the most a batch
# takes, well above what live traffic leaves between two fetches.
ALIGN_BACKLOG = 1000

# Handles one fetched batch of a topic's messages, acknowledging each when done.
Lane = Callable[[list[Message]], Awaitable[None]]


# --- faust's consumer with batch lanes ----------------------------------------------------


class LaneConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # faust offers no setting for it; read when the consumer starts, so setting it
        # here is enough.
        consumer._fetch_max_wait_ms = cast(GatewayApp, self.app).fetch_max_wait_ms
        return consumer

    def verify_event_path(self, now: float, tp: TP) -> None:
        # A partition paused on purpose (event-time alignment) is neither fetched, nor
        # processed, nor committed while it waits, which faust's check logs as a slow or
        # stuck partition after a few minutes: a catch-up can pause one that long.
        if tp in cast(LaneConsumer, self.consumer)._paused_partitions:
            return None
        return super().verify_event_path(now, tp)


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
        lanes = cast(GatewayApp, self.app).batch_lanes
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

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any):
        # topic -> its lane; set before faust starts consuming.
        self.batch_lanes: dict[str, Lane] = {}
        # How long the broker may hold a fetch that finds no data.
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return LaneTransport(self.conf.broker_consumer, self)


# --- the gateway's input lane ---------------------------------------------------------------


class FaustInput:
    """The input topics' side of faust's consumer, as the batch protocol sees it: the
    input topic and the re-partition topic, whose partitions of one number are assigned
    together (faust's assignor co-partitions topics of equal partition counts). A
    partition counts as held only while both topics' partitions of its number are."""

    def __init__(self, app: faust.App, topics: Sequence[str]):
        self.app = app
        self.topics = tuple(topics)

    def assigned_partitions(self) -> set[int]:
        held: dict[str, set[int]] = {t: set() for t in self.topics}
        for tp in self.app.consumer.assignment():
            if tp.topic in held:
                held[tp.topic].add(tp.partition)
        return set.intersection(*held.values())

    def acknowledge(self, message: Message) -> None:
        self.app.consumer.ack(message)


def add_gateway_lane(
    app: GatewayApp,
    settings: Settings,
    core: Core,
    stats: dict[str, int],
    protocol: type[BatchProtocol[Any]] = BatchProtocol,
) -> ConsentStore:
    """Consume the input topic and the re-partition topic through a batch lane into
    ``protocol``, with the consent table restored on each partition assignment. Returns
    the consent table."""
    topics = (settings.input_topic, settings.subjects_topic)
    sources = [
        app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
        )
        for name in topics
    ]
    mac = WorkerMac(core.worker_key)
    consent = ConsentStore(
        KafkaChangelog(
            settings.bootstrap_servers,
            changelog_topic(settings),
            mac,
            security=aiokafka_security(settings),
        ).read,
        duplicates=DuplicateCache.per_partition(settings.partitions),
    )

    # Aggregate-only agents: windows per subject partition here, and the combiner on the
    # worker holding subject partition 0 (see gateway.stream.aggregation).
    aggregation: WorkerAggregation | None = None
    combiner: CombinerTask | None = None
    sender = BatchSender(app)
    if aggregate_specs(core.policy):
        agg_topic = aggregates_topic(settings)
        aggregation = WorkerAggregation(core.policy, consent, agg_topic, mac)

        def make_combiner() -> CombinerService:
            return CombinerService(
                core.pipeline,
                KafkaTopicReader(
                    settings.bootstrap_servers, agg_topic, aiokafka_security(settings)
                ),
                sender,
                topic=agg_topic,
                disclosure_topic=settings.disclosure_topic,
                partitions=settings.partitions,
                mac=mac,
                idle_seconds=settings.aggregate_idle_seconds,
            )

        combiner = CombinerTask(make_combiner)

    def mine(tps: set[TP]) -> list[int]:
        # A partition number's state is restored once, whichever of its topics came.
        return sorted({tp.partition for tp in tps if tp.topic in topics})

    # faust calls these as handler(app, partitions, signal=...); written with *args
    # because mode's handler type accepts no narrower signature.
    @app.on_partitions_revoked.connect
    async def _revoked(*args: Any, **kwargs: Any) -> None:
        _app, revoked = args
        parts = mine(revoked)
        consent.revoke(parts)
        if combiner is not None and 0 in parts:
            await combiner.stop()

    @app.on_partitions_assigned.connect
    async def _assigned(*args: Any, **kwargs: Any) -> None:
        _app, assigned = args
        parts = mine(assigned)
        await consent.restore(parts)
        if combiner is not None and 0 in parts:
            combiner.start()

    faust_input = FaustInput(app, topics)
    batches = protocol(
        core.pipeline,
        faust_input,
        consent,
        sender,
        disclosure_topic=settings.disclosure_topic,
        dead_letter_topic=settings.dead_letter_topic,
        changelog_topic=changelog_topic(settings),
        subjects_topic=settings.subjects_topic,
        partitions=settings.partitions,
        mac=mac,
        stats=stats,
        aggregation=aggregation,
        signatures=SignatureChecks(core.pipeline, settings.verify_threads),
    )

    budget = settings.batch_budget_ms / 1000
    # Input events waiting per partition (as last seen), and the event-time alignment of
    # the partitions behind on a backlog (aggregate agents only: it bounds the windows
    # the combiner holds open for the slowest partition).
    lags: dict[int, int] = {}
    alignment = (
        Alignment(aggregation.drift(), backlog=ALIGN_BACKLOG) if aggregation is not None else None
    )

    def align() -> None:
        if alignment is None or aggregation is None:
            return
        held = faust_input.assigned_partitions()
        before = set(alignment.paused)
        paused = alignment.update(
            aggregation.event_times(), {p: n for p, n in lags.items() if p in held}
        )
        # Paused again each time (faust forgets a pause when a rebalance takes the
        # partition away); resumed only while held (faust would fetch a partition it was
        # told to resume, held or not).
        consumer = app.consumer
        if paused:
            consumer.pause_partitions({TP(settings.input_topic, p) for p in paused})
        resumed = (before - paused) & held
        if resumed:
            consumer.resume_partitions({TP(settings.input_topic, p) for p in resumed})
        if paused != before:
            for p in before | paused:
                metrics.INPUT_PAUSED.labels(str(p)).set(1 if p in paused else 0)
            log.info(
                "input partitions paused for event-time alignment: %s (were: %s)",
                sorted(paused),
                sorted(before),
            )

    async def gateway_lane(messages: list[Message]) -> None:
        # Cut into batches whose deciding fits the latency budget: a batch's first event
        # waits for the whole batch to be decided and logged. (Deciding the next batch
        # while this one's changelog was out was tried: the tails at a quarter and half
        # the maximum rate were worse, not better -- see BENCHMARKS.md.)
        i = 0
        while i < len(messages):
            n = batches.batch_limit(budget, settings.batch_max)
            done = await batches.process(messages[i : i + n])
            _observe_lag(app, done, lags, settings.input_topic)
            _stream_active(app, done)
            align()
            i += n

    # Subscribed like an agent's topic (faust joins the group for it and commits its
    # offsets), but consumed through the lane.
    for name, source in zip(topics, sources, strict=True):
        app.topics.add(source)
        app.batch_lanes[name] = gateway_lane
    return consent


def _stream_active(app: faust.App, messages: Sequence[Message]) -> None:
    """Tell faust's monitor the input partitions are being processed: its stall detector
    reads the time a stream last took an event, which the lane bypasses, and would log
    "Stream has not started processing" for every partition after five minutes."""
    inbound = app.monitor.stream_inbound_time
    now = monotonic()
    for tp in {m.tp for m in messages}:
        inbound[tp] = now


def _observe_lag(
    app: faust.App, messages: Sequence[Message], lags: dict[int, int], input_topic: str
) -> None:
    """The input partitions' lag after ``messages``: the metric, and ``lags``."""
    last: dict[TP, int] = {}
    for m in messages:
        last[m.tp] = max(last.get(m.tp, -1), m.offset)
    for tp, offset in last.items():
        try:
            highwater = app.consumer.highwater(tp)
        except Exception:  # lag is best effort: it never fails a batch
            continue
        lag = max(0, (highwater or 0) - offset - 1)
        metrics.LAG.labels(str(tp.partition)).set(lag)
        if tp.topic == input_topic:
            lags[tp.partition] = lag
