"""The sink's quarantine: messages read from the disclosure topic that were not logged.

The ledger sink appends only records a gateway worker wrote (a valid ``gateway-mac``,
:class:`gateway.integrity.WorkerMac`) and the store accepts. Everything else it reads is
set aside here, with where it was read and why, and the sink carries on:

* ``unsigned`` -- no worker MAC (written straight to the topic by someone else);
* ``bad_mac`` -- a MAC that does not verify (forged, or altered on the way);
* ``malformed`` -- written by a worker, but not a record this gateway can read;
* ``unstorable`` -- a record the store rejected (e.g. a time it cannot convert), isolated
  from the records around it, which are appended.

Nothing here is part of the disclosure log: quarantined messages are never hashed, sealed
or checkpointed, and ``gateway log verify`` does not look at them.

What is kept of a message: its position (topic, partition, offset), the reason, a short
error text (never the message's content: validation errors are rendered without their
input and database errors without their SQL parameters), the record id it claims, and the
SHA-256 digest and size of its key and value. The value itself is kept only when a worker
wrote it (the MAC verifies): decision records hold pseudonymous references and category
names, never raw identifiers, so the body of a worker's record is as safe to keep as the
log itself, and it is what an operator needs to re-append it once the cause is fixed. A
message without a valid MAC was written by someone we cannot identify and may hold
anything -- a customer's personal data, or a payload sized to fill the disk -- so only its
digest and size are kept: enough to match it against a copy found elsewhere (the topic,
a suspect's tooling), nothing to leak or to erase later.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import pydantic
import sqlalchemy as sa

from gateway.errors import LedgerError
from gateway.ledger import schema as t
from gateway.ledger.store import AppendResult, LedgerStore
from gateway.records import DecisionRecord

Reason = Literal["unsigned", "bad_mac", "malformed", "unstorable"]
REASONS: Final[tuple[Reason, ...]] = ("unsigned", "bad_mac", "malformed", "unstorable")

# The largest worker-written body kept in full (a record is a few kB; anything near this is
# not a record and its digest is enough).
BODY_LIMIT: Final = 256 * 1024
_ERROR_LIMIT: Final = 500
_ID_LIMIT: Final = 64  # the records table's record_id width


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Quarantined:
    """A message the sink sets aside (what it read, and why)."""

    topic: str
    partition: int
    offset: int
    reason: Reason
    error: str
    value: bytes
    key: bytes | None = None
    mac_ok: bool = False
    record_id: str | None = None

    def row(self) -> dict[str, Any]:
        body = None
        if self.mac_ok and len(self.value) <= BODY_LIMIT:
            try:
                text = self.value.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            # PostgreSQL text cannot hold NUL.
            body = text if text is not None and "\x00" not in text else None
        rid = self.record_id
        return {
            "topic": self.topic[:255],
            "kafka_partition": self.partition,
            "kafka_offset": self.offset,
            "reason": self.reason,
            "error": self.error[:_ERROR_LIMIT],
            # A claimed id that could not be a record id is not kept (it could be anything).
            "record_id": rid if rid is not None and 0 < len(rid) <= _ID_LIMIT else None,
            "mac_ok": self.mac_ok,
            "value_sha256": hashlib.sha256(self.value).hexdigest(),
            "value_size": len(self.value),
            "key_sha256": None if self.key is None else hashlib.sha256(self.key).hexdigest(),
            "body": body,
            "quarantined_at": _now(),
        }


@dataclass(frozen=True)
class QuarantineEntry:
    """A stored quarantine row."""

    id: int
    topic: str
    partition: int
    offset: int
    reason: str
    error: str
    record_id: str | None
    mac_ok: bool
    value_sha256: str
    value_size: int
    key_sha256: str | None
    body: str | None
    quarantined_at: datetime

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["quarantined_at"] = self.quarantined_at.isoformat() + "Z"
        return out


def describe_error(exc: BaseException) -> str:
    """A one-line description of why a message was not logged, without its content."""
    if isinstance(exc, pydantic.ValidationError):
        # Without the input values: those are the message's content.
        problems = exc.errors(include_input=False, include_url=False, include_context=False)
        parts = [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in problems]
        more = f" (+{len(parts) - 5} more)" if len(parts) > 5 else ""
        text = f"not a record: {'; '.join(parts[:5])}{more}"
    elif isinstance(exc, sa.exc.StatementError) and exc.orig is not None:
        # The driver's own message, without SQLAlchemy's "[SQL ...] [parameters ...]"
        # suffix, which would copy the record into the error text.
        first = str(exc.orig).strip().splitlines()
        text = f"{type(exc.orig).__name__}: {first[0] if first else ''}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:_ERROR_LIMIT]


def add_quarantined(store: LedgerStore, items: Sequence[Quarantined]) -> list[Quarantined]:
    """Keep ``items``; returns those that were new (a position already quarantined, e.g.
    read again after a restart, is not added twice)."""
    if not items:
        return []
    q = t.quarantine.c
    for attempt in range(3):
        try:
            with store.write() as conn:
                fresh: list[Quarantined] = []
                seen: set[tuple[str, int, int]] = set()
                for item in items:
                    pos = (item.topic[:255], item.partition, item.offset)
                    if pos in seen:
                        continue
                    seen.add(pos)
                    found = conn.execute(
                        sa.select(q.id).where(
                            q.topic == pos[0], q.kafka_partition == pos[1], q.kafka_offset == pos[2]
                        )
                    ).first()
                    if found is None:
                        fresh.append(item)
                if fresh:
                    conn.execute(t.quarantine.insert(), [i.row() for i in fresh])
            return fresh
        except sa.exc.IntegrityError:
            # Another sink took the same position between our check and insert (two sinks
            # on one partition during a rebalance): the retry sees its row.
            if attempt == 2:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


def list_quarantined(
    store: LedgerStore,
    *,
    reasons: Iterable[str] = (),
    limit: int | None = None,
    with_body: bool = True,
) -> list[QuarantineEntry]:
    """Quarantined messages, newest first; ``reasons`` filters by reason."""
    q = t.quarantine.c
    cols = [
        q.id,
        q.topic,
        q.kafka_partition,
        q.kafka_offset,
        q.reason,
        q.error,
        q.record_id,
        q.mac_ok,
        q.value_sha256,
        q.value_size,
        q.key_sha256,
        q.body if with_body else sa.null().label("body"),
        q.quarantined_at,
    ]
    stmt = sa.select(*cols).order_by(q.id.desc())
    wanted = list(reasons)
    if wanted:
        stmt = stmt.where(q.reason.in_(wanted))
    if limit is not None:
        stmt = stmt.limit(limit)
    with store.engine.connect() as conn:
        return [QuarantineEntry(*row) for row in conn.execute(stmt)]


def count_quarantined(store: LedgerStore) -> dict[str, int]:
    """How many messages are quarantined, by reason."""
    q = t.quarantine.c
    stmt = sa.select(q.reason, sa.func.count()).group_by(q.reason)
    with store.engine.connect() as conn:
        return {reason: n for reason, n in conn.execute(stmt)}


# Errors that say the store cannot take anything right now, whatever the record: the
# database is down or locked, or the log was altered behind the gateway and appending
# stopped on purpose (gateway.ledger.store). Quarantining records for these would empty
# the log into the quarantine during an outage (or wash a rollback away): the sink waits
# and retries instead, and reports itself stalled.
_STORE_FAULTS: Final = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,
    sa.exc.ResourceClosedError,
    LedgerError,
    OSError,
)


def store_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is about the store rather than the record being appended."""
    return isinstance(exc, _STORE_FAULTS)


