"""Publisher SDK (kafka-python): validate an event against its schema before sending —
a bad event raises a clear EventError and nothing is sent — and key it by customer id,
so all of a customer's events land on one partition, in order."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError

from gateway.errors import BrokerError, EventError
from gateway.events import Event, parse_event
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
    def __init__(self, bootstrap_servers: str, topic: str = "gateway.events", *,
                 max_event_bytes: int = 256 * 1024, **producer_config: Any):
        self.topic = topic
        self.max_event_bytes = max_event_bytes
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap_servers.split(","),
                **{**PRODUCER_DEFAULTS, **producer_config})
        except KafkaError as e:
            raise BrokerError(f"cannot connect to Kafka at {bootstrap_servers}: "
                              f"{type(e).__name__}; check GATEWAY_BOOTSTRAP_SERVERS") from None

    def validate(self, event: dict[str, Any] | bytes) -> tuple[Event, bytes]:
        raw = event if isinstance(event, bytes) else orjson.dumps(event)
        return parse_event(raw, self.max_event_bytes), raw

    def publish(self, event: dict[str, Any] | bytes) -> Any:
        """Validate and send one event; returns kafka-python's future. Raises EventError."""
        parsed, raw = self.validate(event)
        return self._producer.send(self.topic, key=parsed.customer_id.encode(), value=raw)

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
