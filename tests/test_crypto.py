"""Sealing and opening agent messages: round trips, the wire format, key rotation, and
every way a message can be tampered with, re-targeted or forged."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from gateway import errors
from gateway.crypto import (
    AgentPrivateKey,
    AgentPublicKey,
    HmacSha256,
    Opener,
    Sealer,
    SigningKey,
    VerifyKey,
    derive_key,
    hmac_sha256,
    opening,
    sealing,
    subject_ref,
)
from gateway.crypto.envelope import _unwrap_dek, _wrap_dek

PAYLOAD = orjson.dumps({"order_id": "o-1", "ship_to": {"zip": "021", "city": "Boston"}})


@pytest.fixture(scope="module")
def gw() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def shipping_key() -> AgentPrivateKey:
    return AgentPrivateKey.generate()


@pytest.fixture(scope="module")
def payments_key() -> AgentPrivateKey:
    return AgentPrivateKey.generate()


@pytest.fixture
def sealer(gw: SigningKey, shipping_key: AgentPrivateKey) -> Sealer:
    return Sealer("shipping", shipping_key.public_key(), gw)


@pytest.fixture
def opener(gw: SigningKey, shipping_key: AgentPrivateKey) -> Opener:
    return Opener("shipping", shipping_key, gw.public_key())


def _seal(sealer: Sealer, payload: bytes = PAYLOAD, n: int = 1, **kw: Any) -> bytes:
    return sealer.seal(
        payload,
        ref=kw.pop("ref", f"ref-{n}"),
        disclosure_id=kw.pop("disclosure_id", f"dis-{n}"),
        **kw,
    ).message


def _edit(message: bytes, part: str, **changes: Any) -> bytes:
    doc = orjson.loads(message)
    if part == "message":
        doc.update(changes)
    else:
        doc[part].update(changes)
    return orjson.dumps(doc)


# --------------------------------------------------------------------------------------
# round trip and wire format


def test_round_trip(sealer: Sealer, opener: Opener) -> None:
    sealed = sealer.seal(PAYLOAD, ref="ref-42", disclosure_id="dis-42")
    assert sealed.key_id == sealer.current_key_id
    opened = opener.open(sealed.message)
    assert opened.plaintext == PAYLOAD
    assert opened.json() == {"order_id": "o-1", "ship_to": {"zip": "021", "city": "Boston"}}
    assert (opened.agent, opened.ref, opened.disclosure_id, opened.key_id, opened.kind) == (
        "shipping",
        "ref-42",
        "dis-42",
        sealed.key_id,
        "disclosure",
    )


def test_erasure_notice_kind_round_trips(sealer: Sealer, opener: Opener) -> None:
    msg = _seal(sealer, b'{"erase":true}', kind="erasure_notice")
    assert opener.open(msg).kind == "erasure_notice"
    with pytest.raises(ValueError):
        sealer.seal(b"x", ref="e", disclosure_id="d", kind="gossip")
    with pytest.raises(ValueError):
        sealer.seal(b"x", ref="", disclosure_id="d")


def test_wire_format(sealer: Sealer, gw: SigningKey, shipping_key: AgentPrivateKey) -> None:
    msg = _seal(sealer)
    doc = orjson.loads(msg)
    assert set(doc) == {"header", "envelope", "ciphertext"}
    header, env = doc["header"], doc["envelope"]
    assert set(header) == {"v", "agent", "ref", "disclosure_id", "key_id", "kind", "nonce"}
    assert header["v"] == 2 and env["v"] == 1
    # "recipient" names the agent key the data key is sealed to; "handover" appears only
    # after a signing key rotation.
    assert set(env) == {"v", "agent", "key_id", "created_at", "signer", "recipient", "enc", "sig"}
    assert header["key_id"] == env["key_id"] == sealer.current_key_id
    assert env["signer"] == gw.key_id
    assert env["recipient"] == shipping_key.key_id
    assert len(base64.b64decode(header["nonce"])) == 12
    # The header is on the wire in canonical form: those exact bytes are the AAD.
    canonical = orjson.dumps(header, option=orjson.OPT_SORT_KEYS)
    assert canonical in msg
    assert b" " not in msg and b"\n" not in msg
    # The plaintext is nowhere in the message.
    assert b"Boston" not in msg


def test_payload_is_aes_gcm_with_header_as_aad(
    sealer: Sealer, shipping_key: AgentPrivateKey, gw: SigningKey
) -> None:
    """An independent decryption following the documented format, not the Opener."""
    from cryptography.hazmat.primitives import hpke

    doc = orjson.loads(_seal(sealer))
    env, header = doc["envelope"], doc["header"]
    unsigned = {k: v for k, v in env.items() if k != "sig"}
    gw.public_key().verify(
        base64.b64decode(env["sig"]),
        b"disclosure-gateway/key-envelope/v1\n"
        + orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS),
    )
    info = orjson.dumps(
        {"agent": "shipping", "key_id": env["key_id"], "use": "dek", "v": 1},
        option=orjson.OPT_SORT_KEYS,
    )
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    dek = suite.decrypt(base64.b64decode(env["enc"]), shipping_key.x25519, info=info)
    assert len(dek) == 32
    plaintext = AESGCM(dek).decrypt(
        base64.b64decode(header["nonce"]),
        base64.b64decode(doc["ciphertext"]),
        orjson.dumps(header, option=orjson.OPT_SORT_KEYS),
    )
    assert plaintext == PAYLOAD


def test_nonces_are_unique(sealer: Sealer) -> None:
    nonces = {orjson.loads(_seal(sealer, n=i))["header"]["nonce"] for i in range(2000)}
    assert len(nonces) == 2000


# --------------------------------------------------------------------------------------
# keys that do not fit


def test_wrong_agent_private_key_fails(sealer: Sealer, gw: SigningKey) -> None:
    impostor = Opener("shipping", AgentPrivateKey.generate(), gw.public_key())
    with pytest.raises(errors.DecryptionError):
        impostor.open(_seal(sealer))


def test_wrong_gateway_key_fails(sealer: Sealer, shipping_key: AgentPrivateKey) -> None:
    reader = Opener("shipping", shipping_key, SigningKey.generate().public_key())
    with pytest.raises(errors.SignatureError):
        reader.open(_seal(sealer))


# --------------------------------------------------------------------------------------
# tampering


def test_every_flipped_bit_fails(gw: SigningKey, shipping_key: AgentPrivateKey) -> None:
    sealer = Sealer("shipping", shipping_key.public_key(), gw)
    opener = Opener("shipping", shipping_key, gw.public_key())
    msg = sealer.seal(b'{"a":1}', ref="e1", disclosure_id="d1").message
    opener.open(msg)  # warm the envelope cache: tampering must not ride on it
    survivors = []
    for i in range(len(msg)):
        for bit in range(8):
            bad = bytearray(msg)
            bad[i] ^= 1 << bit
            try:
                opener.open(bytes(bad))
            except errors.CryptoError:
                continue
            survivors.append((i, bit))
    assert survivors == []
    assert opener.open(msg).plaintext == b'{"a":1}'


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"{}",
        b"[]",
        b"null",
        b"\xff\xfe",
        b'{"header":1,"envelope":2,"ciphertext":3}',
        b"not json at all",
    ],
)
def test_malformed_input_raises_crypto_error(opener: Opener, bad: bytes) -> None:
    with pytest.raises(errors.CryptoError):
        opener.open(bad)


def test_truncated_or_extended_message_fails(sealer: Sealer, opener: Opener) -> None:
    msg = _seal(sealer)
    for cut in (1, 10, len(msg) // 2):
        with pytest.raises(errors.CryptoError):
            opener.open(msg[:-cut])
    with pytest.raises(errors.CryptoError):
        opener.open(_edit(msg, "message", extra="x"))
    with pytest.raises(errors.CryptoError):
        opener.open(_edit(msg, "header", extra="x"))
    doc = orjson.loads(msg)
    del doc["header"]["nonce"]
    with pytest.raises(errors.CryptoError):
        opener.open(orjson.dumps(doc))


@pytest.mark.parametrize(
    "field,value",
    [
        ("ref", "ref-other"),
        ("disclosure_id", "dis-other"),
        ("kind", "erasure_notice"),
    ],
)
def test_header_edit_fails(sealer: Sealer, opener: Opener, field: str, value: str) -> None:
    msg = _seal(sealer)
    opener.open(msg)
    with pytest.raises(errors.DecryptionError):
        opener.open(_edit(msg, "header", **{field: value}))


def test_ciphertext_from_another_event_fails(sealer: Sealer, opener: Opener) -> None:
    one, two = _seal(sealer, n=1), _seal(sealer, n=2)
    swapped = _edit(one, "message", ciphertext=orjson.loads(two)["ciphertext"])
    with pytest.raises(errors.DecryptionError):
        opener.open(swapped)


def test_nonce_edit_fails(sealer: Sealer, opener: Opener) -> None:
    msg = _seal(sealer)
    nonce = base64.b64encode(bytes(12)).decode()
    with pytest.raises(errors.DecryptionError):
        opener.open(_edit(msg, "header", nonce=nonce))


def test_message_fed_to_another_agents_opener_fails(
    sealer: Sealer, gw: SigningKey, payments_key: AgentPrivateKey
) -> None:
    payments = Opener("payments", payments_key, gw.public_key())
    with pytest.raises(errors.ContextMismatch):
        payments.open(_seal(sealer))


def test_header_agent_changed_fails(
    sealer: Sealer, opener: Opener, gw: SigningKey, payments_key: AgentPrivateKey
) -> None:
    payments = Opener("payments", payments_key, gw.public_key())
    msg = _edit(_seal(sealer), "header", agent="payments")
    with pytest.raises(errors.ContextMismatch):
        opener.open(msg)
    with pytest.raises(errors.ContextMismatch):
        payments.open(msg)
    # Relabelling the envelope too breaks its signature.
    relabelled = _edit(msg, "envelope", agent="payments")
    with pytest.raises(errors.SignatureError):
        payments.open(relabelled)


def test_replay_into_another_agents_topic_with_its_valid_envelope_fails(
    gw: SigningKey, shipping_key: AgentPrivateKey, payments_key: AgentPrivateKey
) -> None:
    """Shipping's ciphertext, dressed in a genuine payments envelope and header."""
    ship = Sealer("shipping", shipping_key.public_key(), gw)
    pay = Sealer("payments", payments_key.public_key(), gw)
    payments = Opener("payments", payments_key, gw.public_key())
    stolen = orjson.loads(_seal(ship))
    genuine = orjson.loads(_seal(pay, ref=stolen["header"]["ref"]))
    payments.open(orjson.dumps(genuine))
    forged = dict(genuine, ciphertext=stolen["ciphertext"])
    forged["header"] = dict(genuine["header"], nonce=stolen["header"]["nonce"])
    with pytest.raises(errors.DecryptionError):
        payments.open(orjson.dumps(forged))


