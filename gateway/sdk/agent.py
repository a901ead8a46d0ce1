"""Agent SDK: consume an agent's topic, verify and decrypt each message with the agent's
own key, drop duplicates by disclosure id (delivery is at least once), commit as you go."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from kafka import KafkaConsumer

from gateway.agent_reader import AgentReader, Received, Rejected
from gateway.errors import CryptoError
from gateway.topics import KAFKA_PYTHON_CONSUMER_DEFAULTS

# A new group member gets its first assignment after about half the session timeout on
# some brokers (Tansu): use the shortest session stock Kafka accepts (see gateway.topics).
CONSUMER_DEFAULTS: dict[str, Any] = {
    "auto_offset_reset": "earliest",
    "enable_auto_commit": False,
    **KAFKA_PYTHON_CONSUMER_DEFAULTS,
}


class AgentConsumer:
    def __init__(self, reader: AgentReader, bootstrap_servers: str, topic: str, *,
                 group_id: str | None = None, **consumer_config: Any):
        self.reader = reader
        self.topic = topic
        self._consumer = KafkaConsumer(
            topic, bootstrap_servers=bootstrap_servers.split(","),
            group_id=group_id or f"agent-{reader.agent}",
            **{**CONSUMER_DEFAULTS, **consumer_config})

    def messages(self, *, idle_timeout: float | None = None,
                 max_messages: int | None = None) -> Iterator[Received | Rejected]:
        """Yield what arrives; stop after ``idle_timeout`` seconds without a message or
        after ``max_messages`` (None: run until interrupted)."""
        count = 0
        last = time.monotonic()
        while True:
            batch = self._consumer.poll(timeout_ms=500)
            if not batch:
                if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                    return
                continue
            last = time.monotonic()
            for records in batch.values():
                for msg in records:
                    pos = f"{msg.topic}[{msg.partition}]@{msg.offset}"
                    try:
                        got = self.reader.read(msg.value)
                    except CryptoError as e:
                        yield Rejected(pos, str(e), False)
                        continue
                    if got is not None:
                        yield got
                        count += 1
                        if max_messages is not None and count >= max_messages:
                            self._consumer.commit()
                            return
            self._consumer.commit()

    def close(self) -> None:
        self._consumer.close()


def read_topic(bootstrap_servers: str, topic: str, timeout: float = 30.0,
               quiet: float = 1.0) -> list[tuple[str, bytes, bytes | None]]:
    """Every message now on ``topic`` (all partitions, from the beginning), without joining
    a consumer group: (position, value, key).

    Reads until the end offsets are reached *and* fetches have come back empty for
    ``quiet`` seconds: some brokers (Tansu) under-report the end offset (base offset of the
    last record batch + 1), so the end offsets alone would stop short.
    """
    from kafka import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers.split(","),
                             enable_auto_commit=False, group_id=None)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[tuple[str, bytes, bytes | None]] = []
        deadline = time.monotonic() + timeout
        last_data = time.monotonic()
        while (any(consumer.position(tp) < end[tp] for tp in tps)
               or time.monotonic() - last_data < quiet):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end in {timeout}s")
            batch = consumer.poll(timeout_ms=200)
            for records in batch.values():
                out.extend((f"{m.topic}[{m.partition}]@{m.offset}", m.value, m.key)
                           for m in records)
            if batch:
                last_data = time.monotonic()
        return out
    finally:
        consumer.close()
