"""The consent changelog as the broker holds it: only entries a worker wrote are restored.

Anyone who can write to the changelog topic could otherwise grant an opt-in (a forged
state) or make a worker skip events (a forged progress marker: once, one marker made a
worker acknowledge 50 events and write no record)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from kafka import KafkaProducer

from gateway.consent import ConsentState
from gateway.dev.broker import EmbeddedBroker
from gateway.integrity import HEADER_MAC, WorkerMac
from gateway.kafka.admin import ensure_topics
from gateway.kafka.clients import KAFKA_PYTHON_PRODUCER_DEFAULTS
from gateway.stream.consent_store import OFFSET_KEY, KafkaChangelog, offset_marker

pytestmark = pytest.mark.broker


def test_a_restore_takes_only_entries_with_the_workers_mac(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.consent-changelog"
    ensure_topics(broker.bootstrap, {topic: 2})
    mac = WorkerMac(b"k" * 32)
    state = orjson.dumps(ConsentState().to_dict())
    granted = orjson.dumps({**ConsentState().to_dict(), "forged": True})
    producer = KafkaProducer(bootstrap_servers=[broker.bootstrap], **KAFKA_PYTHON_PRODUCER_DEFAULTS)

    def send(key: bytes, value: bytes, tag: bytes | None) -> None:
        headers = [(HEADER_MAC, tag)] if tag is not None else []
        producer.send(topic, key=key, value=value, partition=0, headers=headers)

    marker = OFFSET_KEY.encode()
    send(b"C-1", state, mac.changelog(b"C-1", state))  # a worker's entry
    send(marker, offset_marker(3), mac.changelog(marker, offset_marker(3)))
    send(b"C-2", granted, None)  # no MAC
    send(b"C-1", granted, mac.changelog(b"C-1", state))  # a MAC copied from another value
    send(marker, offset_marker(50), WorkerMac(b"x" * 32).changelog(marker, offset_marker(50)))
    producer.flush()
    producer.close()

    restored = asyncio.run(KafkaChangelog(broker.bootstrap, topic, mac).read([0, 1]))
    assert restored.states[0] == {"C-1": state}
    assert restored.applied == {0: 3}
