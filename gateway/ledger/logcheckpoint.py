"""Log checkpoints: one signed statement about every shard of the log at once.

Each shard keeps its own RFC 9162 Merkle tree. A log checkpoint is a C2SP tlog-checkpoint
signed note over all of them::

    disclosure-gateway.local/log                      origin (GATEWAY_LOG_ORIGIN)
    1500                                              total records (sum of shard sizes)
    3q2+7w...=                                        log root, base64
    shard 0 1000 P2x...=                              one line per shard, ascending id:
    shard 1 500 kQ9...=                               id, size, base64 shard root
    time 2025-01-31T12:00:00.000000Z                  when it was signed (RFC 3339 UTC)

    — disclosure-gateway.local/log <base64(key ID || Ed25519 signature)>

The log root is the RFC 6962 Merkle tree hash over one leaf per shard, in shard order,
each leaf's data being ``b"shard" || id (8 bytes, big-endian, signed) || size (8 bytes,
big-endian) || shard root (32 bytes)``; the empty log has size 0 and the empty-tree root.
The signature is a signed-note Ed25519 signature (type 0x01) under the key name equal to
the origin. Because the root commits to every shard's size and root, deleting a shard,
emptying the log or trimming any shard contradicts every checkpoint signed before.

Consistency between two log checkpoints is per shard: every shard of the older one is in
the newer one, at least as large, with an RFC 9162 consistency proof between the two
shard roots (``gateway.ledger.consistency``). A standard C2SP witness cannot check that
(its proofs are over one tree of ``size`` leaves), so this log's witnesses run
``gateway log witness``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.crypto import SigningKey, VerifyKey
from gateway.errors import SignatureError, VerificationError
from gateway.ledger.merkle import HASH_SIZE, leaf_hash, root_hash
from gateway.signed_notes import (
    Ed25519NoteKey,
    Note,
    b64decode_strict,
    check_key_name,
    sign_ed25519,
    utc_time,
    verify_note,
)

DEFAULT_ORIGIN: Final = "disclosure-gateway.local/log"
# Fixed first lines of the gateway's other signed texts start with this; an origin that
# did too could make a checkpoint read as one of them.
_RESERVED_PREFIX: Final = "disclosure-gateway/"


def check_origin(origin: str) -> str:
    """A valid log origin, or a ``ValueError`` saying what a valid one looks like."""
    try:
        check_key_name(origin)
    except SignatureError as exc:
        raise ValueError(
            f"log origin {origin!r} is invalid: use a schema-less URL without spaces or '+',"
            f" e.g. {DEFAULT_ORIGIN}"
        ) from exc
    if origin.startswith(_RESERVED_PREFIX):
        raise ValueError(f"log origin {origin!r} is invalid: {_RESERVED_PREFIX}... is reserved")
    return origin


@dataclass(frozen=True)
class ShardHead:
    """One shard's tree as a log checkpoint states it."""

    shard: int
    size: int
    root: bytes

    def leaf(self) -> bytes:
        """The shard's leaf hash in the log tree."""
        return leaf_hash(
            b"shard"
            + self.shard.to_bytes(8, "big", signed=True)
            + self.size.to_bytes(8, "big")
            + self.root
        )


