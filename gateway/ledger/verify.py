"""Whole-log verification.

For every shard, the records are re-hashed in order and the Merkle root is recomputed
incrementally; each signed checkpoint must verify under the gateway public key and match
the root at its size. That alone *detects* any edit, deletion, reordering or insertion
before the last checkpoint, but only bounds it between two checkpoints. To name the exact
first bad record, ``verify`` also uses what the store keeps per row: the leaf hash (an
edited body no longer matches it), the contiguous sequence (a deleted row leaves a gap)
and, when the operator's signing key is at hand, the keyed seal binding each leaf to its
position (an edited-and-rehashed, moved or inserted row loses its seal). The filter columns
and category/purpose rows are checked against the body, so they cannot be altered to hide
a record from a query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway.crypto import VerifyKey
from gateway.errors import LedgerError, SignatureError, VerificationError
from gateway.ledger import schema as t
from gateway.ledger.checkpoints import (
    Checkpoint,
    Sealer,
    parse_prune_statement,
    prune_digest,
)
from gateway.ledger.merkle import Frontier, leaf_hash
from gateway.ledger.store import LedgerStore, utc_naive

_PAGE = 5000


@dataclass(frozen=True)
class Problem:
    kind: str  # edited, missing, moved, columns, root_mismatch, forged_checkpoint, ...
    shard: int | None
    index: int | None
    record_id: str | None
    message: str
    exact: bool = True  # False: the damage is somewhere from ``index`` on, not at it

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "shard": self.shard,
            "index": self.index,
            "record_id": self.record_id,
            "exact": self.exact,
            "message": self.message,
        }


@dataclass
class ShardResult:
    shard: int
    size: int = 0
    checkpoints: int = 0
    covered: int = 0  # largest tree size covered by a valid checkpoint
    pruned: int = 0
    root: bytes = b""


@dataclass
class VerifyReport:
    shards: list[ShardResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    sealed: bool = False
    prunes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        """The first bad record: lowest shard, then lowest index, exact findings first."""

        def key(p: Problem) -> tuple[float, float, int]:
            shard = math.inf if p.shard is None else p.shard
            index = math.inf if p.index is None else p.index
            return (shard, index, 0 if p.exact else 1)

        return min(self.problems, key=key, default=None)

    def raise_if_bad(self) -> None:
        first = self.first
        if first is not None:
            raise VerificationError(first.message, record_id=first.record_id, index=first.index)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "first": self.first.to_dict() if self.first else None,
            "problems": [p.to_dict() for p in self.problems],
            "sealed": self.sealed,
            "prunes": self.prunes,
            "shards": [
                {
                    "shard": s.shard,
                    "size": s.size,
                    "checkpoints": s.checkpoints,
                    "covered": s.covered,
                    "pruned": s.pruned,
                    "root": s.root.hex(),
                }
                for s in self.shards
            ],
        }


def verify_log(
    store: LedgerStore, key: VerifyKey | None = None, *, sealer: Sealer | None = None
) -> VerifyReport:
    """Check the whole log. ``key`` defaults to the store signer's public key and
    ``sealer`` to the store's (present when it was opened with the signing key)."""
    if key is None:
        if store.signer is None:
            raise LedgerError("verifying needs the gateway public key")
        key = store.signer.public_key()
    sealer = sealer or store.sealer
    report = VerifyReport(sealed=sealer is not None)
    with store.engine.connect() as conn:
        prune_ok = _check_prunes(conn, key, report)
        shard_ids = sorted(
            set(conn.execute(sa.select(t.shards.c.shard)).scalars())
            | set(conn.execute(sa.select(t.records.c.shard).distinct()).scalars())
            | set(conn.execute(sa.select(t.checkpoints.c.shard).distinct()).scalars())
        )
        for shard in shard_ids:
            report.shards.append(_verify_shard(conn, shard, key, sealer, prune_ok, report))
    return report


