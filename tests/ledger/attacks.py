"""What an attacker with write access to the ledger database can do without any gateway
key: plain SQL plus the public Merkle-tree algorithm. Each function leaves the database
as self-consistent as a careful attacker would (shard heads recomputed, checkpoints that
would contradict the change deleted), so only a signed statement kept outside the
database can reveal it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from gateway.ledger.merkle import Frontier, leaf_hash

# Tables an attacker empties or trims; those the schema of the day does not have are
# skipped, so the same attacks run against older versions of the ledger too.
_CHECKPOINT_TABLES = ("ledger_checkpoints", "ledger_log_checkpoints", "ledger_cosignatures")
_SHARD_LINE = re.compile(r"^shard (-?\d+) (\d+) ", re.MULTILINE)


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url)


def _tables(conn: sa.Connection) -> set[str]:
    return set(sa.inspect(conn).get_table_names())


def _rewrite_head(conn: sa.Connection, shard: int) -> None:
    """Recompute the shard's tree head from the leaf hashes left; the seal (a keyed MAC
    the attacker cannot compute) is filled with junk."""
    leaves = conn.execute(
        sa.text("SELECT leaf_hash FROM ledger_records WHERE shard = :s ORDER BY seq"), {"s": shard}
    ).scalars()
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(bytes(leaf))
    if frontier.size == 0:
        conn.execute(sa.text("DELETE FROM ledger_shards WHERE shard = :s"), {"s": shard})
        return
    conn.execute(
        sa.text("UPDATE ledger_shards SET size = :n, frontier = :f, seal = :z WHERE shard = :s"),
        {"n": frontier.size, "f": frontier.to_bytes(), "z": b"\x00" * 32, "s": shard},
    )


def _drop_checkpoints_beyond(conn: sa.Connection, shard: int, size: int) -> None:
    """Delete every checkpoint that says ``shard`` had more than ``size`` records."""
    tables = _tables(conn)
    conn.execute(
        sa.text("DELETE FROM ledger_checkpoints WHERE shard = :s AND tree_size > :n"),
        {"s": shard, "n": size},
    )
    for table, column in (
        ("ledger_log_checkpoints", "note"),
        ("ledger_cosignatures", "checkpoint"),
    ):
        if table not in tables:
            continue
        for row_id, note in conn.execute(sa.text(f"SELECT id, {column} FROM {table}")).all():
            sizes = {int(s): int(n) for s, n in _SHARD_LINE.findall(note)}
            if sizes.get(shard, 0) > size:
                conn.execute(sa.text(f"DELETE FROM {table} WHERE id = :i"), {"i": row_id})


def delete_shard(url: str, shard: int) -> None:
    """A whole shard goes: its records, its checkpoints and its head row."""
    eng = _engine(url)
    with eng.begin() as conn:
        conn.execute(
            sa.text(
                "DELETE FROM ledger_terms WHERE record_id IN"
                " (SELECT record_id FROM ledger_records WHERE shard = :s)"
            ),
            {"s": shard},
        )
        conn.execute(sa.text("DELETE FROM ledger_records WHERE shard = :s"), {"s": shard})
        conn.execute(sa.text("DELETE FROM ledger_checkpoints WHERE shard = :s"), {"s": shard})
        conn.execute(sa.text("DELETE FROM ledger_shards WHERE shard = :s"), {"s": shard})
    eng.dispose()


def empty_log(url: str) -> None:
    """Every record, checkpoint, head and prune goes."""
    eng = _engine(url)
    with eng.begin() as conn:
        tables = _tables(conn)
        for table in ("ledger_terms", "ledger_records", *_CHECKPOINT_TABLES, "ledger_shards"):
            if table in tables:
                conn.execute(sa.text(f"DELETE FROM {table}"))
        conn.execute(sa.text("DELETE FROM ledger_prunes"))
    eng.dispose()


def truncate_shard(url: str, shard: int, size: int) -> None:
    """The shard's records from index ``size`` on go, with every checkpoint covering them;
    the shard head is recomputed for what is left."""
    eng = _engine(url)
    with eng.begin() as conn:
        conn.execute(
            sa.text(
                "DELETE FROM ledger_terms WHERE record_id IN (SELECT record_id FROM"
                " ledger_records WHERE shard = :s AND seq >= :n)"
            ),
            {"s": shard, "n": size},
        )
        conn.execute(
            sa.text("DELETE FROM ledger_records WHERE shard = :s AND seq >= :n"),
            {"s": shard, "n": size},
        )
        _drop_checkpoints_beyond(conn, shard, size)
        _rewrite_head(conn, shard)
    eng.dispose()


def edit_and_rehash(url: str, record_id: str, edit: Any) -> None:
    """A record's body is changed by ``edit(body) -> body`` and its leaf hash recomputed;
    the shard head is recomputed and every checkpoint (which would show the change) is
    deleted."""
    eng = _engine(url)
    with eng.begin() as conn:
        shard, body = conn.execute(
            sa.text("SELECT shard, body FROM ledger_records WHERE record_id = :r"),
            {"r": record_id},
        ).one()
        new = edit(body)
        conn.execute(
            sa.text("UPDATE ledger_records SET body = :b, leaf_hash = :h WHERE record_id = :r"),
            {"b": new, "h": leaf_hash(new.encode("utf-8")), "r": record_id},
        )
        tables = _tables(conn)
        for table in _CHECKPOINT_TABLES:
            if table in tables:
                conn.execute(sa.text(f"DELETE FROM {table}"))
        _rewrite_head(conn, shard)
    eng.dispose()


def sqlite_path(url: str) -> Path:
    database = sa.make_url(url).database
    assert database, url
    return Path(database)


def copy_sqlite(url: str, to: Path) -> None:
    """A copy of the SQLite database file as a backup would take it (the store must be
    closed, so the write-ahead log is folded into the file)."""
    eng = _engine(url)
    with eng.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    eng.dispose()
    shutil.copyfile(sqlite_path(url), to)


def restore_sqlite(url: str, copy: Path) -> None:
    """Put an older copy of the database file back in place."""
    path = sqlite_path(url)
    for extra in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        extra.unlink(missing_ok=True)
    shutil.copyfile(copy, path)


def rollback_to(url: str, note: str) -> None:
    """Every shard is cut back to the size an older log checkpoint states (shards it does
    not list go), with every checkpoint covering the cut records: the database is then
    exactly as it was when that checkpoint was signed."""
    sizes = {int(s): int(n) for s, n in _SHARD_LINE.findall(note)}
    eng = _engine(url)
    with eng.connect() as conn:
        shards = set(conn.execute(sa.text("SELECT DISTINCT shard FROM ledger_records")).scalars())
    eng.dispose()
    for shard in sorted(shards):
        truncate_shard(url, shard, sizes.get(shard, 0))