def log_root(shards: Sequence[ShardHead]) -> bytes:
    """The log root over ``shards`` (in ascending shard order)."""
    return root_hash([s.leaf() for s in shards])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def checkpoint_text(origin: str, shards: Sequence[ShardHead], time: str) -> str:
    """The note text of a log checkpoint (before signing)."""
    ordered = sorted(shards, key=lambda s: s.shard)
    lines = [
        origin,
        str(sum(s.size for s in ordered)),
        _b64(log_root(ordered)),
        *(f"shard {s.shard} {s.size} {_b64(s.root)}" for s in ordered),
        f"time {time}",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class LogCheckpoint:
    """A parsed log checkpoint. ``parse`` checks its form and that the size and root
    agree with the shard lines; ``verify`` checks who signed it."""

    origin: str
    size: int
    root: bytes
    shards: tuple[ShardHead, ...]
    time: str
    note: Note

    @property
    def text(self) -> str:
        """The signed note text (what signatures and cosignatures cover)."""
        return self.note.text

    def to_text(self) -> str:
        """The whole signed note, as exported and saved."""
        return self.note.to_text()

    def shard(self, shard: int) -> ShardHead | None:
        for s in self.shards:
            if s.shard == shard:
                return s
        return None

    def sizes(self) -> dict[int, int]:
        return {s.shard: s.size for s in self.shards}

    def same_tree(self, other: LogCheckpoint) -> bool:
        """Same origin, and the same shards at the same sizes and roots."""
        return self.origin == other.origin and self.shards == other.shards

    def describe(self) -> str:
        return f"the log checkpoint of size {self.size} signed {self.time}"

    @classmethod
    def sign(
        cls,
        key: SigningKey,
        origin: str,
        shards: Iterable[ShardHead],
        time: str | None = None,
    ) -> LogCheckpoint:
        ordered = tuple(sorted(shards, key=lambda s: s.shard))
        stamp = time or utc_time()
        text = checkpoint_text(check_origin(origin), ordered, stamp)
        note = Note(text, (sign_ed25519(text, origin, key),))
        return cls(origin, sum(s.size for s in ordered), log_root(ordered), ordered, stamp, note)

    @classmethod
    def parse(cls, data: str | bytes) -> LogCheckpoint:
        """A signed log checkpoint note; raises ``VerificationError`` saying what is wrong."""
        try:
            note = Note.parse(data)
            return cls._from_note(note)
        except SignatureError as exc:
            raise VerificationError(f"not a valid log checkpoint: {exc}") from exc

    @classmethod
    def _from_note(cls, note: Note) -> LogCheckpoint:
        lines = note.text.removesuffix("\n").split("\n")
        if len(lines) < 4:
            raise SignatureError("a log checkpoint has an origin, size, root and time line")
        origin, size_text, root_text, *ext = lines
        try:
            check_origin(origin)
        except ValueError as exc:
            raise SignatureError(str(exc)) from exc
        size = _decimal(size_text, "the tree size")
        root = b64decode_strict(root_text, "the root hash")
        if len(root) != HASH_SIZE:
            raise SignatureError("the root hash is not 32 bytes")
        if not ext[-1].startswith("time "):
            raise SignatureError("the last line of a log checkpoint is 'time <RFC 3339 UTC>'")
        time = ext[-1][5:]
        shards: list[ShardHead] = []
        for line in ext[:-1]:
            parts = line.split(" ")
            if len(parts) != 4 or parts[0] != "shard":
                raise SignatureError(f"unexpected checkpoint line {line[:40]!r}")
            head = ShardHead(
                _decimal(parts[1], "a shard id", signed=True),
                _decimal(parts[2], "a shard size"),
                b64decode_strict(parts[3], "a shard root"),
            )
            if len(head.root) != HASH_SIZE:
                raise SignatureError(f"the root of shard {head.shard} is not 32 bytes")
            if shards and head.shard <= shards[-1].shard:
                raise SignatureError("shard lines must be in ascending shard order, once each")
            shards.append(head)
        if sum(s.size for s in shards) != size:
            raise SignatureError("the tree size is not the sum of the shard sizes")
        if log_root(shards) != root:
            raise SignatureError("the root hash does not match the shard lines")
        if note.text != checkpoint_text(origin, shards, time):
            raise SignatureError("the checkpoint text is not in its canonical form")
        return cls(origin, size, root, tuple(shards), time, note)

    def verify(self, keys: Mapping[str, VerifyKey] | Iterable[VerifyKey]) -> VerifyKey:
        """The gateway key (of ``keys``) that signed this checkpoint; raises
        ``VerificationError`` if none of them did, or a signature of one is bad."""
        pool = list(keys.values()) if isinstance(keys, Mapping) else list(keys)
        try:
            signed = verify_note(self.note, [Ed25519NoteKey(self.origin, k) for k in pool])
        except SignatureError as exc:
            raise VerificationError(
                f"{self.describe()} is not signed by a trusted gateway key: {exc}"
            ) from exc
        return signed[0].key

    def signer_ids(self) -> list[bytes]:
        """The note key IDs of this checkpoint's signature lines under its origin."""
        return [s.key_id for s in self.note.signatures if s.name == self.origin]


def note_key_id(origin: str, key: VerifyKey) -> bytes:
    """The note key ID ``key`` signs log checkpoints of ``origin`` under."""
    return Ed25519NoteKey(origin, key).key_id


def _decimal(text: str, what: str, *, signed: bool = False) -> int:
    digits = text[1:] if signed and text.startswith("-") else text
    if not digits.isascii() or not digits.isdigit() or (len(digits) > 1 and digits[0] == "0"):
        raise SignatureError(f"{what} is not a decimal number without leading zeros")
    value = int(text)
    if not -(2**63) <= value < 2**63:
        raise SignatureError(f"{what} is out of range")
    return value
