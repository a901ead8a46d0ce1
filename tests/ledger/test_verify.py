"""Tamper evidence: the log is changed behind the gateway's back with plain SQL, and
``verify`` must fail naming the first bad record; proofs must verify offline."""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from gateway.crypto import SigningKey
from gateway.errors import LedgerError, VerificationError
from gateway.ledger import schema as t
from gateway.ledger.checkpoints import Checkpoint
from gateway.ledger.logcheckpoint import LogCheckpoint
from gateway.ledger.merkle import inclusion_proof, leaf_hash
from gateway.ledger.proofs import build_proof, verify_bundle
from gateway.ledger.query import RecordFilter, list_records
from gateway.ledger.retention import prune
from gateway.ledger.store import LedgerStore, open_store
from gateway.ledger.verify import verify_log
from gateway.records import DecisionRecord
from gateway.signed_notes import Note, NoteSignature
from tests.ledger.data import make_record, make_records

N = 100  # records per shard; checkpoints at 25, 50, 75, 100


@pytest.fixture
def records() -> list[DecisionRecord]:
    return make_records(2 * N)[: 2 * N]


@pytest.fixture
def store(url: str, key: SigningKey, records: list[DecisionRecord]) -> Iterator[LedgerStore]:
    with open_store(url, signer=key, checkpoint_every=25) as s:
        for i in range(0, N, 25):
            s.append(records[i : i + 25], shard=0)
            s.append(records[N + i : N + i + 25], shard=1)
        yield s


@pytest.fixture
def public(url: str, store: LedgerStore) -> Iterator[LedgerStore]:
    """The same ledger opened by an auditor holding only the public key."""
    with open_store(url, create=False) as s:
        yield s


def sql(store: LedgerStore, statement: str, **params: Any) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def row(store: LedgerStore, shard: int, seq: int) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(t.records).where(t.records.c.shard == shard, t.records.c.seq == seq)
        ).one()


def first(
    store: LedgerStore, key: SigningKey | None = None
) -> tuple[str, int | None, str | None, bool]:
    rep = verify_log(store, key.public_key() if key else None)
    assert not rep.ok
    p = rep.first
    assert p is not None
    with pytest.raises(VerificationError) as exc:
        rep.raise_if_bad()
    assert exc.value.record_id == p.record_id and exc.value.index == p.index
    return p.kind, p.index, p.record_id, p.exact


def test_intact_log_verifies(store: LedgerStore, public: LedgerStore, key: SigningKey) -> None:
    rep = verify_log(store)
    assert rep.ok and rep.sealed
    assert [(s.shard, s.size, s.checkpoints, s.covered) for s in rep.shards] == [
        (0, N, 4, N),
        (1, N, 4, N),
    ]
    rep = verify_log(public, key.public_key())
    assert rep.ok and not rep.sealed


def test_edited_body_names_the_record(
    store: LedgerStore, public: LedgerStore, records: list[DecisionRecord], key: SigningKey
) -> None:
    target = records[37]
    body = row(store, 0, 37).body.replace('"outcome":"', '"outcome":"x', 1)
    sql(
        store,
        "UPDATE ledger_records SET body = :b WHERE record_id = :r",
        b=body,
        r=target.record_id,
    )
    assert first(store) == ("edited", 37, target.record_id, True)
    # The auditor without the signing key finds it just as exactly.
    assert first(public, key) == ("edited", 37, target.record_id, True)


def test_edit_with_recomputed_hash(
    store: LedgerStore, public: LedgerStore, records: list[DecisionRecord], key: SigningKey
) -> None:
    target = records[60]
    forged = target.model_copy(update={"key_id": "attacker-key"}).to_json()
    sql(
        store,
        "UPDATE ledger_records SET body = :b, leaf_hash = :h WHERE record_id = :r",
        b=forged.decode(),
        h=leaf_hash(forged),
        r=target.record_id,
    )
    assert first(store) == ("moved", 60, target.record_id, True)
    # Without the seal key the signed roots still catch it, bounded by checkpoints 50..74.
    assert first(public, key) == ("root_mismatch", 50, None, False)


def test_deleted_record_is_named_by_index(
    store: LedgerStore, public: LedgerStore, records: list[DecisionRecord], key: SigningKey
) -> None:
    sql(store, "DELETE FROM ledger_terms WHERE record_id = :r", r=records[N + 12].record_id)
    sql(store, "DELETE FROM ledger_records WHERE shard = 1 AND seq = 12")
    kind, index, _, exact = first(store)
    assert (kind, index, exact) == ("missing", 12, True)
    rep = verify_log(store)
    assert rep.first is not None
    assert records[N + 13].record_id in rep.first.message
    assert first(public, key)[:2] == ("missing", 12)


