"""Witnesses keep the log honest: an agent or an auditor cosigns log checkpoints after
checking each extends the last one it cosigned, refuses a rolled-back or forked log, and
the cosignatures kept in the ledger make ``verify`` hold the log to what they saw."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.crypto import SigningKey
from gateway.errors import KeyFileError, LedgerError, VerificationError
from gateway.ledger.consistency import ConsistencyProof, ShardProof, build_consistency_proof
from gateway.ledger.cosignatures import add_cosignatures
from gateway.ledger.logcheckpoint import LogCheckpoint
from gateway.ledger.store import LedgerStore, open_store
from gateway.ledger.verify import verify_log
from gateway.ledger.witness import Witness
from gateway.records import DecisionRecord
from gateway.signed_notes import CosignatureKey, Note, NoteSignature
from tests.ledger import attacks
from tests.ledger.data import make_records

NAME = "auditor.example.com/witness"


@pytest.fixture
def records() -> list[DecisionRecord]:
    return make_records(200, seed=21)[:200]


@pytest.fixture
def store(url: str, key: SigningKey, records: list[DecisionRecord]) -> Iterator[LedgerStore]:
    with open_store(url, signer=key, checkpoint_every=20) as s:
        s.append(records[0:30], shard=0)
        s.append(records[30:50], shard=1)
        yield s


def latest(store: LedgerStore) -> LogCheckpoint:
    cp = store.latest_log_checkpoint()
    assert cp is not None
    return cp


def test_a_witness_cosigns_the_log_as_it_grows(
    url: str, store: LedgerStore, key: SigningKey, records: list[DecisionRecord], tmp_path: Path
) -> None:
    w = Witness.init(tmp_path / "witness", NAME)
    assert (tmp_path / "witness" / "witness.key").stat().st_mode & 0o777 == 0o600
    vkey = (tmp_path / "witness" / "witness.vkey").read_text().strip()
    public = CosignatureKey.parse(vkey)
    assert vkey.startswith(NAME + "+") and public == w.public

    cp1 = latest(store)
    first = w.cosign(cp1.to_text(), [key.public_key()], now=1_700_000_000)
    sig = NoteSignature.parse(first.line)
    assert first.line.startswith(f"\u2014 {NAME} ") and first.line.endswith("\n")
    assert public.timestamp(cp1.text.encode(), sig.signature) == 1_700_000_000
    assert first.previous is None
    # The same checkpoint again needs no proof.
    w.cosign(cp1.to_text(), [key.public_key()], now=1_700_000_001)

    store.append(records[50:80], shard=1)
    store.append(records[80:90], shard=2)
    cp2 = latest(store)
    proof = build_consistency_proof(store, cp1, cp2).to_text()
    with pytest.raises(VerificationError, match="consistency proof is needed"):
        w.cosign(cp2.to_text(), [key.public_key()])
    second = w.cosign(cp2.to_text(), [key.public_key()], proof, now=1_700_000_100)
    assert second.previous is not None and second.previous.same_tree(cp1)
    assert Witness.open(tmp_path / "witness").latest(cp2.origin) == LogCheckpoint.parse(
        second.cosigned_note()
    )

    # The cosignatures are kept with the log; verify shows who saw which size.
    stored = add_cosignatures(
        store, cp2.to_text() + second.line, log_keys=[key.public_key()], witness_keys=[public]
    )
    assert [(s.witness, s.tree_size, s.verified) for s in stored] == [(NAME, cp2.size, True)]
    assert add_cosignatures(store, cp2.to_text() + second.line, log_keys=[key.public_key()]) == []
    add_cosignatures(store, first.line, checkpoint=cp1.to_text(), log_keys=[key.public_key()])
    with open_store(url, create=False) as public_store:
        rep = verify_log(public_store, key.public_key(), witness_keys=[public])
        assert rep.ok, rep.problems
        assert [w.to_dict() for w in rep.witnesses] == [
            {
                "witness": NAME,
                "key_id": public.key_id.hex(),
                "verified": True,
                "size": cp2.size,
                "time": 1_700_000_100,
                "count": 2,
            }
        ]
        # Without the witness's key nothing is claimed about its cosignatures.
        rep = verify_log(public_store, key.public_key())
        assert rep.ok and [(w.verified, w.count) for w in rep.witnesses] == [(None, 2)]


def test_the_witness_refuses_a_rolled_back_log(
    url: str, store: LedgerStore, key: SigningKey, records: list[DecisionRecord], tmp_path: Path
) -> None:
    w = Witness.init(tmp_path / "witness", NAME)
    pub = [key.public_key()]
    cp1 = latest(store)
    w.cosign(cp1.to_text(), pub)
    store.append(records[50:90], shard=0)
    cp2 = latest(store)
    w.cosign(cp2.to_text(), pub, build_consistency_proof(store, cp1, cp2).to_text())

    # The database goes back to cp1, and the gateway (restarted on it) signs on.
    attacks.rollback_to(url, cp1.to_text())
    with open_store(url, signer=key, checkpoint_every=20) as again:
        again.append(records[90:95], shard=0)
        smaller = latest(again)
        with pytest.raises(VerificationError, match="rolled back"):
            w.cosign(smaller.to_text(), pub)
        # It grows past the size the witness saw, with other records: a fork.
        again.append(records[95:140], shard=0)
        fork = latest(again)
        assert fork.size > cp2.size
        with pytest.raises(LedgerError, match="does not extend"):
            build_consistency_proof(again, cp2, fork)
        with pytest.raises(VerificationError, match="last cosigned size"):
            w.cosign(fork.to_text(), pub, build_consistency_proof(again, cp1, fork).to_text())
        # A made-up proof between the right checkpoints does not verify either.
        fake = ConsistencyProof(
            cp2.origin,
            cp2.size,
            cp2.root,
            fork.size,
            fork.root,
            tuple(
                ShardProof(s.shard, s.size, fork.sizes()[s.shard], (b"\x01" * 32,) * 3)
                for s in cp2.shards
            ),
        )
        with pytest.raises(VerificationError, match="does not verify"):
            w.cosign(fork.to_text(), pub, fake.to_text())
    # Refusals change nothing: the witness still holds cp2.
    kept = w.latest(cp2.origin)
    assert kept is not None and kept.same_tree(cp2)


def test_stored_cosignatures_hold_the_log_to_what_witnesses_saw(
    url: str, store: LedgerStore, key: SigningKey, records: list[DecisionRecord], tmp_path: Path
) -> None:
    w = Witness.init(tmp_path / "witness", NAME)
    pub = [key.public_key()]
    store.append(records[50:60], shard=0)
    cp = latest(store)
    done = w.cosign(cp.to_text(), pub)
    add_cosignatures(store, done.cosigned_note(), log_keys=pub)
    older = store.log_checkpoint_notes()[0][1]
    attacks.rollback_to(url, older)  # which also deletes the cosignature...
    with open_store(url, create=False) as public_store:
        assert verify_log(public_store, pub, witness_keys=[w.public]).ok
        # ...that the witness hands in again (or the attacker overlooked).
        add_cosignatures(public_store, done.cosigned_note(), log_keys=pub)
    with open_store(url, create=False) as public_store:
        rep = verify_log(public_store, pub, witness_keys=[w.public])
    assert {p.kind for p in rep.problems} == {"rolled_back"}
    assert "cosigned by witness " + NAME in rep.problems[0].message


def test_a_forged_cosignature_is_reported(
    url: str, store: LedgerStore, key: SigningKey, tmp_path: Path
) -> None:
    w = Witness.init(tmp_path / "witness", NAME)
    pub = [key.public_key()]
    cp = latest(store)
    done = w.cosign(cp.to_text(), pub)
    add_cosignatures(store, done.cosigned_note(), log_keys=pub)
    sig = NoteSignature.parse(done.line)
    flipped = NoteSignature(
        sig.name, sig.key_id, sig.signature[:-1] + bytes([sig.signature[-1] ^ 1])
    )
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        conn.execute(sa.text("UPDATE ledger_cosignatures SET line = :l"), {"l": flipped.line()})
    eng.dispose()
    rep = verify_log(store, pub, witness_keys=[w.public])
    assert {p.kind for p in rep.problems} == {"forged_cosignature"}
    with pytest.raises(LedgerError, match="does not verify"):
        add_cosignatures(
            store, flipped.line(), checkpoint=cp.to_text(), log_keys=pub, witness_keys=[w.public]
        )


def test_cosignatures_of_a_foreign_checkpoint_are_not_stored(
    store: LedgerStore, key: SigningKey, tmp_path: Path
) -> None:
    other = SigningKey.generate()
    cp = latest(store)
    foreign = LogCheckpoint.sign(other, cp.origin, cp.shards, cp.time)
    w = Witness.init(tmp_path / "witness", NAME)
    done = w.cosign(foreign.to_text(), [other.public_key()])
    with pytest.raises(LedgerError, match="not a checkpoint of this log"):
        add_cosignatures(store, done.cosigned_note(), log_keys=[key.public_key()])


def test_the_witness_checks_the_log_key(store: LedgerStore, tmp_path: Path) -> None:
    w = Witness.init(tmp_path / "witness", NAME)
    with pytest.raises(VerificationError, match="not signed by a trusted"):
        w.cosign(latest(store).to_text(), [SigningKey.generate().public_key()])
    assert w.latest(latest(store).origin) is None
    with pytest.raises(KeyFileError, match="refusing to replace"):
        Witness.init(tmp_path / "witness", NAME)
    with pytest.raises(LedgerError, match="witness name"):
        Witness.init(tmp_path / "other", "has space")


def test_note_round_trip(store: LedgerStore) -> None:
    cp = latest(store)
    assert Note.parse(cp.to_text()).to_text() == cp.to_text()
