"""Who may publish what: publishers authenticate each event, the gateway authorises it.

Every event carries two Kafka record headers (any client, any language can set them):

* ``gateway-publisher``: the publisher's name, UTF-8, as declared in the policy's
  ``publishers`` section;
* ``gateway-signature``: ``v1.ed25519.<base64 signature>`` or
  ``v1.hmac-sha256.<base64 tag>``, standard base64 with padding.

The signed bytes are ``b"disclosure-gateway/event/v1\\n" + name + b"\\n" + value``: the
context line, the publisher's name, a newline, and the exact Kafka record value (the event's
JSON bytes). Not the key, not the topic: the gateway forwards events between topics.

The gateway verifies the signature with the publisher's declared key (an Ed25519 public
key, or the shared HMAC-SHA256 secret) before it parses the event, then checks the parsed
event type against the publisher's ``events``. An event that fails either is dead-lettered
(``unsigned``, ``unknown_publisher``, ``bad_signature``, ``publisher_not_allowed``) and
nothing of it is applied.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from gateway.crypto import SigningKey, VerifyKey
from gateway.errors import (
    BadSignature,
    KeyFileError,
    PublisherNotAllowed,
    SignatureError,
    UnknownPublisher,
    Unsigned,
)
from gateway.keys import (
    load_publisher_public_key,
    load_publisher_secret,
    load_publisher_signing_key,
    resolve_publisher_path,
)

if TYPE_CHECKING:
    from gateway.policy import Policy

__all__ = [
    "HEADER_PUBLISHER",
    "HEADER_SIGNATURE",
    "SIGNING_CONTEXT",
    "Headers",
    "Publisher",
    "PublisherRegistry",
    "PublisherSigner",
    "Scheme",
    "load_registry",
    "signed_bytes",
]

HEADER_PUBLISHER: Final = "gateway-publisher"
HEADER_SIGNATURE: Final = "gateway-signature"
SIGNING_CONTEXT: Final = b"disclosure-gateway/event/v1\n"
_SIGNATURE_VERSION: Final = "v1"

Scheme = Literal["ed25519", "hmac-sha256"]
# Kafka record headers as clients hand them over: (name, value) pairs, names not unique,
# a value possibly null.
Headers = Sequence[tuple[str, bytes | None]]

_LENGTHS: Final[dict[str, int]] = {"ed25519": 64, "hmac-sha256": 32}
_NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_HINT: Final = (
    "sign each event as a declared publisher (`gateway publish --publisher NAME --key FILE`,"
    " the publisher SDK, or the scheme in docs/publisher-signing.md)"
)


def signed_bytes(name: str, value: bytes) -> bytes:
    """What a publisher signs for one event: context line, name, newline, record value."""
    return SIGNING_CONTEXT + name.encode("utf-8") + b"\n" + value


def _shown(name: str) -> str:
    # A header is attacker-controlled: only a name of the declared shape is echoed.
    if _NAME.fullmatch(name):
        return repr(name)
    return "<not a publisher name: #" + hashlib.sha256(name.encode()).hexdigest()[:8] + ">"


@dataclass(frozen=True, slots=True)
class Publisher:
    """A declared publisher: its name, the event types it may send, and what its
    signatures verify with (an Ed25519 public key or an HMAC-SHA256 secret)."""

    name: str
    events: frozenset[str]
    scheme: Scheme
    public_key: VerifyKey | None = field(default=None, repr=False)
    secret: bytes | None = field(default=None, repr=False)
    description: str = ""

    def __post_init__(self) -> None:
        if (self.public_key is None) == (self.secret is None):
            raise ValueError("a publisher has either an Ed25519 public key or an HMAC secret")
        if self.scheme != ("ed25519" if self.public_key is not None else "hmac-sha256"):
            raise ValueError("the scheme does not match the publisher's key")

    def check(self, value: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this publisher's over ``value``."""
        message = signed_bytes(self.name, value)
        if self.public_key is not None:
            try:
                self.public_key.verify(signature, message)
            except SignatureError:
                return False
            return True
        assert self.secret is not None
        expected = hmac.new(self.secret, message, hashlib.sha256).digest()
        return hmac.compare_digest(expected, signature)


def _one(headers: Headers, name: str) -> bytes | None:
    found = [v for k, v in headers if k == name]
    if len(found) > 1:
        raise BadSignature(f"more than one {name} header; send exactly one")
    return found[0] if found else None


