"""The agent's topic as an iterator of verified, decrypted messages.

::

    from pathlib import Path
    from gateway.sdk import AgentConsumer, AgentReader

    reader = AgentReader("shipping", Path("shipping.key"), Path("gateway-signing.pub"))
    with AgentConsumer(reader, "localhost:9092") as consumer:
        for msg in consumer:                      # gateway.sdk.Message
            save(msg.disclosure_id, msg.subject_key, msg.kind, msg.payload)

Commit protocol
---------------
Offsets are committed to the consumer group, never automatically:

1. A batch is fetched; each message in it is opened (signature verified, data key
   unwrapped, payload decrypted) in order.
2. A message that opens is yielded. It counts as *handled* when the loop asks for the
   next message, or when the ``with`` block is left without an exception (a ``break``
   included). A duplicate (a disclosure id already delivered) is handled at once.
3. A message that is the message's own fault (see below) is reported to ``on_rejected``
   and handled: it will never open, whoever reads it.
4. At the end of each batch, the offsets after the handled messages are committed.
5. A message the consumer's *keys* cannot open raises :class:`~gateway.errors.KeyMismatch`
   after committing what was handled before it: that message and everything after it stay
   uncommitted, so the same group started again with the right keys receives them.

Delivery is therefore at least once: a crash between handling and committing delivers a
message again. Store by disclosure id (as the examples do) and a repeat is harmless.

What stops and what is skipped
------------------------------
Skipped (reported, then committed past):

* not a message of the gateway's wire format (not JSON, no key envelope);
* addressed to another agent, or its header and key envelope disagree;
* its signature does not verify although its signer's signatures verified on earlier
  messages, or it does not decrypt although its data key opened earlier messages: the
  keys are proven right, so the message itself was altered or damaged.

Stops with :class:`~gateway.errors.KeyMismatch` (nothing committed from it on):

* any other message addressed to this agent that does not verify or decrypt: its signer
  or data key was not proven with these keys, so the likely cause is a private key that
  is not the one the gateway seals for (e.g. after the agent's public key was replaced in
  the policy), or a gateway public key that is not the one that signs. Skipping would
  lose every message until the keys are fixed; stopping loses none. (A forged message
  under an unknown data key stops the consumer too: stopping is the safe side.)

Joining a group
---------------
A consumer receives nothing until its group has assigned it partitions. A group that is
new (or whose last member left less than a session timeout ago) waits for the broker's
rebalance: about 3 s on Kafka (``group.initial.rebalance.delay.ms``) and about half the
session timeout on the embedded broker. The defaults here use the shortest session timeout
a stock Kafka broker accepts (6 s, heartbeats every 2 s), so a new group joins in about
3 s; kafka-python's own default (10 s) and a previous member that did not leave cleanly
can make it 20 s or more. ``idle_timeout`` therefore counts from the assignment, not from
the start. A new group starts from the beginning of the topic (``auto_offset_reset``
``earliest``), so nothing sent before the agent first connected is missed.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Any, Final

import orjson
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from gateway.errors import (
    BrokerError,
    ContextMismatch,
    CryptoError,
    KeyMismatch,
    SignatureError,
)
from gateway.kafka.clients import KAFKA_PYTHON_CONSUMER_DEFAULTS
from gateway.sdk.reader import AgentReader, Received, Rejected

log = logging.getLogger("gateway.sdk")

CONSUMER_DEFAULTS: dict[str, Any] = {
    # A new group reads the topic from its beginning: messages sent before the agent
    # first connected are not skipped.
    "auto_offset_reset": "earliest",
    # Offsets are committed by the protocol above, never on a timer.
    "enable_auto_commit": False,
    # 6 s session, 2 s heartbeats: see "Joining a group" above.
    **KAFKA_PYTHON_CONSUMER_DEFAULTS,
}
"""kafka-python settings of every :class:`AgentConsumer`; keyword arguments override them."""

_POLL_MS: Final = 500
# Key ids and signers proven to open messages (see "What stops and what is skipped"). Data
# keys rotate every 10,000 messages or hour by default: a year of them fits.
_PROVEN_MAX: Final = 10_000


@dataclass(frozen=True)
class Message(Received):
    """A message from the agent's topic: what :class:`~gateway.sdk.reader.Received` holds,
    and where it came from."""

    subject_key: str | None = None
    """The message's Kafka key: the gateway's pseudonym of the subject *for this agent*.
    Every message about one subject (its erasure notice included) carries the same key,
    so it is what to file data under and what an erasure notice asks to delete."""
    position: str = ""
    """``topic[partition]@offset``."""

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "subject_key": self.subject_key, "position": self.position}


@dataclass
class ConsumerStats:
    """What a consumer has read so far."""

    received: int = 0
    """Messages fetched from the topic."""
    decrypted: int = 0
    """Messages verified and decrypted (duplicates included)."""
    duplicates: int = 0
    """Decrypted messages dropped because their disclosure id was delivered already."""
    rejected: int = 0
    """Messages skipped as malformed, another agent's, or altered."""

    @property
    def delivered(self) -> int:
        """Messages handed to the application."""
        return self.decrypted - self.duplicates

    def summary(self) -> str:
        return (
            f"{self.received} received, {self.decrypted} decrypted, "
            f"{self.duplicates} duplicate(s) dropped, {self.rejected} rejected"
        )