def test_key_id_mismatch_between_header_and_envelope_fails(
    gw: SigningKey, shipping_key: AgentPrivateKey, opener: Opener
) -> None:
    s = Sealer("shipping", shipping_key.public_key(), gw, rotate_messages=1)
    one, two = orjson.loads(_seal(s, n=1)), orjson.loads(_seal(s, n=2))
    assert one["envelope"]["key_id"] != two["envelope"]["key_id"]
    mixed = dict(one, envelope=two["envelope"])
    with pytest.raises(errors.ContextMismatch):
        opener.open(orjson.dumps(mixed))


class _Impostor(SigningKey):
    """A foreign signing key that claims to be the gateway's key id."""

    __slots__ = ("_claimed",)

    def __init__(self, claimed: str):
        super().__init__(SigningKey.generate()._key)
        self._claimed = claimed

    @property
    def key_id(self) -> str:
        return self._claimed


def test_envelope_signed_by_another_key_fails(
    gw: SigningKey, shipping_key: AgentPrivateKey, opener: Opener
) -> None:
    honest_evil = Sealer("shipping", shipping_key.public_key(), SigningKey.generate())
    with pytest.raises(errors.SignatureError):
        opener.open(_seal(honest_evil))
    # Claiming the gateway's key id gets past the cheap check, not the signature.
    lying = Sealer("shipping", shipping_key.public_key(), _Impostor(gw.key_id))
    msg = _seal(lying)
    assert orjson.loads(msg)["envelope"]["signer"] == gw.key_id
    with pytest.raises(errors.SignatureError):
        opener.open(msg)


