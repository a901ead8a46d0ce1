"""Rotating the gateway signing key as the log sees it: a hand-over note (signed by the old
key, countersigned by the new) recorded in the ledger lets a holder of either public key
verify the checkpoints of both, the new key's writer append to shards last written under
the old one, and both writers run side by side during the changeover."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from gateway.crypto import SigningKey
from gateway.errors import LedgerError, VerificationError
from gateway.ledger.keyhistory import handovers, record_handover, verify_chain
from gateway.ledger.logcheckpoint import LogCheckpoint
from gateway.ledger.proofs import build_proof, verify_bundle
from gateway.ledger.store import open_store
from gateway.ledger.verify import VerifyReport, verify_log
from gateway.ledger.witness import Witness
from gateway.records import DecisionRecord
from gateway.signed_notes import make_handover
from tests.ledger.data import make_records


@pytest.fixture
def records() -> list[DecisionRecord]:
    return make_records(160, seed=31)[:160]


@pytest.fixture
def old(key: SigningKey) -> SigningKey:
    return key


@pytest.fixture
def new() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def before(url: str, old: SigningKey, records: list[DecisionRecord]) -> Iterator[LogCheckpoint]:
    """A log written under the old key; yields its latest checkpoint (saved by an
    auditor before the rotation)."""
    with open_store(url, signer=old, checkpoint_every=20) as s:
        for i in range(0, 60, 15):
            s.append(records[i : i + 15], shard=i // 15 % 2)
        s.checkpoint()
        cp = s.latest_log_checkpoint()
    assert cp is not None
    yield cp


def public_verify(
    url: str, *keys: SigningKey, against: LogCheckpoint | None = None
) -> VerifyReport:
    """What an auditor holding only ``keys``' public halves sees."""
    with open_store(url, create=False) as s:
        return verify_log(s, [k.public_key() for k in keys], against=against)


def test_checkpoints_of_both_keys_verify_with_either_public_key(
    url: str,
    before: LogCheckpoint,
    old: SigningKey,
    new: SigningKey,
    records: list[DecisionRecord],
) -> None:
    with open_store(url, create=False) as s:
        note = make_handover(old, new)
        record_handover(s, note)
        record_handover(s, note)  # recording it again changes nothing
        assert len(handovers(s)) == 1
    with open_store(url, signer=new, checkpoint_every=20) as s:
        # Shards last written (and sealed) under the old key take appends under the new.
        s.append(records[60:80], shard=0)
        s.append(records[80:90], shard=1)
        s.append(records[90:95], shard=2)
        after = s.latest_log_checkpoint()
        assert after is not None and after.verify([new.public_key()]) == new.public_key()
        sealed = verify_log(s)  # the operator, with the new signing key
        assert sealed.ok, sealed.problems
        assert sealed.unsealed == 60  # sealed under the old key: covered by its checkpoints
    for holder in (old, new):
        rep = public_verify(url, holder)
        assert rep.ok, rep.problems
    rep = public_verify(url, old, against=before)
    assert rep.ok and {k["key_id"] for k in rep.keys} == {old.key_id, new.key_id}
    via = {k["key_id"]: k["trusted"] for k in rep.keys}
    assert via[old.key_id] == "given" and via[new.key_id].startswith(
        f"handed over from {old.key_id}"
    )
    # The old checkpoint saved before the rotation still anchors the new log.
    assert public_verify(url, new, against=before).ok


def test_without_the_handover_the_new_key_is_not_trusted(
    url: str, before: LogCheckpoint, old: SigningKey, new: SigningKey, records: list[DecisionRecord]
) -> None:
    with open_store(url, signer=new, checkpoint_every=20) as s:
        # Its heads were sealed by another key and no hand-over says it is ours.
        with pytest.raises(VerificationError, match="altered outside the gateway"):
            s.append(records[60:70], shard=0)
        record_handover(s, make_handover(old, new))
        s.append(records[60:70], shard=0)  # the store learnt the hand-over
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        conn.execute(sa.text("DELETE FROM ledger_key_history"))
    eng.dispose()
    rep = public_verify(url, old)
    # The new key's checkpoints are not trusted, so the records only they cover are not.
    assert {p.kind for p in rep.problems} == {"forged_checkpoint", "uncovered"}


