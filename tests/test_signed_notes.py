"""Signed notes, cosignatures and verifier keys against the C2SP specifications' own
examples, and the note rules a verifier must keep (unknown keys ignored, a bad signature
of a known key rejects the note)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from gateway.crypto import SigningKey, VerifyKey
from gateway.errors import KeyFileError, SignatureError
from gateway.signed_notes import (
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    CosignatureKey,
    Ed25519NoteKey,
    Note,
    NoteSignature,
    cosign,
    cosignature_time,
    cosigned_message,
    key_id,
    parse_signature_lines,
    parse_vkey,
    sign_ed25519,
    verify_note,
)

# c2sp.org/signed-note, "Verifier keys", example.
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6Tf"
    "Xppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)
# c2sp.org/tlog-cosignature, the example's witness line, over "time 1679315147".
SPEC_COSIGNATURE = (
    "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9d"
    "lrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA=="
)


def spec_key() -> Ed25519NoteKey:
    name, sig_type, public = parse_vkey(SPEC_VKEY)
    assert (name, sig_type) == ("example.com/foo", SIG_ED25519)
    return Ed25519NoteKey(name, VerifyKey.from_raw(public))


def test_the_specification_example_verifies() -> None:
    key = spec_key()
    assert key.vkey() == SPEC_VKEY
    assert key.key_id.hex() == "530d903a"
    note = Note.parse(SPEC_NOTE)
    assert note.text == "This is an example message.\n"
    assert verify_note(note, [key]) == [key]
    assert note.to_text() == SPEC_NOTE
    with pytest.raises(SignatureError, match="does not verify"):
        verify_note(Note.parse(SPEC_NOTE.replace("example message", "example massage")), [key])


def test_key_id_is_the_spec_formula() -> None:
    k = SigningKey.generate()
    raw = k.public_key().raw
    expected = hashlib.sha256(b"log.example/x\n\x01" + raw).digest()[:4]
    assert key_id("log.example/x", SIG_ED25519, raw) == expected
    assert sign_ed25519("hi\n", "log.example/x", k).key_id == expected
    cos = hashlib.sha256(b"w.example/1\n\x04" + raw).digest()[:4]
    assert CosignatureKey("w.example/1", k.public_key()).key_id == cos


def test_the_cosignature_example_carries_its_timestamp_after_the_key_id() -> None:
    (sig,) = parse_signature_lines(SPEC_COSIGNATURE + "\n")
    assert sig.name == "witness.example.com/w1" and len(sig.signature) == 8 + 64
    assert cosignature_time(sig) == 1679315147


def test_cosign_and_check() -> None:
    w = SigningKey.generate()
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    sig = cosign(text, "witness.example/w1", w, 1679315147)
    # The signed message: header line, time line, the checkpoint text.
    assert cosigned_message(text, 1679315147) == (
        b"cosignature/v1\ntime 1679315147\n" + text.encode()
    )
    w.public_key().verify(sig.signature[8:], cosigned_message(text, 1679315147))
    public = CosignatureKey("witness.example/w1", w.public_key())
    assert public.timestamp(text.encode(), sig.signature) == 1679315147
    assert public.timestamp((text + "x\n").encode(), sig.signature) is None
    assert CosignatureKey.parse(public.vkey()) == public
    with pytest.raises(KeyFileError, match="not a witness key"):
        CosignatureKey.parse(Ed25519NoteKey("witness.example/w1", w.public_key()).vkey())


def test_unknown_keys_are_ignored_and_a_bad_known_signature_rejects() -> None:
    a, b = SigningKey.generate(), SigningKey.generate()
    text = "hello\n"
    good = sign_ed25519(text, "a.example", a)
    other = sign_ed25519(text, "b.example", b)
    ka, kb = (
        Ed25519NoteKey("a.example", a.public_key()),
        Ed25519NoteKey("b.example", b.public_key()),
    )
    note = Note(text, (other, good))
    assert verify_note(note, [ka]) == [ka]  # b's line: unknown to this verifier, ignored
    bad = NoteSignature(other.name, other.key_id, bytes(64))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_note(Note(text, (good, bad)), [ka, kb])
    with pytest.raises(SignatureError, match="not signed by any trusted key"):
        verify_note(Note(text, (other,)), [ka])
    # Same name, another key: its key ID differs, so the line is not this key's.
    impostor = Ed25519NoteKey("a.example", b.public_key())
    with pytest.raises(SignatureError, match="not signed by any trusted key"):
        verify_note(note.with_signatures(), [impostor])
    # Same key, another name: another key ID too.
    with pytest.raises(SignatureError, match="not signed by any trusted key"):
        verify_note(note, [Ed25519NoteKey("c.example", a.public_key())])


def test_the_text_is_everything_up_to_the_last_blank_line() -> None:
    a = SigningKey.generate()
    text = "hello\n\nworld\n"  # blank lines inside the text are fine
    signed = Note(text, (sign_ed25519(text, "a.example", a),)).to_text()
    parsed = Note.parse(signed)
    assert parsed.text == text
    assert verify_note(parsed, [Ed25519NoteKey("a.example", a.public_key())])


@pytest.mark.parametrize(
    "text",
    [
        "no blank line\n\u2014 a.example AAAAAAA=\n",
        "text\n\n\u2014 a.example AAAA\n",  # signature shorter than a key ID
        "text\n\n- a.example AAAAAAA=\n",
        "text\n\n\u2014 a.example AAAAAAA=",  # no final newline
        "te\x01xt\n\n\u2014 a.example AAAAAAA=\n",
        "te\txt\n\n\u2014 a.example AAAAAAA=\n",  # a tab is a control character too
        "text\n\n\u2014 a+b.example AAAAAAA=\n",
        "text\n\n\u2014 a.example not-base64!\n",
    ],
)
def test_malformed_notes(text: str) -> None:
    with pytest.raises(SignatureError, match=r"malformed|not a valid note key name"):
        Note.parse(text)


def test_vkeys_whose_base64_holds_a_plus() -> None:
    while True:
        k = SigningKey.generate()
        body = base64.b64encode(bytes([SIG_COSIGNATURE_V1]) + k.public_key().raw).decode()
        if "+" in body:
            break
    vkey = CosignatureKey("w.example", k.public_key()).vkey()
    assert CosignatureKey.parse(vkey).key == k.public_key()
    with pytest.raises(KeyFileError, match="key ID does not match"):
        parse_vkey(vkey.replace("w.example+", "v.example+", 1))
