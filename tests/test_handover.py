"""Gateway key hand-over notes, and readers that hold several keys: an agent that trusts
only an old gateway key follows a hand-over to the new one (carried in the messages or
given as a chain file), a forged hand-over is refused, and an agent with an old and a new
private key reads its whole backlog. The signed-note rules themselves are tested in
test_signed_notes."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from gateway import crypto, errors
from gateway.crypto import AgentPrivateKey, Opener, Sealer, SigningKey
from gateway.crypto.envelope import _envelope_signed_bytes
from gateway.signed_notes import (
    HANDOVER_KEY_NAME,
    Note,
    chain_keys,
    chain_text,
    handover_text,
    make_handover,
    parse_handover,
    sign_ed25519,
    split_handovers,
    verify_handover,
)

WHEN = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def _seal(sealer: Sealer, n: int) -> bytes:
    return sealer.seal(b'{"n":%d}' % n, ref=f"e{n}", disclosure_id=f"d{n}").message


def _b64(key: SigningKey) -> str:
    return base64.b64encode(key.public_key().raw).decode()


# --------------------------------------------------------------------------------------
# hand-over notes


def test_handover_format() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    note = make_handover(old, new, WHEN)
    text, sigs = note.split("\n\n")
    assert text + "\n" == (
        "disclosure-gateway/key-handover/v1\n"
        f"old {old.key_id} {_b64(old)}\n"
        f"new {new.key_id} {_b64(new)}\n"
        "time 2025-03-01T12:00:00.000000Z\n"
    )
    lines = sigs.splitlines()
    assert len(lines) == 2
    assert all(line.startswith("\u2014 disclosure-gateway/signing-key ") for line in lines)
    # Independently of the gateway's code: each line is the key id (by the signed-note
    # formula) then an Ed25519 signature over the text, by the old key and by the new key.
    for line, key in zip(lines, (old, new), strict=True):
        raw = base64.b64decode(line.rsplit(" ", 1)[1])
        name = HANDOVER_KEY_NAME.encode()
        assert raw[:4] == hashlib.sha256(name + b"\n\x01" + key.public_key().raw).digest()[:4]
        key.public_key().verify(raw[4:], (text + "\n").encode())
    got = verify_handover(note, [old.public_key()])
    assert (got.old, got.new, got.time, got.to_text()) == (
        old.public_key(),
        new.public_key(),
        "2025-03-01T12:00:00.000000Z",
        note,
    )


def test_handover_from_an_untrusted_key_is_refused() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    note = make_handover(old, new, WHEN)
    with pytest.raises(errors.SignatureError, match="not trusted here"):
        verify_handover(note, [new.public_key()])


def _forge(text: str, *signers: SigningKey, steal_line_from: str | None = None) -> str:
    note = Note(text, tuple(sign_ed25519(text, HANDOVER_KEY_NAME, s) for s in signers))
    forged = note.to_text()
    if steal_line_from is not None:
        forged += steal_line_from.split("\n\n")[1].splitlines(keepends=True)[0]
    return forged


def _claim(old: SigningKey, new: SigningKey) -> str:
    return handover_text(old.public_key(), new.public_key(), "2025-03-01T12:00:00.000000Z")


def test_forged_handovers_are_refused() -> None:
    gateway, attacker = SigningKey.generate(), SigningKey.generate()
    trusted = [gateway.public_key()]
    text = _claim(gateway, attacker)
    # Signed by the attacker's key only.
    with pytest.raises(errors.SignatureError, match="not signed by the old key"):
        verify_handover(_forge(text, attacker), trusted)
    # With the gateway's genuine signature line copied from a real hand-over.
    genuine = make_handover(gateway, SigningKey.generate(), WHEN)
    with pytest.raises(errors.SignatureError, match="does not verify"):
        verify_handover(_forge(text, attacker, steal_line_from=genuine), trusted)
    # A genuine hand-over whose new key was swapped for the attacker's.
    real_new = parse_handover(genuine).new
    swapped = genuine.replace(
        f"{real_new.key_id} {base64.b64encode(real_new.raw).decode()}",
        f"{attacker.key_id} {_b64(attacker)}",
    )
    with pytest.raises(errors.SignatureError):
        verify_handover(swapped, trusted)
    # Altered in any other way (here its time).
    with pytest.raises(errors.SignatureError, match="does not verify"):
        verify_handover(genuine.replace("time 2025-03-01", "time 2025-03-02"), trusted)
    # Signed by the old key but not by the new one (no proof the new key is held).
    with pytest.raises(errors.SignatureError, match="not countersigned by the new key"):
        verify_handover(_forge(text, gateway), trusted)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda t: t.replace("key-handover/v1", "key-handover/v2"), "not a key hand-over"),
        (lambda t: t.replace("\ntime ", "\nwhen "), "time"),
        (lambda t: t.replace("time 2025-03-01T12:00:00.000000Z", "time yesterday"), "time"),
        (lambda t: t.replace("new ed25519:", "new ed25519:0", 1), "key id does not match"),
    ],
)
def test_malformed_handovers_are_refused(change: Any, match: str) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    with pytest.raises(errors.SignatureError, match=match):
        parse_handover(_forge(change(_claim(old, new)), old, new))
    same = handover_text(old.public_key(), old.public_key(), "2025-03-01T12:00:00.000000Z")
    with pytest.raises(errors.SignatureError, match="the same"):
        parse_handover(_forge(same, old))
    with pytest.raises(ValueError):
        make_handover(old, old, WHEN)


def test_a_chain_file_splits_into_its_notes() -> None:
    a, b, c = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    notes = [make_handover(a, b, WHEN), make_handover(b, c, WHEN)]
    assert split_handovers(chain_text(notes)) == notes
    assert split_handovers(notes[0]) == notes[:1]
    for bad in ("", "hello\n" + notes[0]):
        with pytest.raises(errors.SignatureError, match="not a hand-over chain"):
            split_handovers(bad)
    keys = chain_keys([a.public_key()], [parse_handover(n) for n in notes])
    assert set(keys) == {a.key_id, b.key_id, c.key_id}
    # Backward too: the holder of the newest key trusts the older ones (they countersigned).
    assert set(chain_keys([c.public_key()], [parse_handover(n) for n in notes])) == set(keys)


# --------------------------------------------------------------------------------------
# readers after a gateway signing key rotation


@pytest.fixture(scope="module")
def agent_key() -> AgentPrivateKey:
    return AgentPrivateKey.generate()


def test_agent_trusting_only_the_old_key_reads_old_and_new_messages(
    agent_key: AgentPrivateKey,
) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    before = _seal(Sealer("shipping", agent_key.public_key(), old), 1)
    handover = make_handover(old, new, WHEN)
    after_sealer = Sealer("shipping", agent_key.public_key(), new, handover=[handover])
    after = _seal(after_sealer, 2)
    assert orjson.loads(after)["envelope"]["handover"] == [handover]

    reader = Opener("shipping", agent_key, old.public_key())
    assert reader.open(before).ref == "e1"
    assert reader.open(after).ref == "e2"
    # The new key is trusted from now on (cached), the old one still is.
    assert set(reader.gateway_keys.keys) == {old.public_key(), new.public_key()}
    assert [h.new for h in reader.gateway_keys.learned] == [new.public_key()]
    # A message without the hand-over, signed by the new key, now opens too.
    plain = _seal(Sealer("shipping", agent_key.public_key(), new), 3)
    assert reader.open(plain).ref == "e3"
    # Without the hand-over a reader that trusts only the old key refuses it.
    with pytest.raises(errors.SignatureError, match="no hand-over"):
        Opener("shipping", agent_key, old.public_key()).open(plain)


def test_a_chain_of_handovers_is_followed_from_any_trusted_key(
    agent_key: AgentPrivateKey,
) -> None:
    a, b, c = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    chain = [make_handover(a, b, WHEN), make_handover(b, c, WHEN)]
    msg = _seal(Sealer("shipping", agent_key.public_key(), c, handover=chain), 1)
    for trusted in (a, b, c):
        reader = Opener("shipping", agent_key, trusted.public_key())
        assert reader.open(msg).ref == "e1"
        assert c.public_key() in reader.gateway_keys.keys


def test_agent_given_several_gateway_keys(agent_key: AgentPrivateKey) -> None:
    a, b = SigningKey.generate(), SigningKey.generate()
    reader = Opener("shipping", agent_key, [a.public_key(), b.public_key()])
    for n, key in enumerate((a, b)):
        assert reader.open(_seal(Sealer("shipping", agent_key.public_key(), key), n)).kind


def test_envelope_with_a_forged_handover_is_refused(agent_key: AgentPrivateKey) -> None:
    """Whoever has the agent's public key can seal for it; only the gateway's key (or a key
    it handed over to) makes a reader accept the result."""
    gateway, attacker = SigningKey.generate(), SigningKey.generate()
    text = _claim(gateway, attacker)
    genuine = make_handover(gateway, SigningKey.generate(), WHEN)
    reader = Opener("shipping", agent_key, gateway.public_key())
    for forged in (
        _forge(text, attacker),
        _forge(text, attacker, steal_line_from=genuine),
        make_handover(SigningKey.generate(), attacker, WHEN),  # from an unknown key
    ):
        msg = _seal(Sealer("shipping", agent_key.public_key(), attacker, handover=[forged]), 1)
        with pytest.raises(errors.SignatureError):
            reader.open(msg)
        assert reader.gateway_keys.keys == (gateway.public_key(),)


def test_handover_list_is_bounded_and_typed(agent_key: AgentPrivateKey) -> None:
    gw = SigningKey.generate()
    msg = _seal(Sealer("shipping", agent_key.public_key(), gw), 1)
    reader = Opener("shipping", agent_key, gw.public_key())
    for bad in ([], ["x"] * (crypto.MAX_HANDOVERS + 1), [1], "note"):
        doc = orjson.loads(msg)
        doc["envelope"]["handover"] = bad
        with pytest.raises(errors.CryptoError, match="handover"):
            reader.open(orjson.dumps(doc))
    with pytest.raises(ValueError):
        Sealer("shipping", agent_key.public_key(), gw, handover=["x"] * 17)


# --------------------------------------------------------------------------------------
# readers holding several agent private keys


def _legacy_envelope(message: bytes, gw: SigningKey) -> bytes:
    """``message`` as a gateway without recipient ids wrote it: no "recipient" field."""
    doc = orjson.loads(message)
    env: dict[str, Any] = {
        k: v for k, v in doc["envelope"].items() if k not in ("recipient", "sig")
    }
    env["sig"] = base64.b64encode(gw.sign(_envelope_signed_bytes(env))).decode()
    doc["envelope"] = env
    return orjson.dumps(doc)


def test_reader_with_old_and_new_agent_keys_reads_its_backlog() -> None:
    gw = SigningKey.generate()
    old, new = AgentPrivateKey.generate(), AgentPrivateKey.generate()
    backlog = _seal(Sealer("shipping", old.public_key(), gw), 1)
    fresh = _seal(Sealer("shipping", new.public_key(), gw), 2)
    assert orjson.loads(backlog)["envelope"]["recipient"] == old.key_id

    reader = Opener("shipping", [new, old], gw.public_key())
    assert [reader.open(m).ref for m in (backlog, fresh)] == ["e1", "e2"]
    # Envelopes that do not name their recipient: each key is tried.
    legacy = [_legacy_envelope(m, gw) for m in (backlog, fresh)]
    again = Opener("shipping", [new, old], gw.public_key())
    assert [again.open(m).ref for m in legacy] == ["e1", "e2"]

    # With only the new key the backlog says which key it needs.
    only_new = Opener("shipping", new, gw.public_key())
    with pytest.raises(errors.DecryptionError, match=old.key_id):
        only_new.open(backlog)
    with pytest.raises(errors.DecryptionError, match="sealed for another private key"):
        only_new.open(legacy[0])


def test_recipient_is_covered_by_the_signature() -> None:
    gw = SigningKey.generate()
    old, new = AgentPrivateKey.generate(), AgentPrivateKey.generate()
    msg = _seal(Sealer("shipping", old.public_key(), gw), 1)
    reader = Opener("shipping", [new, old], gw.public_key())
    reader.open(msg)
    doc = orjson.loads(msg)
    doc["envelope"]["recipient"] = new.key_id
    with pytest.raises(errors.SignatureError):
        reader.open(orjson.dumps(doc))
