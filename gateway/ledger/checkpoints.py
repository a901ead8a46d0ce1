"""Signed checkpoints and keyed seals.

A checkpoint is the gateway's signed statement "shard S of this log had N records with
root R at time T". Its signed bytes are a short text note, so a verifier in any language
can rebuild them from the fields::

    disclosure-gateway/ledger-checkpoint/v1
    shard 3
    size 1000
    root <base64 of the 32-byte root>
    time 2025-01-31T12:00:00.000000Z

The fixed first line also keeps a checkpoint signature from ever being valid for another
message the same key signs (envelopes, prune statements).

Seals are HMAC-SHA256 tags under a key derived from the signing key. They are not for
outsiders (those use checkpoints and the public key); they let the operator's ``verify``
point at the exact record that was changed, moved or inserted, and they cover the records
appended since the last checkpoint.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from gateway.crypto import HmacSha256, SigningKey, VerifyKey, derive_key
from gateway.errors import SignatureError, VerificationError

CHECKPOINT_HEADER: Final = "disclosure-gateway/ledger-checkpoint/v1"
PRUNE_HEADER: Final = "disclosure-gateway/ledger-prune/v1"


def utc_stamp(when: datetime | None = None) -> str:
    when = (when or datetime.now(UTC)).astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Checkpoint:
    shard: int
    tree_size: int
    root_hash: bytes
    timestamp: str
    key_id: str
    signature: bytes

    @staticmethod
    def note(shard: int, tree_size: int, root_hash: bytes, timestamp: str) -> bytes:
        root = base64.b64encode(root_hash).decode("ascii")
        lines = [
            CHECKPOINT_HEADER,
            f"shard {shard}",
            f"size {tree_size}",
            f"root {root}",
            f"time {timestamp}",
        ]
        return ("\n".join(lines) + "\n").encode("ascii")

    def signed_bytes(self) -> bytes:
        return self.note(self.shard, self.tree_size, self.root_hash, self.timestamp)

    @classmethod
    def sign(
        cls,
        key: SigningKey,
        shard: int,
        tree_size: int,
        root_hash: bytes,
        timestamp: str | None = None,
    ) -> Checkpoint:
        stamp = timestamp or utc_stamp()
        sig = key.sign(cls.note(shard, tree_size, root_hash, stamp))
        return cls(shard, tree_size, root_hash, stamp, key.key_id, sig)

    def verify(self, key: VerifyKey) -> None:
        """Raise VerificationError unless ``key`` signed exactly these fields."""
        try:
            key.verify(self.signature, self.signed_bytes())
        except SignatureError as exc:
            raise VerificationError(
                f"checkpoint of shard {self.shard} at size {self.tree_size} is not signed by"
                f" gateway key {key.key_id} (forged or altered)",
                index=self.tree_size,
            ) from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "tree_size": self.tree_size,
            "root_hash": base64.b64encode(self.root_hash).decode("ascii"),
            "timestamp": self.timestamp,
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode("ascii"),
            "signed_note": self.signed_bytes().decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        try:
            return cls(
                shard=int(data["shard"]),
                tree_size=int(data["tree_size"]),
                root_hash=base64.b64decode(data["root_hash"], validate=True),
                timestamp=str(data["timestamp"]),
                key_id=str(data["key_id"]),
                signature=base64.b64decode(data["signature"], validate=True),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise VerificationError(f"malformed checkpoint: {exc}") from exc


class RowSeals:
    """Keyed tags for record rows and shard heads. ``key_id`` names the signing key the
    seal key derives from (None: unknown, every seal is checked against this key)."""

    __slots__ = ("_mac", "key_id")

    def __init__(self, key: bytes, key_id: str | None = None) -> None:
        self._mac = HmacSha256(key)
        self.key_id = key_id

    @classmethod
    def from_signing_key(cls, key: SigningKey) -> RowSeals:
        return cls(derive_key(key.to_pem(), "ledger-seal"), key.key_id)

    # Fixed-width fields make every input unambiguous; the key's padded states are
    # computed once (a seal is computed per appended record).
    def record(self, shard: int, seq: int, leaf: bytes) -> bytes:
        msg = b"record\x00" + shard.to_bytes(8, "big", signed=True) + seq.to_bytes(8, "big")
        return self._mac.digest(msg + leaf)

    def head(self, shard: int, size: int, frontier: bytes) -> bytes:
        msg = b"head\x00" + shard.to_bytes(8, "big", signed=True) + size.to_bytes(8, "big")
        return self._mac.digest(msg + frontier)

    def check(self, tag: bytes, expected: bytes) -> bool:
        return hmac.compare_digest(tag, expected)


def prune_statement(
    before: datetime, created_at: str, count: int, digest: bytes, sizes: dict[int, int]
) -> str:
    """The signed text of a prune: which bodies went, and the checkpoint sizes they were
    covered by when they went."""
    covered = " ".join(f"{s}:{n}" for s, n in sorted(sizes.items()))
    lines = [
        PRUNE_HEADER,
        f"before {utc_stamp(before)}",
        f"time {created_at}",
        f"count {count}",
        f"digest {digest.hex()}",
        f"covered {covered}",
    ]
    return "\n".join(lines) + "\n"


def parse_prune_statement(text: str) -> dict[str, str]:
    lines = text.rstrip("\n").split("\n")
    if not lines or lines[0] != PRUNE_HEADER:
        raise VerificationError("not a prune statement")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(" ")
        fields[name] = value
    return fields


def prune_digest(items: list[tuple[int, int, str, bytes]]) -> bytes:
    """SHA-256 over the sorted (shard, seq, record id, leaf hash) of the pruned rows."""
    h = hashlib.sha256()
    for shard, seq, record_id, leaf in sorted(items):
        h.update(b"%d\x1f%d\x1f%s\x1f%s\n" % (shard, seq, record_id.encode(), leaf.hex().encode()))
    return h.digest()