def test_edited_enc_fails_even_when_consistent(
    sealer: Sealer, opener: Opener, shipping_key: AgentPrivateKey
) -> None:
    """An attacker wraps their own data key for the agent and re-encrypts: only the
    gateway's signature stands in the way."""
    msg = _seal(sealer)
    opener.open(msg)  # the genuine envelope for this key id is now cached
    doc = orjson.loads(msg)
    key_id = doc["header"]["key_id"]
    evil_dek = AESGCM.generate_key(bit_length=256)
    doc["envelope"]["enc"] = base64.b64encode(
        _wrap_dek(evil_dek, shipping_key.public_key(), "shipping", key_id)
    ).decode()
    nonce = bytes(range(12))
    doc["header"]["nonce"] = base64.b64encode(nonce).decode()
    aad = orjson.dumps(doc["header"], option=orjson.OPT_SORT_KEYS)
    doc["ciphertext"] = base64.b64encode(
        AESGCM(evil_dek).encrypt(nonce, b'{"refund_to":"attacker"}', aad)
    ).decode()
    with pytest.raises(errors.SignatureError):
        opener.open(orjson.dumps(doc))


def test_edited_envelope_created_at_fails(sealer: Sealer, opener: Opener) -> None:
    msg = _edit(_seal(sealer), "envelope", created_at="1999-01-01T00:00:00Z")
    with pytest.raises(errors.SignatureError):
        opener.open(msg)


