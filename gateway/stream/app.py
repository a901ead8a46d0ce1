"""The faust app: input topic -> consent table + policy core -> disclosure topic, then agent
topics; and the ledger sink: disclosure topic -> disclosure log store.

faust's per-event machinery is the throughput cost to beat, so both agents take events in
batches (``noack_take``) and acknowledge them themselves, only after every output of the
batch is acknowledged by the broker. The consent table is changelog-backed and keyed by
customer id, like the input topic, so a subject's events and state share a partition.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import faust
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.records import DecisionRecord
from gateway.runtime import Core
from gateway.settings import Settings
from gateway.stream import metrics
from gateway.stream.batch import BatchProcessor
from gateway.stream.consent_store import ConsentStore

log = logging.getLogger("gateway.stream")

CONSENT_TABLE = "consent"


def changelog_topic(settings: Settings) -> str:
    return f"{settings.app_id}-{CONSENT_TABLE}-changelog"


def create_app(settings: Settings, core: Core | None, *, gateway: bool = True,
               ledger: bool = True) -> faust.App:
    brokers = [f"kafka://{h.strip()}" for h in settings.bootstrap_servers.split(",")]
    app = faust.App(
        settings.app_id,
        broker=brokers,
        store="memory://",
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
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


def _add_gateway_agent(app: faust.App, settings: Settings, core: Core,
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

    async def send(topic: str, key: bytes | None, value: bytes,
                   headers: list[tuple[str, bytes]] | None) -> Any:
        return await app.producer.send(topic, key, value, None, None, headers)

    processor = BatchProcessor(core.pipeline, send,
                               disclosure_topic=settings.disclosure_topic,
                               dead_letter_topic=settings.dead_letter_topic,
                               release_before_log=settings.unsafe_release_before_log,
                               phase_delay=settings.test_phase_delay_ms / 1000)
    if settings.unsafe_release_before_log:
        log.warning("GATEWAY_UNSAFE_RELEASE_BEFORE_LOG is set: agent messages are released "
                    "BEFORE their records are logged (test switch; never in production)")

    @app.agent(source, name="gateway")
    async def gateway_agent(stream: faust.StreamT) -> None:
        async for events in stream.noack_take(settings.batch_max,
                                              within=settings.batch_linger_ms / 1000):
            await _process_batch(app, settings, stream, events, processor, consent, state)


async def _process_batch(app: faust.App, settings: Settings, stream: faust.StreamT,
                         events: Sequence[Any], processor: BatchProcessor,
                         consent: ConsentStore, state: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    metrics.EVENTS_IN.inc(len(events))
    partitions = [e.message.partition for e in events]
    await consent.wait_ready(partitions)
    result = processor.decide([e.value for e in events], partitions, consent.get)
    await processor.release(result)
    # Consent changes go to the changelog only now that the outputs they shaped are
    # acknowledged, each to the partition of the event that caused it (co-partitioning).
    writes = []
    for customer_id, (value, idx) in result.changes.items():
        raw = orjson.dumps(value.to_dict())
        p = partitions[idx]
        writes.append((p, customer_id, raw))
    futures = [await app.producer.send(changelog_topic(settings), cid.encode(), raw, p, None,
                                       None) for p, cid, raw in writes]
    await asyncio.gather(*futures)
    for p, cid, raw in writes:
        consent.set_local(p, cid, raw)
    for event in events:
        await stream.ack(event)
    _observe_lag(app, events)
    state["processed"] += len(events)
    state["subjects"] = consent.size()
    metrics.EVENTS_DONE.inc(len(events))
    metrics.BATCH_SIZE.observe(len(events))
    metrics.BATCH_SECONDS.observe(loop.time() - started)


def _observe_lag(app: faust.App, events: Sequence[Any]) -> None:
    last: dict[Any, int] = {}
    for e in events:
        last[e.message.tp] = max(last.get(e.message.tp, -1), e.message.offset)
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
                rec = DecisionRecord.from_json(e.value)
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
