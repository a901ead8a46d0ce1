"""Signed notes (C2SP signed-note), their Ed25519 signatures, witness cosignatures (C2SP
tlog-cosignature v1) and the gateway's signing-key hand-over statement.

A note is UTF-8 text ending in a newline, a blank line, then one or more signature lines::

    <text, ending in a newline>

    — <key name> base64(4-byte key ID || signature)

The key ID is ``SHA-256(key name || 0x0A || signature type || public key)[:4]``. Signature
type 0x01 is an Ed25519 signature over the note text; type 0x04 is a timestamped Ed25519
cosignature whose signature bytes are ``u64 big-endian POSIX time || Ed25519 signature``
over ``"cosignature/v1\\ntime <t>\\n" || note text``. A verifier knows (name, key) pairs;
a signature line whose name and key ID match none of them is ignored, one that matches
but does not verify makes the whole note untrusted.

A verifier key ("vkey") is ``<name>+<hex key ID>+base64(signature type || public key)``.

The hand-over statement lets a holder of the gateway's previous public key trust its next
one (and, since the new key countersigns it, the other way round)::

    disclosure-gateway/key-handover/v1
    old ed25519:<16 hex> <base64 old Ed25519 public key>
    new ed25519:<16 hex> <base64 new Ed25519 public key>
    time 2025-06-01T12:00:00.000000Z

    — disclosure-gateway/signing-key <signature by the old key>
    — disclosure-gateway/signing-key <signature by the new key>

``ed25519:<16 hex>`` is the gateway key id (the first 16 hex digits of SHA-256 of the raw
public key). Both signatures are type 0x01 under the fixed key name
``disclosure-gateway/signing-key``. The old key's signature is required; the new key's
proves that whoever made the note holds the new private key, and lets someone holding only
the new key trust the old one. ``gateway keys rotate signing`` makes one; the key envelopes
agents receive carry the latest ones, and the ledger records every one.

A *hand-over chain* (a file given to an agent or an auditor) is hand-over notes one after
the other, oldest first: each note starts with its ``disclosure-gateway/key-handover/v1``
line, which nothing else in a note can be.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

from gateway.errors import KeyFileError, SignatureError

if TYPE_CHECKING:
    from gateway.crypto import SigningKey, VerifyKey

SIG_ED25519: Final = 0x01
SIG_COSIGNATURE_V1: Final = 0x04
_DASH: Final = "\u2014 "
MAX_SIGNATURES: Final = 64  # the spec asks verifiers to accept at least 16
COSIGNATURE_HEADER: Final = "cosignature/v1"
HANDOVER_HEADER: Final = "disclosure-gateway/key-handover/v1"
HANDOVER_KEY_NAME: Final = "disclosure-gateway/signing-key"
_CONTROL: Final = re.compile("[\x00-\x09\x0b-\x1f]")  # control characters but newline


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(text: str, what: str) -> bytes:
    """Standard base64, alphabet only and canonical (one encoding per value)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"malformed note: {what} is not base64") from exc
    if _b64(raw) != text:
        raise SignatureError(f"malformed note: {what} is not canonical base64")
    return raw


def _verify_key(raw: bytes) -> VerifyKey:
    """``VerifyKey.from_raw``: a ``KeyFileError`` unless ``raw`` is an Ed25519 public key."""
    # Imported here, not at the top: gateway.crypto imports this module (its key ring
    # follows the hand-overs carried in key envelopes).
    from gateway.crypto import VerifyKey

    return VerifyKey.from_raw(raw)


def check_key_name(name: str) -> str:
    """A key name (or checkpoint origin): non-empty, printable, no spaces and no '+'."""
    if not name or any(c.isspace() or c == "+" or not c.isprintable() for c in name):
        raise SignatureError(
            f"{name!r} is not a valid note key name: it must be non-empty, without spaces,"
            " '+' or control characters"
        )
    return name


