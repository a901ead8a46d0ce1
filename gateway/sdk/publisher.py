"""Publisher SDK (kafka-python): validate an event against its schema before sending —
a bad event raises a clear EventError and nothing is sent —, sign it as a declared
publisher (the ``gateway-publisher`` and ``gateway-signature`` record headers), and key it
by customer id with kafka-python's default partitioner: the partition the gateway decides
the customer's events on, so no event needs an extra hop."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError

from gateway.errors import BrokerError, EventError
from gateway.events import Event, parse_event
from gateway.publishers import PublisherSigner
from gateway.replay import iter_lines

# Transactional/idempotent producers are not needed (the gateway de-duplicates by event
# id downstream) and are not supported by every Kafka-protocol broker.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": False,
    "linger_ms": 5,
    "retries": 5,
    "max_request_size": 2 * 1024 * 1024,
}


@dataclass
class PublishReport:
    sent: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # line, reason, error


class Publisher:
    """Publishes events as publisher ``name``, signing each with the key in ``key`` (its
    Ed25519 private key, PEM, or its HMAC secret, hex; mode 0600), or with ``signer``, or,
    for a process that publishes for several back ends (a test, a migration), with
    ``signers``: a signer per event type. Without any, events go out unsigned, and the
    gateway dead-letters them.

    Events are keyed by customer id, and kafka-python partitions by murmur2 of the key:
    each event lands on its customer's partition, which is the cheapest for the gateway
    (it decides such an event at once; any other it first forwards there)."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = "gateway.events",
        *,
        name: str | None = None,
        key: Path | str | None = None,
        signer: PublisherSigner | None = None,
        signers: Mapping[str, PublisherSigner] | None = None,
        max_event_bytes: int = 256 * 1024,
        **producer_config: Any,
    ):
        if signer is None and (name is None) != (key is None):
            raise ValueError("give both the publisher's name and its key file, or neither")
        if signer is not None and (name is not None or key is not None):
            raise ValueError("give either a signer or a name and key file, not both")
        if signers is not None and (signer is not None or name is not None):
            raise ValueError("give signers per event type, or one publisher, not both")
        self.signers = dict(signers or {})
        self.topic = topic
        self.max_event_bytes = max_event_bytes
        # Loaded before connecting: a wrong key file is reported without a broker.
        self.signer = signer
        if name is not None and key is not None:
            self.signer = PublisherSigner.from_file(name, key)
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap_servers.split(","),
                **{**PRODUCER_DEFAULTS, **producer_config},
            )
        except KafkaError as e:
            raise BrokerError(
                f"cannot connect to Kafka at {bootstrap_servers}: "
                f"{type(e).__name__}; check GATEWAY_BOOTSTRAP_SERVERS"
            ) from None

    def validate(self, event: dict[str, Any] | bytes) -> tuple[Event, bytes]:
        raw = event if isinstance(event, bytes) else orjson.dumps(event)
        return parse_event(raw, self.max_event_bytes), raw

    def publish(
        self, event: dict[str, Any] | bytes, *, signer: PublisherSigner | None = None
    ) -> Any:
        """Validate, sign (with ``signer``, default this publisher's) and send one event;
        returns kafka-python's future. Raises EventError."""
        parsed, raw = self.validate(event)
        signer = signer or self.signer or self.signers.get(parsed.event_type)
        headers = signer.headers(raw) if signer is not None else None
        return self._producer.send(
            self.topic, key=parsed.customer_id.encode(), value=raw, headers=headers
        )

    def publish_many(self, lines: Iterable[tuple[int, bytes]]) -> PublishReport:
        report = PublishReport()
        futures = []
        for lineno, raw in lines:
            try:
                futures.append(self.publish(raw))
            except EventError as e:
                report.rejected.append((lineno, e.reason, str(e)))
        self.flush()
        for f in futures:
            f.get(timeout=30)
            report.sent += 1
        return report

    def publish_file(self, path: Path) -> PublishReport:
        with path.open("rb") as fh:
            return self.publish_many(iter_lines(fh))

    def flush(self, timeout: float = 30) -> None:
        self._producer.flush(timeout)

    def close(self) -> None:
        self._producer.close(timeout=10)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
