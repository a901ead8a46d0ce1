"""Aggregates for the dashboard that the ledger API does not offer as one query.

They go through ``gateway.ledger.query.where_clause``, the same conditions as
``list_records``, so a chart and the record list never disagree about what a filter means.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from gateway.ledger import schema as t
from gateway.ledger.query import RecordFilter, where_clause
from gateway.ledger.store import LedgerStore


@dataclass(frozen=True)
class Totals:
    records: int
    subjects: int
    agents: int
    first: datetime | None
    last: datetime | None


def _aware(when: datetime | None) -> datetime | None:
    return None if when is None else when.replace(tzinfo=UTC)


def outcomes_by_agent(store: LedgerStore, flt: RecordFilter) -> dict[str, dict[str, int]]:
    """agent -> outcome -> records: the withheld-vs-sent chart."""
    c = t.records.c
    q = (
        sa.select(c.agent, c.outcome, sa.func.count())
        .where(*where_clause(flt))
        .group_by(c.agent, c.outcome)
        .order_by(c.agent, c.outcome)
    )
    out: dict[str, dict[str, int]] = {}
    with store.engine.connect() as conn:
        for agent, outcome, n in conn.execute(q):
            out.setdefault(agent, {})[outcome] = n
    return out


def totals(store: LedgerStore, flt: RecordFilter) -> Totals:
    c = t.records.c
    q = sa.select(
        sa.func.count(),
        sa.func.count(sa.distinct(c.subject_ref)),
        sa.func.count(sa.distinct(c.agent)),
        sa.func.min(c.recorded_at),
        sa.func.max(c.recorded_at),
    ).where(*where_clause(flt))
    with store.engine.connect() as conn:
        records, subjects, agents, first, last = conn.execute(q).one()
    return Totals(records, subjects, agents, _aware(first), _aware(last))


def agents(store: LedgerStore) -> list[str]:
    """Every agent named in the log (for the filter form and the agent index)."""
    c = t.records.c
    q = sa.select(c.agent).where(c.body.is_not(None)).distinct().order_by(c.agent)
    with store.engine.connect() as conn:
        return list(conn.execute(q).scalars())


def years(store: LedgerStore) -> list[int]:
    c = t.records.c
    q = sa.select(sa.func.min(c.recorded_at), sa.func.max(c.recorded_at)).where(c.body.is_not(None))
    with store.engine.connect() as conn:
        first, last = conn.execute(q).one()
    if first is None or last is None:
        return []
    return list(range(last.year, first.year - 1, -1))
