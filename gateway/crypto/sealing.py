"""The gateway side: sealing payloads for one agent under rotating data keys."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.crypto._encoding import _b64e, _canon
from gateway.crypto.envelope import (
    _NONCE_BYTES,
    ENVELOPE_VERSION,
    KINDS,
    MAX_HANDOVERS,
    WIRE_VERSION,
    _envelope_signed_bytes,
    _new_key_id,
    _timestamp,
    _wrap_dek,
)
from gateway.crypto.keys import AgentPublicKey, SigningKey

# Random 96-bit nonces stay safe far beyond this many messages under one key (NIST SP
# 800-38D caps random-nonce use at 2**32 per key); refuse configurations past it.
_MAX_MESSAGES_PER_KEY: Final = 2**32


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
        handover: Sequence[str] = (),
    ):
        """``handover``: the hand-over notes (oldest first) leading from earlier gateway
        keys to ``signing_key``; every envelope carries them, so an agent that trusts only
        an earlier key accepts this one."""
        if not isinstance(agent, str) or not agent:
            raise ValueError("agent must be a non-empty string")
        if len(handover) > MAX_HANDOVERS:
            raise ValueError(f"at most {MAX_HANDOVERS} hand-over notes fit in an envelope")
        if not 1 <= rotate_messages <= _MAX_MESSAGES_PER_KEY:
            raise ValueError(f"rotate_messages must be between 1 and {_MAX_MESSAGES_PER_KEY}")
        if not rotate_seconds > 0:
            raise ValueError("rotate_seconds must be positive")
        self.agent = agent
        self.public_key = public_key
        self._signing_key = signing_key
        self._handover = list(handover)
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
            "v": ENVELOPE_VERSION,
            "agent": self.agent,
            "key_id": key_id,
            "created_at": _timestamp(now),
            "signer": self._signing_key.key_id,
            "recipient": self.public_key.key_id,
            "enc": _b64e(_wrap_dek(dek, self.public_key, self.agent, key_id)),
        }
        if self._handover:
            envelope["handover"] = self._handover
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
        ref: str,
        disclosure_id: str,
        kind: str = "disclosure",
    ) -> Sealed:
        """Encrypt ``plaintext`` for the agent, bound (as AAD) to the agent's own reference
        for the event (``ref``), the disclosure id and the kind."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}")
        if not (isinstance(ref, str) and ref):
            raise ValueError("ref must be a non-empty string")
        if not (isinstance(disclosure_id, str) and disclosure_id):
            raise ValueError("disclosure_id must be a non-empty string")
        dk = self._take_key()
        nonce = os.urandom(_NONCE_BYTES)
        header_json = _canon(
            {
                "v": WIRE_VERSION,
                "agent": self.agent,
                "ref": ref,
                "disclosure_id": disclosure_id,
                "key_id": dk.key_id,
                "kind": kind,
                "nonce": _b64e(nonce),
            }
        )
        ciphertext = dk.aead.encrypt(nonce, plaintext, header_json)
        # Spliced rather than re-serialised: the header must appear byte-for-byte as the
        # AAD, and the envelope was serialised once when the key was made.
        message = b"".join(
            (
                b'{"header":',
                header_json,
                b',"envelope":',
                dk.envelope_json,
                b',"ciphertext":"',
                base64.b64encode(ciphertext),
                b'"}',
            )
        )
        return Sealed(message=message, key_id=dk.key_id)
