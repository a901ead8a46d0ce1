"""The agent side: opening messages addressed to one agent."""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway import errors
from gateway.crypto._encoding import _canon
from gateway.crypto.envelope import (
    _DEK_BYTES,
    _ENVELOPE_FIELDS,
    _ENVELOPE_OPTIONAL,
    _HEADER_FIELDS,
    _MESSAGE_FIELDS,
    _NONCE_BYTES,
    ENVELOPE_VERSION,
    KINDS,
    MAX_HANDOVERS,
    _envelope_signed_bytes,
    _unwrap_dek,
)
from gateway.crypto.handover import GatewayKeyring
from gateway.crypto.keys import AgentPrivateKey, VerifyKey

_OPENER_CACHE_SIZE: Final = 256


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


@dataclass(frozen=True, slots=True)
class Opened:
    agent: str
    ref: str  # the agent's reference for the event (a version-1 message: the event id)
    disclosure_id: str
    key_id: str
    kind: str
    plaintext: bytes

    def json(self) -> Any:
        """The payload decoded as JSON (raises ``orjson.JSONDecodeError`` if it is not)."""
        return orjson.loads(self.plaintext)


def _malformed(why: str) -> errors.DecryptionError:
    return errors.DecryptionError(f"malformed message: {why}")


def _check_fields(obj: Any, fields: frozenset[str], what: str, version: int) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _malformed(f"{what} is not an object")
    if obj.keys() != fields:
        raise _malformed(f"{what} fields are not {sorted(fields)}")
    for name, value in obj.items():
        # ``type(...) is int`` so that JSON ``true`` is not taken for version 1.
        ok = type(value) is int if name == "v" else isinstance(value, str)
        if not ok:
            raise _malformed(f"{what}.{name} has the wrong type")
    if obj["v"] != version:
        raise _malformed(f"{what} version {obj['v']} is not supported (expected {version})")
    return obj


