"""Publish -> agent topic latency: events published at a steady rate, every agent message
they cause read back, each matched to its event by the event id in its (plaintext)
header.

Two figures per message:

* ``to_agent_topic`` -- from the publisher's ``send`` to the message being readable on
  the agent's topic, as an agent's consumer sees it (fetching every 10 ms): the
  end-to-end figure, and an upper bound (it includes the reader's own fetch delay);
* ``to_release`` -- from ``send`` to the message's Kafka timestamp (CreateTime, set by
  the gateway's producer when it released the message to the broker): the gateway's
  share alone.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from gateway.kafka.clients import AIOKAFKA_PRODUCER_DEFAULTS

_REF = b'"ref":"'


def _ref(message: bytes) -> str | None:
    """The agent's reference for the event from a sealed message's canonical header (the
    first "ref" in it), without parsing the whole message: the probe must stay light
    beside the worker."""
    i = message.find(_REF)
    if i < 0:
        return None
    i += len(_REF)
    j = message.find(b'"', i)
    return message[i:j].decode() if j > i else None


def percentiles(
    values: Sequence[float], points: Sequence[float] = (50, 95, 99, 100)
) -> dict[str, float]:
    """Nearest-rank percentiles (``p100`` is the maximum), in the values' unit."""
    if not values:
        return {f"p{p:g}": math.nan for p in points}
    ordered = sorted(values)
    out = {}
    for p in points:
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        out[f"p{p:g}"] = ordered[rank - 1]
    return out


async def measure(
    bootstrap: str,
    input_topic: str,
    agent_topics: Sequence[str],
    events: Sequence[tuple[bytes, bytes]],
    rate: float,
    *,
    quiet: float = 3.0,
    sign: Callable[[bytes], list[tuple[str, bytes]]] | None = None,
    refs: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Publish ``events`` ((key, value) pairs) at ``rate`` per second and time every agent
    message they cause, found by the agents' references for the events (``refs``: ref ->
    event id; agents never see the publisher's event id). ``sign`` gives each event's
    publisher headers (made before the clock starts: the publisher's signing is not the
    gateway's latency). Returns
    percentiles in milliseconds and counts."""
    ids = [orjson.loads(v)["event_id"] for _, v in events]
    headers = [sign(v) if sign is not None else None for _, v in events]
    sent_mono: dict[str, float] = {}
    sent_wall: dict[str, float] = {}
    to_topic: list[float] = []
    to_release: list[float] = []

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=0, **AIOKAFKA_PRODUCER_DEFAULTS
    )
    await consumer.start()
    await producer.start()
    try:
        await consumer.topics()  # metadata for the partition lists (no auto-creation)
        tps = [
            TopicPartition(t, p)
            for t in agent_topics
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        consumer.assign(tps)
        # Older messages may be read too (Tansu under-reports the log end): they do not
        # match a published id and are skipped.
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        done = asyncio.Event()
        last_seen = [time.monotonic()]

        async def consume() -> None:
            while not done.is_set() or time.monotonic() - last_seen[0] < quiet:
                batch = await consumer.getmany(timeout_ms=20)
                now_mono = time.monotonic()
                for records in batch.values():
                    for r in records:
                        ref = _ref(r.value)
                        eid = (refs or {}).get(ref) if ref is not None else None
                        t0 = sent_mono.get(eid) if eid is not None else None
                        if t0 is None or eid is None:
                            continue
                        last_seen[0] = now_mono
                        to_topic.append((now_mono - t0) * 1000)
                        to_release.append(r.timestamp - sent_wall[eid] * 1000)

        async def publish() -> None:
            start = time.monotonic()
            for i, ((key, value), eid, hdrs) in enumerate(zip(events, ids, headers, strict=True)):
                due = start + i / rate
                wait = due - time.monotonic()
                if wait > 0.001:
                    await asyncio.sleep(wait)
                sent_wall[eid] = time.time()
                sent_mono[eid] = time.monotonic()
                await producer.send(input_topic, value, key=key, headers=hdrs)
            await producer.flush()
            last_seen[0] = time.monotonic()
            done.set()

        reader = asyncio.create_task(consume())
        t_start = time.monotonic()
        await publish()
        publish_seconds = time.monotonic() - t_start
        await reader
    finally:
        await producer.stop()
        await consumer.stop()
    return {
        "rate": rate,
        "events": len(events),
        "publish_seconds": publish_seconds,
        "achieved_rate": len(events) / publish_seconds if publish_seconds else 0.0,
        "messages": len(to_topic),
        "to_agent_topic_ms": percentiles(to_topic),
        "to_release_ms": percentiles(to_release),
    }


async def broker_floor(
    bootstrap: str,
    topic: str,
    *,
    waits: Sequence[int] = (5, 10, 25, 100),
    count: int = 100,
    gap: float = 0.013,
) -> dict[str, Any]:
    """What the broker alone adds, with no gateway in between: the acks=all produce round
    trip (one message at a time), and send -> consumed on an idle topic for consumers with
    each ``fetch_max_wait_ms`` in ``waits`` (one message every ``gap`` seconds, so the
    consumer is waiting on an empty fetch when each arrives). Milliseconds."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=0, **AIOKAFKA_PRODUCER_DEFAULTS
    )
    await producer.start()
    out: dict[str, Any] = {}
    try:
        rtt = []
        for i in range(2 * count):
            t = time.perf_counter()
            await (await producer.send(topic, b"x" * 500, key=str(i).encode()))
            rtt.append((time.perf_counter() - t) * 1000)
        out["produce_ack_ms"] = percentiles(rtt)
        out["fetch_wait"] = []
        for wait in waits:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=bootstrap,
                group_id=None,
                enable_auto_commit=False,
                fetch_max_wait_ms=wait,
            )
            await consumer.start()
            try:
                await consumer.topics()
                tps = [
                    TopicPartition(topic, p)
                    for p in sorted(consumer.partitions_for_topic(topic) or ())
                ]
                consumer.assign(tps)
                await consumer.seek_to_end(*tps)
                for tp in tps:
                    await consumer.position(tp)
                sent: dict[bytes, float] = {}
                seen: list[float] = []
                reader = asyncio.create_task(_read_probes(consumer, sent, seen, count))
                await asyncio.sleep(0.5)  # the reader is parked on an empty fetch
                for i in range(count):
                    value = f"probe-{wait}-{i}".encode()
                    sent[value] = time.perf_counter()
                    await (await producer.send(topic, value, key=value))
                    await asyncio.sleep(gap)
                await asyncio.wait_for(reader, 30)
            finally:
                await consumer.stop()
            out["fetch_wait"].append(
                {"fetch_max_wait_ms": wait, "send_to_consumed_ms": percentiles(seen)}
            )
    finally:
        await producer.stop()
    return out


async def _read_probes(
    consumer: AIOKafkaConsumer, sent: dict[bytes, float], seen: list[float], count: int
) -> None:
    while len(seen) < count:
        batch = await consumer.getmany(timeout_ms=1000)
        now = time.perf_counter()
        for records in batch.values():
            for r in records:
                t0 = sent.get(r.value)
                if t0 is not None:
                    seen.append((now - t0) * 1000)
