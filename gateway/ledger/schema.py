"""Tables of the disclosure log and their versioned migrations.

One schema for SQLite and PostgreSQL (SQLAlchemy Core types only). ``ledger_schema`` holds
one row per applied migration; ``migrate`` applies the missing ones under a lock so that
several workers starting at once do not race each other.

Times are stored as naive UTC ``DateTime`` on both back ends: SQLite has no time zones,
and a single convention keeps range filters identical on the two.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway.errors import LedgerError

metadata = sa.MetaData()

schema_versions = sa.Table(
    "ledger_schema",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("applied_at", sa.DateTime, nullable=False),
)

# Per-shard head: the size and compact range of the shard's Merkle tree, so an append
# needs O(log n) state instead of all leaf hashes. ``seal`` is a keyed MAC over the head.
shards = sa.Table(
    "ledger_shards",
    metadata,
    sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("frontier", sa.LargeBinary, nullable=False),
    sa.Column("seal", sa.LargeBinary, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

prunes = sa.Table(
    "ledger_prunes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("statement", sa.Text, nullable=False),
    sa.Column("signature", sa.LargeBinary, nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

records = sa.Table(
    "ledger_records",
    metadata,
    sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("record_id", sa.String(64), nullable=False, unique=True),
    sa.Column("leaf_hash", sa.LargeBinary, nullable=False),
    # Keyed MAC binding (shard, seq, leaf hash): pinpoints an edited, moved or inserted
    # record exactly, where the signed roots alone only bound it between two checkpoints.
    sa.Column("seal", sa.LargeBinary, nullable=False),
    # The canonical record JSON, byte for byte what was hashed. NULL once pruned.
    sa.Column("body", sa.Text, nullable=True),
    sa.Column("pruned_by", sa.Integer, sa.ForeignKey("ledger_prunes.id"), nullable=True),
    # Copies of body fields for filtering; ``verify`` checks they agree with the body.
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("event_type", sa.String(100), nullable=False),
    sa.Column("agent", sa.String(100), nullable=False),
    sa.Column("recipient_role", sa.String(32), nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("subject_ref", sa.String(100), nullable=True),
    sa.Column("subject_type", sa.String(32), nullable=False),
    sa.Column("occurred_at", sa.DateTime, nullable=False),
    sa.Column("recorded_at", sa.DateTime, nullable=False),
    sa.Index("ix_ledger_records_subject", "subject_ref", "recorded_at"),
    sa.Index("ix_ledger_records_agent", "agent", "recorded_at"),
    sa.Index("ix_ledger_records_recorded", "recorded_at"),
    sa.Index("ix_ledger_records_occurred", "occurred_at"),
    sa.Index("ix_ledger_records_outcome", "outcome"),
    sa.Index("ix_ledger_records_event_type", "event_type"),
)

# Categories disclosed (sent or transformed) and purposes, one row each, for filters that
# match a term and its descendants.
terms = sa.Table(
    "ledger_terms",
    metadata,
    sa.Column("record_id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("term", sa.String(200), primary_key=True),
    sa.Index("ix_ledger_terms_term", "kind", "term"),
)

checkpoints = sa.Table(
    "ledger_checkpoints",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("shard", sa.Integer, nullable=False),
    sa.Column("tree_size", sa.BigInteger, nullable=False),
    sa.Column("root_hash", sa.LargeBinary, nullable=False),
    sa.Column("timestamp", sa.String(40), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("signature", sa.LargeBinary, nullable=False),
    sa.UniqueConstraint("shard", "tree_size", name="uq_ledger_checkpoints_size"),
)


# Signed log checkpoints (C2SP tlog-checkpoint notes over every shard). The latest is
# always kept, older ones only where the total size crossed a multiple of
# ``checkpoint_every`` (``kept``), or where the next one was signed by another key (so the
# key that sealed each record can be told from the checkpoints).
log_checkpoints = sa.Table(
    "ledger_log_checkpoints",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tree_size", sa.BigInteger, nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),  # the gateway key that signed it
    sa.Column("note", sa.Text, nullable=False),  # the whole signed note
    sa.Column("kept", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

# Witness cosignatures of log checkpoints, as handed in (verified by ``verify`` with the
# witnesses' public keys; stored unverified).
cosignatures = sa.Table(
    "ledger_cosignatures",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("witness", sa.String(200), nullable=False),  # the cosigner's key name
    sa.Column("key_id", sa.String(8), nullable=False),  # its note key ID, hex
    sa.Column("tree_size", sa.BigInteger, nullable=False),
    sa.Column("cosigned_at", sa.BigInteger, nullable=False),  # POSIX time it claims
    sa.Column("checkpoint", sa.Text, nullable=False),  # the log-signed checkpoint note
    sa.Column("line", sa.Text, nullable=False),  # the cosignature line
    sa.Column("added_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("line", name="uq_ledger_cosignatures_line"),
)

# Gateway signing-key hand-overs (signed notes from the old key to the new one).
key_history = sa.Table(
    "ledger_key_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("old_key_id", sa.String(64), nullable=False),
    sa.Column("new_key_id", sa.String(64), nullable=False),
    sa.Column("handed_over_at", sa.String(40), nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("old_key_id", "new_key_id", name="uq_ledger_key_history_pair"),
)


# Messages the ledger sink read from the disclosure topic and did not log: forged (no
# valid worker MAC), not a record, or a record the store could not take. Never part of the
# Merkle log (nothing here is sealed, hashed or checkpointed); one row per topic position,
# so a replay after a restart finds the row and adds nothing. What is kept of the message
# itself is decided by the sink (gateway.ledger.quarantine): the bytes only of what a
# worker wrote (a MAC that verifies), else their digest and size.
quarantine = sa.Table(
    "ledger_quarantine",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("kafka_partition", sa.Integer, nullable=False),
    sa.Column("kafka_offset", sa.BigInteger, nullable=False),
    # unsigned | bad_mac | malformed | unstorable (gateway.ledger.quarantine.REASONS)
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    # The record id the message claims, when it parses as a record (a forged one's claim is
    # only a claim: kept to find what it tried to plant).
    sa.Column("record_id", sa.String(64), nullable=True),
    sa.Column("mac_ok", sa.Boolean, nullable=False),
    sa.Column("value_sha256", sa.String(64), nullable=False),
    sa.Column("value_size", sa.BigInteger, nullable=False),
    sa.Column("key_sha256", sa.String(64), nullable=True),
    sa.Column("body", sa.Text, nullable=True),  # only with mac_ok (see above)
    sa.Column("quarantined_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint(
        "topic", "kafka_partition", "kafka_offset", name="uq_ledger_quarantine_position"
    ),
    sa.Index("ix_ledger_quarantine_reason", "reason", "quarantined_at"),
)


def _v1_initial(conn: Connection) -> None:
    metadata.create_all(conn, tables=[shards, prunes, records, terms, checkpoints])


def _v2_log_trust(conn: Connection) -> None:
    metadata.create_all(conn, tables=[log_checkpoints, cosignatures, key_history])


def _v3_quarantine(conn: Connection) -> None:
    metadata.create_all(conn, tables=[quarantine])


# Append only: a released migration is never edited, a change is a new entry.
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "initial tables", _v1_initial),
    (2, "log checkpoints, cosignatures, key history", _v2_log_trust),
    (3, "sink quarantine", _v3_quarantine),
]
LATEST = MIGRATIONS[-1][0]


def current_version(conn: Connection) -> int:
    if not sa.inspect(conn).has_table(schema_versions.name):
        return 0
    return conn.execute(sa.select(sa.func.max(schema_versions.c.version))).scalar() or 0


def migrate(conn: Connection) -> int:
    """Bring the schema up to date inside the caller's (write) transaction."""
    if conn.dialect.name == "postgresql":
        # Held to the end of the transaction: a second worker waits, then sees the work done.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(7261731)"))
    schema_versions.create(conn, checkfirst=True)
    version = current_version(conn)
    if version > LATEST:
        raise LedgerError(
            f"the ledger schema is at version {version}, newer than this gateway knows"
            f" ({LATEST}); upgrade the gateway before using this ledger"
        )
    for number, name, step in MIGRATIONS:
        if number > version:
            step(conn)
            conn.execute(
                schema_versions.insert().values(
                    version=number, name=name, applied_at=datetime.now(UTC).replace(tzinfo=None)
                )
            )
    return LATEST
