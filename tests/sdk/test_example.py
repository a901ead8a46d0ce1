"""The carrier example (examples/carrier_agent.py) runs as a carrier's developer would run
it, against the embedded broker: it stores the shipping agent's disclosures by disclosure
id, deletes a subject's records on an erasure notice, and survives a second run."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from gateway.consent import ConsentState
from gateway.dev.broker import EmbeddedBroker
from gateway.dev.samples import scenario
from gateway.kafka.admin import ensure_topics
from gateway.kafka.clients import KAFKA_PYTHON_PRODUCER_DEFAULTS
from gateway.keys import demo_agent_private_key
from gateway.records import DecisionRecord
from gateway.runtime import Core
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "carrier_agent.py"

pytestmark = pytest.mark.broker


def test_carrier_example_stores_and_erases(
    broker: EmbeddedBroker, topic_prefix: str, core: Core, settings: Settings, tmp_path: Path
) -> None:
    # What the gateway would put on the shipping topic for the bundled scenario.
    # (An erasure request is answered with notices built from the log so far, as the
    # ledger sink does.)
    states: dict[str, ConsentState] = {}
    log: list[DecisionRecord] = []
    messages = []
    for e in scenario():
        out = core.pipeline.process(orjson.dumps(e), states, verify=False)
        log += out.records
        if out.erasure_request is not None:
            notices = core.pipeline.erasure_outputs(out.erasure_request, log)
            log += notices.records
            out.messages += notices.messages
        messages += [m for m in out.messages if m.agent == "shipping"]
    notices = [m for m in messages if m.kind == "erasure_notice"]
    assert notices, "the scenario erases a customer who had orders shipped"
    erased = {m.key for m in notices}
    kept = {m.disclosure_id for m in messages if m.kind == "disclosure" and m.key not in erased}

    topic = f"{topic_prefix}.shipping"
    ensure_topics(broker.bootstrap, {topic: 2})
    producer = KafkaProducer(bootstrap_servers=[broker.bootstrap], **KAFKA_PYTHON_PRODUCER_DEFAULTS)
    for m in messages:
        producer.send(topic, key=m.key, value=m.value)
    producer.flush()
    producer.close()

    db = tmp_path / "shipments.db"

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                str(EXAMPLE),
                "--bootstrap",
                broker.bootstrap,
                "--key",
                str(demo_agent_private_key(settings.keys_dir, "shipping")),
                "--gateway-key",
                str(settings.signing_public_key_path),
                "--topic",
                topic,
                "--group",
                f"{topic}.carrier",
                "--db",
                str(db),
                "--idle-timeout",
                "2",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )

    r = run()
    assert r.returncode == 0, r.stderr
    n = len(messages)
    assert f"stopped: {n} received, {n} decrypted, 0 duplicate(s) dropped, 0 rejected" in r.stderr
    assert "erasure notice: deleted" in r.stderr
    with sqlite3.connect(db) as c:
        stored = {row[0] for row in c.execute("SELECT disclosure_id FROM shipments")}
        erasures = c.execute("SELECT subject_key, rows_deleted FROM erasures").fetchall()
    assert stored == kept
    assert {k.encode() for k, _ in erasures} == erased
    assert sum(deleted for _, deleted in erasures) > 0

    # Everything was committed: a second run receives nothing and changes nothing.
    r = run()
    assert r.returncode == 0, r.stderr
    assert "stopped: 0 received" in r.stderr
    with sqlite3.connect(db) as c:
        assert {row[0] for row in c.execute("SELECT disclosure_id FROM shipments")} == kept
