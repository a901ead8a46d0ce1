"""Whole-log verification.

What is checked, with only the gateway's public key:

* every shard's records are re-hashed in order and its Merkle root recomputed
  incrementally; each signed checkpoint, per shard and of the whole log, must verify under
  a trusted gateway key and match the root at its size. That *detects* any edit, deletion,
  reordering or insertion before the latest checkpoint;
* the latest log checkpoint lists every shard with its size: a shard it lists that is gone
  or shorter is reported, and records it does not cover (added outside the gateway, or
  whose checkpoints were deleted) are reported as uncovered;
* against a log checkpoint saved earlier (``against``) and the checkpoints witnesses
  cosigned, the current log must be consistent: every shard present, at least as large,
  with an RFC 9162 consistency proof from the saved root to the current one. This is what
  catches a rollback that leaves the database self-consistent (a restored backup, a
  trimmed tail with its checkpoints deleted, an emptied log);
* trusted keys are the given public key(s) and every key the log's recorded hand-overs
  chain to from them, so checkpoints stay verifiable across signing-key rotations.

Checkpoints only bound damage between two of them. To name the exact first bad record,
``verify`` also uses what the store keeps per row: the leaf hash (an edited body no longer
matches it), the contiguous sequence (a deleted row leaves a gap) and, when the operator's
signing key is at hand, the keyed seal binding each leaf to its position (an
edited-and-rehashed, moved or inserted row loses its seal); seals are optional precision,
never needed for detection. The filter columns and category/purpose rows are checked
against the body, so they cannot be altered to hide a record from a query.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
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
    RowSeals,
    parse_prune_statement,
    prune_digest,
)
from gateway.ledger.consistency import prove_shard, shard_problem
from gateway.ledger.keyhistory import KeyRing, key_ring, load_handovers
from gateway.ledger.logcheckpoint import LogCheckpoint, ShardHead
from gateway.ledger.merkle import Frontier, leaf_hash
from gateway.ledger.store import LedgerStore, utc_naive
from gateway.signed_notes import CosignatureKey, NoteSignature

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
    # The leaf hashes as re-computed, kept only when a consistency proof needs them.
    leaves: list[bytes] | None = None


@dataclass
class WitnessResult:
    """What the stored cosignatures of one witness key show."""

    name: str
    key_id: str  # note key ID, hex
    # True: its cosignatures verify with the witness key given; None: no key was given
    # for it, so nothing is claimed; False: a key was given but none of them verifies.
    verified: bool | None = None
    size: int = 0  # largest log size it cosigned (verified ones only, when a key is given)
    time: int = 0  # POSIX time of that cosignature
    count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "witness": self.name,
            "key_id": self.key_id,
            "verified": self.verified,
            "size": self.size,
            "time": self.time,
            "count": self.count,
        }


@dataclass
class VerifyReport:
    shards: list[ShardResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    sealed: bool = False
    prunes: int = 0
    # The newest log checkpoint that verifies, and the key that signed it.
    log_checkpoint: LogCheckpoint | None = None
    log_checkpoint_key: str | None = None
    keys: list[dict[str, Any]] = field(default_factory=list)
    witnesses: list[WitnessResult] = field(default_factory=list)
    against: LogCheckpoint | None = None
    uncovered: int = 0  # records no valid log checkpoint covers
    unsealed: int = 0  # records sealed under an earlier signing key (seal not checked)

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
        cp = self.log_checkpoint
        return {
            "ok": self.ok,
            "first": self.first.to_dict() if self.first else None,
            "problems": [p.to_dict() for p in self.problems],
            "sealed": self.sealed,
            "prunes": self.prunes,
            "log_checkpoint": None
            if cp is None
            else {
                "origin": cp.origin,
                "size": cp.size,
                "root": cp.root.hex(),
                "time": cp.time,
                "key_id": self.log_checkpoint_key,
            },
            "uncovered": self.uncovered,
            "unsealed": self.unsealed,
            "keys": self.keys,
            "witnesses": [w.to_dict() for w in self.witnesses],
            "against": None
            if self.against is None
            else {"size": self.against.size, "time": self.against.time},
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


@dataclass(frozen=True)
class _Target:
    """A signed (size, root) the shard's records must produce."""

    size: int
    root: bytes
    time: str


