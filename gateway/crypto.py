"""What an agent receives (SPEC §6): per-agent sealing and the agent-side opener.

Scheme
------
*Keys.* The gateway signs with Ed25519. Each agent has an X25519 key pair; the gateway only
ever holds the agent's public key (the demo key store may also hold private halves).

*Data keys (DEKs).* A :class:`Sealer` holds one random AES-256-GCM key per agent and
rotates it after ``rotate_messages`` messages or ``rotate_seconds`` seconds. Public-key work
(an HPKE seal of the DEK and an Ed25519 signature) happens only on rotation, so the cost of
one message is one AES-GCM encryption plus some JSON.

*Key envelope* (built once per DEK)::

    {"v": 1, "agent": A, "key_id": K, "created_at": "...Z", "signer": <gateway key id>,
     "enc": b64(HPKE_seal(pk_A, DEK, info=canon({"agent": A, "key_id": K, "use": ..., "v": 1}))),
     "sig": b64(Ed25519(ENVELOPE_SIG_CONTEXT + canon(envelope without "sig")))}

*Message* (the bytes put on the agent's topic)::

    {"header": H, "envelope": E, "ciphertext": b64(AES-256-GCM(DEK, nonce, payload, aad=canon(H)))}
    H = {"v": 1, "agent": A, "event_id": ..., "disclosure_id": ..., "key_id": K,
         "kind": "disclosure" | "erasure_notice", "nonce": b64(12 random bytes)}

``canon`` is JSON with sorted keys, no whitespace, UTF-8 (for the string and integer values
used here this coincides with RFC 8785). The header is written in its canonical form, so
its bytes on the wire are exactly the AAD.

Every message carries its envelope, so an agent needs only its private key and the
gateway's public signing key to read any single message; the :class:`Opener` caches
verified envelopes so that reading a stream costs AES-GCM per message too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway import errors

__all__ = [
    "ENVELOPE_SIG_CONTEXT",
    "KINDS",
    "WIRE_VERSION",
    "AgentPrivateKey",
    "AgentPublicKey",
    "Opened",
    "Opener",
    "Sealed",
    "Sealer",
    "SigningKey",
    "VerifyKey",
    "derive_key",
    "subject_ref",
]

WIRE_VERSION: Final = 1
KINDS: Final = frozenset({"disclosure", "erasure_notice"})

# The gateway key also signs other things (e.g. log checkpoints); a fixed prefix keeps an
# envelope signature from ever being valid as a signature over anything else.
ENVELOPE_SIG_CONTEXT: Final = b"disclosure-gateway/key-envelope/v1\n"

# AES-256-GCM for the HPKE layer so the wrap is as strong as the AES-256 DEK it carries.
_SUITE: Final = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_DEK_BYTES: Final = 32
_NONCE_BYTES: Final = 12
# Random 96-bit nonces stay safe far beyond this many messages under one key (NIST SP
# 800-38D caps random-nonce use at 2**32 per key); refuse configurations past it.
_MAX_MESSAGES_PER_KEY: Final = 2**32
_HKDF_INFO_PREFIX: Final = b"disclosure-gateway/derive/v1:"
_SORT: Final = orjson.OPT_SORT_KEYS

_HEADER_FIELDS: Final = frozenset(
    {"v", "agent", "event_id", "disclosure_id", "key_id", "kind", "nonce"}
)
_ENVELOPE_FIELDS: Final = frozenset(
    {"v", "agent", "key_id", "created_at", "signer", "enc", "sig"}
)
_MESSAGE_FIELDS: Final = frozenset({"header", "envelope", "ciphertext"})
_OPENER_CACHE_SIZE: Final = 256


# --------------------------------------------------------------------------------------
# small helpers


def _canon(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj, option=_SORT)


def _b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64d(text: str, what: str) -> bytes:
    """Strict base64: alphabet only and canonical padding bits.

    Lenient decoding would map several encodings to the same bytes, so a flipped bit in the
    unused low bits of the last character would go unnoticed.
    """
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise errors.DecryptionError(f"malformed message: {what} is not base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise errors.DecryptionError(f"malformed message: {what} is not canonical base64")
    return raw


def _fingerprint(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()


def _pem_bytes(data: bytes | str) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


def _load_private_pem(data: bytes | str, expected: type, kind: str) -> Any:
    try:
        key = serialization.load_pem_private_key(_pem_bytes(data), password=None)
    except TypeError as exc:
        # cryptography raises TypeError for a password-protected key.
        raise errors.KeyFileError(
            f"the {kind} private key is password-protected; the gateway needs an unencrypted"
            " PKCS8 PEM file kept with mode 0600"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise errors.KeyFileError(f"not a PEM private key (expected {kind})") from exc
    if not isinstance(key, expected):
        raise errors.KeyFileError(
            f"wrong key type: expected a {kind} private key, got {type(key).__name__}"
        )
    return key


def _load_public_pem(data: bytes | str, expected: type, kind: str) -> Any:
    try:
        key = serialization.load_pem_public_key(_pem_bytes(data))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise errors.KeyFileError(f"not a PEM public key (expected {kind})") from exc
    if not isinstance(key, expected):
        raise errors.KeyFileError(
            f"wrong key type: expected a {kind} public key, got {type(key).__name__}"
        )
    return key


_PKCS8: Final = (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                 serialization.NoEncryption())
_RAW_PUBLIC: Final = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
_SPKI: Final = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# --------------------------------------------------------------------------------------
# gateway signing keys (Ed25519)


class VerifyKey:
    """The gateway's public signing key, as held by agents and log verifiers."""

    __slots__ = ("_key", "_raw")
    TEXT_PREFIX: Final = "ed25519:"

    def __init__(self, key: Ed25519PublicKey):
        self._key = key
        self._raw = key.public_bytes(*_RAW_PUBLIC)

    @classmethod
    def from_pem(cls, data: bytes | str) -> VerifyKey:
        return cls(_load_public_pem(data, Ed25519PublicKey, "Ed25519"))

    @classmethod
    def from_raw(cls, raw: bytes) -> VerifyKey:
        try:
            return cls(Ed25519PublicKey.from_public_bytes(raw))
        except ValueError as exc:
            raise errors.KeyFileError("an Ed25519 public key is 32 bytes") from exc

    @classmethod
    def parse(cls, text: str | bytes) -> VerifyKey:
        """Accept ``ed25519:<base64 raw>`` or a PEM public key."""
        text = text.decode("utf-8") if isinstance(text, bytes) else text
        stripped = text.strip()
        if stripped.startswith(cls.TEXT_PREFIX):
            return cls.from_raw(_parse_raw_text(stripped, cls.TEXT_PREFIX, "Ed25519"))
        return cls.from_pem(stripped)

    def to_pem(self) -> bytes:
        return self._key.public_bytes(*_SPKI)

    def to_text(self) -> str:
        return self.TEXT_PREFIX + _b64e(self._raw)

    @property
    def raw(self) -> bytes:
        return self._raw

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the raw public key, hex."""
        return _fingerprint(self._raw)

    @property
    def key_id(self) -> str:
        """Short id naming this key in envelopes and checkpoints."""
        return "ed25519:" + self.fingerprint[:16]

    def verify(self, signature: bytes, data: bytes) -> None:
        try:
            self._key.verify(signature, data)
        except InvalidSignature as exc:
            raise errors.SignatureError(
                f"signature does not verify with gateway key {self.key_id}"
            ) from exc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"VerifyKey({self.key_id})"


class SigningKey:
    """The gateway's Ed25519 signing key. Its repr never shows key material."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: Ed25519PrivateKey):
        self._key = key
        self._public = VerifyKey(key.public_key())

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes | str) -> SigningKey:
        return cls(_load_private_pem(data, Ed25519PrivateKey, "Ed25519"))

    def to_pem(self) -> bytes:
        return self._key.private_bytes(*_PKCS8)

    def public_key(self) -> VerifyKey:
        return self._public

    @property
    def key_id(self) -> str:
        return self._public.key_id

    @property
    def fingerprint(self) -> str:
        return self._public.fingerprint

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"SigningKey({self.key_id})"