def test_deleted_and_renumbered(store: LedgerStore, records: list[DecisionRecord]) -> None:
    # A careful attacker closes the gap: every later record moves down one place.
    sql(store, "DELETE FROM ledger_records WHERE shard = 0 AND seq = 20")
    sql(store, "UPDATE ledger_records SET seq = seq + 100000 WHERE shard = 0 AND seq > 20")
    sql(store, "UPDATE ledger_records SET seq = seq - 100001 WHERE shard = 0 AND seq > 100000")
    assert first(store) == ("moved", 20, records[21].record_id, True)


def test_deleted_tail_is_detected(store: LedgerStore, public: LedgerStore, key: SigningKey) -> None:
    sql(store, "DELETE FROM ledger_records WHERE shard = 0 AND seq >= 90")
    for s in (store, public):
        kind, index, _, _ = first(s, key)
        assert (kind, index) == ("missing", 90)


def test_reordered_records(
    store: LedgerStore, public: LedgerStore, records: list[DecisionRecord], key: SigningKey
) -> None:
    sql(store, "UPDATE ledger_records SET seq = -1 WHERE shard = 0 AND seq = 41")
    sql(store, "UPDATE ledger_records SET seq = 41 WHERE shard = 0 AND seq = 44")
    sql(store, "UPDATE ledger_records SET seq = 44 WHERE shard = 0 AND seq = -1")
    assert first(store) == ("moved", 41, records[44].record_id, True)
    assert first(public, key) == ("root_mismatch", 25, None, False)


def test_inserted_record(store: LedgerStore, public: LedgerStore, key: SigningKey) -> None:
    fake = make_record("reseller", "C-1001", datetime(2024, 2, 2, tzinfo=UTC), seq=9999)
    body = fake.to_json()
    sql(store, "UPDATE ledger_records SET seq = seq + 100000 WHERE shard = 1 AND seq >= 30")
    sql(store, "UPDATE ledger_records SET seq = seq - 99999 WHERE shard = 1 AND seq >= 100000")
    with store.engine.begin() as conn:
        conn.execute(
            t.records.insert().values(
                shard=1,
                seq=30,
                record_id=fake.record_id,
                leaf_hash=leaf_hash(body),
                seal=b"\x00" * 32,
                body=body.decode(),
                event_id=fake.event_id,
                event_type=fake.event_type,
                agent=fake.agent,
                recipient_role="third_party",
                outcome=fake.outcome,
                subject_ref=fake.subject_ref,
                subject_type="consumer",
                occurred_at=fake.occurred_at.replace(tzinfo=None),
                recorded_at=fake.recorded_at.replace(tzinfo=None),
            )
        )
        conn.execute(
            t.terms.insert(),
            [
                {"record_id": fake.record_id, "kind": k, "term": v}
                for k, v in [
                    ("category", c) for c in {*fake.categories_sent, *fake.categories_transformed}
                ]
                + [("purpose", p) for p in fake.purposes]
            ],
        )
    assert first(store) == ("moved", 30, fake.record_id, True)
    assert first(public, key) == ("root_mismatch", 25, None, False)


def test_appended_record_without_seal(store: LedgerStore) -> None:
    sql(store, "UPDATE ledger_records SET seq = 100 WHERE shard = 1 AND seq = 99")
    kind, index, _, _ = first(store)
    assert (kind, index) == ("missing", 99)


def test_filter_columns_cannot_hide_a_record(
    store: LedgerStore, records: list[DecisionRecord]
) -> None:
    target = next(r for r in records[:N] if r.agent == "reseller" and r.outcome == "disclosed")
    sql(
        store,
        "UPDATE ledger_records SET agent = 'shipping' WHERE record_id = :r",
        r=target.record_id,
    )
    kind, index, rid, _ = first(store)
    assert (kind, rid) == ("columns", target.record_id) and index == records.index(target)
    sql(
        store,
        "UPDATE ledger_records SET agent = 'reseller' WHERE record_id = :r",
        r=target.record_id,
    )
    sql(
        store,
        "DELETE FROM ledger_terms WHERE record_id = :r AND kind = 'purpose'",
        r=target.record_id,
    )
    assert first(store)[0] == "columns"