def verify_log(
    store: LedgerStore,
    key: VerifyKey | Sequence[VerifyKey] | None = None,
    *,
    seals: RowSeals | None = None,
    against: LogCheckpoint | None = None,
    witness_keys: Iterable[CosignatureKey] = (),
) -> VerifyReport:
    """Check the whole log.

    ``key`` is the gateway public key (or keys) the verifier trusts; it defaults to the
    store signer's public key. Keys handed over from or to them (recorded hand-overs)
    are trusted too. ``seals`` defaults to the store's (present when it was opened with
    the signing key). ``against`` is a log checkpoint saved earlier that the log must
    still extend; ``witness_keys`` verify the stored cosignatures, and the log must
    extend the largest checkpoint each witness cosigned."""
    if key is None:
        if store.signer is None:
            raise LedgerError("verifying needs the gateway public key")
        anchors = [store.signer.public_key()]
    else:
        anchors = [key] if isinstance(key, VerifyKey) else list(key)
    seals = seals or store.seals
    report = VerifyReport(sealed=seals is not None)
    with store.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # One snapshot for the whole check, so that appends committed meanwhile are
            # neither half seen (a head ahead of its records) nor seen without the log
            # checkpoint that covers them. SQLite's read transaction is a snapshot already.
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        ring = _key_ring(conn, anchors, report)
        prune_ok = _check_prunes(conn, ring, report)
        log_cps = _log_checkpoints(conn, ring, report)
        anchored = _anchors(conn, ring, list(witness_keys), against, log_cps, report)
        targets: dict[int, list[_Target]] = {}
        epochs: dict[int, list[tuple[int, str]]] = {}
        covered: dict[int, int] = {}
        for cp, signer in log_cps:
            for s in cp.shards:
                targets.setdefault(s.shard, []).append(_Target(s.size, s.root, cp.time))
                epochs.setdefault(s.shard, []).append((s.size, signer))
                covered[s.shard] = max(covered.get(s.shard, 0), s.size)
        need_leaves = {s.shard for cp, _ in anchored for s in cp.shards}
        shard_ids = sorted(
            set(conn.execute(sa.select(t.shards.c.shard)).scalars())
            | set(conn.execute(sa.select(t.records.c.shard).distinct()).scalars())
            | set(conn.execute(sa.select(t.checkpoints.c.shard).distinct()).scalars())
            | set(targets)
            | need_leaves
        )
        results: dict[int, ShardResult] = {}
        for shard in shard_ids:
            results[shard] = _verify_shard(
                conn,
                shard,
                ring,
                seals,
                prune_ok,
                report,
                targets.get(shard, []),
                epochs.get(shard, []),
                keep_leaves=shard in need_leaves,
            )
    report.shards = [results[s] for s in shard_ids]
    for r in report.shards:
        r.covered = max(r.covered, covered.get(r.shard, 0))
        _check_coverage(r, covered.get(r.shard, 0), report)
    for cp, label in anchored:
        _check_consistent(cp, results, label, report)
    for r in report.shards:
        r.leaves = None
    return report


def _key_ring(conn: Connection, anchors: Sequence[VerifyKey], report: VerifyReport) -> KeyRing:
    ring = key_ring(anchors, load_handovers(conn))
    report.keys = ring.to_list()
    for h in ring.broken:
        report.problems.append(
            Problem(
                "forged_handover",
                None,
                None,
                None,
                f"key hand-over #{h.id} from {h.old_key_id} to {h.new_key_id} does not check"
                f" ({h.error}): it was altered or forged",
            )
        )
    given = ", ".join(k.key_id for k in anchors)
    for h in ring.unreached:
        report.problems.append(
            Problem(
                "untrusted_handover",
                None,
                None,
                None,
                f"key hand-over #{h.id} from {h.old_key_id} to {h.new_key_id} is signed by a"
                f" key not handed over from the trusted ones ({given}):"
                " it was not made by the gateway, or verify is given the wrong public key",
            )
        )
    return ring


def _log_checkpoints(
    conn: Connection, ring: KeyRing, report: VerifyReport
) -> list[tuple[LogCheckpoint, str]]:
    """The stored log checkpoints that verify, oldest first, with their signer's key id."""
    good: list[tuple[LogCheckpoint, str]] = []
    lc = t.log_checkpoints.c
    for row in conn.execute(sa.select(lc.id, lc.note).order_by(lc.id)):
        try:
            cp = LogCheckpoint.parse(row.note)
            signer = cp.verify(ring.keys)
        except VerificationError as exc:
            report.problems.append(
                Problem("forged_checkpoint", None, None, None, f"log checkpoint #{row.id}: {exc}")
            )
            continue
        good.append((cp, signer.key_id))
    if good:
        report.log_checkpoint, report.log_checkpoint_key = good[-1]
    return good