def _check_envelope(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _malformed("envelope is not an object")
    optional = {k: obj[k] for k in obj.keys() & _ENVELOPE_OPTIONAL}
    required = {k: v for k, v in obj.items() if k not in optional}
    _check_fields(required, _ENVELOPE_FIELDS, "envelope", ENVELOPE_VERSION)
    if "recipient" in optional and not isinstance(optional["recipient"], str):
        raise _malformed("envelope.recipient has the wrong type")
    if "handover" in optional:
        notes = optional["handover"]
        if (
            not isinstance(notes, list)
            or not 1 <= len(notes) <= MAX_HANDOVERS
            or not all(isinstance(n, str) for n in notes)
        ):
            raise _malformed(f"envelope.handover is not a list of 1 to {MAX_HANDOVERS} notes")
    return obj


def _check_header(obj: Any) -> dict[str, Any]:
    """A header of any version this reader knows (the version picks the fields)."""
    version = obj.get("v") if isinstance(obj, dict) else None
    # ``type(...) is int`` so that JSON ``true`` is not taken for version 1.
    fields = _HEADER_FIELDS.get(version) if type(version) is int else None
    if fields is None:
        raise _malformed(
            f"header version {version!r} is not supported (expected one of"
            f" {sorted(_HEADER_FIELDS)})"
        )
    assert isinstance(version, int)
    return _check_fields(obj, fields, "header", version)


class Opener:
    """Opens messages addressed to one agent: the agent-side reader.

    ``private_key``: the agent's private key, or several (current first, then older ones
    kept so that a backlog sealed before a rotation still opens). ``gateway_key``: the
    gateway public key(s) this reader trusts, or a :class:`GatewayKeyring`; an envelope
    signed by a newer gateway key is accepted when it carries a hand-over from a trusted
    key, and that key is trusted from then on.
    """

    def __init__(
        self,
        agent: str,
        private_key: AgentPrivateKey | Sequence[AgentPrivateKey],
        gateway_key: VerifyKey | Iterable[VerifyKey] | GatewayKeyring,
    ):
        if not isinstance(agent, str) or not agent:
            raise ValueError("agent must be a non-empty string")
        self.agent = agent
        privates = [private_key] if isinstance(private_key, AgentPrivateKey) else private_key
        self._private_keys = {k.key_id: k for k in privates}
        if not self._private_keys:
            raise ValueError("an opener needs at least one private key")
        if isinstance(gateway_key, GatewayKeyring):
            self.gateway_keys = gateway_key
        elif isinstance(gateway_key, VerifyKey):
            self.gateway_keys = GatewayKeyring([gateway_key])
        else:
            self.gateway_keys = GatewayKeyring(gateway_key)
        # Keyed by the whole envelope, so a hit means these exact bytes were verified
        # before; a forged envelope reusing a known key_id misses and is checked afresh.
        self._cache: dict[bytes, AESGCM] = {}
        self._cache_lock = threading.Lock()

    def open(self, message: bytes) -> Opened:
        try:
            doc = orjson.loads(message)
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise _malformed("not JSON") from exc
        if not isinstance(doc, dict) or doc.keys() != _MESSAGE_FIELDS:
            raise _malformed(f"top-level fields are not {sorted(_MESSAGE_FIELDS)}")
        header = _check_header(doc["header"])
        envelope = _check_envelope(doc["envelope"])
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
                " (agent, reference, disclosure id, key id) was changed"
            ) from exc
        return Opened(
            agent=header["agent"],
            ref=header["ref"] if "ref" in header else header["event_id"],
            disclosure_id=header["disclosure_id"],
            key_id=header["key_id"],
            kind=header["kind"],
            plaintext=plaintext,
        )

    def _data_key(self, envelope: dict[str, Any]) -> AESGCM:
        cache_key = _canon(envelope)
        aead = self._cache.get(cache_key)
        if aead is not None:
            return aead

        signer = self.gateway_keys.get(envelope["signer"])
        if signer is None and "handover" in envelope:
            self.gateway_keys.accept_handovers(envelope["handover"])
            signer = self.gateway_keys.get(envelope["signer"])
        if signer is None:
            trusted = ", ".join(k.key_id for k in self.gateway_keys.keys)
            raise errors.SignatureError(
                f"key envelope claims gateway key {envelope['signer']!r}, but this reader"
                f" trusts {trusted} and no hand-over from them leads to it"
            )
        signature = _b64d(envelope["sig"], "envelope signature")
        signer.verify(signature, _envelope_signed_bytes(envelope))
        enc = _b64d(envelope["enc"], "envelope enc")
        dek = self._unwrap(enc, envelope)
        if len(dek) != _DEK_BYTES:
            raise errors.DecryptionError("unwrapped data key has the wrong length")
        aead = AESGCM(dek)
        with self._cache_lock:
            if len(self._cache) >= _OPENER_CACHE_SIZE:
                # Oldest first: data keys rotate forward, so old ones are needed least.
                self._cache.pop(next(iter(self._cache)))
            self._cache[cache_key] = aead
        return aead

    def _unwrap(self, enc: bytes, envelope: dict[str, Any]) -> bytes:
        """The data key, unwrapped with the private key the envelope names, or (for an
        envelope that names none) with each key held in turn."""
        held = ", ".join(self._private_keys)
        recipient = envelope.get("recipient")
        if recipient is not None:
            key = self._private_keys.get(recipient)
            if key is None:
                raise errors.DecryptionError(
                    f"data key {envelope['key_id']} was sealed for agent key {recipient}; this"
                    f" reader holds {held} (give it that private key: older keys are kept as"
                    " <name>.<key id>.key)"
                )
            candidates = [key]
        else:
            candidates = list(self._private_keys.values())
        for key in candidates:
            try:
                return _unwrap_dek(enc, key, self.agent, envelope["key_id"])
            except (InvalidTag, ValueError):
                continue
        raise errors.DecryptionError(
            f"cannot unwrap data key {envelope['key_id']}: it was sealed for another"
            f" private key (this reader holds {held})"
        )