# --------------------------------------------------------------------------------------
# agent keys (X25519 for HPKE)


def _parse_raw_text(text: str, prefix: str, kind: str) -> bytes:
    body = text[len(prefix):].strip()
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise errors.KeyFileError(
            f"{prefix}... key text is not base64 (expected {prefix}<base64 of 32 bytes>)"
        ) from exc
    if len(raw) != 32:
        raise errors.KeyFileError(
            f"{prefix}... key text holds {len(raw)} bytes; a raw {kind} public key is 32"
        )
    return raw


class AgentPublicKey:
    """An agent's X25519 public key. Text form ``x25519:<base64 raw>`` fits in agents.yaml."""

    __slots__ = ("_key", "_raw")
    TEXT_PREFIX: Final = "x25519:"

    def __init__(self, key: X25519PublicKey):
        raw = key.public_bytes(*_RAW_PUBLIC)
        # A low-order point makes every HPKE seal fail (or, worse elsewhere, yields a known
        # shared secret); reject it when the policy is loaded rather than at first rotation.
        try:
            X25519PrivateKey.generate().exchange(key)
        except ValueError as exc:
            raise errors.KeyFileError(
                "the X25519 public key is a low-order point, not a usable key"
            ) from exc
        self._key = key
        self._raw = raw

    @classmethod
    def from_raw(cls, raw: bytes) -> AgentPublicKey:
        try:
            return cls(X25519PublicKey.from_public_bytes(raw))
        except ValueError as exc:
            raise errors.KeyFileError("an X25519 public key is 32 bytes") from exc

    @classmethod
    def from_pem(cls, data: bytes | str) -> AgentPublicKey:
        return cls(_load_public_pem(data, X25519PublicKey, "X25519"))

    @classmethod
    def parse(cls, text: str | bytes) -> AgentPublicKey:
        """Accept ``x25519:<base64 raw>`` or a PEM public key."""
        text = text.decode("utf-8") if isinstance(text, bytes) else text
        stripped = text.strip()
        if stripped.startswith(cls.TEXT_PREFIX):
            return cls.from_raw(_parse_raw_text(stripped, cls.TEXT_PREFIX, "X25519"))
        if stripped.startswith("-----BEGIN"):
            return cls.from_pem(stripped)
        raise errors.KeyFileError(
            "an agent public key is either 'x25519:<base64>' (as printed by"
            " `gateway keys agent NAME`) or a PEM public key"
        )

    def to_pem(self) -> bytes:
        return self._key.public_bytes(*_SPKI)

    def to_text(self) -> str:
        return self.TEXT_PREFIX + _b64e(self._raw)

    @property
    def raw(self) -> bytes:
        return self._raw

    @property
    def fingerprint(self) -> str:
        return _fingerprint(self._raw)

    @property
    def key_id(self) -> str:
        return "x25519:" + self.fingerprint[:16]

    @property
    def x25519(self) -> X25519PublicKey:
        return self._key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AgentPublicKey) and hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"AgentPublicKey({self.key_id})"