def _anchors(
    conn: Connection,
    ring: KeyRing,
    witness_keys: list[CosignatureKey],
    against: LogCheckpoint | None,
    log_cps: list[tuple[LogCheckpoint, str]],
    report: VerifyReport,
) -> list[tuple[LogCheckpoint, str]]:
    """Checkpoints the log must still extend: the saved one and, per witness, the largest
    it cosigned; each with how a message names it."""
    out: list[tuple[LogCheckpoint, str]] = []
    if against is not None:
        report.against = against
        try:
            against.verify(ring.keys)
        except VerificationError as exc:
            report.problems.append(
                Problem("bad_saved_checkpoint", None, None, None, f"the saved checkpoint: {exc}")
            )
        else:
            ours = log_cps[-1][0].origin if log_cps else against.origin
            if against.origin != ours:
                report.problems.append(
                    Problem(
                        "bad_saved_checkpoint",
                        None,
                        None,
                        None,
                        f"the saved checkpoint is of the log {against.origin!r}, this log is"
                        f" {ours!r}",
                    )
                )
            else:
                out.append((against, f"the saved checkpoint (size {against.size}, {against.time})"))
    for cp, name in _cosignatures(conn, ring, witness_keys, report):
        out.append((cp, f"{cp.describe()} and cosigned by witness {name}"))
    return out


def _cosignatures(
    conn: Connection, ring: KeyRing, witness_keys: list[CosignatureKey], report: VerifyReport
) -> list[tuple[LogCheckpoint, str]]:
    """Check the stored cosignatures with the given witness keys; fill
    ``report.witnesses`` and return each witness's largest verified checkpoint."""
    known = {(k.name, k.key_id): k for k in witness_keys}
    results: dict[tuple[str, bytes], WitnessResult] = {}
    largest: dict[tuple[str, bytes], LogCheckpoint] = {}
    c = t.cosignatures.c
    for row in conn.execute(sa.select(c.id, c.line, c.checkpoint).order_by(c.id)):
        try:
            sig = NoteSignature.parse(row.line)
            cp = LogCheckpoint.parse(row.checkpoint)
        except (SignatureError, VerificationError) as exc:
            report.problems.append(
                Problem("forged_cosignature", None, None, None, f"cosignature #{row.id}: {exc}")
            )
            continue
        who = (sig.name, sig.key_id)
        wk = known.get(who)
        res = results.setdefault(
            who, WitnessResult(sig.name, sig.key_id.hex(), None if wk is None else False)
        )
        if wk is None:
            res.count += 1
            res.size = max(res.size, cp.size)
            continue
        ts = wk.timestamp(cp.text.encode("utf-8"), sig.signature)
        if ts is None:
            report.problems.append(
                Problem(
                    "forged_cosignature",
                    None,
                    None,
                    None,
                    f"the cosignature of witness {sig.name} on {cp.describe()} does not verify"
                    " with its key: it was forged or altered",
                )
            )
            continue
        try:
            cp.verify(ring.keys)
        except VerificationError as exc:
            report.problems.append(
                Problem(
                    "forged_checkpoint",
                    None,
                    None,
                    None,
                    f"witness {sig.name} cosigned a checkpoint the gateway did not sign: {exc}",
                )
            )
            continue
        res.verified = True
        res.count += 1
        if cp.size >= res.size:
            res.size, res.time = cp.size, ts
            largest[who] = cp
    report.witnesses = list(results.values())
    return [(cp, who[0]) for who, cp in largest.items()]


def _check_coverage(r: ShardResult, covered: int, report: VerifyReport) -> None:
    if r.size <= covered:
        return
    report.uncovered += r.size - covered
    report.problems.append(
        Problem(
            "uncovered",
            r.shard,
            covered,
            None,
            f"shard {r.shard}: records from index {covered} to {r.size - 1} are not covered by"
            " any signed log checkpoint: they were added outside the gateway, or the"
            " checkpoints covering them were deleted (a ledger from before log checkpoints:"
            " run `gateway log checkpoint` with the signing key)",
            exact=False,
        )
    )


def _check_consistent(
    cp: LogCheckpoint,
    results: dict[int, ShardResult],
    label: str,
    report: VerifyReport,
) -> None:
    """Problems where the current log does not extend ``cp`` (RFC 9162 proof per shard)."""
    for s in cp.shards:
        r = results.get(s.shard)
        now = None if r is None or r.size == 0 else ShardHead(s.shard, r.size, r.root)
        proof = None
        if r is not None and r.leaves is not None and r.size >= s.size:
            proof = prove_shard(r.leaves, s.size)
        why = shard_problem(s, now, proof, label)
        if why is None:
            continue
        if now is None or now.size < s.size:
            # Records from here on are gone.
            kind, index = "rolled_back", 0 if now is None else now.size
        else:
            # Something before the saved size differs.
            kind, index = "inconsistent", 0
        report.problems.append(Problem(kind, s.shard, index, None, why, exact=False))


