"""Reading a deployment: the topics (with their headers and timestamps), the gateway's
committed offsets and the ledger.

The only part of the audit that talks to Kafka or SQL. The clients are imported inside the
functions that use them, so importing :mod:`gateway.audit` (and its pure modules) loads
neither. Every Kafka client gets the deployment's security settings
(:func:`gateway.kafka.clients.kafka_python_security`), so the audit reads a SASL_SSL
deployment as the workers do.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.audit.model import TopicMessage

if TYPE_CHECKING:
    from gateway.settings import Settings

# Seconds allowed to read one topic to its end: a big topic on a slow broker takes a while.
READ_TIMEOUT = 120.0
# Seconds the broker has to answer at all: an unreachable one is reported, not waited for.
CONNECT_TIMEOUT = 10.0
# Seconds of empty fetches after the end offsets are reached before a topic counts as read.
QUIET = 1.0


def read_messages(
    bootstrap: str,
    topic: str,
    timeout: float = READ_TIMEOUT,
    quiet: float = QUIET,
    security: Mapping[str, Any] | None = None,
) -> list[TopicMessage]:
    """All messages now on ``topic`` with their headers and timestamps, read to its real
    end: past the end offsets, fetches must stay empty for ``quiet`` seconds (some brokers
    under-report end offsets). Raises :class:`TimeoutError` if that takes longer than
    ``timeout`` seconds. ``security``: kafka-python's security options (None: PLAINTEXT)."""
    from gateway.kafka.read import read_records

    return [
        TopicMessage(
            r.topic,
            r.partition,
            r.offset,
            r.key,
            r.value or b"",
            tuple(r.headers),
            r.timestamp_ms,
        )
        for r in read_records(bootstrap, topic, timeout, quiet, security)
    ]


def committed_offsets(
    bootstrap: str,
    group: str,
    connect_timeout: float = CONNECT_TIMEOUT,
    security: Mapping[str, Any] | None = None,
) -> dict[tuple[str, int], int]:
    """The group's committed offsets (the next offset it would consume), per partition.
    Raises kafka-python's ``NoBrokersAvailable`` if no broker answers within
    ``connect_timeout`` seconds."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap.split(","),
        client_id="gateway-audit",
        bootstrap_timeout_ms=int(connect_timeout * 1000),
        **(security or {}),
    )
    try:
        got = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return {
        (tp.topic, tp.partition): om.offset
        for tp, om in got.items()
        if om is not None and om.offset is not None and om.offset >= 0
    }


def read_ledger(url: str) -> dict[str, str | None]:
    """Record id -> stored body (None when pruned) for the whole ledger."""
    import sqlalchemy as sa

    from gateway.ledger import schema as t
    from gateway.ledger.store import open_store

    store = open_store(url, create=False)
    try:
        c = t.records.c
        with store.engine.connect() as conn:
            rows = conn.execution_options(yield_per=5000).execute(sa.select(c.record_id, c.body))
            return {rid: body for rid, body in rows}
    finally:
        store.close()


@dataclass
class Snapshot:
    """Everything the auditor read, for :func:`~gateway.audit.comparison.compare`."""

    inputs: list[TopicMessage]
    disclosures: list[TopicMessage]
    dead_letters: list[TopicMessage]
    agent_messages: dict[str, list[TopicMessage]]
    agent_topics: dict[str, str]
    ledger: dict[str, str | None]
    offsets: dict[tuple[str, int], int] | None
    # When the reading started (ms since the epoch): the age of unfinished work.
    read_at_ms: int = -1


def snapshot(
    settings: Settings,
    agent_topics: Mapping[str, str],
    *,
    use_offsets: bool = True,
    read_timeout: float = READ_TIMEOUT,
    connect_timeout: float = CONNECT_TIMEOUT,
    quiet: float = QUIET,
) -> Snapshot:
    """Read the input, disclosure, dead-letter and agent topics and the ledger.

    The gateway consumer group's committed offsets are read *first* (unless not
    ``use_offsets``): anything committed then has had its outputs written before, so
    reading the topics afterwards cannot mistake in-flight work for a loss. The broker has
    ``connect_timeout`` seconds to answer that request; each topic is read to its end
    within ``read_timeout`` seconds, the end confirmed by ``quiet`` seconds without data
    (see :func:`read_messages`).
    """
    from gateway.kafka.clients import kafka_python_security

    bootstrap = settings.bootstrap_servers
    security = kafka_python_security(settings)
    read_at_ms = int(time.time() * 1000)
    offsets = (
        committed_offsets(bootstrap, settings.app_id, connect_timeout, security)
        if use_offsets
        else None
    )
    ledger = read_ledger(settings.ledger_url)
    topics = [
        settings.input_topic,
        settings.disclosure_topic,
        settings.dead_letter_topic,
        *agent_topics.values(),
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        read = dict(
            zip(
                topics,
                pool.map(
                    lambda t: read_messages(bootstrap, t, read_timeout, quiet, security), topics
                ),
                strict=True,
            )
        )
    return Snapshot(
        inputs=read[settings.input_topic],
        disclosures=read[settings.disclosure_topic],
        dead_letters=read[settings.dead_letter_topic],
        agent_messages={a: read[t] for a, t in agent_topics.items()},
        agent_topics=dict(agent_topics),
        ledger=ledger,
        offsets=offsets,
        read_at_ms=read_at_ms,
    )