class AgentPrivateKey:
    """An agent's X25519 private key. Its repr never shows key material."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: X25519PrivateKey):
        self._key = key
        self._public = AgentPublicKey(key.public_key())

    @classmethod
    def generate(cls) -> AgentPrivateKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes | str) -> AgentPrivateKey:
        return cls(_load_private_pem(data, X25519PrivateKey, "X25519"))

    def to_pem(self) -> bytes:
        return self._key.private_bytes(*_PKCS8)

    def public_key(self) -> AgentPublicKey:
        return self._public

    @property
    def key_id(self) -> str:
        return self._public.key_id

    @property
    def x25519(self) -> X25519PrivateKey:
        return self._key

    def __repr__(self) -> str:
        return f"AgentPrivateKey({self.key_id})"


# --------------------------------------------------------------------------------------
# envelopes


def _hpke_info(agent: str, key_id: str) -> bytes:
    # Canonical JSON rather than concatenation so no (agent, key_id) pair can collide.
    return _canon({"agent": agent, "key_id": key_id, "use": "dek", "v": WIRE_VERSION})


def _wrap_dek(dek: bytes, public_key: AgentPublicKey, agent: str, key_id: str) -> bytes:
    return _SUITE.encrypt(dek, public_key.x25519, info=_hpke_info(agent, key_id))


def _unwrap_dek(enc: bytes, private_key: AgentPrivateKey, agent: str, key_id: str) -> bytes:
    return _SUITE.decrypt(enc, private_key.x25519, info=_hpke_info(agent, key_id))


def _envelope_signed_bytes(envelope: dict[str, Any]) -> bytes:
    unsigned = {k: v for k, v in envelope.items() if k != "sig"}
    return ENVELOPE_SIG_CONTEXT + _canon(unsigned)


def _timestamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _new_key_id() -> str:
    return "dek_" + secrets.token_hex(12)


# --------------------------------------------------------------------------------------
# sealing (gateway side)


@dataclass(frozen=True, slots=True)
class Sealed:
    message: bytes
    key_id: str


class _DataKey:
    __slots__ = ("aead", "count", "created", "envelope_json", "key_id")

    def __init__(self, aead: AESGCM, key_id: str, created: float, envelope_json: bytes):
        self.aead = aead
        self.key_id = key_id
        self.created = created
        self.envelope_json = envelope_json
        self.count = 0


class Sealer:
    """Seals payloads for one agent. Safe to share between threads."""

    def __init__(
        self,
        agent: str,
        public_key: AgentPublicKey,
        signing_key: SigningKey,
        rotate_messages: int = 10_000,
        rotate_seconds: float = 3600,
        clock: Callable[[], float] = time.time,
    ):
        if not isinstance(agent, str) or not agent:
            raise ValueError("agent must be a non-empty string")
        if not 1 <= rotate_messages <= _MAX_MESSAGES_PER_KEY:
            raise ValueError(f"rotate_messages must be between 1 and {_MAX_MESSAGES_PER_KEY}")
        if not rotate_seconds > 0:
            raise ValueError("rotate_seconds must be positive")
        self.agent = agent
        self.public_key = public_key
        self._signing_key = signing_key
        self._rotate_messages = rotate_messages
        self._rotate_seconds = float(rotate_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        # Created eagerly so an unusable agent key fails at start-up, not on first event.
        self._dk = self._new_data_key(clock())

    @property
    def current_key_id(self) -> str:
        return self._dk.key_id

    def rotate(self) -> str:
        """Start a new data key now (e.g. after the agent's public key was replaced)."""
        with self._lock:
            self._dk = self._new_data_key(self._clock())
            return self._dk.key_id

    def _new_data_key(self, now: float) -> _DataKey:
        dek = AESGCM.generate_key(bit_length=256)
        key_id = _new_key_id()
        envelope: dict[str, Any] = {
            "v": WIRE_VERSION,
            "agent": self.agent,
            "key_id": key_id,
            "created_at": _timestamp(now),
            "signer": self._signing_key.key_id,
            "enc": _b64e(_wrap_dek(dek, self.public_key, self.agent, key_id)),
        }
        envelope["sig"] = _b64e(self._signing_key.sign(_envelope_signed_bytes(envelope)))
        return _DataKey(AESGCM(dek), key_id, now, _canon(envelope))

    def _take_key(self) -> _DataKey:
        with self._lock:
            dk = self._dk
            now = self._clock()
            if dk.count >= self._rotate_messages or now - dk.created >= self._rotate_seconds:
                dk = self._dk = self._new_data_key(now)
            dk.count += 1
            return dk

    def seal(
        self,
        plaintext: bytes,
        *,
        event_id: str,
        disclosure_id: str,
        kind: str = "disclosure",
    ) -> Sealed:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}")
        if not (isinstance(event_id, str) and event_id):
            raise ValueError("event_id must be a non-empty string")
        if not (isinstance(disclosure_id, str) and disclosure_id):
            raise ValueError("disclosure_id must be a non-empty string")
        dk = self._take_key()
        nonce = os.urandom(_NONCE_BYTES)
        header_json = _canon({
            "v": WIRE_VERSION,
            "agent": self.agent,
            "event_id": event_id,
            "disclosure_id": disclosure_id,
            "key_id": dk.key_id,
            "kind": kind,
            "nonce": _b64e(nonce),
        })
        ciphertext = dk.aead.encrypt(nonce, plaintext, header_json)
        # Spliced rather than re-serialised: the header must appear byte-for-byte as the
        # AAD, and the envelope was serialised once when the key was made.
        message = b"".join((
            b'{"header":', header_json,
            b',"envelope":', dk.envelope_json,
            b',"ciphertext":"', base64.b64encode(ciphertext), b'"}',
        ))
        return Sealed(message=message, key_id=dk.key_id)