# --------------------------------------------------------------------------------------
# rotation and cost


def test_rotation_by_count(gw: SigningKey, shipping_key: AgentPrivateKey) -> None:
    s = Sealer("shipping", shipping_key.public_key(), gw, rotate_messages=3)
    sealed = [s.seal(PAYLOAD, ref=f"e{i}", disclosure_id=f"d{i}") for i in range(7)]
    ids = [x.key_id for x in sealed]
    assert ids[0] == ids[1] == ids[2] != ids[3]
    assert ids[3] == ids[4] == ids[5] != ids[6]
    assert len(set(ids)) == 3
    opener = Opener("shipping", shipping_key, gw.public_key())
    for i, x in enumerate(sealed):
        assert opener.open(x.message).ref == f"e{i}"
        # Every message is self-contained: a reader that saw nothing before opens it.
        fresh = Opener("shipping", shipping_key, gw.public_key())
        assert fresh.open(x.message).key_id == ids[i]


def test_rotation_by_age(gw: SigningKey, shipping_key: AgentPrivateKey) -> None:
    now = [1_700_000_000.0]
    s = Sealer("shipping", shipping_key.public_key(), gw, rotate_seconds=60, clock=lambda: now[0])
    first = s.seal(PAYLOAD, ref="e1", disclosure_id="d1")
    now[0] += 59.9
    second = s.seal(PAYLOAD, ref="e2", disclosure_id="d2")
    assert second.key_id == first.key_id
    now[0] += 0.1
    third = s.seal(PAYLOAD, ref="e3", disclosure_id="d3")
    assert third.key_id == s.current_key_id != first.key_id
    env = orjson.loads(first.message)["envelope"]
    assert env["created_at"] == "2023-11-14T22:13:20Z"
    opener = Opener("shipping", shipping_key, gw.public_key())
    assert [opener.open(x.message).ref for x in (first, second, third)] == ["e1", "e2", "e3"]


def test_explicit_rotate(sealer: Sealer, opener: Opener) -> None:
    before = _seal(sealer)
    old = sealer.current_key_id
    new = sealer.rotate()
    assert new != old
    assert orjson.loads(_seal(sealer, n=2))["header"]["key_id"] == new
    assert opener.open(before).key_id == old


def test_public_key_work_only_on_rotation(
    monkeypatch: pytest.MonkeyPatch, gw: SigningKey, shipping_key: AgentPrivateKey
) -> None:
    calls = {"wrap": 0, "unwrap": 0, "verify": 0}
    real_wrap, real_unwrap, real_verify = _wrap_dek, _unwrap_dek, VerifyKey.verify

    def wrap(*a: Any) -> bytes:
        calls["wrap"] += 1
        return real_wrap(*a)

    def unwrap(*a: Any) -> bytes:
        calls["unwrap"] += 1
        return real_unwrap(*a)

    def verify(self: VerifyKey, *a: Any) -> None:
        calls["verify"] += 1
        real_verify(self, *a)

    monkeypatch.setattr(sealing, "_wrap_dek", wrap)
    monkeypatch.setattr(opening, "_unwrap_dek", unwrap)
    monkeypatch.setattr(VerifyKey, "verify", verify)
    s = Sealer("shipping", shipping_key.public_key(), gw, rotate_messages=10)
    msgs = [_seal(s, n=i) for i in range(25)]
    assert calls["wrap"] == 3
    opener = Opener("shipping", shipping_key, gw.public_key())
    for m in msgs:
        opener.open(m)
    assert calls["unwrap"] == 3
    assert calls["verify"] == 3