def test_forged_checkpoint(store: LedgerStore, public: LedgerStore, key: SigningKey) -> None:
    sql(
        store,
        "UPDATE ledger_checkpoints SET root_hash = :h WHERE shard = 0 AND tree_size = 50",
        h=b"\x11" * 32,
    )
    rep = verify_log(public, key.public_key())
    assert not rep.ok and rep.first is not None and rep.first.kind == "forged_checkpoint"
    assert "size 50" in rep.first.message


def test_checkpoint_signed_by_another_key(store: LedgerStore, key: SigningKey) -> None:
    other = SigningKey.generate()
    cp = Checkpoint.sign(other, 0, 10, b"\x22" * 32)
    with store.engine.begin() as conn:
        conn.execute(
            t.checkpoints.insert().values(
                shard=0,
                tree_size=10,
                root_hash=cp.root_hash,
                timestamp=cp.timestamp,
                key_id=key.key_id,
                signature=cp.signature,
            )
        )
    rep = verify_log(store)
    assert [p.kind for p in rep.problems] == ["forged_checkpoint"]


def test_tampered_shard_head_stops_appends(
    store: LedgerStore, records: list[DecisionRecord]
) -> None:
    sql(
        store,
        "UPDATE ledger_shards SET size = 96, frontier = :f WHERE shard = 0",
        f=b"\x00" * 32 * 2,
    )  # 96 = 64 + 32: two perfect subtrees
    with pytest.raises(VerificationError, match="altered outside the gateway"):
        store.append([make_record("email", "C-1001", datetime(2026, 1, 1, tzinfo=UTC))])
    assert first(store)[0] == "head"


# -- inclusion proofs ---------------------------------------------------------------------


def test_inclusion_proof_verifies_offline(
    store: LedgerStore, records: list[DecisionRecord], key: SigningKey
) -> None:
    for rec in (records[0], records[63], records[N + 99]):
        bundle = orjson.loads(orjson.dumps(build_proof(store, rec.record_id)))
        res = verify_bundle(bundle, key.public_key())
        assert (res.record_id, res.tree_size) == (rec.record_id, N)
        assert DecisionRecord.model_validate(bundle["record"]) == rec


def test_proof_for_uncheckpointed_record_signs_a_checkpoint(
    store: LedgerStore, key: SigningKey
) -> None:
    late = make_record("payments", "B-2003", datetime(2026, 1, 1, tzinfo=UTC), seq=5000)
    assert store.append([late]).checkpoint is None
    bundle = build_proof(store, late.record_id)
    assert bundle["tree_size"] == N + 1 and bundle["leaf_index"] == N
    verify_bundle(bundle, key.public_key())


@pytest.mark.parametrize(
    "tamper", ["record", "leaf_input", "index", "path", "root", "size", "signature", "format"]
)
def test_wrong_proofs_do_not_verify(
    store: LedgerStore, records: list[DecisionRecord], key: SigningKey, tamper: str
) -> None:
    good = build_proof(store, records[42].record_id)
    b = copy.deepcopy(good)
    if tamper == "record":
        b["record"]["agent"] = "reseller"
    elif tamper == "leaf_input":
        b["leaf_input"] = b["leaf_input"].replace("disclosed", "withheld")
        b["record"] = orjson.loads(b["leaf_input"])
    elif tamper == "index":
        b["leaf_index"] = 43
    elif tamper == "path":
        b["inclusion_path"][1] = "00" * 32
    elif tamper == "root":
        head = LogCheckpoint.parse(b["log_checkpoint"]).shard(0)
        assert head is not None
        b["log_checkpoint"] = b["log_checkpoint"].replace(
            base64.b64encode(head.root).decode(), "ESIzRFVmd4iZqrvM3e7/ABEiM0RVZneImaq7zN3u/wA="
        )
    elif tamper == "size":
        b["tree_size"] = 99
    elif tamper == "signature":
        note = Note.parse(b["log_checkpoint"])
        (sig,) = note.signatures
        flipped = bytes([sig.signature[0] ^ 1]) + sig.signature[1:]
        forged = Note(note.text, (NoteSignature(sig.name, sig.key_id, flipped),))
        b["log_checkpoint"] = forged.to_text()
    else:
        b["format"] = "something/else"
    with pytest.raises(VerificationError) as exc:
        verify_bundle(b, key.public_key())
    assert exc.value.record_id in (records[42].record_id, None)
    verify_bundle(good, key.public_key())


