"""Witness cosignatures kept with the log.

A witness answers with cosignature lines for a log checkpoint (``gateway log witness
cosign``). ``add_cosignatures`` stores them beside the checkpoint they cover, after
checking that the checkpoint is this log's (signed by a trusted gateway key) and, for the
witnesses whose keys are given, that each cosignature verifies. ``verify`` later checks
them with the witnesses' public keys and requires the log to extend the largest
checkpoint each witness cosigned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from gateway.crypto import VerifyKey
from gateway.errors import LedgerError, SignatureError, VerificationError
from gateway.ledger import schema as t
from gateway.ledger.keyhistory import verify_chain
from gateway.ledger.logcheckpoint import LogCheckpoint
from gateway.ledger.store import LedgerStore
from gateway.signed_notes import (
    CosignatureKey,
    Note,
    NoteSignature,
    cosignature_time,
    parse_signature_lines,
)


@dataclass(frozen=True)
class StoredCosignature:
    witness: str
    key_id: str  # note key ID, hex
    tree_size: int
    cosigned_at: int  # POSIX time the cosignature states
    verified: bool  # checked with a witness key given when it was added


def _split(text: str, checkpoint: str | None) -> tuple[LogCheckpoint, list[NoteSignature]]:
    try:
        if checkpoint is None:
            cp = LogCheckpoint.parse(text)
            return cp, list(cp.note.signatures)
        cp = LogCheckpoint.parse(checkpoint)
        if text.lstrip().startswith("\u2014"):
            sigs = list(parse_signature_lines(text.lstrip("\n")))
        else:
            sigs = list(Note.parse(text).signatures)
        return cp, sigs
    except (SignatureError, VerificationError) as exc:
        raise LedgerError(
            f"cannot read the cosignatures: {exc}. Give the checkpoint with the witness's"
            " cosignature lines appended, or the lines alone with --checkpoint FILE"
        ) from exc


def add_cosignatures(
    store: LedgerStore,
    text: str,
    *,
    log_keys: Sequence[VerifyKey],
    checkpoint: str | None = None,
    witness_keys: Sequence[CosignatureKey] = (),
) -> list[StoredCosignature]:
    """Store the cosignatures in ``text``: a checkpoint with cosignature lines appended,
    or (with ``checkpoint``) the lines alone. Returns those newly stored.

    The checkpoint must be signed by a key of ``log_keys`` (or one handed over from
    them). A cosignature of a witness in ``witness_keys`` must verify; others are kept
    unverified and ``verify`` shows them as such."""
    cp, sigs = _split(text, checkpoint)
    ring = verify_chain(store, log_keys)
    try:
        cp.verify(ring.keys)
    except VerificationError as exc:
        raise LedgerError(f"not a checkpoint of this log: {exc}") from exc
    log_lines = {s for s in cp.note.signatures if s.name == cp.origin}
    signed = Note(cp.text, tuple(log_lines)).to_text()
    known = {(k.name, k.key_id): k for k in witness_keys}
    body = cp.text.encode("utf-8")
    new: list[StoredCosignature] = []
    c = t.cosignatures.c
    with store.write() as conn:
        for sig in sigs:
            when = cosignature_time(sig)
            if sig.name == cp.origin or when is None:
                continue  # the log's own signature, or not a v1 cosignature
            wk = known.get((sig.name, sig.key_id))
            if wk is not None and wk.timestamp(body, sig.signature) is None:
                raise LedgerError(
                    f"the cosignature of witness {sig.name} does not verify with its key over"
                    f" {cp.describe()}; nothing was stored"
                )
            line = sig.line().removesuffix("\n")
            if conn.execute(sa.select(c.id).where(c.line == line)).first() is not None:
                continue
            conn.execute(
                t.cosignatures.insert().values(
                    witness=sig.name,
                    key_id=sig.key_id.hex(),
                    tree_size=cp.size,
                    cosigned_at=when,
                    checkpoint=signed,
                    line=line,
                    added_at=datetime.now(UTC).replace(tzinfo=None),
                )
            )
            new.append(StoredCosignature(sig.name, sig.key_id.hex(), cp.size, when, wk is not None))
    return new
