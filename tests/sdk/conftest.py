"""Fixtures of the SDK tests: a gateway key store with an agent key pair (and a second
private key that is not the agent's), a sealer as the gateway would hold it, and topics
on the session's embedded broker."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaProducer

from gateway.crypto import Sealer
from gateway.dev.broker import EmbeddedBroker
from gateway.kafka.admin import ensure_topics
from gateway.kafka.clients import KAFKA_PYTHON_PRODUCER_DEFAULTS
from gateway.keys import (
    AgentKeyPaths,
    create_agent_keypair,
    init_gateway_keys,
    load_signing_key,
)
from gateway.sdk import AgentReader


@dataclass
class AgentKeys:
    dir: Path
    key: Path  # the agent's private key
    wrong_key: Path  # another agent key pair's private key
    gateway_key: Path  # the gateway's public signing key
    sealer: Sealer  # seals for the agent's real public key

    def reader(self, key: Path | None = None, agent: str = "shipping") -> AgentReader:
        return AgentReader(agent, key or self.key, self.gateway_key)

    def sealed(self, n: int, start: int = 0, sealer: Sealer | None = None) -> list[bytes]:
        """``n`` messages as the gateway sends them, disclosure ids d-<start>… ."""
        s = sealer or self.sealer
        return [
            s.seal(
                orjson.dumps({"n": i, "data": {"order_id": f"O-{i}"}}),
                ref=f"ref-{i:04d}",
                disclosure_id=f"d-{i:04d}",
            ).message
            for i in range(start, start + n)
        ]


@pytest.fixture
def agent_keys(tmp_path: Path) -> AgentKeys:
    keys = tmp_path / "keys"
    init_gateway_keys(keys)
    public, paths = create_agent_keypair(keys, "shipping")
    other = AgentKeyPaths(private=tmp_path / "wrong.key", public=tmp_path / "wrong.pub")
    create_agent_keypair(other, "shipping")
    signing = load_signing_key(keys / "gateway-signing.key")
    return AgentKeys(
        keys,
        paths.private,
        other.private,
        keys / "gateway-signing.pub",
        Sealer("shipping", public, signing),
    )


@dataclass
class Topic:
    broker: EmbeddedBroker
    name: str
    group: str

    def produce(self, values: list[bytes], partition: int | None = None) -> None:
        producer = KafkaProducer(
            bootstrap_servers=[self.broker.bootstrap], **KAFKA_PYTHON_PRODUCER_DEFAULTS
        )
        for i, v in enumerate(values):
            producer.send(self.name, key=f"k{i}".encode(), value=v, partition=partition)
        producer.flush()
        producer.close()

    def committed(self, group: str | None = None) -> dict[int, int]:
        """The group's committed offsets by partition (partitions without one left out)."""
        admin = KafkaAdminClient(bootstrap_servers=[self.broker.bootstrap])
        try:
            name = group or self.group
            offsets = admin.list_group_offsets(name).get(name, {})
        finally:
            admin.close()
        return {
            tp.partition: m.offset
            for tp, m in offsets.items()
            if tp.topic == self.name and m.offset >= 0
        }


def make_topic(broker: EmbeddedBroker, name: str, partitions: int) -> Topic:
    ensure_topics(broker.bootstrap, {name: partitions})
    return Topic(broker, name, f"{name}.group")


@pytest.fixture
def topic(broker: EmbeddedBroker, topic_prefix: str) -> Iterator[Topic]:
    """A new two-partition topic and a group name nobody has used."""
    yield make_topic(broker, f"{topic_prefix}.agent", 2)


@pytest.fixture
def one_partition(broker: EmbeddedBroker, topic_prefix: str) -> Topic:
    return make_topic(broker, f"{topic_prefix}.agent1", 1)
