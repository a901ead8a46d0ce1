"""Consistency between two log checkpoints: one RFC 9162 consistency proof per shard.

A newer log checkpoint is consistent with an older one when every shard of the older one
is in the newer one, at least as large, and the newer shard tree is an append-only
extension of the older one (RFC 9162 section 2.1.4). Shards that appear only in the newer
checkpoint need no proof (the empty tree extends to any tree).

The proof bundle ``gateway log prove-consistency`` writes is UTF-8 text, one item a line::

    disclosure-gateway/consistency-proof/v1
    origin disclosure-gateway.local/log
    old 1500 <base64 log root of the older checkpoint>
    new 2300 <base64 log root of the newer checkpoint>
    shard 0 1000 1400
    <base64 proof hash>
    <base64 proof hash>
    shard 1 500 900
    <base64 proof hash>

After the header come the origin, the two checkpoints' total sizes and log roots (so a
bundle cannot be used with other checkpoints), then, for every shard of the older
checkpoint in ascending order, ``shard <id> <old size> <new size>`` followed by that
shard's consistency proof, one base64 SHA-256 hash a line, in RFC 9162 order (none when
the sizes are equal). The shard roots themselves come from the checkpoints, never from the
bundle.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from gateway.errors import LedgerError, SignatureError, VerificationError
from gateway.ledger.logcheckpoint import LogCheckpoint, ShardHead
from gateway.ledger.merkle import HASH_SIZE, consistency_proof, root_hash, verify_consistency
from gateway.signed_notes import b64decode_strict

if TYPE_CHECKING:
    from gateway.ledger.store import LedgerStore

PROOF_HEADER: Final = "disclosure-gateway/consistency-proof/v1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class ShardProof:
    shard: int
    old_size: int
    new_size: int
    hashes: tuple[bytes, ...]


@dataclass(frozen=True)
class ConsistencyProof:
    """Per-shard consistency proofs from one log checkpoint to a newer one."""

    origin: str
    old_size: int
    old_root: bytes
    new_size: int
    new_root: bytes
    shards: tuple[ShardProof, ...]

    def to_text(self) -> str:
        lines = [
            PROOF_HEADER,
            f"origin {self.origin}",
            f"old {self.old_size} {_b64(self.old_root)}",
            f"new {self.new_size} {_b64(self.new_root)}",
        ]
        for p in self.shards:
            lines.append(f"shard {p.shard} {p.old_size} {p.new_size}")
            lines.extend(_b64(h) for h in p.hashes)
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> ConsistencyProof:
        """A proof bundle; raises ``VerificationError`` naming the first bad line."""
        lines = text.removesuffix("\n").split("\n")
        try:
            if len(lines) < 4 or lines[0] != PROOF_HEADER:
                raise ValueError(f"the first line must be {PROOF_HEADER}")
            origin = _field(lines[1], "origin", 1)[0]
            old_size, old_root = _sized_root(_field(lines[2], "old", 2))
            new_size, new_root = _sized_root(_field(lines[3], "new", 2))
            shards: list[ShardProof] = []
            current: list[str] | None = None
            hashes: list[bytes] = []
            for line in [*lines[4:], None]:
                if line is None or line.startswith("shard "):
                    if current is not None:
                        shards.append(
                            ShardProof(
                                _int(current[0]), _int(current[1]), _int(current[2]), tuple(hashes)
                            )
                        )
                    if line is not None:
                        current, hashes = _field(line, "shard", 3), []
                    continue
                if current is None:
                    raise ValueError("a proof hash before any 'shard' line")
                h = b64decode_strict(line, "a proof hash")
                if len(h) != HASH_SIZE:
                    raise ValueError("a proof hash is not 32 bytes")
                hashes.append(h)
        except (ValueError, SignatureError) as exc:
            raise VerificationError(f"not a {PROOF_HEADER} bundle: {exc}") from exc
        return cls(origin, old_size, old_root, new_size, new_root, tuple(shards))

    def check(self, old: LogCheckpoint, new: LogCheckpoint) -> None:
        """Raise ``VerificationError`` unless this bundle proves ``new`` consistent with
        ``old``; the message says which shard fails and how."""
        if (self.origin, self.old_size, self.old_root) != (old.origin, old.size, old.root):
            raise VerificationError(
                f"the proof starts from a checkpoint of size {self.old_size}, not from"
                f" {old.describe()}"
            )
        if (self.origin, self.new_size, self.new_root) != (new.origin, new.size, new.root):
            raise VerificationError(
                f"the proof ends at a checkpoint of size {self.new_size}, not at {new.describe()}"
            )
        proofs = {p.shard: p for p in self.shards}
        for s in old.shards:
            p = proofs.get(s.shard)
            target = new.shard(s.shard)
            if (
                p is not None
                and target is not None
                and (p.old_size, p.new_size)
                != (
                    s.size,
                    target.size,
                )
            ):
                p = None
            problem = shard_problem(s, target, p.hashes if p else None, old.describe())
            if problem is not None:
                raise VerificationError(problem, index=s.size)


def shard_problem(
    old: ShardHead, new: ShardHead | None, proof: Sequence[bytes] | None, label: str
) -> str | None:
    """Why shard ``new`` is not an append-only extension of ``old`` (stated by
    ``label``), or None if ``proof`` shows it is."""
    s = old.shard
    if old.size == 0:
        return None
    if new is None or new.size == 0:
        return (
            f"shard {s} is missing: {label} lists it with {old.size} records (the shard was"
            " deleted, the log emptied or an older copy of the database restored)"
        )
    if new.size < old.size:
        return (
            f"shard {s} has {new.size} records, fewer than the {old.size} of {label}: records"
            f" from index {new.size} on were deleted (or an older copy of the database restored)"
        )
    if proof is None:
        return f"shard {s}: no consistency proof from size {old.size} to {new.size}"
    if verify_consistency(old.size, new.size, old.root, new.root, proof):
        return None
    return (
        f"shard {s} at size {new.size} is not an append-only extension of its {old.size}"
        f" records in {label}: the RFC 9162 consistency proof does not verify, so records"
        f" before index {old.size} were changed, moved, inserted or deleted"
    )


def prove_shard(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """The RFC 9162 proof from the first ``old_size`` of ``leaves`` to all of them."""
    if old_size == 0 or old_size >= len(leaves):
        return []
    return consistency_proof(leaves, old_size)


def build_consistency_proof(
    store: LedgerStore, old: LogCheckpoint, new: LogCheckpoint
) -> ConsistencyProof:
    """The proof bundle from ``old`` to ``new``, from this log's records. Raises
    ``LedgerError`` if the log does not hold both checkpoints' trees (the bundle would
    not verify)."""
    if old.origin != new.origin:
        raise LedgerError(f"the checkpoints are of different logs ({old.origin}, {new.origin})")
    shards: list[ShardProof] = []
    for s in old.shards:
        target = new.shard(s.shard)
        if target is None or target.size < s.size:
            raise LedgerError(
                shard_problem(s, target, None, old.describe())
                or f"shard {s.shard} does not extend {old.describe()}"
            )
        leaves = store.leaf_hashes(s.shard, target.size)
        if len(leaves) < target.size or root_hash(leaves) != target.root:
            raise LedgerError(
                f"this log no longer holds shard {s.shard} as {new.describe()} states it;"
                " run `gateway log verify`"
            )
        if root_hash(leaves[: s.size]) != s.root:
            raise LedgerError(
                f"this log's shard {s.shard} does not extend {old.describe()}: it is not a"
                " checkpoint of this log, or the log was rewritten; run `gateway log verify`"
            )
        shards.append(ShardProof(s.shard, s.size, target.size, tuple(prove_shard(leaves, s.size))))
    return ConsistencyProof(old.origin, old.size, old.root, new.size, new.root, tuple(shards))


def _field(line: str, name: str, count: int) -> list[str]:
    parts = line.split(" ")
    if parts[0] != name or len(parts) != count + 1:
        raise ValueError(f"expected a '{name}' line with {count} value(s), got {line[:40]!r}")
    return parts[1:]


def _int(text: str) -> int:
    body = text.removeprefix("-")
    if not body.isascii() or not body.isdigit():
        raise ValueError(f"{text[:20]!r} is not a number")
    return int(text)


def _sized_root(parts: list[str]) -> tuple[int, bytes]:
    root = b64decode_strict(parts[1], "a root hash")
    if len(root) != HASH_SIZE:
        raise ValueError("a root hash is not 32 bytes")
    return _int(parts[0]), root