# --------------------------------------------------------------------------------------
# opening (agent side)


@dataclass(frozen=True, slots=True)
class Opened:
    agent: str
    event_id: str
    disclosure_id: str
    key_id: str
    kind: str
    plaintext: bytes

    def json(self) -> Any:
        """The payload decoded as JSON (raises ``orjson.JSONDecodeError`` if it is not)."""
        return orjson.loads(self.plaintext)


def _malformed(why: str) -> errors.DecryptionError:
    return errors.DecryptionError(f"malformed message: {why}")


def _check_fields(obj: Any, fields: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _malformed(f"{what} is not an object")
    if obj.keys() != fields:
        raise _malformed(f"{what} fields are not {sorted(fields)}")
    for name, value in obj.items():
        # ``type(...) is int`` so that JSON ``true`` is not taken for version 1.
        ok = type(value) is int if name == "v" else isinstance(value, str)
        if not ok:
            raise _malformed(f"{what}.{name} has the wrong type")
    if obj["v"] != WIRE_VERSION:
        raise _malformed(f"{what} version {obj['v']} is not supported (expected {WIRE_VERSION})")
    return obj


class Opener:
    """Opens messages addressed to one agent: the agent-side reader."""

    def __init__(self, agent: str, private_key: AgentPrivateKey, gateway_key: VerifyKey):
        if not isinstance(agent, str) or not agent:
            raise ValueError("agent must be a non-empty string")
        self.agent = agent
        self._private_key = private_key
        self._gateway_key = gateway_key
        # Keyed by the whole envelope, so a hit means these exact bytes were verified
        # before; a forged envelope reusing a known key_id misses and is checked afresh.
        self._cache: dict[tuple[str, ...], AESGCM] = {}
        self._cache_lock = threading.Lock()

    def open(self, message: bytes) -> Opened:
        try:
            doc = orjson.loads(message)
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise _malformed("not JSON") from exc
        if not isinstance(doc, dict) or doc.keys() != _MESSAGE_FIELDS:
            raise _malformed(f"top-level fields are not {sorted(_MESSAGE_FIELDS)}")
        header = _check_fields(doc["header"], _HEADER_FIELDS, "header")
        envelope = _check_fields(doc["envelope"], _ENVELOPE_FIELDS, "envelope")
        ciphertext_b64 = doc["ciphertext"]
        if not isinstance(ciphertext_b64, str):
            raise _malformed("ciphertext is not a string")

        # Context first: cheap, and the clearest message when a topic is mis-wired.
        if header["agent"] != self.agent:
            raise errors.ContextMismatch(
                f"message is addressed to agent {header['agent']!r}, not {self.agent!r}"
            )
        if envelope["agent"] != self.agent:
            raise errors.ContextMismatch(
                f"key envelope belongs to agent {envelope['agent']!r}, not {self.agent!r}"
            )
        if header["key_id"] != envelope["key_id"]:
            raise errors.ContextMismatch("header key id and key envelope key id differ")
        if header["kind"] not in KINDS:
            raise _malformed("unknown message kind")

        aead = self._data_key(envelope)
        nonce = _b64d(header["nonce"], "nonce")
        if len(nonce) != _NONCE_BYTES:
            raise _malformed("nonce has the wrong length")
        ciphertext = _b64d(ciphertext_b64, "ciphertext")
        try:
            plaintext = aead.decrypt(nonce, ciphertext, _canon(header))
        except InvalidTag as exc:
            raise errors.DecryptionError(
                "ciphertext does not authenticate: the message was altered or its header"
                " (agent, event, disclosure id, key id) was changed"
            ) from exc
        return Opened(
            agent=header["agent"],
            event_id=header["event_id"],
            disclosure_id=header["disclosure_id"],
            key_id=header["key_id"],
            kind=header["kind"],
            plaintext=plaintext,
        )

    def _data_key(self, envelope: dict[str, Any]) -> AESGCM:
        cache_key = (
            envelope["key_id"], envelope["agent"], envelope["created_at"],
            envelope["signer"], envelope["enc"], envelope["sig"],
        )
        aead = self._cache.get(cache_key)
        if aead is not None:
            return aead

        if envelope["signer"] != self._gateway_key.key_id:
            raise errors.SignatureError(
                f"key envelope claims gateway key {envelope['signer']!r}, but this reader"
                f" trusts {self._gateway_key.key_id!r}"
            )
        signature = _b64d(envelope["sig"], "envelope signature")
        self._gateway_key.verify(signature, _envelope_signed_bytes(envelope))
        enc = _b64d(envelope["enc"], "envelope enc")
        try:
            dek = _unwrap_dek(enc, self._private_key, self.agent, envelope["key_id"])
        except (InvalidTag, ValueError) as exc:
            raise errors.DecryptionError(
                f"cannot unwrap data key {envelope['key_id']}: it was sealed for another"
                f" private key (this reader holds {self._private_key.key_id})"
            ) from exc
        if len(dek) != _DEK_BYTES:
            raise errors.DecryptionError("unwrapped data key has the wrong length")
        aead = AESGCM(dek)
        with self._cache_lock:
            if len(self._cache) >= _OPENER_CACHE_SIZE:
                # Oldest first: data keys rotate forward, so old ones are needed least.
                self._cache.pop(next(iter(self._cache)))
            self._cache[cache_key] = aead
        return aead


# --------------------------------------------------------------------------------------
# derived keys and pseudonyms


def derive_key(master: bytes, label: str) -> bytes:
    """A 32-byte key for ``label`` (HKDF-SHA256), e.g. ``"pseudonym:" + agent``.

    Distinct labels give independent keys, so pseudonyms made for one agent cannot be
    joined with another agent's.
    """
    if len(master) < 16:
        raise ValueError("master key must be at least 16 bytes")
    if not label:
        raise ValueError("label must be non-empty")
    return _derive_cached(bytes(master), label)


@lru_cache(maxsize=1024)
def _derive_cached(master: bytes, label: str) -> bytes:
    # Cached because pseudonym and subject_ref keys are needed per event and HKDF is the
    # most expensive step of a pseudonym.
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None,
        info=_HKDF_INFO_PREFIX + label.encode("utf-8"),
    ).derive(master)


def subject_ref(master: bytes, customer_id: str) -> str:
    """The disclosure log's pseudonym for a customer: ``subj_`` + 32 hex characters.

    Keyed (a derived key, not the master itself), so the log holds nothing that links back
    to a customer without the pseudonym key.
    """
    key = derive_key(master, "subject-ref")
    mac = hmac.new(key, customer_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return "subj_" + mac[:32]