@dataclass(frozen=True)
class IsolatedAppend:
    """The outcome of :func:`append_isolating`."""

    results: tuple[AppendResult, ...]
    # Records the store rejected, each with its error, in batch order.
    rejected: tuple[tuple[int, BaseException], ...]

    @property
    def appended(self) -> int:
        return sum(len(r.appended) for r in self.results)

    @property
    def duplicates(self) -> int:
        return sum(len(r.duplicates) for r in self.results)


def append_isolating(
    store: LedgerStore, batch: Sequence[DecisionRecord], shard: int
) -> IsolatedAppend:
    """Append ``batch`` to ``shard``, setting aside the records the store rejects.

    One transaction for the whole batch, as :meth:`LedgerStore.append`; if it fails
    because of a record (not :func:`store_fault`), the batch is split in halves and each
    appended the same way, down to the single records that fail, which are returned by
    their index in ``batch``. The others are appended in batch order, so the shard keeps
    the topic's order. A store fault is raised (nothing is set aside for it)."""
    results: list[AppendResult] = []
    rejected: list[tuple[int, BaseException]] = []

    def go(lo: int, hi: int) -> None:
        try:
            results.append(store.append(batch[lo:hi], shard))
        except Exception as exc:
            if store_fault(exc):
                raise
            if hi - lo == 1:
                rejected.append((lo, exc))
                return
            mid = (lo + hi) // 2
            go(lo, mid)
            go(mid, hi)

    if batch:
        go(0, len(batch))
    return IsolatedAppend(tuple(results), tuple(rejected))