def test_bundles_of_the_first_format_still_verify(
    store: LedgerStore, records: list[DecisionRecord], key: SigningKey
) -> None:
    """A v1 bundle (a per-shard checkpoint, as `gateway log prove` wrote before log
    checkpoints) saved by an auditor keeps verifying."""
    rec = records[N + 42]
    stored = store.get(rec.record_id)
    assert stored is not None and stored.body is not None
    cp = store.covering_checkpoint(stored.shard, stored.seq)
    assert cp is not None
    path = inclusion_proof(store.leaf_hashes(stored.shard, cp.tree_size), stored.seq)
    v1 = {
        "format": "disclosure-gateway/inclusion-proof/v1",
        "record_id": rec.record_id,
        "record": orjson.loads(stored.body),
        "leaf_input": stored.body,
        "shard": stored.shard,
        "leaf_index": stored.seq,
        "tree_size": cp.tree_size,
        "inclusion_path": [h.hex() for h in path],
        "checkpoint": cp.to_dict(),
    }
    res = verify_bundle(v1, key.public_key())
    assert (res.record_id, res.tree_size, res.trusted) == (rec.record_id, cp.tree_size, "given")
    bad = copy.deepcopy(v1)
    bad["checkpoint"]["root_hash"] = "ESIzRFVmd4iZqrvM3e7/ABEiM0RVZneImaq7zN3u/wA="
    with pytest.raises(VerificationError, match="not signed"):
        verify_bundle(bad, key.public_key())
    with pytest.raises(VerificationError, match="not signed by a trusted"):
        verify_bundle(v1, SigningKey.generate().public_key())


def test_proof_needs_the_right_key(store: LedgerStore, records: list[DecisionRecord]) -> None:
    bundle = build_proof(store, records[1].record_id)
    with pytest.raises(VerificationError, match="not signed"):
        verify_bundle(bundle, SigningKey.generate().public_key())


def test_no_proof_for_unknown_record(store: LedgerStore) -> None:
    with pytest.raises(LedgerError, match="no record"):
        build_proof(store, "nope")


# -- retention ----------------------------------------------------------------------------


def test_prune_keeps_the_log_verifiable(
    store: LedgerStore, public: LedgerStore, records: list[DecisionRecord], key: SigningKey
) -> None:
    late = make_record("payments", "B-2003", datetime(2026, 1, 1, tzinfo=UTC), seq=5000)
    store.append([late], shard=1)  # not yet checkpointed: prune checkpoints it first
    cutoff = datetime(2024, 1, 15, tzinfo=UTC)
    old = {r.record_id for r in [*records, late] if r.recorded_at < cutoff}
    res = prune(store, cutoff)
    assert res.count == len(old) > 0
    assert verify_log(store).ok
    assert verify_log(public, key.public_key()).ok
    listed = {r.record_id for r in list_records(store, RecordFilter(), limit=None)}
    assert listed == {r.record_id for r in [*records, late]} - old
    gone = sorted(old)[0]
    stored = store.get(gone)
    assert stored is not None and stored.pruned and stored.pruned_by == res.prune_id
    with pytest.raises(LedgerError, match="pruned"):
        build_proof(store, gone)
    # Newer records still prove against the new checkpoint.
    verify_bundle(build_proof(store, late.record_id), key.public_key())
    assert prune(store, cutoff).count == 0
    # A body removed outside a signed prune is caught.
    victim = next(r for r in records[:N] if r.record_id not in old)
    sql(store, "UPDATE ledger_records SET body = NULL WHERE record_id = :r", r=victim.record_id)
    assert first(store)[:3] == ("unrecorded_prune", records.index(victim), victim.record_id)


def test_forged_prune_statement(store: LedgerStore) -> None:
    res = prune(store, datetime(2024, 2, 1, tzinfo=UTC))
    assert res.count > 0 and res.statement is not None
    sql(
        store,
        "UPDATE ledger_prunes SET statement = :s",
        s=res.statement.replace(f"count {res.count}", f"count {res.count + 1}"),
    )
    kinds = {p.kind for p in verify_log(store).problems}
    assert "forged_prune" in kinds and "unrecorded_prune" in kinds


def test_prune_needs_the_signing_key(public: LedgerStore) -> None:
    with pytest.raises(LedgerError, match="signing key"):
        prune(public, datetime(2025, 1, 1, tzinfo=UTC))
