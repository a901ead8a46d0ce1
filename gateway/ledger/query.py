"""Filtering the log: the one query the CLI, the reports and the review page share.

Category and purpose filters match the term and its descendants (``user.contact`` matches
``user.contact.email``), through the ``ledger_terms`` side table. A category filter looks
at the categories *disclosed* (sent raw or transformed), not at removed ones: the question
it answers is "who received this kind of data". Pruned records (bodies removed by
retention) are never returned.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from gateway.ledger import schema as t
from gateway.ledger.store import LedgerStore, utc_naive
from gateway.records import DecisionRecord

_PAGE = 1000


@dataclass(frozen=True)
class RecordFilter:
    subject_ref: str | None = None
    # Records of any of these references: one subject's refs of every pseudonym period
    # (``PseudonymKeyring.subject_refs``). Empty: no such condition.
    subject_refs: tuple[str, ...] = ()
    agent: str | None = None
    category: str | None = None
    purpose: str | None = None
    outcome: str | None = None
    event_type: str | None = None
    subject_type: str | None = None
    recipient_role: str | None = None
    since: datetime | None = None  # recorded at or after
    until: datetime | None = None  # recorded before

    def but(self, **changes: Any) -> RecordFilter:
        return replace(self, **changes)


def _like_prefix(term: str) -> str:
    # Category keys contain '_', a LIKE wildcard: escape it (and '%', '\') to match literally.
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + ".%"


def _term_match(kind: str, term: str) -> sa.ColumnElement[bool]:
    tc = t.terms.c
    return sa.exists().where(
        tc.record_id == t.records.c.record_id,
        tc.kind == kind,
        sa.or_(tc.term == term, tc.term.like(_like_prefix(term), escape="\\")),
    )


def where_clause(flt: RecordFilter) -> list[sa.ColumnElement[bool]]:
    c = t.records.c
    conds: list[sa.ColumnElement[bool]] = [c.body.is_not(None)]
    for column, value in (
        (c.subject_ref, flt.subject_ref),
        (c.agent, flt.agent),
        (c.outcome, flt.outcome),
        (c.event_type, flt.event_type),
        (c.subject_type, flt.subject_type),
        (c.recipient_role, flt.recipient_role),
    ):
        if value is not None:
            conds.append(column == value)
    if flt.subject_refs:
        conds.append(c.subject_ref.in_(flt.subject_refs))
    if flt.since is not None:
        conds.append(c.recorded_at >= utc_naive(flt.since))
    if flt.until is not None:
        conds.append(c.recorded_at < utc_naive(flt.until))
    if flt.category:
        conds.append(_term_match("category", flt.category))
    if flt.purpose:
        conds.append(_term_match("purpose", flt.purpose))
    return conds


def _ordered(flt: RecordFilter) -> sa.Select[Any]:
    c = t.records.c
    return sa.select(c.body).where(*where_clause(flt)).order_by(c.recorded_at, c.shard, c.seq)


def list_records(
    store: LedgerStore, flt: RecordFilter | None = None, *, limit: int | None = 100, offset: int = 0
) -> list[DecisionRecord]:
    """Records matching ``flt``, oldest first."""
    q = _ordered(flt or RecordFilter()).offset(offset)
    if limit is not None:
        q = q.limit(limit)
    with store.engine.connect() as conn:
        return [DecisionRecord.from_json(body) for body in conn.execute(q).scalars()]


def iter_records(store: LedgerStore, flt: RecordFilter | None = None) -> Iterator[DecisionRecord]:
    """All matching records, oldest first, read in pages so memory stays flat."""
    c = t.records.c
    flt = flt or RecordFilter()
    # Keyset pagination on (recorded_at, shard, seq): stable while writers append.
    after: tuple[datetime, int, int] | None = None
    while True:
        q = sa.select(c.recorded_at, c.shard, c.seq, c.body).where(*where_clause(flt))
        if after is not None:
            q = q.where(sa.tuple_(c.recorded_at, c.shard, c.seq) > sa.tuple_(*after))
        q = q.order_by(c.recorded_at, c.shard, c.seq).limit(_PAGE)
        with store.engine.connect() as conn:
            rows = conn.execute(q).all()
        for row in rows:
            yield DecisionRecord.from_json(row.body)
        if len(rows) < _PAGE:
            return
        last = rows[-1]
        after = (last.recorded_at, last.shard, last.seq)


def count_records(store: LedgerStore, flt: RecordFilter | None = None) -> int:
    q = (
        sa.select(sa.func.count())
        .select_from(t.records)
        .where(*where_clause(flt or RecordFilter()))
    )
    with store.engine.connect() as conn:
        return conn.execute(q).scalar_one()


def get_record(store: LedgerStore, record_id: str) -> DecisionRecord | None:
    stored = store.get(record_id)
    return None if stored is None else stored.record