class PublisherRegistry:
    """The declared publishers, built once at start-up; verifies and authorises events."""

    def __init__(self, publishers: Iterable[Publisher] = ()):
        self._by_name: dict[str, Publisher] = {}
        for p in publishers:
            if p.name in self._by_name:
                raise ValueError(f"publisher {p.name!r} declared twice")
            self._by_name[p.name] = p

    @property
    def publishers(self) -> Mapping[str, Publisher]:
        return self._by_name

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def allowed(self, event_type: str) -> list[str]:
        """The publishers that may send ``event_type``."""
        return [n for n, p in self._by_name.items() if event_type in p.events]

    def verify(self, value: bytes, headers: Headers | None) -> Publisher:
        """The publisher that signed ``value``. Raises :class:`~gateway.errors.Unsigned`,
        :class:`~gateway.errors.UnknownPublisher` or :class:`~gateway.errors.BadSignature`
        (messages name the problem, never a value of the event)."""
        headers = headers or ()
        name_raw = _one(headers, HEADER_PUBLISHER)
        sig_raw = _one(headers, HEADER_SIGNATURE)
        if name_raw is None or sig_raw is None:
            missing = [
                h
                for h, v in ((HEADER_PUBLISHER, name_raw), (HEADER_SIGNATURE, sig_raw))
                if v is None
            ]
            raise Unsigned(f"unsigned event: no {' or '.join(missing)} header; {_HINT}")
        try:
            name = name_raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UnknownPublisher(
                f"the {HEADER_PUBLISHER} header is not UTF-8; it names a declared publisher"
            ) from None
        publisher = self._by_name.get(name)
        if publisher is None:
            known = ", ".join(sorted(self._by_name)) or "none declared"
            raise UnknownPublisher(
                f"publisher {_shown(name)} is not declared in the policy's publishers section"
                f" (declared: {known})"
            )
        signature = self._parse_signature(sig_raw, publisher)
        if not publisher.check(value, signature):
            raise BadSignature(
                f"the {publisher.scheme} signature of publisher {name!r} does not verify: the"
                " event was altered, or signed with another key or over other bytes (the exact"
                " record value, see docs/publisher-signing.md)"
            )
        return publisher

    @staticmethod
    def _parse_signature(raw: bytes, publisher: Publisher) -> bytes:
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise BadSignature(f"the {HEADER_SIGNATURE} header is not ASCII") from None
        parts = text.split(".")
        if len(parts) != 3 or parts[0] != _SIGNATURE_VERSION:
            raise BadSignature(f"the {HEADER_SIGNATURE} header is not 'v1.<scheme>.<base64>'")
        if parts[1] != publisher.scheme:
            raise BadSignature(
                f"publisher {publisher.name!r} signs with {publisher.scheme}, the"
                f" {HEADER_SIGNATURE} header says another scheme"
            )
        try:
            signature = base64.b64decode(parts[2], validate=True)
        except (binascii.Error, ValueError):
            raise BadSignature(f"the {HEADER_SIGNATURE} value is not base64") from None
        if base64.b64encode(signature).decode("ascii") != parts[2]:
            raise BadSignature(f"the {HEADER_SIGNATURE} value is not canonical base64")
        if len(signature) != _LENGTHS[publisher.scheme]:
            raise BadSignature(
                f"a {publisher.scheme} signature is {_LENGTHS[publisher.scheme]} bytes, the"
                f" header holds {len(signature)}"
            )
        return signature

    def authorise(self, publisher: Publisher, event_type: str) -> None:
        """Raise :class:`~gateway.errors.PublisherNotAllowed` unless ``publisher`` may send
        ``event_type``."""
        if event_type not in publisher.events:
            may = self.allowed(event_type)
            raise PublisherNotAllowed(
                f"publisher {publisher.name!r} may not send {event_type} events (the policy"
                f" allows it: {', '.join(sorted(publisher.events))}; {event_type} may come from:"
                f" {', '.join(may) or 'no publisher'})",
                event_type=event_type,
            )


def load_registry(policy: Policy, keys_dir: Path | str) -> PublisherRegistry:
    """The policy's publishers with their keys loaded; a :class:`KeyFileError` names the
    publisher, the file and the fix."""
    out = []
    for name, spec in policy.publishers.items():
        try:
            if spec.key is not None:
                out.append(
                    Publisher(
                        name,
                        frozenset(spec.events),
                        "ed25519",
                        public_key=load_publisher_public_key(spec.key, keys_dir),
                        description=spec.description,
                    )
                )
            else:
                assert spec.secret is not None  # the policy requires one of the two
                out.append(
                    Publisher(
                        name,
                        frozenset(spec.events),
                        "hmac-sha256",
                        secret=load_publisher_secret(resolve_publisher_path(spec.secret, keys_dir)),
                        description=spec.description,
                    )
                )
        except KeyFileError as e:
            raise KeyFileError(f"publisher {name!r} in {policy.source}: {e}") from None
    return PublisherRegistry(out)


class PublisherSigner:
    """The publisher's side: signs record values as one declared publisher."""

    def __init__(
        self, name: str, *, signing_key: SigningKey | None = None, secret: bytes | None = None
    ):
        if (signing_key is None) == (secret is None):
            raise ValueError("give either an Ed25519 signing key or an HMAC secret")
        self.name = name
        self._signing_key = signing_key
        self._secret = secret
        self.scheme: Scheme = "ed25519" if signing_key is not None else "hmac-sha256"
        self._name_header = name.encode("utf-8")

    @classmethod
    def from_file(cls, name: str, path: Path | str) -> PublisherSigner:
        """A signer from a key file: an Ed25519 private key (PEM) or an HMAC secret (hex),
        each mode 0600."""
        p = Path(path)
        try:
            head = p.read_bytes()[:16]
        except OSError:
            head = b""  # the loaders below say what is wrong with the file
        if head.lstrip().startswith(b"-----BEGIN"):
            return cls(name, signing_key=load_publisher_signing_key(p))
        return cls(name, secret=load_publisher_secret(p))

    def signature(self, value: bytes) -> str:
        """The ``gateway-signature`` header value for ``value``."""
        message = signed_bytes(self.name, value)
        if self._signing_key is not None:
            raw = self._signing_key.sign(message)
        else:
            assert self._secret is not None
            raw = hmac.new(self._secret, message, hashlib.sha256).digest()
        return f"{_SIGNATURE_VERSION}.{self.scheme}.{base64.b64encode(raw).decode('ascii')}"

    def headers(self, value: bytes) -> list[tuple[str, bytes]]:
        """Both headers for one record value, ready for a Kafka producer."""
        return [
            (HEADER_PUBLISHER, self._name_header),
            (HEADER_SIGNATURE, self.signature(value).encode("ascii")),
        ]

    def __repr__(self) -> str:
        return f"PublisherSigner({self.name!r}, {self.scheme})"
