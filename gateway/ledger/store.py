"""The disclosure-log store: SQLAlchemy Core over SQLite (default) or PostgreSQL.

Records are appended in batches to a *shard* (e.g. the disclosure-topic partition a sink
worker owns). Each shard is its own append-only sequence with its own Merkle tree. An
append is one transaction: the rows, the new shard head, a signed *log checkpoint* over
every shard's head and, every ``checkpoint_every`` records of the shard, a signed shard
checkpoint become durable together, before the caller releases any agent message.

Log checkpoints are signed one at a time, in commit order (on PostgreSQL under a
transaction-scoped advisory lock taken just before the shard heads are read), so each one
extends the one before it: no shard ever shrinks from one to the next. Writers on
different shards prepare their rows in parallel and only queue for that last step.
"""

from __future__ import annotations

import sqlite3
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
from gateway.ledger.checkpoints import Checkpoint, RowSeals
from gateway.ledger.keyhistory import KeyRing, key_ring, load_handovers
from gateway.ledger.logcheckpoint import DEFAULT_ORIGIN, LogCheckpoint, ShardHead, check_origin
from gateway.ledger.merkle import Frontier, leaf_hash
from gateway.records import DecisionRecord

NO_LEDGER_HINT = (
    "run `gateway demo` or `gateway replay ... --ledger` to create one, or point --db /"
    " GATEWAY_LEDGER_URL at an existing ledger"
)
_IN_CHUNK = 500  # ids per IN (...) clause: well under SQLite's bound-parameter limit
_RETRIES = 3
# How long a SQLite connection waits for another's lock before "database is locked".
_SQLITE_BUSY_SECONDS = 30.0
_LOG_CHECKPOINT_LOCK = 7261732  # PostgreSQL advisory lock: one log checkpoint at a time


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
    log_checkpoint: LogCheckpoint | None = None

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
        connect_args={"timeout": _SQLITE_BUSY_SECONDS},
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
            _enter_wal(cur)  # readers do not block the writer
        cur.execute("PRAGMA synchronous=FULL")  # a committed record survives power loss
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', '')}")

    return engine


