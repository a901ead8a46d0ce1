"""Retention: removing old record bodies without breaking verification.

A prune never deletes rows. It checkpoints every shard, then clears the body (and the
subject reference and category rows) of the records that are due, keeping each leaf hash
and seal, so the Merkle trees and all earlier checkpoints still verify. The prune itself
is a signed statement listing (by digest) exactly which records lost their bodies and the
checkpoint sizes that covered them; ``verify`` rejects a body that went missing any other
way.

Which records are due:

* ``prune_by_retention`` applies the policy file's ``retention`` section, record by record:
  a record is kept for the longest period of the categories it disclosed (sent or
  transformed), counted from when it was recorded; a record that disclosed nothing (a
  withholding, an erasure notice) for the default period. So an order's record outlives a
  page view's, as the policy promises ("as long as necessary to ... complete and record
  orders, or as needed to comply with our legal obligations").
* ``prune`` is a blanket cut: every record recorded before a date (``--before``,
  GATEWAY_RETENTION_DAYS), whatever its categories.

The consent state (each customer's choices, kept by the stream) follows the same policy:
``expired_subjects`` says whose state has outlived its period since the customer was last
seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway.ledger import schema as t
from gateway.ledger.checkpoints import prune_digest, prune_statement, utc_stamp
from gateway.ledger.store import LedgerStore, utc_naive
from gateway.policy import Retention

_CHUNK = 500

# What a subject's consent state is about: the customer's privacy choices (an opt-out, an
# objection, an erasure), which must outlive everything else kept about them.
CONSENT_STATE_CATEGORIES: Final = ("user.privacy_preferences",)

S = TypeVar("S")


@dataclass(frozen=True)
class PruneResult:
    prune_id: int | None
    before: datetime
    count: int
    statement: str | None
    # Records pruned per retention period applied ("7y": 12); a blanket cut has none.
    by_period: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Due:
    shard: int
    seq: int
    record_id: str
    leaf: bytes
    period: str | None = None


def record_retention(
    retention: Retention, outcome: str, categories: Iterable[str]
) -> tuple[str, timedelta]:
    """How long a record is kept, as (the period as written, its duration): the longest
    period of the categories it disclosed; the default for a record that disclosed none,
    and for a withholding (nothing left the gateway, whatever it names)."""
    cats = [] if outcome == "withheld" else list(categories)
    if not cats:
        return retention.default.period, retention.default.duration
    rules = [retention.rule_for(c)[1] for c in cats]
    longest = max(rules, key=lambda r: r.duration)
    return longest.period, longest.duration


def consent_state_retention(retention: Retention) -> timedelta:
    """How long a subject's consent state is kept after the subject was last seen."""
    return retention.retention_for(CONSENT_STATE_CATEGORIES)


