"""The disclosure-log store: SQLAlchemy Core over SQLite (default) or PostgreSQL.

Records are appended in batches to a *shard* (e.g. the disclosure-topic partition a sink
worker owns). Each shard is its own append-only sequence with its own Merkle tree, so
writers on different shards only meet at the unique record-id index. An append is one
transaction: the rows, the new tree head and, every ``checkpoint_every`` records, a signed
checkpoint become durable together, before the caller releases any agent message.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from gateway.crypto import SigningKey
from gateway.errors import LedgerError, VerificationError
from gateway.ledger import schema as t
from gateway.ledger.checkpoints import Checkpoint, Sealer
from gateway.ledger.merkle import Frontier, leaf_hash
from gateway.records import DecisionRecord

NO_LEDGER_HINT = (
    "run `gateway demo` or `gateway replay ... --ledger` to create one, or point --db /"
    " GATEWAY_LEDGER_URL at an existing ledger"
)
_IN_CHUNK = 500  # ids per IN (...) clause: well under SQLite's bound-parameter limit
_RETRIES = 3


def utc_naive(when: datetime) -> datetime:
    """The storage form of a time: UTC without tzinfo (naive input is taken as UTC)."""
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class AppendResult:
    shard: int
    appended: tuple[str, ...]
    duplicates: tuple[str, ...]
    tree_size: int
    checkpoint: Checkpoint | None = None

    def is_duplicate(self, record_id: str) -> bool:
        return record_id in self.duplicates


@dataclass(frozen=True)
class StoredRecord:
    shard: int
    seq: int
    record_id: str
    leaf_hash: bytes
    body: str | None
    pruned_by: int | None

    @property
    def pruned(self) -> bool:
        return self.body is None

    @property
    def record(self) -> DecisionRecord | None:
        return None if self.body is None else DecisionRecord.from_json(self.body)


def create_engine(url: str) -> Engine:
    u = sa.make_url(url)
    if u.get_backend_name() != "sqlite":
        return sa.create_engine(u, pool_pre_ping=True)
    memory = u.database in (None, "", ":memory:")
    if not memory:
        Path(str(u.database)).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        u,
        connect_args={"timeout": 30},
        **({"poolclass": sa.pool.StaticPool} if memory else {}),
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Take BEGIN away from pysqlite so that writes can ask for BEGIN IMMEDIATE: a
        # deferred transaction that reads, then writes, can fail to upgrade its lock
        # when another worker wrote in between.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
        cur.execute("PRAGMA synchronous=FULL")  # a committed record survives power loss
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', '')}")

    return engine


def display_url(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


def open_store(
    url: str,
    *,
    signer: SigningKey | None = None,
    checkpoint_every: int = 1000,
    create: bool = True,
) -> LedgerStore:
    """Open (and with ``create``, make or upgrade) the ledger at ``url``.

    ``signer`` is needed to append, checkpoint and prune; readers leave it out. With
    ``create=False`` a missing ledger is an error that says how to make one.
    """
    u = sa.make_url(url)
    if not create and u.get_backend_name() == "sqlite":
        db = u.database
        if db in (None, "", ":memory:") or not Path(str(db)).expanduser().exists():
            raise LedgerError(f"no ledger at {display_url(url)}: {NO_LEDGER_HINT}")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            version = t.current_version(conn)
        if version == 0 and not create:
            raise LedgerError(f"no ledger at {display_url(url)}: {NO_LEDGER_HINT}")
        if version < t.LATEST:
            with _write(engine) as conn:
                t.migrate(conn)
        elif version > t.LATEST:
            with engine.connect() as conn:
                t.migrate(conn)  # raises with the upgrade hint
    except sa.exc.OperationalError as exc:
        engine.dispose()
        raise LedgerError(
            f"cannot open the ledger database {display_url(url)}: {exc.orig}. Check the URL"
            " (--db or GATEWAY_LEDGER_URL) and that the database is running"
        ) from exc
    except BaseException:
        engine.dispose()
        raise
    return LedgerStore(engine, signer=signer, checkpoint_every=checkpoint_every)


@contextmanager
def _write(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


class LedgerStore:
    """Append, checkpoint and read the log. Thread-safe as SQLAlchemy engines are."""

    def __init__(
        self, engine: Engine, *, signer: SigningKey | None = None, checkpoint_every: int = 1000
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self.engine = engine
        self.signer = signer
        self.sealer = Sealer.from_signing_key(signer) if signer is not None else None
        self.checkpoint_every = checkpoint_every

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> LedgerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def write(self) -> Any:
        """A write transaction (BEGIN IMMEDIATE on SQLite), for this package's writers."""
        return _write(self.engine)

    def require_signer(self, what: str) -> tuple[SigningKey, Sealer]:
        if self.signer is None or self.sealer is None:
            raise LedgerError(
                f"{what} needs the gateway signing key; open the store with signer="
                " (the CLI loads it from GATEWAY_KEYS_DIR)"
            )
        return self.signer, self.sealer

    # -- appending ------------------------------------------------------------------------

    def append(self, batch: Sequence[DecisionRecord], shard: int = 0) -> AppendResult:
        """Append ``batch`` to ``shard`` in one transaction; idempotent by record id.

        A record whose id is already in the log (in any shard) is not written again and
        is reported in ``duplicates``, so replaying after a crash is harmless.
        """
        self.require_signer("appending to the ledger")
        for attempt in range(_RETRIES):
            try:
                with self.write() as conn:
                    return self._append(conn, batch, shard)
            except sa.exc.IntegrityError:
                # Another shard's writer committed one of these ids after our duplicate
                # check: the retry sees it and reports it as a duplicate.
                if attempt == _RETRIES - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _append(
        self, conn: Connection, batch: Sequence[DecisionRecord], shard: int
    ) -> AppendResult:
        signer, sealer = self.require_signer("appending to the ledger")
        frontier = self._lock_head(conn, shard)
        seen: set[str] = set()
        duplicates: list[str] = []
        for rid in self._existing_ids(conn, [r.record_id for r in batch]):
            seen.add(rid)
        fresh: list[DecisionRecord] = []
        for rec in batch:
            if rec.record_id in seen:
                duplicates.append(rec.record_id)
            else:
                seen.add(rec.record_id)
                fresh.append(rec)
        start = frontier.size
        rows: list[dict[str, Any]] = []
        term_rows: list[dict[str, Any]] = []
        for rec in fresh:
            body = rec.to_json()
            leaf = leaf_hash(body)
            seq = frontier.size
            frontier.append(leaf)
            rows.append(_row(rec, shard, seq, leaf, sealer.record(shard, seq, leaf), body))
            term_rows.extend(_terms(rec))
        if rows:
            conn.execute(t.records.insert(), rows)
            if term_rows:
                conn.execute(t.terms.insert(), term_rows)
            self._save_head(conn, shard, frontier, sealer)
        checkpoint = None
        if rows and start // self.checkpoint_every != frontier.size // self.checkpoint_every:
            checkpoint = self._checkpoint(conn, shard, frontier, signer)
        return AppendResult(
            shard, tuple(r["record_id"] for r in rows), tuple(duplicates), frontier.size, checkpoint
        )

    def _existing_ids(self, conn: Connection, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            q = sa.select(t.records.c.record_id).where(t.records.c.record_id.in_(chunk))
            found.update(conn.execute(q).scalars())
        return found

    def _lock_head(self, conn: Connection, shard: int) -> Frontier:
        """Read the shard head, locked against other writers of the same shard."""
        q = sa.select(t.shards).where(t.shards.c.shard == shard)
        if conn.dialect.name == "postgresql":
            q = q.with_for_update()
        row = conn.execute(q).first()
        if row is None:
            # SQLite holds the database write lock already; on PostgreSQL a concurrent
            # first append to the same shard trips the primary key and is retried.
            return Frontier()
        if self.sealer is not None and not self.sealer.check(
            row.seal, self.sealer.head(shard, row.size, row.frontier)
        ):
            raise VerificationError(
                f"the head of ledger shard {shard} was altered outside the gateway; appending"
                " stopped. Run `gateway log verify` to find the damage",
                index=row.size,
            )
        try:
            frontier = Frontier.from_bytes(row.size, row.frontier)
        except ValueError as exc:
            raise VerificationError(
                f"the head of ledger shard {shard} is damaged ({exc}); run `gateway log verify`"
            ) from exc
        return frontier

    def _save_head(self, conn: Connection, shard: int, frontier: Frontier, sealer: Sealer) -> None:
        data = frontier.to_bytes()
        values = {
            "size": frontier.size,
            "frontier": data,
            "updated_at": _now(),
            "seal": sealer.head(shard, frontier.size, data),
        }
        done = conn.execute(t.shards.update().where(t.shards.c.shard == shard).values(values))
        if done.rowcount == 0:
            conn.execute(t.shards.insert().values(shard=shard, **values))

    # -- checkpoints ----------------------------------------------------------------------

    def _checkpoint(
        self, conn: Connection, shard: int, frontier: Frontier, signer: SigningKey
    ) -> Checkpoint:
        cp = Checkpoint.sign(signer, shard, frontier.size, frontier.root())
        conn.execute(
            t.checkpoints.insert().values(
                shard=cp.shard,
                tree_size=cp.tree_size,
                root_hash=cp.root_hash,
                timestamp=cp.timestamp,
                key_id=cp.key_id,
                signature=cp.signature,
            )
        )
        return cp

    def checkpoint(self, shard: int | None = None) -> list[Checkpoint]:
        """Sign a checkpoint now for every shard (or ``shard``) with records since its last
        one. Returns the new checkpoints (none if everything was already covered)."""
        signer, _ = self.require_signer("signing a checkpoint")
        made: list[Checkpoint] = []
        for s in [shard] if shard is not None else sorted(self.shard_sizes()):
            with self.write() as conn:
                frontier = self._lock_head(conn, s)
                last = self._last_checkpoint_size(conn, s)
                if frontier.size > 0 and frontier.size != last:
                    made.append(self._checkpoint(conn, s, frontier, signer))
        return made

    def _last_checkpoint_size(self, conn: Connection, shard: int) -> int:
        q = sa.select(sa.func.max(t.checkpoints.c.tree_size)).where(t.checkpoints.c.shard == shard)
        return conn.execute(q).scalar() or 0

    def checkpoints(self, shard: int | None = None) -> list[Checkpoint]:
        q = sa.select(t.checkpoints).order_by(t.checkpoints.c.shard, t.checkpoints.c.tree_size)
        if shard is not None:
            q = q.where(t.checkpoints.c.shard == shard)
        with self.engine.connect() as conn:
            return [
                Checkpoint(r.shard, r.tree_size, r.root_hash, r.timestamp, r.key_id, r.signature)
                for r in conn.execute(q)
            ]

    def covering_checkpoint(self, shard: int, seq: int) -> Checkpoint | None:
        """The newest checkpoint whose tree contains leaf ``seq`` of ``shard``."""
        cps = [cp for cp in self.checkpoints(shard) if cp.tree_size > seq]
        return cps[-1] if cps else None

    # -- reading --------------------------------------------------------------------------

    def shard_sizes(self) -> dict[int, int]:
        with self.engine.connect() as conn:
            return {
                r.shard: r.size for r in conn.execute(sa.select(t.shards.c.shard, t.shards.c.size))
            }

    def get(self, record_id: str) -> StoredRecord | None:
        c = t.records.c
        q = sa.select(c.shard, c.seq, c.record_id, c.leaf_hash, c.body, c.pruned_by).where(
            c.record_id == record_id
        )
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return None if row is None else StoredRecord(*row)

    def leaf_hashes(self, shard: int, size: int | None = None) -> list[bytes]:
        """The shard's leaf hashes in order (for proofs), up to ``size`` leaves."""
        c = t.records.c
        q = sa.select(c.leaf_hash).where(c.shard == shard).order_by(c.seq)
        if size is not None:
            q = q.where(c.seq < size)
        with self.engine.connect() as conn:
            return list(conn.execute(q).scalars())

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(t.records)).scalar_one()


