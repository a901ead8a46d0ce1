"""The gateway on the real embedded broker: a `gateway run` worker subprocess, events
published through the SDK, agents reading their topics with their own keys."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import orjson
import pytest

from gateway.dev.samples import random_events, scenario
from gateway.events import safe_field_name
from gateway.keys import demo_agent_private_key, demo_publisher_keys_dir
from gateway.runtime import demo_signers
from gateway.sdk.publisher import PRODUCER_DEFAULTS
from gateway.sdk.reader import AgentReader, Received
from tests.stream.helpers import Env, Worker, wait_for

pytestmark = pytest.mark.broker

SCENARIO = [orjson.dumps(e) for e in scenario()]


def publish(env: Env, lines: list[bytes]) -> None:
    with env.publisher() as pub:
        report = pub.publish_many(enumerate(lines, 1))
    assert report.sent == len(lines) and not report.rejected


def raw_publish(env: Env, values: list[tuple[bytes, bytes]]) -> None:
    """Publish as a buggy but signing publisher would: signed by the orders back end,
    whatever the bytes are."""
    from kafka import KafkaProducer

    signer = demo_signers(env.settings, env.policy)["order.placed"]
    p = KafkaProducer(bootstrap_servers=[env.settings.bootstrap_servers], **PRODUCER_DEFAULTS)
    for key, value in values:
        p.send(env.settings.input_topic, key=key, value=value, headers=signer.headers(value))
    p.flush()
    p.close()


def read_agent(env: Env, agent: str) -> list[Received]:
    reader = AgentReader(
        agent,
        demo_agent_private_key(env.settings.keys_dir, agent),
        env.settings.signing_public_key_path,
    )
    got = []
    for item in reader.read_many((p, v) for p, v, _ in env.topic(env.agent_topic(agent))):
        assert isinstance(item, Received), item
        got.append(item)
    return got


@pytest.mark.slow
def test_end_to_end_delivery_matches_the_offline_core(env: Env) -> None:
    # The erasure's notices included: the ledger sink sends them, their records go
    # straight into the log.
    expected = env.expected_with_notices(SCENARIO)
    with Worker(env) as w:
        publish(env, SCENARIO)
        w.wait_processed(len(SCENARIO))
        want = {r.record_id: r for out in expected for r in out.records}
        notices = {r.record_id for r in want.values() if r.outcome == "erasure_notice"}
        assert notices, "the scenario erases a customer who received something"
        wait_for(lambda: notices <= {r.record_id for r in env.ledger_records()}, 30, "the notices")
        records = env.records() + [r for r in env.ledger_records() if r.outcome == "erasure_notice"]
        assert {r.record_id for r in records} == set(want)
        for r in records:  # same decision as the offline core, field for field
            assert (r.outcome, r.reason, r.paths_sent, r.paths_removed) == (
                want[r.record_id].outcome,
                want[r.record_id].reason,
                want[r.record_id].paths_sent,
                want[r.record_id].paths_removed,
            )
        by_digest = {r.payload_digest: r for r in records if r.payload_digest}
        for agent in env.policy.agents:
            msgs = env.topic(env.agent_topic(agent))
            # every message on an agent topic has its record, for exactly those bytes
            for _, value, key in msgs:
                rec = by_digest["sha256:" + hashlib.sha256(value).hexdigest()]
                assert rec.agent == agent
                assert key is not None and len(key) == 32 and b"C-" not in key
            got = read_agent(env, agent)
            assert {g.disclosure_id for g in got} == {
                m.disclosure_id for out in expected for m in out.messages if m.agent == agent
            }
        ship = read_agent(env, "shipping")
        assert all("prescription" not in g.payload.get("data", {}) for g in ship)
        email_rx = [
            g for g in read_agent(env, "email") if "prescription" in g.payload.get("data", {})
        ]
        assert [g.payload["data"]["recipient"]["first"] for g in email_rx] == ["Bob"]
        on_topic = len(env.records())
        wait_for(
            lambda: (w.health() or {}).get("ledger_seen", 0) >= on_topic, 30, "the ledger sink"
        )


def test_consent_changes_in_the_stream_alter_later_decisions(env: Env) -> None:
    customer = "C-5150"

    def ev(n: int, etype: str, data: dict) -> bytes:
        return orjson.dumps(
            {
                "event_id": f"evt-consent-{n:04d}",
                "event_type": etype,
                "schema_version": 1,
                "occurred_at": f"2026-04-01T10:{n:02d}:00Z",
                "subject": {"customer_id": customer, "type": "consumer"},
                "data": data,
            }
        )

    profile = {"name": {"first": "Ida", "last": "Lo"}, "emails": ["ida@example.com"]}
    lines = [
        ev(1, "customer.updated", profile),
        ev(2, "consent.changed", {"marketing": "opt_out"}),
        ev(3, "customer.updated", profile),
        ev(4, "consent.changed", {"marketing": "opt_in"}),
        ev(5, "customer.updated", profile),
    ]
    with Worker(env) as w:
        publish(env, lines)
        w.wait_processed(len(lines))
        email = sorted(
            (r.event_id, r.outcome, r.reason) for r in env.records() if r.agent == "email"
        )
    assert email == [
        ("evt-consent-0001", "disclosed", None),
        ("evt-consent-0003", "withheld", "marketing_opt_out"),
        ("evt-consent-0005", "disclosed", None),
    ]


@pytest.mark.slow
def test_small_batches_decide_as_the_offline_core(
    broker, topic_prefix: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    # Batches of 3 and few customers: a subject's consent state is carried from batch to
    # batch hundreds of times (through the store, after each batch's changelog write).
    env = Env.create(tmp_path, broker.bootstrap, topic_prefix, batch_max=3)
    lines = [orjson.dumps(e) for e in random_events(900, seed=11, customers=12)]
    want = {r.record_id: r for out in env.expected(lines) for r in out.records}
    assert sum(1 for x in lines if b'"consent.changed"' in x) > 30
    with Worker(env) as w:
        publish(env, lines)
        w.wait_processed(len(lines), timeout=120)
        # (the aggregate tables' records are tests/stream/test_aggregation.py's business)
        records = [r for r in env.records() if r.outcome != "aggregated"]
    assert {r.record_id for r in records} == set(want)
    assert len(records) == len(want)  # no crash, so no duplicates either
    for r in records:
        w_r = want[r.record_id]
        assert (
            r.outcome,
            r.reason,
            r.purposes,
            r.consent,
            r.paths_sent,
            r.paths_removed,
            r.paths_transformed,
        ) == (
            w_r.outcome,
            w_r.reason,
            w_r.purposes,
            w_r.consent,
            w_r.paths_sent,
            w_r.paths_removed,
            w_r.paths_transformed,
        ), r.record_id


def test_bad_input_is_dead_lettered_and_the_worker_stays_up(env: Env) -> None:
    order = next(e for e in scenario() if e["event_type"] == "order.placed")
    wrong = orjson.loads(orjson.dumps(order))
    wrong["data"]["total"] = "lots"
    extra = orjson.loads(orjson.dumps(order))
    extra["data"]["card_pin"] = "4321"
    bad = [
        b"{not json at all",
        orjson.dumps(wrong),
        orjson.dumps(extra),
        orjson.dumps({**order, "event_type": "order.vanished"}),
        orjson.dumps({**order, "data": {**order["data"], "notes": "Alice " * 60_000}}),
        b"\xff\xfe\x00garbage",
    ]
    with Worker(env) as w:
        raw_publish(env, [(b"C-1001", b) for b in bad])
        w.wait_processed(len(bad))
        publish(env, SCENARIO[:3])  # and it goes on with good events
        w.wait_processed(len(bad) + 3)
        assert w.proc is not None and w.proc.poll() is None
        dead = [orjson.loads(v) for _, v, _ in env.topic(env.settings.dead_letter_topic)]
    assert sorted(d["reason"] for d in dead) == sorted(
        ["not_json", "schema", "schema", "unknown_type", "too_large", "not_json"]
    )
    text = orjson.dumps(dead).decode()
    for pii in ("Alice", "Moreno", "4321", "lots", "alice.moreno@example.com"):
        assert pii not in text
    assert any(f"data.{safe_field_name('card_pin')}: unknown field" in d["error"] for d in dead)
    assert len({r.event_id for r in env.records()}) == 3


@pytest.mark.slow
def test_restarted_worker_loses_nothing(env: Env) -> None:
    lines = [orjson.dumps(e) for e in random_events(1500, seed=11)]
    expected = env.expected(lines)
    w = Worker(env).start()
    publish(env, lines[:750])
    wait_for(lambda: (w.health() or {}).get("processed", 0) > 100, 60, "some progress")
    w.kill()  # SIGKILL mid-stream
    publish(env, lines[750:])
    w2 = Worker(env, log_name="worker2").start()
    try:
        want = {r.record_id for out in expected for r in out.records}
        wait_for(lambda: want <= {r.record_id for r in env.records()}, 90, "all records")
        msgs = {m.disclosure_id for out in expected for m in out.messages}
        for agent in env.policy.agents:
            got = read_agent(env, agent)
            # (aggregate tables: tests/stream/test_aggregation.py)
            ids = [g.disclosure_id for g in got if g.kind != "aggregate"]
            assert set(ids) == {
                m.disclosure_id for out in expected for m in out.messages if m.agent == agent
            }
        assert msgs
        # The ledger sink survived the kill too: every record exactly once, log verifies.
        from gateway.ledger import list_records, open_store, verify_log

        def ledger_ids() -> list[str]:
            with open_store(env.settings.ledger_url, create=False) as store:
                return [
                    r.record_id
                    for r in list_records(store, limit=100_000)
                    if r.outcome != "aggregated"
                ]

        wait_for(lambda: set(ledger_ids()) >= want, 60, "the ledger to catch up")
        ids = ledger_ids()
        assert len(ids) == len(set(ids)) == len(want)
        from gateway.keys import load_verify_key

        with open_store(env.settings.ledger_url, create=False) as store:
            assert verify_log(store, load_verify_key(env.settings.signing_public_key_path)).ok
    finally:
        w2.stop()


@pytest.mark.slow
def test_confluent_kafka_publishes_and_reads_an_agent_topic(env: Env) -> None:
    import confluent_kafka  # a dev dependency: must be there, never skipped

    from gateway.kafka.clients import CONFLUENT_CONSUMER_DEFAULTS

    with Worker(env) as w:
        producer = confluent_kafka.Producer(
            {"bootstrap.servers": env.settings.bootstrap_servers, "enable.idempotence": False}
        )
        for e in scenario()[:6]:
            value = orjson.dumps(e)
            producer.produce(
                env.settings.input_topic,
                key=e["subject"]["customer_id"],
                value=value,
                headers=env.signed_headers(value),
            )
        assert producer.flush(30) == 0
        del producer  # librdkafka would keep reconnecting after the session's broker stops
        w.wait_processed(6)
        consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": env.settings.bootstrap_servers,
                "group.id": f"{env.settings.app_id}-confluent-reader",
                "auto.offset.reset": "earliest",
                **CONFLUENT_CONSUMER_DEFAULTS,
            }
        )
        consumer.subscribe([env.agent_topic("shipping")])
        reader = AgentReader(
            "shipping",
            demo_agent_private_key(env.settings.keys_dir, "shipping"),
            env.settings.signing_public_key_path,
        )
        got = []
        deadline = time.monotonic() + 60
        while len(got) < 2 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            got.append(reader.read(msg.value()))
        consumer.close()
    assert len(got) == 2  # Alice's order placed and shipped
    assert {g.payload["event_type"] for g in got if g} == {"order.placed", "order.shipped"}


@pytest.mark.slow
def test_publish_and_consume_commands(env: Env, tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = orjson.loads(SCENARIO[0])
    bad["data"]["shoe_size"] = 44
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join([*SCENARIO[:6], orjson.dumps(bad)]) + b"\n")
    run_env = env.env()

    def gw(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )

    with Worker(env) as w:
        publisher_keys = str(demo_publisher_keys_dir(env.settings.keys_dir))
        r = gw("publish", str(events), "--publisher-keys", publisher_keys)
        assert r.returncode == 1, r.stdout + r.stderr  # one line was refused
        assert "6 event(s) sent" in r.stdout
        assert "line 7 (schema)" in r.stdout
        assert f"data.{safe_field_name('shoe_size')}: unknown field" in r.stdout
        w.wait_processed(6)
        r = gw(
            "agent",
            "consume",
            "shipping",
            "--topic",
            env.agent_topic("shipping"),
            "--keys-dir",
            str(env.settings.keys_dir),
            "--max",
            "2",
            "--idle-timeout",
            "30",
        )
        assert r.returncode == 0, r.stderr
        got = [orjson.loads(line) for line in r.stdout.splitlines()]
        assert [g["payload"]["event_type"] for g in got] == ["order.placed", "order.shipped"]
        assert all("prescription" not in g["payload"]["data"] for g in got)
        import urllib.request

        url = f"http://127.0.0.1:{env.settings.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            metrics = resp.read().decode()
        assert "gateway_events_processed_total 6.0" in metrics
        assert 'gateway_agent_messages_total{agent="shipping",kind="disclosure"} 2.0' in metrics
        assert "C-1001" not in metrics and "Alice" not in metrics
