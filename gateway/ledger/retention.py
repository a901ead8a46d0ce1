"""Retention: removing old record bodies without breaking verification.

A prune never deletes rows. It checkpoints every shard, then clears the body (and the
subject reference and category rows) of records recorded before the cut-off, keeping each
leaf hash and seal, so the Merkle trees and all earlier checkpoints still verify. The prune
itself is a signed statement listing (by digest) exactly which records lost their bodies
and the checkpoint sizes that covered them; ``verify`` rejects a body that went missing
any other way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from gateway.ledger import schema as t
from gateway.ledger.checkpoints import prune_digest, prune_statement, utc_stamp
from gateway.ledger.store import LedgerStore, utc_naive

_CHUNK = 500


@dataclass(frozen=True)
class PruneResult:
    prune_id: int | None
    before: datetime
    count: int
    statement: str | None


def prune(store: LedgerStore, before: datetime) -> PruneResult:
    """Remove the bodies of records recorded before ``before`` (a signed, checkpointed
    operation). Records appended after the fresh checkpoints are left for next time."""
    signer, _ = store.require_signer("pruning the ledger")
    cutoff = utc_naive(before)
    store.checkpoint()
    c = t.records.c
    with store.write() as conn:
        covered: dict[int, int] = {
            shard: size
            for shard, size in conn.execute(
                sa.select(t.checkpoints.c.shard, sa.func.max(t.checkpoints.c.tree_size)).group_by(
                    t.checkpoints.c.shard
                )
            )
        }
        rows = [
            r
            for r in conn.execute(
                sa.select(c.shard, c.seq, c.record_id, c.leaf_hash).where(
                    c.body.is_not(None), c.recorded_at < cutoff
                )
            )
            if r.seq < covered.get(r.shard, 0)
        ]
        if not rows:
            return PruneResult(None, before, 0, None)
        items = [(r.shard, r.seq, r.record_id, bytes(r.leaf_hash)) for r in rows]
        stamp = utc_stamp()
        text = prune_statement(before, stamp, len(items), prune_digest(items), covered)
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
    return PruneResult(int(prune_id), before, len(items), text)