def _row(
    rec: DecisionRecord, shard: int, seq: int, leaf: bytes, seal: bytes, body: bytes
) -> dict[str, Any]:
    return {
        "shard": shard,
        "seq": seq,
        "record_id": rec.record_id,
        "leaf_hash": leaf,
        "seal": seal,
        "body": body.decode("utf-8"),
        "pruned_by": None,
        "event_id": rec.event_id,
        "event_type": rec.event_type,
        "agent": rec.agent,
        "recipient_role": rec.recipient.role,
        "outcome": rec.outcome,
        "subject_ref": rec.subject_ref,
        "subject_type": rec.subject_type,
        "occurred_at": utc_naive(rec.occurred_at),
        "recorded_at": utc_naive(rec.recorded_at),
    }


def _terms(rec: DecisionRecord) -> list[dict[str, Any]]:
    out = [
        {"record_id": rec.record_id, "kind": "category", "term": c}
        for c in sorted({*rec.categories_sent, *rec.categories_transformed})
    ]
    out += [
        {"record_id": rec.record_id, "kind": "purpose", "term": p}
        for p in sorted(set(rec.purposes))
    ]
    return out


def index_columns(rec: DecisionRecord) -> dict[str, Any]:
    """The filter columns a body implies (``verify`` compares them with the stored ones)."""
    row = _row(rec, 0, 0, b"", b"", b"")
    return {
        k: row[k]
        for k in (
            "record_id",
            "event_id",
            "event_type",
            "agent",
            "recipient_role",
            "outcome",
            "subject_ref",
            "subject_type",
            "occurred_at",
            "recorded_at",
        )
    }


def term_set(rec: DecisionRecord) -> set[tuple[str, str]]:
    return {(r["kind"], r["term"]) for r in _terms(rec)}
