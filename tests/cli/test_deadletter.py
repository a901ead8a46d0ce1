"""`gateway deadletter list / show`: the dead-letter topic read back, never a value."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from click.testing import CliRunner, Result
from kafka import KafkaProducer

from gateway.cli import main
from gateway.dev.broker import EmbeddedBroker
from gateway.kafka.admin import ensure_topics
from gateway.kafka.clients import KAFKA_PYTHON_PRODUCER_DEFAULTS
from gateway.runtime import Core

pytestmark = pytest.mark.broker

SECRET_EMAIL = "zoe@example.com"
SECRET_SSN = "078-05-1120"
BAD_SCHEMA = orjson.dumps(
    {
        "event_id": "evt-bad-0002",
        "event_type": "customer.registered",
        "schema_version": 1,
        "occurred_at": "2026-03-02T12:00:00Z",
        "subject": {"customer_id": "C-1009", "type": "consumer"},
        "data": {"emails": [SECRET_EMAIL], "ssn": SECRET_SSN},
    }
)
NOT_JSON = b'{"event_id": "evt-bad-0001", "data": {"email": "' + SECRET_EMAIL.encode()


@pytest.fixture
def topic(broker: EmbeddedBroker, topic_prefix: str, core: Core) -> str:
    name = f"{topic_prefix}.deadletter"
    ensure_topics(broker.bootstrap, {name: 2})
    letters = [
        core.pipeline.process(raw, {}, verify=False).dead_letter for raw in (BAD_SCHEMA, NOT_JSON)
    ]
    assert letters[0] is not None and letters[1] is not None
    schema, not_json = orjson.loads(letters[0].to_json()), letters[1].to_json()
    # As the worker writes them once it records where the event was read.
    schema["position"] = {"topic": "gateway.events", "partition": 3, "offset": 41}
    producer = KafkaProducer(bootstrap_servers=[broker.bootstrap], **KAFKA_PYTHON_PRODUCER_DEFAULTS)
    producer.send(name, value=not_json, partition=0)
    producer.send(name, value=orjson.dumps(schema), partition=1)
    producer.send(name, value=b"stray " + SECRET_EMAIL.encode(), partition=1)
    producer.flush()
    producer.close()
    return name


def run(broker: EmbeddedBroker, topic: str, *args: str) -> Result:
    return CliRunner(env={"COLUMNS": "240"}).invoke(
        main, ["deadletter", *args, "--bootstrap", broker.bootstrap, "--topic", topic]
    )


def test_list_as_json_shows_reason_position_size_digest_time(
    broker: EmbeddedBroker, topic: str
) -> None:
    r = run(broker, topic, "list", "--format", "json")
    assert r.exit_code == 0, r.output
    letters = {d["reason"]: d for d in orjson.loads(r.stdout)}
    assert set(letters) == {"not_json", "schema", "not_a_dead_letter"}
    schema = letters["schema"]
    assert schema["id"] == "1:0" and schema["dead_letter"] == f"{topic}[1]@0"
    assert schema["input"] == "gateway.events[3]@41"
    assert schema["event_id"] == "evt-bad-0002"
    assert schema["size"] == len(BAD_SCHEMA)
    assert schema["digest"] == "sha256:" + hashlib.sha256(BAD_SCHEMA).hexdigest()
    assert schema["time"].startswith("20")
    assert letters["not_json"]["input"] is None
    stray = letters["not_a_dead_letter"]
    assert stray["size"] == len(b"stray " + SECRET_EMAIL.encode())
    assert SECRET_EMAIL not in r.stdout and SECRET_SSN not in r.stdout


def test_list_table_filters_and_show(broker: EmbeddedBroker, topic: str) -> None:
    r = run(broker, topic, "list")
    assert r.exit_code == 0, r.output
    assert "gateway.events[3]@41" in r.stdout and "not_json" in r.stdout
    assert "3 dead letter(s)" in r.stdout
    r = run(broker, topic, "list", "--reason", "schema")
    assert "1 dead letter(s)" in r.stdout and "not_json" not in r.stdout

    r = run(broker, topic, "show", "1:0")
    assert r.exit_code == 0, r.output
    assert "input        gateway.events[3]@41" in r.stdout
    assert "sha256:" + hashlib.sha256(BAD_SCHEMA).hexdigest() in r.stdout
    assert '"emails": [' in r.stdout and '"<str>"' in r.stdout  # the shape: names, types
    r2 = run(broker, topic, "show", "evt-bad-0002")
    assert r2.stdout == r.stdout
    for out in (r.stdout, r2.stdout):
        assert SECRET_EMAIL not in out and SECRET_SSN not in out and "ssn" not in out

    r = run(broker, topic, "show", "9:9")
    assert r.exit_code == 2
    assert "no dead letter '9:9'" in r.stderr


def test_an_empty_or_missing_topic(broker: EmbeddedBroker, topic_prefix: str) -> None:
    r = run(broker, f"{topic_prefix}.none", "list")
    assert r.exit_code == 0 and "no dead letters" in r.stdout
    r = run(broker, f"{topic_prefix}.none", "list", "--format", "json")
    assert orjson.loads(r.stdout) == []
