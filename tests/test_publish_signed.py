"""On the real embedded broker: the SDK and `gateway publish` sign every event as a declared
publisher, in the record headers the gateway verifies, and key it by customer id onto the
partition the gateway decides that customer on."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer, TopicPartition

from gateway.cli import main
from gateway.dev.samples import scenario
from gateway.kafka.admin import ensure_topics
from gateway.keys import demo_publisher_keys_dir
from gateway.policy import load_policy
from gateway.routing import subject_partition
from gateway.runtime import build_core, ensure_demo_keys
from gateway.sdk.publisher import Publisher
from gateway.settings import Settings
from tests.conftest import ROOT

pytestmark = pytest.mark.broker

PARTITIONS = 4


def read_with_headers(bootstrap: str, topic: str, count: int) -> list[tuple[int, bytes, list]]:
    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[tuple[int, bytes, list]] = []
        deadline = time.monotonic() + 30
        while len(out) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                out.extend((m.partition, m.value, list(m.headers)) for m in records)
        return out
    finally:
        consumer.close()


def test_published_events_are_signed_and_on_their_subject_partition(
    broker,
    topic_prefix: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    settings = Settings(
        policy_path=ROOT / "agents.yaml",
        keys_dir=tmp_path / "keys",
        bootstrap_servers=broker.bootstrap,
        input_topic=f"{topic_prefix}.events",
    )
    policy = load_policy(settings.policy_path)
    ensure_demo_keys(settings, policy)
    core = build_core(settings, policy)
    ensure_topics(broker.bootstrap, {settings.input_topic: PARTITIONS})
    own = demo_publisher_keys_dir(settings.keys_dir)
    accounts = [orjson.dumps(e) for e in scenario() if e["event_type"] == "consent.changed"]
    orders = [e for e in scenario() if e["event_type"] == "payment.settled"]

    # The SDK, as the account back end (Ed25519).
    with Publisher(
        broker.bootstrap, settings.input_topic, name="accounts", key=own / "accounts.key"
    ) as pub:
        report = pub.publish_many(enumerate(accounts, 1))
    assert report.sent == len(accounts) and not report.rejected
    # The command, as the order back end (HMAC).
    src = tmp_path / "orders.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in orders))
    r = CliRunner().invoke(
        main,
        [
            "publish",
            str(src),
            "--bootstrap",
            broker.bootstrap,
            "--topic",
            settings.input_topic,
            "--publisher",
            "orders",
            "--key",
            str(own / "orders.secret"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "signed as orders" in r.output

    got = read_with_headers(broker.bootstrap, settings.input_topic, len(accounts) + len(orders))
    assert len(got) == len(accounts) + len(orders)
    publishers = set()
    for partition, value, headers in got:
        admitted = core.pipeline.admit(value, headers)
        assert not hasattr(admitted, "reason"), admitted
        publishers.add(admitted.publisher)  # type: ignore[union-attr]
        cid = admitted.event.customer_id  # type: ignore[union-attr]
        assert partition == subject_partition(cid, PARTITIONS)
    assert publishers == {"accounts", "orders"}

    # Unsigned, the command says what will happen.
    r = CliRunner().invoke(
        main,
        ["publish", str(src), "--bootstrap", broker.bootstrap, "--topic", settings.input_topic],
    )
    assert r.exit_code == 0 and "unsigned" in r.output
    r = CliRunner().invoke(
        main,
        ["publish", str(src), "--bootstrap", broker.bootstrap, "--publisher", "orders"],
    )
    assert r.exit_code == 2 and "together" in r.output