def _check_prunes(conn: Connection, key: VerifyKey, report: VerifyReport) -> set[int]:
    """Verify each signed prune statement against the rows it claims; return good ids."""
    good: set[int] = set()
    for p in conn.execute(sa.select(t.prunes).order_by(t.prunes.c.id)):
        report.prunes += 1
        try:
            key.verify(p.signature, p.statement.encode("utf-8"))
            fields = parse_prune_statement(p.statement)
        except (SignatureError, VerificationError):
            report.problems.append(
                Problem(
                    "forged_prune",
                    None,
                    None,
                    None,
                    f"prune #{p.id} is not signed by gateway key {key.key_id}: its removal of"
                    " record bodies was not made by the gateway",
                )
            )
            continue
        c = t.records.c
        rows = conn.execute(
            sa.select(c.shard, c.seq, c.record_id, c.leaf_hash).where(c.pruned_by == p.id)
        ).all()
        covered = dict(
            (int(s), int(n)) for s, n in (x.split(":") for x in fields["covered"].split())
        )
        items = [(r.shard, r.seq, r.record_id, r.leaf_hash) for r in rows]
        if prune_digest(items).hex() != fields["digest"] or len(items) != int(fields["count"]):
            report.problems.append(
                Problem(
                    "bad_prune",
                    None,
                    None,
                    None,
                    f"prune #{p.id}: the pruned records no longer match its signed list"
                    " (a pruned record was changed, added or removed)",
                )
            )
            continue
        late = [r for r in rows if r.seq >= covered.get(r.shard, 0)]
        if late:
            r = late[0]
            report.problems.append(
                Problem(
                    "bad_prune",
                    r.shard,
                    r.seq,
                    r.record_id,
                    f"record {r.record_id} at index {r.seq} of shard {r.shard} was pruned"
                    f" without a checkpoint covering it (prune #{p.id})",
                )
            )
            continue
        good.add(p.id)
    return good


def _verify_shard(
    conn: Connection,
    shard: int,
    key: VerifyKey,
    sealer: Sealer | None,
    prune_ok: set[int],
    report: VerifyReport,
) -> ShardResult:
    result = ShardResult(shard)
    problems: list[Problem] = []
    cps: list[Checkpoint] = []
    for r in conn.execute(
        sa.select(t.checkpoints)
        .where(t.checkpoints.c.shard == shard)
        .order_by(t.checkpoints.c.tree_size)
    ):
        cp = Checkpoint(r.shard, r.tree_size, r.root_hash, r.timestamp, r.key_id, r.signature)
        try:
            cp.verify(key)
            cps.append(cp)
        except VerificationError as exc:
            problems.append(Problem("forged_checkpoint", shard, None, None, str(exc)))
    result.checkpoints = len(cps)

    frontier = Frontier()
    pending = list(cps)
    last_good = 0  # size of the last checkpoint whose root matched
    bad_rows: set[int] = set()
    root_broken = False
    for rows, terms in _pages(conn, shard):
        for row in rows:
            if row.seq != frontier.size:
                problems.append(
                    Problem(
                        "missing",
                        shard,
                        frontier.size,
                        None,
                        f"shard {shard}: records at index {frontier.size}"
                        f"{'' if row.seq == frontier.size + 1 else f'..{row.seq - 1}'} are"
                        f" missing (deleted); the next record present is {row.record_id}"
                        f" at index {row.seq}",
                    )
                )
                bad_rows.add(frontier.size)
                # Re-align so that later rows are judged on their own, not all as gaps.
                while frontier.size < row.seq:
                    frontier.append(b"\x00" * 32)
            before = len(problems)
            leaf = _check_row(row, terms.get(row.record_id, set()), shard, prune_ok, problems)
            if (
                len(problems) == before
                and sealer is not None
                and not sealer.check(row.seal, sealer.record(shard, row.seq, leaf))
            ):
                problems.append(
                    Problem(
                        "moved",
                        shard,
                        row.seq,
                        row.record_id,
                        f"record {row.record_id} at index {row.seq} of shard {shard} does not"
                        " carry the gateway's seal for this position: it was edited, moved here"
                        " or inserted, or a record before it was deleted",
                    )
                )
            if len(problems) > before:
                bad_rows.add(row.seq)
            result.pruned += row.body is None
            frontier.append(leaf)
            while pending and pending[0].tree_size <= frontier.size:
                cp = pending.pop(0)
                if frontier.root() == cp.root_hash:
                    last_good = cp.tree_size
                elif not root_broken and not (bad_rows and min(bad_rows) < cp.tree_size):
                    # Once a leaf is wrong every later root is too: only the first
                    # mismatch says something new.
                    root_broken = True
                    problems.append(
                        Problem(
                            "root_mismatch",
                            shard,
                            last_good,
                            None,
                            f"shard {shard}: the records do not produce the root signed at"
                            f" size {cp.tree_size} ({cp.timestamp}): a record at an index"
                            f" from {last_good} to {cp.tree_size - 1} was changed, moved,"
                            " inserted or deleted. Verify with the signing key at hand"
                            " (GATEWAY_KEYS_DIR) to name it",
                            exact=False,
                        )
                    )
                else:
                    root_broken = True
    for cp in pending:
        problems.append(
            Problem(
                "missing",
                shard,
                frontier.size,
                None,
                f"shard {shard}: a checkpoint was signed at size {cp.tree_size} but only"
                f" {frontier.size} records are left: records from index {frontier.size} on"
                " were deleted",
            )
        )
        break
    _check_head(conn, shard, frontier, sealer, problems)
    result.size = frontier.size
    result.root = frontier.root()
    result.covered = max((cp.tree_size for cp in cps), default=0)
    report.problems.extend(problems)
    return result