def test_forged_handovers_do_not_extend_trust(
    url: str, before: LogCheckpoint, old: SigningKey, new: SigningKey
) -> None:
    attacker, mine = SigningKey.generate(), SigningKey.generate()
    with open_store(url, create=False) as s:
        record_handover(s, make_handover(attacker, mine))
        assert set(verify_chain(s, [old.public_key()]).keys) == {old.key_id}
        rep = verify_log(s, old.public_key())
        assert {p.kind for p in rep.problems} == {"untrusted_handover"}
        with pytest.raises(LedgerError, match="not a valid key hand-over"):
            record_handover(s, make_handover(old, new).replace("old ed25519", "old ed25518"))
        with pytest.raises(LedgerError, match="already recorded"):
            record_handover(s, make_handover(attacker, mine, datetime(2020, 1, 1, tzinfo=UTC)))
    # An altered note in the table: reported as forged.
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        conn.execute(
            sa.text("UPDATE ledger_key_history SET note = replace(note, 'time 2', 'time 1')")
        )
    eng.dispose()
    rep = public_verify(url, old)
    assert "forged_handover" in {p.kind for p in rep.problems}


def test_old_and_new_writers_side_by_side(
    url: str, before: LogCheckpoint, old: SigningKey, new: SigningKey, records: list[DecisionRecord]
) -> None:
    # During the changeover one sink worker still runs with the old key while another
    # has restarted with the new one: appends interleave, nothing stops, all verifies.
    with open_store(url, create=False) as s:
        record_handover(s, make_handover(old, new))
    with (
        open_store(url, signer=old, checkpoint_every=20) as o,
        open_store(url, signer=new, checkpoint_every=20) as n,
    ):
        for i in range(60, 140, 10):
            (o if i % 20 else n).append(records[i : i + 10], shard=(i // 10) % 3)
        assert verify_log(n).ok and verify_log(o).ok
    assert public_verify(url, old, against=before).ok
    assert public_verify(url, new, against=before).ok


def test_a_witness_follows_the_rotation(
    url: str,
    before: LogCheckpoint,
    old: SigningKey,
    new: SigningKey,
    records: list[DecisionRecord],
    tmp_path: Path,
) -> None:
    from gateway.ledger.consistency import build_consistency_proof

    w = Witness.init(tmp_path / "w", "agent.example/shipping-witness")
    w.cosign(before.to_text(), [old.public_key()])
    note = make_handover(old, new)
    with open_store(url, signer=new, checkpoint_every=20) as s:
        record_handover(s, note)
        s.append(records[60:70], shard=0)
        after = s.latest_log_checkpoint()
        assert after is not None
        proof = build_consistency_proof(s, before, after).to_text()
    with pytest.raises(VerificationError, match="not signed by a trusted"):
        w.cosign(after.to_text(), [old.public_key()], proof)
    w.cosign(after.to_text(), [old.public_key()], proof, handovers=[note])


def test_inclusion_proofs_after_a_rotation_verify_with_the_old_key(
    url: str, before: LogCheckpoint, old: SigningKey, new: SigningKey, records: list[DecisionRecord]
) -> None:
    note = make_handover(old, new)
    with open_store(url, signer=new, checkpoint_every=20) as s:
        record_handover(s, note)
        s.append(records[60:75], shard=0)
        proofs = {r.record_id: build_proof(s, r.record_id) for r in (records[3], records[70])}
    for bundle in proofs.values():
        bundle = orjson.loads(orjson.dumps(bundle))  # as saved to a file
        assert bundle["handovers"] == [note]
        res = verify_bundle(bundle, old.public_key())  # what the auditor held before
        assert res.key_id == new.key_id
        assert res.trusted.startswith(f"handed over from {old.key_id}")
        assert verify_bundle(bundle, new.public_key()).trusted == "given"
        # Without the hand-over, or with a forged one, the old key trusts nothing new.
        with pytest.raises(VerificationError, match="not signed by a trusted"):
            verify_bundle({**bundle, "handovers": []}, old.public_key())
        attacker = SigningKey.generate()
        forged = note.replace(
            base64.b64encode(new.public_key().raw).decode(),
            base64.b64encode(attacker.public_key().raw).decode(),
        )
        with pytest.raises(VerificationError, match="hand-over in the bundle does not check"):
            verify_bundle({**bundle, "handovers": [forged]}, old.public_key())
        stranger = make_handover(attacker, SigningKey.generate())
        with pytest.raises(VerificationError, match="not signed by a trusted"):
            verify_bundle({**bundle, "handovers": [stranger]}, old.public_key())


def test_a_proof_without_any_rotation_carries_no_handover(
    url: str, before: LogCheckpoint, old: SigningKey, records: list[DecisionRecord]
) -> None:
    with open_store(url, create=False) as s:
        # A hand-over between two other keys, recorded: not this log's signer's business.
        record_handover(s, make_handover(SigningKey.generate(), SigningKey.generate()))
        bundle = build_proof(s, records[5].record_id)
    assert bundle["handovers"] == []
    assert verify_bundle(bundle, old.public_key()).trusted == "given"