def _aware(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def expired_subjects(
    states_with_last_seen: Mapping[str, tuple[S, datetime]],
    retention: Retention,
    now: datetime,
) -> list[str]:
    """The subjects (keys of ``states_with_last_seen``: customer id -> (consent state, when
    the customer's last event was seen)) whose consent state has outlived its retention
    period at ``now``, sorted. Naive times are UTC. The caller forgets their state (and
    whatever is keyed by it); a subject seen again starts afresh."""
    period = consent_state_retention(retention)
    cut = _aware(now) - period
    return sorted(s for s, (_state, seen) in states_with_last_seen.items() if _aware(seen) <= cut)


def _covered(conn: Connection) -> dict[int, int]:
    cp = t.checkpoints.c
    q = sa.select(cp.shard, sa.func.max(cp.tree_size)).group_by(cp.shard)
    return {shard: size for shard, size in conn.execute(q)}


def _categories(conn: Connection, ids: list[str]) -> dict[str, list[str]]:
    tc = t.terms.c
    out: dict[str, list[str]] = {}
    for i in range(0, len(ids), _CHUNK):
        q = sa.select(tc.record_id, tc.term).where(
            tc.kind == "category", tc.record_id.in_(ids[i : i + _CHUNK])
        )
        for rid, term in conn.execute(q):
            out.setdefault(rid, []).append(term)
    return out


def _due_by_date(cutoff: datetime) -> Callable[[Connection, dict[int, int]], list[_Due]]:
    def select(conn: Connection, covered: dict[int, int]) -> list[_Due]:
        c = t.records.c
        q = sa.select(c.shard, c.seq, c.record_id, c.leaf_hash).where(
            c.body.is_not(None), c.recorded_at < cutoff
        )
        return [
            _Due(r.shard, r.seq, r.record_id, bytes(r.leaf_hash))
            for r in conn.execute(q)
            if r.seq < covered.get(r.shard, 0)
        ]

    return select


def _due_by_retention(
    retention: Retention, now: datetime
) -> Callable[[Connection, dict[int, int]], list[_Due]]:
    """Records whose own retention has passed at ``now`` (naive UTC)."""
    shortest = min(
        [retention.default.duration, *(r.duration for r in retention.categories.values())]
    )

    def select(conn: Connection, covered: dict[int, int]) -> list[_Due]:
        c = t.records.c
        # Nothing recorded within the shortest period can be due: read only the rest.
        q = sa.select(c.shard, c.seq, c.record_id, c.leaf_hash, c.recorded_at, c.outcome).where(
            c.body.is_not(None), c.recorded_at < now - shortest
        )
        rows = [r for r in conn.execute(q) if r.seq < covered.get(r.shard, 0)]
        cats = _categories(conn, [r.record_id for r in rows if r.outcome != "withheld"])
        periods: dict[tuple[str, frozenset[str]], tuple[str, timedelta]] = {}
        due = []
        for r in rows:
            key = (r.outcome, frozenset(cats.get(r.record_id, ())))
            got = periods.get(key)
            if got is None:
                got = periods[key] = record_retention(retention, r.outcome, key[1])
            if r.recorded_at + got[1] <= now:
                due.append(_Due(r.shard, r.seq, r.record_id, bytes(r.leaf_hash), got[0]))
        return due

    return select


def _prune(
    store: LedgerStore,
    before: datetime,
    select: Callable[[Connection, dict[int, int]], list[_Due]],
    note: str | None = None,
) -> PruneResult:
    """Checkpoint, then remove the bodies ``select`` picks among the checkpointed records,
    under one signed prune statement (``note``: a last line it adds, e.g. the rules)."""
    signer, _ = store.require_signer("pruning the ledger")
    store.checkpoint()
    c = t.records.c
    with store.write() as conn:
        covered = _covered(conn)
        rows = select(conn, covered)
        if not rows:
            return PruneResult(None, before, 0, None)
        items = [(r.shard, r.seq, r.record_id, r.leaf) for r in rows]
        stamp = utc_stamp()
        text = prune_statement(before, stamp, len(items), prune_digest(items), covered)
        if note is not None:
            text += note.rstrip("\n") + "\n"
        prune_id = conn.execute(
            t.prunes.insert().values(
                statement=text,
                signature=signer.sign(text.encode("utf-8")),
                key_id=signer.key_id,
                created_at=utc_naive(datetime.fromisoformat(stamp)),
            )
        ).inserted_primary_key[0]
        ids = [r.record_id for r in rows]
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            conn.execute(
                t.records.update()
                .where(c.record_id.in_(chunk))
                .values(body=None, subject_ref=None, pruned_by=prune_id)
            )
            conn.execute(t.terms.delete().where(t.terms.c.record_id.in_(chunk)))
    by_period: dict[str, int] = {}
    for r in rows:
        if r.period is not None:
            by_period[r.period] = by_period.get(r.period, 0) + 1
    return PruneResult(int(prune_id), before, len(items), text, by_period)


def prune(store: LedgerStore, before: datetime) -> PruneResult:
    """Remove the bodies of records recorded before ``before`` (a signed, checkpointed
    operation). Records appended after the fresh checkpoints are left for next time."""
    return _prune(store, before, _due_by_date(utc_naive(before)))


def prune_by_retention(
    store: LedgerStore,
    retention: Retention,
    *,
    now: datetime | None = None,
    rules: str | None = None,
) -> PruneResult:
    """Remove the body of every record whose own retention (``record_retention``) has
    passed at ``now`` (default: the current time), in one signed, checkpointed prune.
    ``rules`` names the retention rules in the signed statement (e.g. the policy
    version), so the prune says by which rules it went."""
    when = datetime.now(UTC) if now is None else _aware(now)
    note = None if rules is None else f"retention {rules}"
    return _prune(store, when, _due_by_retention(retention, utc_naive(when)), note)


def due_by_retention(
    store: LedgerStore, retention: Retention, *, now: datetime | None = None
) -> dict[str, int]:
    """What ``prune_by_retention`` would remove at ``now``, without removing anything:
    records per retention period applied."""
    when = utc_naive(datetime.now(UTC) if now is None else now)
    select = _due_by_retention(retention, when)
    with store.engine.connect() as conn:
        # A prune checkpoints every shard first: every record stored now will be covered.
        sizes = {
            r.shard: r.size for r in conn.execute(sa.select(t.shards.c.shard, t.shards.c.size))
        }
        rows = select(conn, sizes)
    out: dict[str, int] = {}
    for r in rows:
        out[str(r.period)] = out.get(str(r.period), 0) + 1
    return out