def _check_prunes(conn: Connection, ring: KeyRing, report: VerifyReport) -> set[int]:
    """Verify each signed prune statement against the rows it claims; return good ids."""
    good: set[int] = set()
    for p in conn.execute(sa.select(t.prunes).order_by(t.prunes.c.id)):
        report.prunes += 1
        key = ring.get(p.key_id)
        try:
            if key is None:
                raise SignatureError(f"{p.key_id} is not a trusted key")
            key.verify(p.signature, p.statement.encode("utf-8"))
            fields = parse_prune_statement(p.statement)
        except (SignatureError, VerificationError):
            report.problems.append(
                Problem(
                    "forged_prune",
                    None,
                    None,
                    None,
                    f"prune #{p.id} is not signed by gateway key {ring.describe()}: its removal"
                    " of record bodies was not made by the gateway",
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


def _shard_checkpoints(
    conn: Connection, shard: int, ring: KeyRing, problems: list[Problem]
) -> list[Checkpoint]:
    cps: list[Checkpoint] = []
    for r in conn.execute(
        sa.select(t.checkpoints)
        .where(t.checkpoints.c.shard == shard)
        .order_by(t.checkpoints.c.tree_size)
    ):
        cp = Checkpoint(r.shard, r.tree_size, r.root_hash, r.timestamp, r.key_id, r.signature)
        key = ring.get(cp.key_id)
        try:
            if key is None:
                raise VerificationError(
                    f"checkpoint of shard {shard} at size {cp.tree_size} is not signed by a"
                    f" trusted gateway key ({cp.key_id} is none of {ring.describe()})",
                    index=cp.tree_size,
                )
            cp.verify(key)
            cps.append(cp)
        except VerificationError as exc:
            problems.append(Problem("forged_checkpoint", shard, None, None, str(exc)))
    return cps


def _verify_shard(
    conn: Connection,
    shard: int,
    ring: KeyRing,
    seals: RowSeals | None,
    prune_ok: set[int],
    report: VerifyReport,
    log_targets: list[_Target],
    epochs: list[tuple[int, str]],
    *,
    keep_leaves: bool = False,
) -> ShardResult:
    """Re-hash one shard. ``log_targets`` are the (size, root) its log checkpoints state;
    ``epochs`` the (size, signer) of those checkpoints, oldest first: a record was sealed
    by the key that signed the first of them covering it."""
    result = ShardResult(shard, leaves=[] if keep_leaves else None)
    problems: list[Problem] = []
    cps = _shard_checkpoints(conn, shard, ring, problems)
    result.checkpoints = len(cps)

    frontier = Frontier()
    pending = sorted(
        [_Target(cp.tree_size, cp.root_hash, cp.timestamp) for cp in cps] + log_targets,
        key=lambda x: x.size,
    )
    last_good = 0  # size of the last checkpoint whose root matched
    bad_rows: set[int] = set()
    root_broken = False
    epoch = 0
    seal_key = None if seals is None else seals.key_id
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
                    if result.leaves is not None:
                        result.leaves.append(b"\x00" * 32)
            before = len(problems)
            leaf = _check_row(row, terms.get(row.record_id, set()), shard, prune_ok, problems)
            while epoch < len(epochs) and epochs[epoch][0] <= row.seq:
                epoch += 1
            sealer = epochs[epoch][1] if epoch < len(epochs) else None
            if seals is not None and seal_key is not None and sealer not in (None, seal_key):
                # Sealed under an earlier signing key: its seal cannot be checked here;
                # the signed checkpoints still cover the record.
                report.unsealed += 1
            elif (
                len(problems) == before
                and seals is not None
                and not seals.check(row.seal, seals.record(shard, row.seq, leaf))
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
            if result.leaves is not None:
                result.leaves.append(leaf)
            while pending and pending[0].size <= frontier.size:
                cp = pending.pop(0)
                if frontier.root() == cp.root:
                    last_good = max(last_good, cp.size)
                elif not root_broken and not (bad_rows and min(bad_rows) < cp.size):
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
                            f" size {cp.size} ({cp.time}): a record at an index"
                            f" from {last_good} to {cp.size - 1} was changed, moved,"
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
                f"shard {shard}: a checkpoint was signed at size {cp.size} but only"
                f" {frontier.size} records are left: records from index {frontier.size} on"
                " were deleted",
            )
        )
        break
    last_sealer = None
    for size, signer in epochs:
        if size >= frontier.size:
            last_sealer = signer
            break
    check_seal = seals is not None and (seal_key is None or last_sealer in (None, seal_key))
    _check_head(conn, shard, frontier, seals if check_seal else None, problems)
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
    conn: Connection,
    shard: int,
    frontier: Frontier,
    seals: RowSeals | None,
    problems: list[Problem],
) -> None:
    head = conn.execute(sa.select(t.shards).where(t.shards.c.shard == shard)).first()
    if head is None and frontier.size == 0:
        return  # nothing of the shard is left: checkpoints that listed it say so
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
    elif seals is not None and not seals.check(
        head.seal, seals.head(shard, head.size, head.frontier)
    ):
        problems.append(
            Problem(
                "head", shard, size, None, f"shard {shard}: the tree head was altered", exact=False
            )
        )
