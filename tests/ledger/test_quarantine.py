"""The sink's quarantine table and the record-isolating append, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pydantic
import pytest
import sqlalchemy as sa

from gateway.crypto import SigningKey
from gateway.errors import VerificationError
from gateway.ledger import open_store, verify_log
from gateway.ledger import schema as t
from gateway.ledger.quarantine import (
    Quarantined,
    add_quarantined,
    append_isolating,
    count_quarantined,
    describe_error,
    list_quarantined,
    store_fault,
)
from gateway.ledger.store import create_engine
from gateway.records import DecisionRecord
from tests.ledger.data import make_records

# The poison of issue 11: schema-valid, but one hour before the first instant a Python
# datetime can hold in UTC.
POISON = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))


def poisoned(rec: DecisionRecord) -> DecisionRecord:
    return rec.model_copy(update={"occurred_at": POISON})


def test_a_record_the_store_cannot_take_is_isolated(url: str, key: SigningKey) -> None:
    records = make_records(40)
    batch = [*records[:17], poisoned(records[17]), *records[18:30], poisoned(records[30])]
    with open_store(url, signer=key) as store:
        # Today's append takes the batch or nothing: the poison fails all of it.
        with pytest.raises(OverflowError):
            store.append(batch, 0)
        assert store.count() == 0
        out = append_isolating(store, batch, 0)
        assert [i for i, _ in out.rejected] == [17, 30]
        assert all(isinstance(e, OverflowError) for _, e in out.rejected)
        assert out.appended == 29
        good = [r for i, r in enumerate(batch) if i not in (17, 30)]
        # In the topic's order, each once.
        c = t.records.c
        with store.engine.connect() as conn:
            ids = list(conn.execute(sa.select(c.record_id).where(c.shard == 0).order_by(c.seq)))
        assert [rid for (rid,) in ids] == [r.record_id for r in good]
        # Again (a replay): all duplicates, the poison rejected again, nothing new.
        again = append_isolating(store, batch, 0)
        assert again.appended == 0 and again.duplicates == 29
        assert len(again.rejected) == 2
        report = verify_log(store)
    assert report.ok, report.problems
    assert sum(s.size for s in report.shards) == 29


def test_a_store_fault_is_raised_not_isolated(url: str, key: SigningKey) -> None:
    """The store refusing everything (here: a shard head altered behind the gateway) is
    not the records' fault: nothing may be set aside for it."""
    records = make_records(10)
    with open_store(url, signer=key) as store:
        store.append(records[:5], 0)
        with store.engine.begin() as conn:
            conn.execute(t.shards.update().values(size=t.shards.c.size + 1))
        with pytest.raises(VerificationError) as got:
            append_isolating(store, records[5:], 0)
        assert store_fault(got.value)


def test_quarantine_keeps_bodies_only_of_workers_messages(url: str, key: SigningKey) -> None:
    secret = b'{"record_id":"r-1","email":"alice@example.com"}'
    items = [
        Quarantined("d", 0, 5, "unsigned", "no worker MAC", secret, b"k", record_id="r-1"),
        Quarantined("d", 1, 7, "bad_mac", "bad", b"\x00\xff" * 10, None),
        Quarantined("d", 0, 9, "unstorable", "OverflowError: x", b'{"a":1}', b"k", mac_ok=True),
        # A claimed id longer than a record id can be is not kept.
        Quarantined("d", 2, 1, "unsigned", "x", b"{}", None, record_id="x" * 500),
    ]
    with open_store(url, signer=key) as store:
        assert add_quarantined(store, items) == items
        # Read again after a restart: nothing added twice.
        assert add_quarantined(store, items[:2]) == []
        rows = {(e.partition, e.offset): e for e in list_quarantined(store)}
        assert len(rows) == 4
        forged = rows[(0, 5)]
        assert forged.body is None
        assert forged.value_size == len(secret) and len(forged.value_sha256) == 64
        assert forged.record_id == "r-1" and forged.reason == "unsigned"
        assert rows[(0, 9)].body == '{"a":1}'
        assert rows[(2, 1)].record_id is None
        assert count_quarantined(store) == {"unsigned": 2, "bad_mac": 1, "unstorable": 1}
        assert [e.offset for e in list_quarantined(store, reasons=["bad_mac"])] == [7]
        # Nothing of it is in the log.
        assert store.count() == 0
    with create_engine(url).connect() as conn:
        dump = " ".join(str(r) for r in conn.execute(sa.select(t.quarantine)))
    assert "alice" not in dump


def test_errors_are_described_without_the_content() -> None:
    doc = make_records(1)[0].model_dump(mode="json")
    doc["subject_type"] = "alice@example.com"
    with pytest.raises(pydantic.ValidationError) as got:
        DecisionRecord.model_validate(doc)
    text = describe_error(got.value)
    assert text.startswith("not a record: ")
    assert "alice" not in text and "subject_type" in text
    err = sa.exc.DataError("INSERT x VALUES (?)", ("alice@example.com",), ValueError("too long"))
    assert describe_error(err) == "ValueError: too long"


def test_an_older_ledger_gains_the_quarantine_table(url: str, key: SigningKey) -> None:
    """A ledger made before the quarantine (schema version 2, with records) opens, is
    migrated, keeps its records and verifies."""
    records = make_records(20)
    with open_store(url, signer=key) as store:
        store.append(records[:8], 0)
    # Back to what version 2 left: no quarantine table, no version 3 row.
    engine = create_engine(url)
    with engine.begin() as conn:
        t.quarantine.drop(conn)
        conn.execute(t.schema_versions.delete().where(t.schema_versions.c.version >= 3))
    with engine.connect() as conn:
        assert t.current_version(conn) == 2
        assert not sa.inspect(conn).has_table("ledger_quarantine")
    engine.dispose()
    with open_store(url, signer=key) as store:
        with store.engine.connect() as conn:
            assert t.current_version(conn) == t.LATEST >= 3
        assert store.count() == 8
        add_quarantined(store, [Quarantined("d", 0, 1, "unsigned", "x", b"v")])
        assert count_quarantined(store) == {"unsigned": 1}
        store.append(records[8:], 0)
        report = verify_log(store)
    assert report.ok and sum(s.size for s in report.shards) == len(records)