def test_sealer_rejects_bad_settings(gw: SigningKey, shipping_key: AgentPrivateKey) -> None:
    pk = shipping_key.public_key()
    with pytest.raises(ValueError):
        Sealer("shipping", pk, gw, rotate_messages=0)
    with pytest.raises(ValueError):
        Sealer("shipping", pk, gw, rotate_seconds=0)
    with pytest.raises(ValueError):
        Sealer("", pk, gw)


# --------------------------------------------------------------------------------------
# key classes


def test_signing_key_pem_round_trip_and_verify() -> None:
    sk = SigningKey.generate()
    again = SigningKey.from_pem(sk.to_pem())
    assert again.public_key() == sk.public_key()
    vk = VerifyKey.from_pem(sk.public_key().to_pem())
    sig = again.sign(b"data")
    vk.verify(sig, b"data")
    with pytest.raises(errors.SignatureError):
        vk.verify(sig, b"date")
    with pytest.raises(errors.SignatureError):
        SigningKey.generate().public_key().verify(sig, b"data")
    assert VerifyKey.parse(vk.to_text()) == vk
    assert VerifyKey.parse(vk.to_pem()) == vk
    assert re.fullmatch(r"ed25519:[0-9a-f]{16}", vk.key_id)
    assert vk.fingerprint == hashlib.sha256(vk.raw).hexdigest()


def test_agent_key_forms() -> None:
    priv = AgentPrivateKey.generate()
    pub = priv.public_key()
    assert AgentPrivateKey.from_pem(priv.to_pem()).public_key() == pub
    text = pub.to_text()
    assert re.fullmatch(r"x25519:[A-Za-z0-9+/]{43}=", text)
    assert AgentPublicKey.parse(text) == pub
    assert AgentPublicKey.parse("  " + text + "\n") == pub
    assert AgentPublicKey.parse(pub.to_pem()) == pub
    assert AgentPublicKey.parse(pub.to_pem().decode()) == pub
    assert AgentPublicKey.parse(text) != AgentPrivateKey.generate().public_key()


@pytest.mark.parametrize(
    "text",
    [
        "x25519:not-base64!!",
        "x25519:" + base64.b64encode(b"short").decode(),
        "x25519:" + base64.b64encode(bytes(32)).decode(),  # low-order point
        "ed25519:" + base64.b64encode(bytes(32)).decode(),
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        "",
    ],
)
def test_bad_agent_public_key_text(text: str) -> None:
    with pytest.raises(errors.KeyFileError):
        AgentPublicKey.parse(text)


def test_pem_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(errors.KeyFileError, match="X25519"):
        AgentPrivateKey.from_pem(SigningKey.generate().to_pem())
    with pytest.raises(errors.KeyFileError, match="Ed25519"):
        SigningKey.from_pem(AgentPrivateKey.generate().to_pem())
    with pytest.raises(errors.KeyFileError):
        AgentPublicKey.parse(SigningKey.generate().public_key().to_pem())
    with pytest.raises(errors.KeyFileError):
        SigningKey.from_pem(SigningKey.generate().public_key().to_pem())


def test_repr_shows_no_private_material() -> None:
    sk, ak = SigningKey.generate(), AgentPrivateKey.generate()
    for key in (sk, ak):
        pem = key.to_pem().decode()
        body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
        assert body not in repr(key) and "PRIVATE" not in repr(key)
    assert sk.key_id in repr(sk)


# --------------------------------------------------------------------------------------
# derived keys and pseudonyms


MASTER = bytes(range(32))


