"""Self-contained inclusion proofs for one record.

A bundle carries everything an outsider needs, with only the gateway's public key and no
access to the log: the exact bytes that were hashed (``leaf_input``), the leaf index, the
RFC 9162 audit path and a signed checkpoint. The steps are spelled out in the bundle's
``algorithm`` field so the check can be redone with any SHA-256 and Ed25519 library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

from gateway.crypto import VerifyKey
from gateway.errors import LedgerError, VerificationError
from gateway.ledger.checkpoints import Checkpoint
from gateway.ledger.merkle import inclusion_proof, leaf_hash, verify_inclusion
from gateway.ledger.store import LedgerStore

BUNDLE_FORMAT: Final = "disclosure-gateway/inclusion-proof/v1"
ALGORITHM: Final = (
    "leaf = SHA-256(0x00 || UTF-8 bytes of leaf_input); fold inclusion_path as in RFC 9162"
    " section 2.1.3.2 (node = SHA-256(0x01 || left || right)) to the checkpoint's"
    " root_hash; the checkpoint's signed_note, rebuilt from its fields, must carry a valid"
    " Ed25519 signature by the gateway key"
)


@dataclass(frozen=True)
class ProofResult:
    record_id: str
    shard: int
    leaf_index: int
    tree_size: int
    timestamp: str
    key_id: str


def build_proof(store: LedgerStore, record_id: str) -> dict[str, Any]:
    """The inclusion-proof bundle of ``record_id``; signs a checkpoint first if none
    covers the record yet and the store holds the signing key."""
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
    cp = store.covering_checkpoint(stored.shard, stored.seq)
    if cp is None and store.signer is not None:
        store.checkpoint(stored.shard)
        cp = store.covering_checkpoint(stored.shard, stored.seq)
    if cp is None:
        raise LedgerError(
            f"record {record_id} is not covered by a signed checkpoint yet:"
            " run `gateway log checkpoint` (needs the signing key)"
        )
    leaves = store.leaf_hashes(stored.shard, cp.tree_size)
    path = inclusion_proof(leaves, stored.seq)
    leaf = leaf_hash(stored.body.encode("utf-8"))
    if not verify_inclusion(leaf, stored.seq, cp.tree_size, path, cp.root_hash):
        raise VerificationError(
            f"the stored log no longer matches the checkpoint covering record {record_id};"
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
        "tree_size": cp.tree_size,
        "inclusion_path": [h.hex() for h in path],
        "checkpoint": cp.to_dict(),
    }


def verify_bundle(bundle: dict[str, Any], key: VerifyKey) -> ProofResult:
    """Check a bundle offline; raises VerificationError saying what does not hold."""
    rid = bundle.get("record_id") if isinstance(bundle, dict) else None
    rid = rid if isinstance(rid, str) else None

    def fail(why: str) -> VerificationError:
        return VerificationError(
            f"proof for record {rid or '?'} does not verify: {why}", record_id=rid
        )

    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise fail(f"not a {BUNDLE_FORMAT} bundle")
    try:
        leaf_input = str(bundle["leaf_input"])
        index = int(bundle["leaf_index"])
        shard = int(bundle["shard"])
        size = int(bundle["tree_size"])
        path = [bytes.fromhex(h) for h in bundle["inclusion_path"]]
        record = bundle["record"]
        cp_data = bundle["checkpoint"]
    except (KeyError, TypeError, ValueError) as exc:
        raise fail(f"malformed bundle ({exc})") from exc
    try:
        content = orjson.loads(leaf_input)
    except orjson.JSONDecodeError as exc:
        raise fail("leaf_input is not JSON") from exc
    if content != record or content.get("record_id") != rid:
        raise fail("the record shown is not the record that was hashed (leaf_input)")
    try:
        cp = Checkpoint.from_dict(cp_data)
        cp.verify(key)
    except VerificationError as exc:
        raise fail(str(exc)) from exc
    if cp.shard != shard or cp.tree_size != size:
        raise fail("the proof is for a different shard or tree size than its checkpoint")
    if not verify_inclusion(leaf_hash(leaf_input.encode("utf-8")), index, size, path, cp.root_hash):
        raise fail(f"the record is not entry {index} of the tree signed at size {size}")
    return ProofResult(rid or "", shard, index, size, cp.timestamp, cp.key_id)
