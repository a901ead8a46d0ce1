"""Self-contained inclusion proofs for one record.

A bundle carries everything an outsider needs, with only a gateway public key and no
access to the log: the exact bytes that were hashed (``leaf_input``), the leaf index, the
RFC 9162 audit path, the signed log checkpoint stating the shard's root at that size, and
the signing-key hand-overs that connect the key that signed the checkpoint with the
gateway's other keys. So a proof made after a rotation verifies with the public key an
auditor was given before it. The steps are spelled out in the bundle's ``algorithm`` field
so the check can be redone with any SHA-256 and Ed25519 library.

Bundles of the earlier format (``.../inclusion-proof/v1``, a per-shard checkpoint and no
hand-overs) still verify.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from gateway.crypto import VerifyKey
from gateway.errors import LedgerError, SignatureError, VerificationError
from gateway.ledger.checkpoints import Checkpoint
from gateway.ledger.keyhistory import handovers as stored_handovers
from gateway.ledger.logcheckpoint import LogCheckpoint, note_key_id
from gateway.ledger.merkle import inclusion_proof, leaf_hash, verify_inclusion
from gateway.ledger.store import LedgerStore
from gateway.signed_notes import Handover, chain_keys, parse_handover

BUNDLE_FORMAT: Final = "disclosure-gateway/inclusion-proof/v2"
V1_FORMAT: Final = "disclosure-gateway/inclusion-proof/v1"
ALGORITHM: Final = (
    "leaf = SHA-256(0x00 || UTF-8 bytes of leaf_input); fold inclusion_path as in RFC 9162"
    " section 2.1.3.2 (node = SHA-256(0x01 || left || right)); the result must be the root"
    " that log_checkpoint's line 'shard <shard> <tree_size> <base64 root>' states."
    " log_checkpoint is a C2SP tlog-checkpoint signed note: it must carry a valid Ed25519"
    " signature (key name = its first line, the origin) by a gateway key you trust, or by"
    " one that handovers lead to from it: each hand-over is a C2SP signed note naming an"
    " old and a new key, signed by both; trust passes from a trusted key to the other key"
    " of a hand-over it is part of"
)


@dataclass(frozen=True)
class ProofResult:
    record_id: str
    shard: int
    leaf_index: int
    tree_size: int
    timestamp: str
    key_id: str
    # How the signing key came to be trusted: "given", or the hand-over that led to it.
    trusted: str = "given"


def build_proof(store: LedgerStore, record_id: str) -> dict[str, Any]:
    """The inclusion-proof bundle of ``record_id``, against the latest log checkpoint
    (signed first if none states the record's shard yet and the store holds the signing
    key)."""
    stored = store.get(record_id)
    if stored is None:
        raise LedgerError(
            f"no record {record_id} in the ledger; check the id with `gateway log list`"
        )
    if stored.body is None:
        raise LedgerError(
            f"record {record_id} was pruned by retention: only its hash is"
            " left, so there is no content to prove"
        )
    cp = store.latest_log_checkpoint()
    head = None if cp is None else cp.shard(stored.shard)
    if (head is None or head.size <= stored.seq) and store.signer is not None:
        store.log_checkpoint()
        cp = store.latest_log_checkpoint()
        head = None if cp is None else cp.shard(stored.shard)
    if cp is None or head is None or head.size <= stored.seq:
        raise LedgerError(
            f"record {record_id} is not covered by a signed log checkpoint yet:"
            " run `gateway log checkpoint` (needs the signing key)"
        )
    leaves = store.leaf_hashes(stored.shard, head.size)
    path = inclusion_proof(leaves, stored.seq)
    leaf = leaf_hash(stored.body.encode("utf-8"))
    if not verify_inclusion(leaf, stored.seq, head.size, path, head.root):
        raise VerificationError(
            f"the stored log no longer matches the log checkpoint covering record {record_id};"
            " run `gateway log verify`",
            record_id=record_id,
            index=stored.seq,
        )
    return {
        "format": BUNDLE_FORMAT,
        "algorithm": ALGORITHM,
        "record_id": record_id,
        "record": orjson.loads(stored.body),
        "leaf_input": stored.body,
        "shard": stored.shard,
        "leaf_index": stored.seq,
        "tree_size": head.size,
        "inclusion_path": [h.hex() for h in path],
        "log_checkpoint": cp.to_text(),
        "handovers": [h.to_text() for h in _handovers_of(store, cp)],
    }


def _handovers_of(store: LedgerStore, cp: LogCheckpoint) -> list[Handover]:
    """The recorded hand-overs that connect the key that signed ``cp`` with the others, in
    the order they were recorded (none when the log never rotated its key)."""
    recorded = [s.handover for s in stored_handovers(store) if s.handover is not None]
    signers = cp.signer_ids()
    keys = {k.key_id: k for h in recorded for k in (h.old, h.new)}
    anchors = [k for k in keys.values() if note_key_id(cp.origin, k) in signers]
    used = {id(via) for _, via in chain_keys(anchors, recorded).values() if via is not None}
    return [h for h in recorded if id(h) in used]


def _trusted_via(key: VerifyKey, via: Handover | None) -> str:
    if via is None:
        return "given"
    if via.new == key:
        return f"handed over from {via.old.key_id} at {via.time}"
    return f"handed over to {via.new.key_id} at {via.time}"


def verify_bundle(bundle: dict[str, Any], key: VerifyKey | Iterable[VerifyKey]) -> ProofResult:
    """Check a bundle offline with the gateway public key(s) ``key`` (and the hand-overs it
    carries); raises VerificationError saying what does not hold."""
    anchors = [key] if isinstance(key, VerifyKey) else list(key)
    rid = bundle.get("record_id") if isinstance(bundle, dict) else None
    rid = rid if isinstance(rid, str) else None

    def fail(why: str) -> VerificationError:
        return VerificationError(
            f"proof for record {rid or '?'} does not verify: {why}", record_id=rid
        )

    fmt = bundle.get("format") if isinstance(bundle, dict) else None
    if fmt not in (BUNDLE_FORMAT, V1_FORMAT):
        raise fail(f"not a {BUNDLE_FORMAT} bundle")
    try:
        leaf_input = str(bundle["leaf_input"])
        index = int(bundle["leaf_index"])
        shard = int(bundle["shard"])
        size = int(bundle["tree_size"])
        path = [bytes.fromhex(h) for h in bundle["inclusion_path"]]
        record = bundle["record"]
    except (KeyError, TypeError, ValueError) as exc:
        raise fail(f"malformed bundle ({exc})") from exc
    try:
        content = orjson.loads(leaf_input)
    except orjson.JSONDecodeError as exc:
        raise fail("leaf_input is not JSON") from exc
    if content != record or content.get("record_id") != rid:
        raise fail("the record shown is not the record that was hashed (leaf_input)")
    try:
        if fmt == V1_FORMAT:
            root, time, signer, trusted = _v1_checkpoint(bundle, anchors, shard, size)
        else:
            root, time, signer, trusted = _log_checkpoint(bundle, anchors, shard, size)
    except VerificationError as exc:
        raise fail(str(exc)) from exc
    if not verify_inclusion(leaf_hash(leaf_input.encode("utf-8")), index, size, path, root):
        raise fail(f"the record is not entry {index} of the tree signed at size {size}")
    return ProofResult(rid or "", shard, index, size, time, signer.key_id, trusted)


def _log_checkpoint(
    bundle: dict[str, Any], anchors: Sequence[VerifyKey], shard: int, size: int
) -> tuple[bytes, str, VerifyKey, str]:
    """The shard root the bundle's log checkpoint states, its time, the key that signed
    it and how that key is trusted."""
    notes = bundle.get("handovers", [])
    text = bundle.get("log_checkpoint")
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise VerificationError("handovers is not a list of hand-over notes")
    if not isinstance(text, str):
        raise VerificationError("log_checkpoint is not a signed note")
    try:
        ring = chain_keys(anchors, [parse_handover(n) for n in notes])
    except SignatureError as exc:
        raise VerificationError(f"a hand-over in the bundle does not check: {exc}") from exc
    cp = LogCheckpoint.parse(text)
    signer = cp.verify({kid: k for kid, (k, _) in ring.items()})
    head = cp.shard(shard)
    if head is None or head.size != size:
        raise VerificationError(
            "the proof is for a different shard or tree size than its log checkpoint states"
        )
    return head.root, cp.time, signer, _trusted_via(signer, ring[signer.key_id][1])


def _v1_checkpoint(
    bundle: dict[str, Any], anchors: Sequence[VerifyKey], shard: int, size: int
) -> tuple[bytes, str, VerifyKey, str]:
    cp = Checkpoint.from_dict(bundle.get("checkpoint") or {})
    signer = next((k for k in anchors if k.key_id == cp.key_id), None)
    if signer is None:
        raise VerificationError(
            f"the checkpoint is not signed by a trusted gateway key (it names {cp.key_id})"
        )
    cp.verify(signer)
    if cp.shard != shard or cp.tree_size != size:
        raise VerificationError(
            "the proof is for a different shard or tree size than its checkpoint"
        )
    return cp.root_hash, cp.timestamp, signer, "given"