def _envelope_ids(value: bytes | None) -> tuple[str, str] | None:
    """(data key id, signer key id) of a message's key envelope, or None when the message
    has no envelope of the wire format's shape."""
    try:
        doc = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return None
    envelope = doc.get("envelope") if isinstance(doc, dict) else None
    if not isinstance(envelope, dict):
        return None
    key_id, signer = envelope.get("key_id"), envelope.get("signer")
    if isinstance(key_id, str) and isinstance(signer, str):
        return key_id, signer
    return None


class _Proven:
    """A bounded set of ids that opened messages with this consumer's keys."""

    def __init__(self) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> None:
        self._ids[key] = None
        if len(self._ids) > _PROVEN_MAX:
            self._ids.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._ids


class _Assignments(ConsumerRebalanceListener):
    def __init__(self, owner: AgentConsumer):
        self.owner = owner

    def on_partitions_revoked(self, revoked: Any) -> None:
        # Everything handled was committed before the poll that runs this callback.
        for tp in revoked:
            self.owner._handled.pop(tp, None)
            self.owner._committed.pop(tp, None)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.owner._on_assigned(sorted(tp.partition for tp in assigned))


class AgentConsumer:
    """An agent's Kafka topic as verified, decrypted, de-duplicated messages.

    ``reader`` holds the agent's private key and the gateway's public key. ``topic``
    defaults to ``agent.<name>``, ``group_id`` to ``agent-<name>``. Iterating (or
    :meth:`messages`) yields :class:`Message` objects and stops after
    ``idle_timeout`` seconds without a message (counted from the partition assignment;
    None: never) or after ``max_messages`` messages (None: no limit).

    ``on_rejected`` is called with a :class:`~gateway.sdk.reader.Rejected` for every
    skipped message (default: a warning on the ``gateway.sdk`` logger); ``on_assigned``
    with the partition numbers each time the group assigns partitions. Raises
    :class:`~gateway.errors.KeyMismatch` when the keys cannot open a message addressed to
    this agent (nothing from it on is committed), and
    :class:`~gateway.errors.BrokerError` when the broker cannot be reached or no
    assignment arrives within ``join_timeout`` seconds. Other keyword arguments go to
    ``kafka.KafkaConsumer`` (e.g. security settings), over :data:`CONSUMER_DEFAULTS`.

    Use it as a context manager: leaving the block commits what was handled and closes
    the connection. The module docstring states the commit protocol in full.
    """

    def __init__(
        self,
        reader: AgentReader,
        bootstrap_servers: str,
        topic: str | None = None,
        *,
        group_id: str | None = None,
        idle_timeout: float | None = None,
        max_messages: int | None = None,
        join_timeout: float = 60.0,
        on_rejected: Callable[[Rejected], None] | None = None,
        on_assigned: Callable[[list[int]], None] | None = None,
        **consumer_config: Any,
    ):
        self.reader = reader
        self.topic = topic or f"agent.{reader.agent}"
        self.group_id = group_id or f"agent-{reader.agent}"
        self.idle_timeout = idle_timeout
        self.max_messages = max_messages
        self.join_timeout = join_timeout
        self.stats = ConsumerStats()
        self.assigned_after: float | None = None
        """Seconds from the start to the first partition assignment (None: not yet)."""
        self._on_rejected = on_rejected or _log_rejected
        self._on_assigned_cb = on_assigned
        self._started = time.monotonic()
        self._assigned_at: float | None = None
        self._last_message: float | None = None
        # The offset after the last handled message, per partition, and what was committed.
        self._handled: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._in_flight: tuple[TopicPartition, int] | None = None
        self._failed: KeyMismatch | None = None
        self._proven_keys = _Proven()
        self._proven_signers = _Proven()
        try:
            self._consumer = KafkaConsumer(
                bootstrap_servers=bootstrap_servers.split(","),
                group_id=self.group_id,
                **{**CONSUMER_DEFAULTS, **consumer_config},
            )
        except KafkaError as e:
            raise BrokerError(
                f"cannot connect to Kafka at {bootstrap_servers}: {type(e).__name__}; "
                "check the bootstrap address (GATEWAY_BOOTSTRAP_SERVERS or --bootstrap)"
            ) from None
        self._consumer.subscribe([self.topic], listener=_Assignments(self))

    # --- iteration ---------------------------------------------------------------------

    def __iter__(self) -> Iterator[Message]:
        return self.messages()

    def messages(
        self, *, idle_timeout: float | None = None, max_messages: int | None = None
    ) -> Iterator[Message]:
        """Yield messages as they arrive; ``idle_timeout`` and ``max_messages`` override
        the consumer's own for this iteration."""
        if self._failed is not None:
            raise self._failed
        idle = idle_timeout if idle_timeout is not None else self.idle_timeout
        limit = max_messages if max_messages is not None else self.max_messages
        delivered = 0
        while limit is None or delivered < limit:
            batch = self._poll()
            if not batch:
                if self._idle_for() > (idle if idle is not None else float("inf")):
                    return
                continue
            self._last_message = time.monotonic()
            for tp, records in batch.items():
                for rec in records:
                    try:
                        got = self._open(rec)
                    except KeyMismatch as e:
                        self._stop(e, batch)
                        raise
                    if got is not None:
                        self._in_flight = (tp, rec.offset)
                        yield got
                        self._in_flight = None
                        delivered += 1
                    self._handled[tp] = rec.offset + 1
                    if limit is not None and delivered >= limit:
                        self.commit()
                        return
            self.commit()

    def _poll(self) -> dict[TopicPartition, list[ConsumerRecord]]:
        try:
            batch: dict[TopicPartition, list[ConsumerRecord]] = self._consumer.poll(
                timeout_ms=_POLL_MS
            )
        except KafkaError as e:
            raise BrokerError(f"reading {self.topic} failed: {type(e).__name__}: {e}") from None
        if self._assigned_at is None and time.monotonic() - self._started > self.join_timeout:
            raise BrokerError(
                f"consumer group {self.group_id!r} got no partitions of {self.topic!r} within "
                f"{self.join_timeout:.0f} s: check that the topic exists and the broker is up"
            )
        return batch

    def _idle_for(self) -> float:
        """Seconds since the last message or the assignment; 0 before any assignment."""
        if self._assigned_at is None:
            return 0.0
        return time.monotonic() - max(self._assigned_at, self._last_message or 0.0)

    def _on_assigned(self, partitions: list[int]) -> None:
        now = time.monotonic()
        if self.assigned_after is None:
            self.assigned_after = now - self._started
        self._assigned_at = now
        if self._on_assigned_cb is not None:
            self._on_assigned_cb(partitions)

    # --- opening one message -------------------------------------------------------------

    def _open(self, rec: ConsumerRecord) -> Message | None:
        """The message, None when it is a duplicate or skipped; raises KeyMismatch."""
        self.stats.received += 1
        position = f"{rec.topic}[{rec.partition}]@{rec.offset}"
        try:
            got = self.reader.read(rec.value)
        except CryptoError as e:
            self._reject_or_stop(position, rec.value, e)
            return None
        self.stats.decrypted += 1
        if got is None:
            self.stats.duplicates += 1
            return None
        if got.key_id not in self._proven_keys:  # a new data key: rare
            self._proven_keys.add(got.key_id)
            ids = _envelope_ids(rec.value)
            if ids is not None:
                self._proven_signers.add(ids[1])
        return Message(
            **{f.name: getattr(got, f.name) for f in fields(got)},
            subject_key=rec.key.decode(errors="replace") if rec.key is not None else None,
            position=position,
        )

    def _reject_or_stop(self, position: str, value: bytes | None, error: CryptoError) -> None:
        ids = _envelope_ids(value)
        if isinstance(error, ContextMismatch) or ids is None:
            self._reject(Rejected(position, str(error), isinstance(error, ContextMismatch)))
            return
        key_id, signer = ids
        # A signature that fails although this signer's signatures verified before, or a
        # decryption that fails although this data key opened before: the keys are right,
        # the message is not. (A new data key from a proven signer that does not unwrap is
        # the gateway sealing for another public key: a key problem.)
        proven = (
            signer in self._proven_signers
            if isinstance(error, SignatureError)
            else key_id in self._proven_keys
        )
        if proven:
            self._reject(Rejected(position, f"altered or damaged: {error}", False))
            return
        raise KeyMismatch(
            f"cannot open {position} with the keys given for agent {self.reader.agent!r}: "
            f"{error}. Check that the private key is the one whose public key the gateway "
            "has for this agent (agents.yaml) and that the gateway key is the gateway's "
            "current public key. Nothing from this message on was committed: run again "
            f"with the right keys in group {self.group_id!r} to receive it.",
            position=position,
        )

    def _reject(self, rejected: Rejected) -> None:
        self.stats.rejected += 1
        self._on_rejected(rejected)

    def _stop(self, error: KeyMismatch, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Commit what was handled, and put every partition of the batch back at its first
        unhandled message, so nothing after the failure can be committed by this consumer."""
        self._failed = error
        self.commit()
        for tp, records in batch.items():
            self._consumer.seek(tp, max(self._handled.get(tp, -1), records[0].offset))

    # --- committing and closing ----------------------------------------------------------

    def commit(self) -> None:
        """Commit the offsets after the handled messages (the loop does it per batch)."""
        pending = {
            tp: OffsetAndMetadata(offset, "", -1)
            for tp, offset in self._handled.items()
            if self._committed.get(tp) != offset
        }
        if not pending:
            return
        try:
            self._consumer.commit(pending)
        except CommitFailedError:
            # The group rebalanced (e.g. handling took longer than max_poll_interval_ms):
            # the partitions' new owner starts from the last commit, so these messages are
            # delivered again, not lost.
            log.warning("commit refused after a rebalance; some messages will be redelivered")
            return
        except KafkaError as e:
            raise BrokerError(f"committing offsets of {self.topic} failed: {e}") from None
        self._committed.update({tp: m.offset for tp, m in pending.items()})

    def close(self, *, handled: bool = True) -> None:
        """Commit and disconnect. ``handled``: whether the message last yielded counts as
        handled (False when its handling failed)."""
        try:
            if handled and self._in_flight is not None and self._failed is None:
                tp, offset = self._in_flight
                self._handled[tp] = offset + 1
            self._in_flight = None
            if self._failed is None:
                self.commit()
        finally:
            self._consumer.close(autocommit=False)

    def __enter__(self) -> AgentConsumer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(handled=exc_type is None)


def _log_rejected(rejected: Rejected) -> None:
    log.warning("rejected %s: %s", rejected.position, rejected.error)
