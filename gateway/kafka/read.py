"""Reading a whole topic back, without joining a consumer group (for the audit, the demo,
the dead-letter commands and the tests)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from kafka import KafkaConsumer, TopicPartition

from gateway.erasure import is_erasure_request
from gateway.records import DecisionRecord


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """One message as stored on the topic."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    """The message's Kafka timestamp (milliseconds since the epoch; -1 when unknown)."""
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def position(self) -> str:
        """``topic[partition]@offset``."""
        return f"{self.topic}[{self.partition}]@{self.offset}"


def read_topic(
    bootstrap_servers: str,
    topic: str,
    timeout: float = 30.0,
    quiet: float = 1.0,
    security: Mapping[str, Any] | None = None,
) -> list[tuple[str, bytes, bytes | None]]:
    """Every message now on ``topic`` (all partitions, from the beginning), without joining
    a consumer group: (position, value, key). See :func:`read_records`."""
    # A tombstone's value is None; the callers' topics hold none.
    return [
        (r.position, cast(bytes, r.value), r.key)
        for r in read_records(bootstrap_servers, topic, timeout, quiet, security)
    ]


def read_records(
    bootstrap_servers: str,
    topic: str,
    timeout: float = 30.0,
    quiet: float = 1.0,
    security: Mapping[str, Any] | None = None,
) -> list[TopicRecord]:
    """Every message now on ``topic`` (all partitions, from the beginning; in offset order
    within a partition), without joining a consumer group; [] when the topic does not exist.

    Reads until the end offsets are reached *and* fetches have come back empty for
    ``quiet`` seconds: some brokers (Tansu) under-report the end offset (base offset of the
    last record batch + 1), so the end offsets alone would stop short.

    ``security``: kafka-python's security options
    (:func:`gateway.kafka.clients.kafka_python_security`); None for PLAINTEXT.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers.split(","),
        enable_auto_commit=False,
        group_id=None,
        **(security or {}),
    )
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[TopicRecord] = []
        deadline = time.monotonic() + timeout
        last_data = time.monotonic()
        while (
            any(consumer.position(tp) < end[tp] for tp in tps)
            or time.monotonic() - last_data < quiet
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end in {timeout}s")
            batch = consumer.poll(timeout_ms=200)
            for records in batch.values():
                out.extend(
                    TopicRecord(
                        m.topic,
                        m.partition,
                        m.offset,
                        m.timestamp if m.timestamp is not None else -1,
                        m.key,
                        m.value,
                        tuple((k, v) for k, v in (m.headers or ())),
                    )
                    for m in records
                )
            if batch:
                last_data = time.monotonic()
        return out
    finally:
        consumer.close()


def read_decision_records(
    bootstrap_servers: str,
    topic: str,
    timeout: float = 30.0,
    quiet: float = 1.0,
    security: Mapping[str, Any] | None = None,
) -> list[DecisionRecord]:
    """The decision records now on the disclosure topic ``topic`` (its erasure requests,
    which the notices are built from, left out)."""
    return [
        DecisionRecord.from_json(cast(bytes, r.value))
        for r in read_records(bootstrap_servers, topic, timeout, quiet, security)
        if not is_erasure_request(r.headers)
    ]
