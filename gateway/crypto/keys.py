"""The key types: the gateway's Ed25519 signing key and its public half, and an agent's
X25519 key pair (for HPKE). Reprs never show private key material."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any, ClassVar, Final, Generic, Self, TypeVar, cast

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)

from gateway import errors
from gateway.crypto._encoding import _b64e


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


_PKCS8: Final = (
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
)
_RAW_PUBLIC: Final = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
_SPKI: Final = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

_Pub = TypeVar("_Pub", Ed25519PublicKey, X25519PublicKey)
_Priv = TypeVar("_Priv", Ed25519PrivateKey, X25519PrivateKey)
_PubKey = TypeVar("_PubKey", bound="_PublicKey[Any]")


class _PublicKey(Generic[_Pub]):
    """What the two public key types share: the raw bytes, the text and PEM forms, the
    fingerprint and key id, equality by value. A subclass names its algorithm."""

    __slots__ = ("_key", "_raw")
    TEXT_PREFIX: ClassVar[str]  # "<algorithm>:", also the key id's prefix
    KIND: ClassVar[str]  # the algorithm as error messages name it
    _TYPE: ClassVar[type[Any]]  # cryptography's public key class

    def __init__(self, key: _Pub):
        self._key: _Pub = key
        self._raw = key.public_bytes(*_RAW_PUBLIC)

    @classmethod
    def from_raw(cls, raw: bytes) -> Self:
        try:
            return cls(cls._TYPE.from_public_bytes(raw))
        except ValueError as exc:
            raise errors.KeyFileError(f"an {cls.KIND} public key is 32 bytes") from exc

    @classmethod
    def from_pem(cls, data: bytes | str) -> Self:
        return cls(_load_public_pem(data, cls._TYPE, cls.KIND))

    @classmethod
    def parse(cls, text: str | bytes) -> Self:
        """Accept ``<algorithm>:<base64 raw>`` or a PEM public key."""
        text = text.decode("utf-8") if isinstance(text, bytes) else text
        stripped = text.strip()
        if stripped.startswith(cls.TEXT_PREFIX):
            return cls.from_raw(_parse_raw_text(stripped, cls.TEXT_PREFIX, cls.KIND))
        return cls._parse_other(stripped)

    @classmethod
    def _parse_other(cls, text: str) -> Self:
        return cls.from_pem(text)

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
        return self.TEXT_PREFIX + self.fingerprint[:16]

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and hmac.compare_digest(
            self._raw, cast("_PublicKey[Any]", other)._raw
        )

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key_id})"


class _PrivateKey(Generic[_Priv, _PubKey]):
    """What the two private key types share; their reprs never show key material."""

    __slots__ = ("_key", "_public")
    KIND: ClassVar[str]
    _TYPE: ClassVar[type[Any]]  # cryptography's private key class
    _PUBLIC: ClassVar[type[Any]]  # the matching public key type

    def __init__(self, key: _Priv):
        self._key: _Priv = key
        self._public: _PubKey = self._PUBLIC(key.public_key())

    @classmethod
    def generate(cls) -> Self:
        return cls(cls._TYPE.generate())

    @classmethod
    def from_pem(cls, data: bytes | str) -> Self:
        return cls(_load_private_pem(data, cls._TYPE, cls.KIND))

    def to_pem(self) -> bytes:
        return self._key.private_bytes(*_PKCS8)

    def public_key(self) -> _PubKey:
        return self._public

    @property
    def key_id(self) -> str:
        return self._public.key_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key_id})"


class VerifyKey(_PublicKey[Ed25519PublicKey]):
    """The gateway's public signing key, as held by agents and log verifiers."""

    __slots__ = ()
    TEXT_PREFIX = "ed25519:"
    KIND = "Ed25519"
    _TYPE = Ed25519PublicKey

    def verify(self, signature: bytes, data: bytes) -> None:
        try:
            self._key.verify(signature, data)
        except InvalidSignature as exc:
            raise errors.SignatureError(
                f"signature does not verify with gateway key {self.key_id}"
            ) from exc


class SigningKey(_PrivateKey[Ed25519PrivateKey, VerifyKey]):
    """The gateway's Ed25519 signing key. Its repr never shows key material."""

    __slots__ = ()
    KIND = "Ed25519"
    _TYPE = Ed25519PrivateKey
    _PUBLIC = VerifyKey

    @property
    def fingerprint(self) -> str:
        return self._public.fingerprint

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


def _parse_raw_text(text: str, prefix: str, kind: str) -> bytes:
    body = text[len(prefix) :].strip()
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


class AgentPublicKey(_PublicKey[X25519PublicKey]):
    """An agent's X25519 public key. Text form ``x25519:<base64 raw>`` fits in agents.yaml."""

    __slots__ = ()
    TEXT_PREFIX = "x25519:"
    KIND = "X25519"
    _TYPE = X25519PublicKey

    def __init__(self, key: X25519PublicKey):
        # A low-order point makes every HPKE seal fail (or, worse elsewhere, yields a known
        # shared secret); reject it when the policy is loaded rather than at first rotation.
        try:
            X25519PrivateKey.generate().exchange(key)
        except ValueError as exc:
            raise errors.KeyFileError(
                "the X25519 public key is a low-order point, not a usable key"
            ) from exc
        super().__init__(key)

    @classmethod
    def _parse_other(cls, text: str) -> AgentPublicKey:
        if text.startswith("-----BEGIN"):
            return cls.from_pem(text)
        raise errors.KeyFileError(
            "an agent public key is either 'x25519:<base64>' (as printed by"
            " `gateway keys agent NAME`) or a PEM public key"
        )

    @property
    def x25519(self) -> X25519PublicKey:
        return self._key


class AgentPrivateKey(_PrivateKey[X25519PrivateKey, AgentPublicKey]):
    """An agent's X25519 private key. Its repr never shows key material."""

    __slots__ = ()
    KIND = "X25519"
    _TYPE = X25519PrivateKey
    _PUBLIC = AgentPublicKey

    @property
    def x25519(self) -> X25519PrivateKey:
        return self._key
