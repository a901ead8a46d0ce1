"""A log that cannot be rewound or trimmed unseen.

Each attack is made with SQL and the public Merkle algorithm only (``tests.ledger.attacks``)
and is found by an auditor holding only the gateway's public key and a log checkpoint
saved earlier. Before log checkpoints existed, every one of these passed ``verify`` with
the public key.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.crypto import SigningKey
from gateway.errors import VerificationError
from gateway.ledger.logcheckpoint import LogCheckpoint, ShardHead, log_root
from gateway.ledger.merkle import EMPTY_ROOT, root_hash
from gateway.ledger.store import LedgerStore, open_store
from gateway.ledger.verify import VerifyReport, verify_log
from gateway.records import DecisionRecord
from tests.ledger import attacks
from tests.ledger.data import make_records

SHARDS = 3
PER_SHARD = 40  # appended in batches of 10: log checkpoints kept at totals 10, 20, ...


@pytest.fixture
def records() -> list[DecisionRecord]:
    return make_records(SHARDS * PER_SHARD)[: SHARDS * PER_SHARD]


def fill(store: LedgerStore, records: list[DecisionRecord], batches: range) -> None:
    for b in batches:
        for shard in range(SHARDS):
            start = shard * PER_SHARD + b * 10
            store.append(records[start : start + 10], shard=shard)


@pytest.fixture
def store(url: str, key: SigningKey, records: list[DecisionRecord]) -> Iterator[LedgerStore]:
    with open_store(url, signer=key, checkpoint_every=10) as s:
        fill(s, records, range(4))
        yield s


@pytest.fixture
def saved(store: LedgerStore) -> str:
    """The latest log checkpoint, exported by the auditor (as `gateway log checkpoint`)."""
    cp = store.latest_log_checkpoint()
    assert cp is not None
    return cp.to_text()


def audit(url: str, key: SigningKey, saved: str | None = None) -> VerifyReport:
    """What the auditor runs: the public key, and the checkpoint saved earlier."""
    with open_store(url, create=False) as public:
        against = None if saved is None else LogCheckpoint.parse(saved)
        return verify_log(public, key.public_key(), against=against)


def kinds(report: VerifyReport) -> set[str]:
    return {p.kind for p in report.problems}


# -- the log checkpoint itself ---------------------------------------------------------


def test_every_append_signs_a_log_checkpoint_over_all_shards(
    store: LedgerStore, key: SigningKey, records: list[DecisionRecord]
) -> None:
    cp = store.latest_log_checkpoint()
    assert cp is not None
    assert cp.origin == "disclosure-gateway.local/log"
    assert cp.size == SHARDS * PER_SHARD
    assert [(s.shard, s.size) for s in cp.shards] == [(i, PER_SHARD) for i in range(SHARDS)]
    for s in cp.shards:
        assert s.root == root_hash(store.leaf_hashes(s.shard))
    assert cp.root == log_root(cp.shards)
    assert cp.verify([key.public_key()]) == key.public_key()
    # The C2SP shape: origin, size, root, extension lines, blank line, signature line.
    lines = cp.to_text().split("\n")
    assert lines[:2] == [cp.origin, str(cp.size)]
    assert lines[3].startswith("shard 0 40 ") and lines[6].startswith("time ")
    assert lines[7] == "" and lines[8].startswith(f"\u2014 {cp.origin} ")
    # Latest plus one per 10 records; each extends the one before.
    notes = [LogCheckpoint.parse(n) for _, n in store.log_checkpoint_notes()]
    assert [c.size for c in notes] == list(range(10, SHARDS * PER_SHARD + 1, 10))
    for old, new in itertools.pairwise(notes):
        assert all(new.sizes()[s] >= n for s, n in old.sizes().items())


def test_log_root_and_leaf_encoding() -> None:
    # One leaf per shard: SHA-256(0x00 || "shard" || id (8, signed) || size (8) || root).
    import hashlib

    head = ShardHead(-2, 5, b"\x07" * 32)
    data = b"shard" + (-2).to_bytes(8, "big", signed=True) + (5).to_bytes(8, "big") + b"\x07" * 32
    assert head.leaf() == hashlib.sha256(b"\x00" + data).digest()
    assert log_root([]) == EMPTY_ROOT
    assert log_root([head]) == head.leaf()


def test_a_forged_or_altered_log_checkpoint_is_refused(store: LedgerStore, saved: str) -> None:
    altered = saved.replace("\nshard 1 40 ", "\nshard 1 41 ", 1)
    with pytest.raises(VerificationError, match="sum of the shard sizes"):
        LogCheckpoint.parse(altered)
    other = SigningKey.generate()
    cp = LogCheckpoint.parse(saved)
    forged = LogCheckpoint.sign(other, cp.origin, cp.shards, cp.time)
    with pytest.raises(VerificationError, match="not signed by a trusted gateway key"):
        forged.verify([store.signer.public_key()] if store.signer else [])


# -- the attacks -------------------------------------------------------------------------


def test_intact_log_extends_the_saved_checkpoint(
    url: str, store: LedgerStore, key: SigningKey, saved: str
) -> None:
    more = make_records(SHARDS * PER_SHARD + 30, seed=99)[-30:]
    for i, shard in enumerate((0, 2, 5)):
        store.append(more[i * 10 : i * 10 + 10], shard=shard)  # shard 5 is new
    rep = audit(url, key, saved)
    assert rep.ok, rep.problems
    assert rep.against is not None and rep.uncovered == 0
    assert rep.log_checkpoint is not None and rep.log_checkpoint.size == SHARDS * PER_SHARD + 30


def test_deleting_a_whole_shard(url: str, store: LedgerStore, key: SigningKey, saved: str) -> None:
    attacks.delete_shard(url, 1)
    rep = audit(url, key)
    assert not rep.ok  # the stored log checkpoints still list shard 1
    assert rep.first is not None and rep.first.shard == 1 and rep.first.kind == "missing"
    rep = audit(url, key, saved)
    missing = [p for p in rep.problems if p.kind == "rolled_back"]
    assert [p.shard for p in missing] == [1]
    assert "shard 1 is missing" in missing[0].message and "40 records" in missing[0].message


def test_emptying_the_log(url: str, store: LedgerStore, key: SigningKey, saved: str) -> None:
    attacks.empty_log(url)
    assert audit(url, key).ok  # nothing left to contradict, without a saved checkpoint
    rep = audit(url, key, saved)
    assert [(p.kind, p.shard) for p in rep.problems] == [("rolled_back", s) for s in range(3)]


def test_restoring_an_older_copy_of_the_database(
    url: str, tmp_path: Path, key: SigningKey, records: list[DecisionRecord]
) -> None:
    if not url.startswith("sqlite"):
        pytest.skip("copies the SQLite database file")
    with open_store(url, signer=key, checkpoint_every=10) as s:
        fill(s, records, range(2))
    attacks.copy_sqlite(url, tmp_path / "backup.db")
    with open_store(url, signer=key, checkpoint_every=10) as s:
        fill(s, records, range(2, 4))
        cp = s.latest_log_checkpoint()
        assert cp is not None
        saved = cp.to_text()
    attacks.restore_sqlite(url, tmp_path / "backup.db")
    assert audit(url, key).ok  # the old copy is consistent in itself
    rep = audit(url, key, saved)
    assert [(p.kind, p.shard, p.index) for p in rep.problems] == [
        ("rolled_back", s, 20) for s in range(SHARDS)
    ]
    assert "fewer than the 40" in rep.problems[0].message


def test_deleting_the_tail_with_the_checkpoints_covering_it(
    url: str, store: LedgerStore, key: SigningKey, saved: str
) -> None:
    # The database is put back exactly as it was at an older (kept) log checkpoint.
    older = store.log_checkpoint_notes()[5][1]
    attacks.rollback_to(url, older)
    assert audit(url, key).ok
    rep = audit(url, key, saved)
    assert {p.kind for p in rep.problems} == {"rolled_back"}
    assert rep.first is not None and "records from index" in rep.first.message


def test_deleting_one_shards_tail_with_its_checkpoints(
    url: str, store: LedgerStore, key: SigningKey, saved: str
) -> None:
    attacks.truncate_shard(url, 0, 25)
    rep = audit(url, key, saved)
    assert ("rolled_back", 0, 25) in {(p.kind, p.shard, p.index) for p in rep.problems}


def test_editing_a_record_and_rehashing_with_all_checkpoints_deleted(
    url: str, store: LedgerStore, key: SigningKey, saved: str, records: list[DecisionRecord]
) -> None:
    target = records[PER_SHARD + 17]  # shard 1, index 17
    attacks.edit_and_rehash(
        url, target.record_id, lambda b: b.replace('"contract":"', '"contract":"FORGED-', 1)
    )
    rep = audit(url, key)
    assert kinds(rep) == {"uncovered"} and rep.uncovered == SHARDS * PER_SHARD
    rep = audit(url, key, saved)
    bad = [p for p in rep.problems if p.kind == "inconsistent"]
    assert [p.shard for p in bad] == [1]
    assert "consistency proof does not verify" in bad[0].message


def test_a_saved_checkpoint_of_another_key_is_refused(
    url: str, store: LedgerStore, key: SigningKey, saved: str
) -> None:
    cp = LogCheckpoint.parse(saved)
    forged = LogCheckpoint.sign(SigningKey.generate(), cp.origin, cp.shards, cp.time)
    rep = audit(url, key, forged.to_text())
    assert kinds(rep) == {"bad_saved_checkpoint"}


def test_records_outside_every_log_checkpoint_are_reported(
    url: str, store: LedgerStore, key: SigningKey
) -> None:
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        conn.execute(sa.text("DELETE FROM ledger_log_checkpoints"))
    eng.dispose()
    rep = audit(url, key)
    assert kinds(rep) == {"uncovered"}
    assert [(p.shard, p.index) for p in rep.problems] == [(s, 0) for s in range(SHARDS)]


# -- the writer refuses to sign a rolled-back log ----------------------------------------


def test_the_writer_stops_on_a_database_restored_under_it(
    url: str, tmp_path: Path, key: SigningKey, records: list[DecisionRecord]
) -> None:
    if not url.startswith("sqlite"):
        pytest.skip("copies the SQLite database file")
    with open_store(url, signer=key, checkpoint_every=10) as s:
        fill(s, records, range(2))
        attacks.copy_sqlite(url, tmp_path / "backup.db")
        fill(s, records, range(2, 4))
        s.engine.dispose()  # the running writer reconnects to whatever file is there
        attacks.restore_sqlite(url, tmp_path / "backup.db")
        more = make_records(SHARDS * PER_SHARD + 5, seed=3)[-5:]
        # Every head in the restored copy is genuine, but older than what this writer
        # signed last: it refuses to sign a checkpoint that would rewind the log.
        with pytest.raises(VerificationError, match="rolled back"):
            s.append(more, shard=0)


def test_concurrent_writers_sign_checkpoints_that_extend_each_other(
    url: str, key: SigningKey
) -> None:
    # Four writers (one per shard, as four sink workers) append at once; every log
    # checkpoint is kept. Each must extend the one signed before it: a checkpoint that
    # missed an append committed before it would show that shard smaller than its
    # predecessor did, and a witness would take it for a rollback.
    records = make_records(4 * 60, seed=11)[: 4 * 60]
    stores = [open_store(url, signer=key, checkpoint_every=1) for _ in range(4)]

    def write(shard: int) -> None:
        mine = records[shard * 60 : shard * 60 + 60]
        for i in range(0, 60, 2):
            stores[shard].append(mine[i : i + 2], shard=shard)

    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(write, range(4)))
        notes = [LogCheckpoint.parse(n) for _, n in stores[0].log_checkpoint_notes()]
    finally:
        for s in stores:
            s.close()
    assert len(notes) == 4 * 30 and notes[-1].size == 4 * 60
    for old, new in itertools.pairwise(notes):
        assert all(new.sizes().get(s, 0) >= n for s, n in old.sizes().items()), (old, new)
    assert audit(url, key, notes[0].to_text()).ok


def test_verify_while_a_writer_appends(url: str, key: SigningKey) -> None:
    # An auditor's check runs while the sink appends: what it reads is one moment of the
    # log, so the new records are neither seen without their checkpoint nor ahead of
    # their shard head.
    records = make_records(600, seed=5)[:600]
    done = threading.Event()

    def write() -> None:
        with open_store(url, signer=key, checkpoint_every=50) as w:
            for i in range(0, 600, 5):
                w.append(records[i : i + 5], shard=i % 3)
        done.set()

    with open_store(url, signer=key) as s:
        s.append(records[:1], shard=0)
    thread = threading.Thread(target=write)
    thread.start()
    reports = []
    try:
        while not done.is_set():
            reports.append(audit(url, key))
    finally:
        thread.join()
    assert len(reports) > 1
    assert [r.problems for r in reports if not r.ok] == []