def _hkdf_reference(master: bytes, info: bytes) -> bytes:
    prk = hmac.new(b"\x00" * 32, master, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_derive_key_is_hkdf_sha256() -> None:
    label = "pseudonym:shipping"
    expected = _hkdf_reference(MASTER, b"disclosure-gateway/derive/v1:" + label.encode())
    assert derive_key(MASTER, label) == expected
    assert len(expected) == 32


def test_pseudonyms_differ_per_agent_and_are_stable() -> None:
    def pseudonym(agent: str, customer: str) -> str:
        key = derive_key(MASTER, "pseudonym:" + agent)
        return hmac.new(key, customer.encode(), hashlib.sha256).hexdigest()

    assert pseudonym("shipping", "cust-1") == pseudonym("shipping", "cust-1")
    assert pseudonym("shipping", "cust-1") != pseudonym("email", "cust-1")
    assert pseudonym("shipping", "cust-1") != pseudonym("shipping", "cust-2")
    assert derive_key(MASTER, "pseudonym:shipping") != derive_key(bytes(32), "pseudonym:shipping")
    with pytest.raises(ValueError):
        derive_key(b"short", "x")
    with pytest.raises(ValueError):
        derive_key(MASTER, "")


def test_subject_ref() -> None:
    ref = subject_ref(MASTER, "cust-1")
    assert re.fullmatch(r"subj_[0-9a-f]{32}", ref)
    assert subject_ref(MASTER, "cust-1") == ref
    assert subject_ref(MASTER, "cust-2") != ref
    assert subject_ref(bytes(32), "cust-1") != ref
    # Keyed: not a plain hash anyone could recompute from a customer id.
    assert ref[5:] not in hashlib.sha256(b"cust-1").hexdigest()
    assert ref != "subj_" + hmac.new(MASTER, b"cust-1", hashlib.sha256).hexdigest()[:32]


# --------------------------------------------------------------------------------------
# header versions


def _v1_message(sealer: Sealer, payload: bytes, event_id: str, disclosure_id: str) -> bytes:
    """A message as version-1 sealers wrote it: the publisher's event id in the header."""
    dk = sealer._take_key()
    nonce = bytes(range(12))
    header = {
        "v": 1,
        "agent": sealer.agent,
        "event_id": event_id,
        "disclosure_id": disclosure_id,
        "key_id": dk.key_id,
        "kind": "disclosure",
        "nonce": base64.b64encode(nonce).decode(),
    }
    aad = orjson.dumps(header, option=orjson.OPT_SORT_KEYS)
    return orjson.dumps(
        {
            "header": header,
            "envelope": orjson.loads(dk.envelope_json),
            "ciphertext": base64.b64encode(dk.aead.encrypt(nonce, payload, aad)).decode(),
        }
    )


def test_version_1_messages_are_still_read(sealer: Sealer, opener: Opener) -> None:
    opened = opener.open(_v1_message(sealer, PAYLOAD, "evt-7", "dis-7"))
    assert (opened.ref, opened.disclosure_id, opened.plaintext) == ("evt-7", "dis-7", PAYLOAD)


def test_header_fields_must_match_the_header_version(sealer: Sealer, opener: Opener) -> None:
    v2 = orjson.loads(_seal(sealer))
    with_event_id = dict(v2["header"], event_id=v2["header"].pop("ref"))
    with pytest.raises(errors.DecryptionError, match="fields"):
        opener.open(orjson.dumps(dict(v2, header=with_event_id)))
    v1 = orjson.loads(_v1_message(sealer, PAYLOAD, "evt-8", "dis-8"))
    with pytest.raises(errors.DecryptionError):
        opener.open(orjson.dumps(dict(v1, header=dict(v1["header"], v=2))))
    with pytest.raises(errors.DecryptionError, match="version"):
        opener.open(orjson.dumps(dict(v1, header=dict(v1["header"], v=3))))
    with pytest.raises(errors.DecryptionError, match="version"):
        opener.open(orjson.dumps(dict(v1, header=dict(v1["header"], v=True))))


# --- HMAC-SHA256 with the key's padded states computed once ----------------------------


@given(key=st.binary(max_size=200), msg=st.binary(max_size=300))
def test_hmac_sha256_is_hmac(key: bytes, msg: bytes) -> None:
    # Keys shorter than, equal to and longer than SHA-256's 64-byte block (hashed first).
    mac = HmacSha256(key)
    assert mac.digest(msg) == hmac.digest(key, msg, "sha256")
    assert mac.hexdigest(msg) == hmac.new(key, msg, hashlib.sha256).hexdigest()
    assert hmac_sha256(key).digest(msg) == hmac.digest(key, msg, "sha256")


def test_hmac_sha256_keeps_no_state_between_messages() -> None:
    mac = HmacSha256(b"k" * 64)
    first = mac.digest(b"one")
    mac.digest(b"two" * 100)
    assert mac.digest(b"one") == first == hmac.digest(b"k" * 64, b"one", "sha256")