def _pages(conn: Connection, shard: int) -> Any:
    c, tc = t.records.c, t.terms.c
    after = -1
    while True:
        rows = conn.execute(
            sa.select(t.records).where(c.shard == shard, c.seq > after).order_by(c.seq).limit(_PAGE)
        ).all()
        if not rows:
            return
        terms: dict[str, set[tuple[str, str]]] = {}
        for rid, kind, term in conn.execute(
            sa.select(tc.record_id, tc.kind, tc.term)
            .join(t.records, tc.record_id == c.record_id)
            .where(c.shard == shard, c.seq > after, c.seq <= rows[-1].seq)
        ):
            terms.setdefault(rid, set()).add((kind, term))
        yield rows, terms
        after = rows[-1].seq


def _check_row(
    row: Any, terms: set[tuple[str, str]], shard: int, prune_ok: set[int], problems: list[Problem]
) -> bytes:
    """Problems of one row on its own; returns the leaf hash to put in the tree."""
    where = f"record {row.record_id} at index {row.seq} of shard {shard}"
    if row.body is None:
        if row.pruned_by not in prune_ok:
            problems.append(
                Problem(
                    "unrecorded_prune",
                    shard,
                    row.seq,
                    row.record_id,
                    f"{where}: its body was removed without a valid signed prune",
                )
            )
        return bytes(row.leaf_hash)
    leaf = leaf_hash(row.body.encode("utf-8"))
    if leaf != row.leaf_hash:
        problems.append(
            Problem(
                "edited",
                shard,
                row.seq,
                row.record_id,
                f"{where} was edited: its content no longer matches the hash it was logged with",
            )
        )
        return leaf
    try:
        body = orjson.loads(row.body)
        expected = _columns(body)
        expected_terms = _terms(body)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        problems.append(
            Problem(
                "edited",
                shard,
                row.seq,
                row.record_id,
                f"{where}: the stored body is not a decision record",
            )
        )
        return leaf
    stored = {k: getattr(row, k) for k in expected}
    if stored != expected or terms != expected_terms or row.pruned_by is not None:
        changed = sorted(k for k in expected if stored[k] != expected[k])
        if terms != expected_terms:
            changed.append("categories/purposes")
        problems.append(
            Problem(
                "columns",
                shard,
                row.seq,
                row.record_id,
                f"{where}: its filter columns ({', '.join(changed) or 'pruned_by'}) were"
                " altered and no longer match the logged record",
            )
        )
    return leaf


def _time(text: str) -> datetime:
    return utc_naive(datetime.fromisoformat(text))


def _columns(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "record_id": body["record_id"],
        "event_id": body["event_id"],
        "event_type": body["event_type"],
        "agent": body["agent"],
        "recipient_role": body["recipient"]["role"],
        "outcome": body["outcome"],
        "subject_ref": body["subject_ref"],
        "subject_type": body["subject_type"],
        "occurred_at": _time(body["occurred_at"]),
        "recorded_at": _time(body["recorded_at"]),
    }


def _terms(body: dict[str, Any]) -> set[tuple[str, str]]:
    cats = {("category", c) for c in body["categories_sent"] + body["categories_transformed"]}
    return cats | {("purpose", p) for p in body["purposes"]}


def _check_head(
    conn: Connection, shard: int, frontier: Frontier, sealer: Sealer | None, problems: list[Problem]
) -> None:
    head = conn.execute(sa.select(t.shards).where(t.shards.c.shard == shard)).first()
    size = 0 if head is None else head.size
    if head is None or size != frontier.size or head.frontier != frontier.to_bytes():
        problems.append(
            Problem(
                "head",
                shard,
                min(size, frontier.size),
                None,
                f"shard {shard}: the tree head says {size} records but the table holds"
                f" {frontier.size} (or a different tree): records were inserted or deleted"
                " at the end",
                exact=False,
            )
        )
    elif sealer is not None and not sealer.check(
        head.seal, sealer.head(shard, head.size, head.frontier)
    ):
        problems.append(
            Problem(
                "head", shard, size, None, f"shard {shard}: the tree head was altered", exact=False
            )
        )