def _enter_wal(cur: Any) -> None:
    """Switch the database to WAL, waiting out other connections doing the same.

    The switch is persistent, so only a new database's first connections race for it; and
    while one of them holds the lock for it, SQLite answers the others "database is
    locked" at once, without the busy handler, so the wait is here.
    """
    deadline = time.monotonic() + _SQLITE_BUSY_SECONDS
    delay = 0.005
    while True:
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def display_url(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


def open_store(
    url: str,
    *,
    signer: SigningKey | None = None,
    checkpoint_every: int = 1000,
    create: bool = True,
    origin: str | None = None,
) -> LedgerStore:
    """Open (and with ``create``, make or upgrade) the ledger at ``url``.

    ``signer`` is needed to append, checkpoint and prune; readers leave it out. With
    ``create=False`` a missing ledger is an error that says how to make one. ``origin``
    (GATEWAY_LOG_ORIGIN) names the log in the log checkpoints it signs; a log keeps the
    origin it was first checkpointed under, and None means "the log's own origin"
    (``DEFAULT_ORIGIN`` for a log without checkpoints).
    """
    if origin is not None:
        try:
            check_origin(origin)
        except ValueError as exc:
            raise LedgerError(f"{exc} (GATEWAY_LOG_ORIGIN)") from exc
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
    return LedgerStore(engine, signer=signer, checkpoint_every=checkpoint_every, origin=origin)


@contextmanager
def _write(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


class LedgerStore:
    """Append, checkpoint and read the log. Thread-safe as SQLAlchemy engines are."""

    def __init__(
        self,
        engine: Engine,
        *,
        signer: SigningKey | None = None,
        checkpoint_every: int = 1000,
        origin: str | None = None,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self.engine = engine
        self.signer = signer
        self.seals = RowSeals.from_signing_key(signer) if signer is not None else None
        self.checkpoint_every = checkpoint_every
        self._origin = None if origin is None else check_origin(origin)
        # The last log checkpoint this store signed (after its commit): no later one may
        # show a shard smaller, whatever the database says.
        self._last_signed: LogCheckpoint | None = None
        # Keys trusted from this store's signing key through recorded hand-overs, and
        # shard heads found stated by a log checkpoint signed by one of them.
        self._ring: KeyRing | None = None
        self._signed_heads: set[tuple[int, int, bytes]] = set()
        self._parsed: LogCheckpoint | None = None

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

    def require_signer(self, what: str) -> tuple[SigningKey, RowSeals]:
        if self.signer is None or self.seals is None:
            raise LedgerError(
                f"{what} needs the gateway signing key; open the store with signer="
                " (the CLI loads it from GATEWAY_KEYS_DIR)"
            )
        return self.signer, self.seals

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
                    result = self._append(conn, batch, shard)
                if result.log_checkpoint is not None:
                    self._last_signed = result.log_checkpoint
                return result
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
        signer, seals = self.require_signer("appending to the ledger")
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
            rows.append(_row(rec, shard, seq, leaf, seals.record(shard, seq, leaf), body))
            term_rows.extend(_terms(rec))
        if rows:
            conn.execute(t.records.insert(), rows)
            if term_rows:
                conn.execute(t.terms.insert(), term_rows)
            self._save_head(conn, shard, frontier, seals)
        checkpoint = None
        if rows and start // self.checkpoint_every != frontier.size // self.checkpoint_every:
            checkpoint = self._checkpoint(conn, shard, frontier, signer)
        log_checkpoint = self._sign_log_checkpoint(conn, signer, seals) if rows else None
        return AppendResult(
            shard,
            tuple(r["record_id"] for r in rows),
            tuple(duplicates),
            frontier.size,
            checkpoint,
            log_checkpoint,
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
        if self.seals is not None and not self._head_ok(conn, row, self.seals):
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

    def _save_head(self, conn: Connection, shard: int, frontier: Frontier, seals: RowSeals) -> None:
        data = frontier.to_bytes()
        values = {
            "size": frontier.size,
            "frontier": data,
            "updated_at": _now(),
            "seal": seals.head(shard, frontier.size, data),
        }
        done = conn.execute(t.shards.update().where(t.shards.c.shard == shard).values(values))
        if done.rowcount == 0:
            conn.execute(t.shards.insert().values(shard=shard, **values))

    def _head_ok(self, conn: Connection, row: Any, seals: RowSeals) -> bool:
        """Whether a shard head row is the gateway's: sealed under this store's key or,
        when it was last written under a previous signing key, stated exactly by the
        latest log checkpoint signed by a key this one trusts (through a hand-over)."""
        if seals.check(row.seal, seals.head(row.shard, row.size, row.frontier)):
            return True
        head = (row.shard, row.size, bytes(row.frontier))
        if head in self._signed_heads:
            return True
        latest = self._latest_log_row(conn)
        if latest is None or self.signer is None:
            return False
        try:
            cp = LogCheckpoint.parse(latest.note)
            root = Frontier.from_bytes(row.size, row.frontier).root()
        except (VerificationError, ValueError):
            return False
        if cp.shard(row.shard) != ShardHead(row.shard, row.size, root):
            return False
        for fresh in (False, True):
            if fresh or self._ring is None:
                self._ring = key_ring([self.signer.public_key()], load_handovers(conn))
            try:
                cp.verify(self._ring.keys)
            except VerificationError:
                continue
            self._signed_heads.add(head)
            return True
        return False

    def forget_keys(self) -> None:
        """Drop what this store learnt from the key history (a hand-over was recorded)."""
        self._ring = None

    # -- log checkpoints ------------------------------------------------------------------

    def _latest_log_row(self, conn: Connection) -> Any:
        lc = t.log_checkpoints.c
        q = sa.select(lc.id, lc.tree_size, lc.key_id, lc.note).order_by(lc.id.desc()).limit(1)
        return conn.execute(q).first()

    def _sign_log_checkpoint(
        self, conn: Connection, signer: SigningKey, seals: RowSeals, *, only_if_new: bool = False
    ) -> LogCheckpoint | None:
        """Sign a log checkpoint over every shard head, inside the caller's transaction.

        The heads are read after taking the log-checkpoint lock, so they include every
        append committed before this one. The checkpoint must extend the latest stored
        one and the last one this store signed (no shard smaller or gone); otherwise the
        database was rolled back and appending stops."""
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOG_CHECKPOINT_LOCK)))
        heads: list[ShardHead] = []
        for row in conn.execute(sa.select(t.shards).order_by(t.shards.c.shard)):
            if not self._head_ok(conn, row, seals):
                raise VerificationError(
                    f"the head of ledger shard {row.shard} was altered outside the gateway;"
                    " appending stopped. Run `gateway log verify` to find the damage",
                    index=row.size,
                )
            root = Frontier.from_bytes(row.size, row.frontier).root()
            heads.append(ShardHead(row.shard, row.size, root))
        prev_row = self._latest_log_row(conn)
        prev = None
        if prev_row is not None:
            try:
                prev = self._parse_note(prev_row.note)
            except VerificationError as exc:
                raise VerificationError(
                    f"the latest log checkpoint (#{prev_row.id}) is damaged ({exc}); appending"
                    " stopped. Run `gateway log verify` to find the damage"
                ) from exc
            if self._origin is not None and prev.origin != self._origin:
                raise LedgerError(
                    f"this ledger's log checkpoints name the log {prev.origin!r}, but"
                    f" GATEWAY_LOG_ORIGIN is {self._origin!r}: set it back to {prev.origin!r}"
                    " (a log keeps its origin for life; witnesses and saved checkpoints know"
                    " it by that name)"
                )
        for before in (prev, self._last_signed):
            if before is not None:
                _check_extends(before, heads)
        if not heads or (only_if_new and prev is not None and prev.shards == tuple(heads)):
            return None
        origin = self._origin or (prev.origin if prev is not None else DEFAULT_ORIGIN)
        cp = LogCheckpoint.sign(signer, origin, heads)
        self._parsed = cp
        lc = t.log_checkpoints.c
        every = self.checkpoint_every
        kept = prev_row is None or prev_row.tree_size // every != cp.size // every
        if prev_row is not None and prev_row.key_id != signer.key_id:
            # The last checkpoint of a signing key stays: it shows which records that key
            # sealed.
            conn.execute(t.log_checkpoints.update().where(lc.id == prev_row.id).values(kept=True))
        inserted = conn.execute(
            t.log_checkpoints.insert().values(
                tree_size=cp.size,
                key_id=signer.key_id,
                note=cp.to_text(),
                kept=kept,
                created_at=_now(),
            )
        ).inserted_primary_key
        assert inserted is not None
        new_id = inserted[0]
        conn.execute(t.log_checkpoints.delete().where(lc.kept.is_(False), lc.id < new_id))
        return cp

    def _parse_note(self, note: str) -> LogCheckpoint:
        """Parse a stored log checkpoint, reusing the last one parsed or signed here (the
        latest is read back on every append)."""
        cached = self._parsed
        if cached is not None and cached.to_text() == note:
            return cached
        cp = LogCheckpoint.parse(note)
        self._parsed = cp
        return cp

    def log_checkpoint(self) -> LogCheckpoint | None:
        """Sign a log checkpoint now if the latest one does not state the current shard
        heads (e.g. a ledger from before log checkpoints). Returns it, or None."""
        signer, seals = self.require_signer("signing a log checkpoint")
        with self.write() as conn:
            cp = self._sign_log_checkpoint(conn, signer, seals, only_if_new=True)
        if cp is not None:
            self._last_signed = cp
        return cp

    @property
    def origin(self) -> str:
        """The log's origin: as opened with, else that of its latest log checkpoint."""
        if self._origin is not None:
            return self._origin
        latest = self.latest_log_checkpoint()
        return DEFAULT_ORIGIN if latest is None else latest.origin

    def latest_log_checkpoint(self) -> LogCheckpoint | None:
        """The newest stored log checkpoint (its signature unchecked), or None."""
        with self.engine.connect() as conn:
            row = self._latest_log_row(conn)
        return None if row is None else LogCheckpoint.parse(row.note)

    def log_checkpoint_notes(self) -> list[tuple[int, str]]:
        """Every stored log checkpoint as (id, signed note), oldest first."""
        lc = t.log_checkpoints.c
        with self.engine.connect() as conn:
            return [(r.id, r.note) for r in conn.execute(sa.select(lc.id, lc.note).order_by(lc.id))]

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
        self.log_checkpoint()
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


def _check_extends(before: LogCheckpoint, heads: list[ShardHead]) -> None:
    """Raise unless every shard of ``before`` is in ``heads``, at least as large (and
    with the same root at the same size)."""
    now = {h.shard: h for h in heads}
    for s in before.shards:
        h = now.get(s.shard)
        if h is None or h.size < s.size or (h.size == s.size and h.root != s.root):
            have = "is gone" if h is None else f"has {h.size} records"
            raise VerificationError(
                f"ledger shard {s.shard} {have}, but {before.describe()} stated {s.size}:"
                " the database was rolled back or records deleted behind the gateway;"
                " appending stopped. Run `gateway log verify --against` a saved checkpoint",
                index=s.size,
            )


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
