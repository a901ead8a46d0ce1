"""The gateway signing keys the log has been signed with, and how each one was handed
over to the next.

A rotation of the gateway signing key leaves a hand-over note (``gateway.signed_notes``:
signed by the old key, countersigned by the new one) that is recorded here with
``record_handover``. Verifiers start from the public key(s) they hold and follow the
recorded hand-overs (``key_ring``): forward from an old key to the key it handed over to,
and backward from a new key to the key whose hand-over it countersigned. Checkpoints,
prunes and log checkpoints signed by any key of that ring verify, so old checkpoints stay
verifiable after a rotation and new ones verify for someone who holds only the old key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway.crypto import VerifyKey
from gateway.errors import LedgerError, SignatureError
from gateway.ledger import schema as t
from gateway.signed_notes import Handover, chain_keys, parse_handover

if TYPE_CHECKING:
    from gateway.ledger.store import LedgerStore


@dataclass(frozen=True)
class StoredHandover:
    """A hand-over row: the checked note, or why its note does not check."""

    id: int
    old_key_id: str
    new_key_id: str
    handover: Handover | None
    error: str | None = None


@dataclass
class KeyRing:
    """Trusted gateway keys by key id, and how each came to be trusted."""

    keys: dict[str, VerifyKey] = field(default_factory=dict)
    via: dict[str, str] = field(default_factory=dict)
    # Recorded hand-overs whose note checks but that no trusted key reaches.
    unreached: list[StoredHandover] = field(default_factory=list)
    # Recorded hand-overs whose note does not check (altered or forged).
    broken: list[StoredHandover] = field(default_factory=list)

    def get(self, key_id: str) -> VerifyKey | None:
        return self.keys.get(key_id)

    def describe(self) -> str:
        return ", ".join(self.keys) or "none"

    def to_list(self) -> list[dict[str, Any]]:
        return [{"key_id": k, "trusted": self.via[k]} for k in self.keys]


def key_ring(anchors: Sequence[VerifyKey], stored: Sequence[StoredHandover]) -> KeyRing:
    """The keys trusted from ``anchors`` through the ``stored`` hand-overs."""
    good = [s.handover for s in stored if s.handover is not None]
    chained = chain_keys(anchors, good)
    ring = KeyRing()
    for kid, (key, via) in chained.items():
        ring.keys[kid] = key
        if via is None:
            ring.via[kid] = "given"
        elif via.new.key_id == kid:
            ring.via[kid] = f"handed over from {via.old.key_id} at {via.time}"
        else:
            ring.via[kid] = f"handed over to {via.new.key_id} at {via.time}"
    for s in stored:
        if s.handover is None:
            ring.broken.append(s)
        elif s.old_key_id not in ring.keys or s.new_key_id not in ring.keys:
            ring.unreached.append(s)
    return ring


def load_handovers(conn: Connection) -> list[StoredHandover]:
    """Every recorded hand-over, oldest first, each note checked on its own."""
    out: list[StoredHandover] = []
    for row in conn.execute(sa.select(t.key_history).order_by(t.key_history.c.id)):
        try:
            h = parse_handover(row.note)
        except SignatureError as exc:
            out.append(StoredHandover(row.id, row.old_key_id, row.new_key_id, None, str(exc)))
            continue
        if (h.old.key_id, h.new.key_id) != (row.old_key_id, row.new_key_id):
            out.append(
                StoredHandover(
                    row.id,
                    row.old_key_id,
                    row.new_key_id,
                    None,
                    "the row names other keys than its note",
                )
            )
            continue
        out.append(StoredHandover(row.id, row.old_key_id, row.new_key_id, h))
    return out


def record_handover(store: LedgerStore, note_text: str) -> Handover:
    """Check a hand-over note (signed by the old key and countersigned by the new one) and
    record it in the log's key history. Recording the same hand-over again is a no-op.

    Raises ``LedgerError`` if the note does not check, or if another hand-over between the
    same two keys is already recorded."""
    try:
        h = parse_handover(note_text)
    except SignatureError as exc:
        raise LedgerError(f"not a valid key hand-over: {exc}") from exc
    kh = t.key_history.c
    with store.write() as conn:
        existing = conn.execute(
            sa.select(t.key_history.c.note).where(
                kh.old_key_id == h.old.key_id, kh.new_key_id == h.new.key_id
            )
        ).scalar()
        if existing is not None:
            if existing != h.to_text():
                raise LedgerError(
                    f"another hand-over from {h.old.key_id} to {h.new.key_id} is already recorded"
                )
            return h
        conn.execute(
            t.key_history.insert().values(
                old_key_id=h.old.key_id,
                new_key_id=h.new.key_id,
                handed_over_at=h.time,
                note=h.to_text(),
                recorded_at=datetime.now(UTC).replace(tzinfo=None),
            )
        )
    store.forget_keys()
    return h


def handovers(store: LedgerStore) -> list[StoredHandover]:
    with store.engine.connect() as conn:
        return load_handovers(conn)


def verify_chain(store: LedgerStore, anchors: Sequence[VerifyKey]) -> KeyRing:
    """The gateway keys a holder of ``anchors`` can trust through this log's recorded
    hand-overs (``ring.broken`` and ``ring.unreached`` list the ones that do not count)."""
    return key_ring(anchors, handovers(store))
