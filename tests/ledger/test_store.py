"""The ledger store on SQLite and on a real PostgreSQL (a fresh schema per test)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.crypto import SigningKey
from gateway.errors import LedgerError
from gateway.ledger import schema
from gateway.ledger.merkle import leaf_hash, root_hash
from gateway.ledger.query import (
    RecordFilter,
    count_records,
    get_record,
    iter_records,
    list_records,
)
from gateway.ledger.store import LedgerStore, open_store
from gateway.ledger.verify import verify_log
from gateway.records import DecisionRecord
from gateway.taxonomy import covers
from tests.ledger.data import database, make_record, make_records, ref


@pytest.fixture
def store(url: str, key: SigningKey) -> Iterator[LedgerStore]:
    with open_store(url, signer=key, checkpoint_every=50) as s:
        yield s


@pytest.fixture(scope="module")
def records() -> list[DecisionRecord]:
    return make_records(160)


def test_open_creates_schema_once_and_reopens(url: str, key: SigningKey) -> None:
    open_store(url, signer=key).close()
    with open_store(url, create=False) as s, s.engine.connect() as conn:
        assert schema.current_version(conn) == schema.LATEST
        rows = conn.execute(sa.select(schema.schema_versions)).all()
    # Each migration applied once, in order.
    assert [r.version for r in rows] == [number for number, _, _ in schema.MIGRATIONS]


def test_missing_ledger_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="gateway demo"):
        open_store(f"sqlite:///{tmp_path}/nope/ledger.db", create=False)
    assert not (tmp_path / "nope").exists()


def test_missing_postgres_schema_says_how_to_make_one(tmp_path: Path) -> None:
    with database("postgresql", tmp_path) as u, pytest.raises(LedgerError, match="gateway demo"):
        open_store(u, create=False)


def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(LedgerError, match="cannot open the ledger database"):
        open_store("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")


def test_sqlite_default_creates_parent_directory(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "a" / "b" / "ledger.db"
    with open_store(f"sqlite:///{path}", signer=key) as s:
        s.append(make_records(3))
    assert path.exists()


def test_opening_waits_for_a_writer_before_the_switch_to_wal(
    tmp_path: Path, key: SigningKey
) -> None:
    # A database not yet in WAL mode with a writer inside: SQLite refuses the switch to
    # WAL at once, without its busy handler (how four workers opening one new ledger
    # failed in CI). Opening must wait for the writer, as every other statement does.
    path = tmp_path / "ledger.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE elsewhere (x INTEGER)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO elsewhere VALUES (1)")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    try:
        with open_store(f"sqlite:///{path}", signer=key) as s:
            s.append(make_records(3))
            assert s.count() == 3
    finally:
        release.join()
        other.close()


def test_append_is_idempotent_by_record_id(
    store: LedgerStore, records: list[DecisionRecord]
) -> None:
    first = store.append(records[:40])
    assert len(first.appended) == 40 and not first.duplicates and first.tree_size == 40
    again = store.append(records[:40])
    assert again.appended == () and set(again.duplicates) == {r.record_id for r in records[:40]}
    assert again.tree_size == 40
    mixed = store.append([*records[30:45], records[44]])  # overlap and an in-batch repeat
    assert [r for r in mixed.appended] == [r.record_id for r in records[40:45]]
    assert mixed.is_duplicate(records[30].record_id) and mixed.is_duplicate(records[44].record_id)
    assert store.count() == 45
    # A replayed record lands nowhere else either, not even in another shard.
    other = store.append(records[:5], shard=3)
    assert other.appended == () and other.tree_size == 0
    assert store.shard_sizes() == {0: 45}
    assert verify_log(store).ok


def test_append_needs_the_signing_key(url: str, records: list[DecisionRecord]) -> None:
    with open_store(url) as s, pytest.raises(LedgerError, match="signing key"):
        s.append(records[:1])


def test_incremental_root_equals_root_of_all_leaves(
    store: LedgerStore, records: list[DecisionRecord]
) -> None:
    for i in range(0, 130, 13):
        store.append(records[i : i + 13])
    leaves = store.leaf_hashes(0)
    assert leaves == [leaf_hash(r.to_json()) for r in records[:130]]
    cps = store.checkpoints(0)
    assert [cp.tree_size for cp in cps] == [52, 104]  # first batch boundary past 50, 100
    assert store.signer is not None
    for cp in cps:
        assert cp.root_hash == root_hash(leaves[: cp.tree_size])
        cp.verify(store.signer.public_key())
    made = store.checkpoint()
    assert [cp.tree_size for cp in made] == [130]
    assert made[0].root_hash == root_hash(leaves)
    assert store.checkpoint() == []  # nothing new since


def test_shards_are_independent_trees(store: LedgerStore, records: list[DecisionRecord]) -> None:
    store.append(records[:30], shard=0)
    store.append(records[30:50], shard=1)
    store.append(records[50:60], shard=7)
    assert store.shard_sizes() == {0: 30, 1: 20, 7: 10}
    got = store.get(records[35].record_id)
    assert got is not None and (got.shard, got.seq) == (1, 5)
    assert got.record == records[35]
    assert store.leaf_hashes(7) == [leaf_hash(r.to_json()) for r in records[50:60]]
    report = verify_log(store)
    assert report.ok and [s.size for s in report.shards] == [30, 20, 10]


def test_concurrent_writers_on_different_shards(url: str, key: SigningKey) -> None:
    recs = make_records(400, seed=11)
    errors: list[BaseException] = []

    def writer(shard: int) -> None:
        try:
            with open_store(url, signer=key, checkpoint_every=40) as s:
                mine = recs[shard::4]
                for i in range(0, len(mine), 25):
                    s.append(mine[i : i + 25], shard=shard)
                # Every writer also replays a neighbour's batch: duplicates, never errors.
                s.append(recs[(shard + 1) % 4 :: 4][:25], shard=shard)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    with open_store(url, signer=key) as s:
        assert s.count() == len(recs)
        assert sum(s.shard_sizes().values()) == len(recs)
        assert verify_log(s).ok


def _expect(records: list[DecisionRecord], **f: object) -> list[str]:
    out = []
    for r in records:
        if f.get("agent") and r.agent != f["agent"]:
            continue
        if f.get("outcome") and r.outcome != f["outcome"]:
            continue
        if f.get("subject_ref") and r.subject_ref != f["subject_ref"]:
            continue
        cat = f.get("category")
        if cat and not any(
            covers(str(cat), c) for c in [*r.categories_sent, *r.categories_transformed]
        ):
            continue
        pur = f.get("purpose")
        if pur and not any(covers(str(pur), p) for p in r.purposes):
            continue
        since, until = f.get("since"), f.get("until")
        if isinstance(since, datetime) and r.recorded_at < since:
            continue
        if isinstance(until, datetime) and r.recorded_at >= until:
            continue
        out.append(r.record_id)
    return out


FILTERS: list[dict[str, object]] = [
    {},
    {"agent": "reseller"},
    {"outcome": "withheld"},
    {"category": "user.contact"},
    {"category": "user.contact.address.postal_code"},
    {"category": "user.health_and_medical"},  # always removed: never matches
    {"category": "user.device.ip_addres"},  # a prefix, not a parent: no match
    {"purpose": "marketing"},
    {"purpose": "essential.service"},
    {"subject_ref": ref("B-2001")},
    {"subject_ref": ref("C-1002"), "agent": "shipping"},
    {"since": datetime(2024, 2, 1, tzinfo=UTC), "until": datetime(2024, 2, 10, tzinfo=UTC)},
    {"category": "user", "purpose": "analytics", "outcome": "disclosed"},
]


@pytest.mark.parametrize("flt", FILTERS, ids=lambda f: ",".join(f) or "all")
def test_filters_match_an_independent_python_filter(
    store: LedgerStore, records: list[DecisionRecord], flt: dict[str, Any]
) -> None:
    store.append(records[:80], shard=0)
    store.append(records[80:], shard=1)
    expected = _expect(records, **flt)
    f = RecordFilter(**flt)
    got = [r.record_id for r in list_records(store, f, limit=None)]
    assert got == expected
    assert [r.record_id for r in iter_records(store, f)] == expected
    assert count_records(store, f) == len(expected)
    assert [r.record_id for r in list_records(store, f, limit=5, offset=2)] == expected[2:7]


def test_iter_records_pages_through_more_than_a_page(store: LedgerStore) -> None:
    start = datetime(2025, 3, 1, tzinfo=UTC)
    # Many records sharing one timestamp: pagination must not skip or repeat ties.
    recs = [make_record("analytics", "C-1001", start, seq=i) for i in range(1150)]
    for i in range(0, len(recs), 500):
        store.append(recs[i : i + 500], shard=i // 500 % 2)
    got = [r.record_id for r in iter_records(store)]
    assert sorted(got) == sorted(r.record_id for r in recs) and len(set(got)) == 1150


def test_get_record_round_trips_exactly(store: LedgerStore, records: list[DecisionRecord]) -> None:
    store.append(records[:10])
    assert get_record(store, records[3].record_id) == records[3]
    assert get_record(store, "no-such-id") is None