def key_id(name: str, sig_type: int, public: bytes) -> bytes:
    """The 4-byte note key ID of (name, signature type, public key)."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + public).digest()[:4]


def utc_time(when: datetime | None = None) -> str:
    """RFC 3339 UTC with microseconds, the form every note here uses for ``time``."""
    when = (when or datetime.now(UTC)).astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc_time(text: str) -> datetime:
    """The inverse of ``utc_time`` (any RFC 3339 UTC time ending in Z is accepted)."""
    if not text.endswith("Z"):
        raise SignatureError(f"malformed note: time {text!r} is not UTC (must end in Z)")
    try:
        return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
    except ValueError as exc:
        raise SignatureError(f"malformed note: {text!r} is not an RFC 3339 time") from exc


# --------------------------------------------------------------------------------------
# notes


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key ID and the signature bytes after it."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{_DASH}{self.name} {_b64(self.key_id + self.signature)}\n"

    @classmethod
    def parse(cls, line: str) -> NoteSignature:
        """One line, with or without its final newline."""
        body = line.removesuffix("\n")
        if not body.startswith(_DASH):
            raise SignatureError("malformed note: a signature line must start with '\u2014 '")
        name, sep, sig = body[len(_DASH) :].partition(" ")
        if not sep or " " in sig:
            raise SignatureError("malformed note: a signature line is '\u2014 NAME SIGNATURE'")
        raw = b64decode_strict(sig, "a signature")
        if len(raw) < 5:
            raise SignatureError("malformed note: a signature is shorter than its key ID")
        return cls(check_key_name(name), raw[:4], raw[4:])


def parse_signature_lines(text: str) -> tuple[NoteSignature, ...]:
    """Signature lines on their own (e.g. a witness's answer), one per line."""
    if not text.endswith("\n"):
        raise SignatureError("malformed note: signature lines must end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise SignatureError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    return tuple(NoteSignature.parse(line) for line in lines)


@dataclass(frozen=True)
class Note:
    """A note's text (ending in a newline) and its signatures."""

    text: str
    signatures: tuple[NoteSignature, ...] = ()

    def to_text(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)

    def with_signatures(self, *more: NoteSignature) -> Note:
        have = set(self.signatures)
        return Note(self.text, self.signatures + tuple(s for s in more if s not in have))

    @classmethod
    def parse(cls, data: str | bytes) -> Note:
        """A signed note; its text is everything up to the last blank line."""
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SignatureError("malformed note: not UTF-8") from exc
        if _CONTROL.search(data):
            raise SignatureError("malformed note: control characters other than newline")
        cut = data.rfind("\n\n")
        if cut < 0:
            raise SignatureError("malformed note: no blank line before the signatures")
        return cls(data[: cut + 1], parse_signature_lines(data[cut + 2 :]))


class NoteVerifier(Protocol):
    """A known key: its name and key ID select the signature lines it checks."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def verify(self, text: bytes, signature: bytes) -> bool: ...


V = TypeVar("V", bound=NoteVerifier)


def verify_note(note: Note, verifiers: Iterable[V]) -> list[V]:
    """The known keys whose signatures verify. Lines of unknown keys are ignored; a line
    of a known key that does not verify, or no verified line at all, raises."""
    known = {(v.name, v.key_id): v for v in verifiers}
    text = note.text.encode("utf-8")
    good: list[V] = []
    for sig in note.signatures:
        v = known.get((sig.name, sig.key_id))
        if v is None:
            continue
        if not v.verify(text, sig.signature):
            raise SignatureError(
                f"the note carries a signature of key {sig.name}+{sig.key_id.hex()} that does"
                " not verify: it was altered or forged"
            )
        if v not in good:
            good.append(v)
    if not good:
        names = ", ".join(sorted({f"{v.name}+{v.key_id.hex()}" for v in known.values()}))
        raise SignatureError(f"the note is not signed by any trusted key ({names or 'none'})")
    return good


# --------------------------------------------------------------------------------------
# Ed25519 note signatures (type 0x01)


@dataclass(frozen=True)
class Ed25519NoteKey:
    """Checks type 0x01 signatures of ``key`` under key name ``name``."""

    name: str
    key: VerifyKey

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, SIG_ED25519, self.key.raw)

    def verify(self, text: bytes, signature: bytes) -> bool:
        try:
            self.key.verify(signature, text)
        except SignatureError:
            return False
        return True

    def vkey(self) -> str:
        return format_vkey(self.name, SIG_ED25519, self.key.raw)


def sign_ed25519(text: str, name: str, key: SigningKey) -> NoteSignature:
    """A type 0x01 signature of ``text`` by ``key`` under key name ``name``."""
    check_key_name(name)
    return NoteSignature(
        name, key_id(name, SIG_ED25519, key.public_key().raw), key.sign(text.encode("utf-8"))
    )


# --------------------------------------------------------------------------------------
# cosignatures (type 0x04)


def cosigned_message(text: str, timestamp: int) -> bytes:
    """The bytes a v1 cosignature signs: header line, time line, the checkpoint text."""
    return f"{COSIGNATURE_HEADER}\ntime {timestamp}\n{text}".encode()


@dataclass(frozen=True)
class CosignatureKey:
    """A witness's public key: checks its type 0x04 cosignatures."""

    name: str
    key: VerifyKey

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, SIG_COSIGNATURE_V1, self.key.raw)

    def timestamp(self, text: bytes, signature: bytes) -> int | None:
        """The cosignature's time if it verifies over ``text``, else None."""
        if len(signature) != 8 + 64:
            return None
        ts = int.from_bytes(signature[:8], "big")
        if ts >= 2**63:
            return None
        try:
            self.key.verify(signature[8:], cosigned_message(text.decode("utf-8"), ts))
        except SignatureError:
            return None
        return ts

    def verify(self, text: bytes, signature: bytes) -> bool:
        return self.timestamp(text, signature) is not None

    def vkey(self) -> str:
        return format_vkey(self.name, SIG_COSIGNATURE_V1, self.key.raw)

    @classmethod
    def parse(cls, vkey: str) -> CosignatureKey:
        name, sig_type, public = parse_vkey(vkey)
        if sig_type != SIG_COSIGNATURE_V1:
            raise KeyFileError(
                f"{vkey.strip()!r} is not a witness key (signature type {sig_type:#04x},"
                f" expected {SIG_COSIGNATURE_V1:#04x})"
            )
        return cls(name, _verify_key(public))


def cosign(text: str, name: str, key: SigningKey, timestamp: int) -> NoteSignature:
    """A v1 cosignature of checkpoint ``text`` at POSIX time ``timestamp``."""
    check_key_name(name)
    if not 0 < timestamp < 2**63:
        raise ValueError("a cosignature timestamp is a positive POSIX time")
    sig = key.sign(cosigned_message(text, timestamp))
    return NoteSignature(
        name,
        key_id(name, SIG_COSIGNATURE_V1, key.public_key().raw),
        timestamp.to_bytes(8, "big") + sig,
    )


def cosignature_time(sig: NoteSignature) -> int | None:
    """The time a cosignature line claims (unverified), or None if it is not one."""
    return int.from_bytes(sig.signature[:8], "big") if len(sig.signature) == 72 else None


# --------------------------------------------------------------------------------------
# verifier keys


def format_vkey(name: str, sig_type: int, public: bytes) -> str:
    check_key_name(name)
    return f"{name}+{key_id(name, sig_type, public).hex()}+{_b64(bytes([sig_type]) + public)}"


def parse_vkey(text: str) -> tuple[str, int, bytes]:
    """(name, signature type, public key) of a vkey; its key ID must match."""
    parts = text.strip().split("+", 2)  # the base64 part may contain "+"
    if len(parts) != 3:
        raise KeyFileError(f"{text.strip()!r} is not a verifier key (NAME+KEYID+BASE64)")
    name, hex_id, body = parts
    try:
        raw = b64decode_strict(body, "the verifier key")
        check_key_name(name)
    except SignatureError as exc:
        raise KeyFileError(f"{text.strip()!r} is not a verifier key: {exc}") from exc
    if len(raw) != 33:
        raise KeyFileError(f"{text.strip()!r}: an Ed25519 verifier key holds 1 + 32 bytes")
    if key_id(name, raw[0], raw[1:]).hex() != hex_id.lower():
        raise KeyFileError(f"{text.strip()!r}: the key ID does not match the name and key")
    return name, raw[0], raw[1:]


# --------------------------------------------------------------------------------------
# signing-key hand-over


@dataclass(frozen=True)
class Handover:
    """A checked hand-over note: signed by ``old`` and countersigned by ``new``."""

    old: VerifyKey
    new: VerifyKey
    time: str
    note: Note

    def to_text(self) -> str:
        return self.note.to_text()


def handover_text(old: VerifyKey, new: VerifyKey, time: str) -> str:
    return (
        f"{HANDOVER_HEADER}\n"
        f"old {old.key_id} {_b64(old.raw)}\n"
        f"new {new.key_id} {_b64(new.raw)}\n"
        f"time {time}\n"
    )


def make_handover(old: SigningKey, new: SigningKey, when: datetime | None = None) -> str:
    """The hand-over note from ``old`` to ``new``, signed by both."""
    if old.public_key() == new.public_key():
        raise ValueError("a key cannot be handed over to itself")
    text = handover_text(old.public_key(), new.public_key(), utc_time(when))
    note = Note(
        text,
        (
            sign_ed25519(text, HANDOVER_KEY_NAME, old),
            sign_ed25519(text, HANDOVER_KEY_NAME, new),
        ),
    )
    return note.to_text()


def _key_line(line: str, label: str) -> VerifyKey:
    parts = line.split(" ")
    if len(parts) != 3 or parts[0] != label:
        raise SignatureError(f"malformed hand-over: expected '{label} KEY-ID BASE64-KEY'")
    try:
        key = _verify_key(b64decode_strict(parts[2], f"the {label} key"))
    except KeyFileError as exc:
        raise SignatureError(f"malformed hand-over: the {label} key is not Ed25519") from exc
    if key.key_id != parts[1]:
        raise SignatureError(f"malformed hand-over: the {label} key id does not match its key")
    return key


def parse_handover(data: str | bytes) -> Handover:
    """Parse a hand-over note and check its own signatures: by the old key and by the new
    one, both required. Whether to trust the old key is the caller's decision
    (``verify_handover``, ``chain_keys``)."""
    note = Note.parse(data)
    lines = note.text.removesuffix("\n").split("\n")
    if len(lines) != 4 or lines[0] != HANDOVER_HEADER:
        raise SignatureError(
            f"not a key hand-over note: expected {HANDOVER_HEADER} and the old, new and time lines"
        )
    old, new = _key_line(lines[1], "old"), _key_line(lines[2], "new")
    if old == new:
        raise SignatureError("malformed hand-over: the old and new keys are the same")
    if not lines[3].startswith("time "):
        raise SignatureError("malformed hand-over: the last line must be 'time <RFC 3339>'")
    time = lines[3][5:]
    parse_utc_time(time)
    old_v = Ed25519NoteKey(HANDOVER_KEY_NAME, old)
    new_v = Ed25519NoteKey(HANDOVER_KEY_NAME, new)
    try:
        signed = verify_note(note, [old_v, new_v])
    except SignatureError as exc:
        raise SignatureError(f"the hand-over from {old.key_id} to {new.key_id}: {exc}") from exc
    if old_v not in signed:
        raise SignatureError(
            f"the hand-over from {old.key_id} to {new.key_id} is not signed by the old key"
        )
    if new_v not in signed:
        raise SignatureError(
            f"the hand-over from {old.key_id} to {new.key_id} is not countersigned by the new"
            " key (no proof its private key is held); make it with both keys (`gateway keys"
            " rotate signing` does)"
        )
    return Handover(old, new, time, note)


def verify_handover(data: str | bytes, trusted: Iterable[VerifyKey]) -> Handover:
    """The hand-over in ``data`` if its old key is one of ``trusted`` (and both keys signed
    it); raises ``SignatureError`` otherwise."""
    h = parse_handover(data)
    if h.old not in set(trusted):
        raise SignatureError(
            f"the hand-over to {h.new.key_id} comes from {h.old.key_id}, a key not trusted here"
        )
    return h


def split_handovers(text: str) -> list[str]:
    """The notes of a hand-over chain (one or more notes one after the other), in order."""
    notes: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.rstrip("\n") == HANDOVER_HEADER or not notes:
            notes.append("")
        notes[-1] += line
    if not notes or not all(n.startswith(HANDOVER_HEADER + "\n") for n in notes):
        raise SignatureError(
            f"not a hand-over chain: each note starts with a {HANDOVER_HEADER} line"
        )
    return notes


def chain_text(notes: Iterable[str]) -> str:
    """A hand-over chain: ``notes`` (oldest first) one after the other."""
    return "".join(notes)


def chain_keys(
    anchors: Sequence[VerifyKey], handovers: Iterable[Handover]
) -> dict[str, tuple[VerifyKey, Handover | None]]:
    """The keys trusted from ``anchors`` through hand-overs: forward (the old key signed
    the note) and backward (the new key countersigned it). Each key id maps to the key
    and the hand-over it was reached by (None for an anchor)."""
    trusted: dict[str, tuple[VerifyKey, Handover | None]] = {k.key_id: (k, None) for k in anchors}
    pending = list(handovers)
    grew = True
    while grew:
        grew = False
        for h in list(pending):
            if h.old.key_id in trusted and h.new.key_id not in trusted:
                trusted[h.new.key_id] = (h.new, h)
            elif h.new.key_id in trusted and h.old.key_id not in trusted:
                trusted[h.old.key_id] = (h.old, h)
            elif not (h.old.key_id in trusted and h.new.key_id in trusted):
                continue
            pending.remove(h)
            grew = True
    return trusted
