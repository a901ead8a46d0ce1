"""The wire format shared by the sealer and the opener: versions, field sets, the HPKE
suite that wraps data keys, and what an envelope signature covers."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, Final

from cryptography.hazmat.primitives import hpke

from gateway.crypto._encoding import _canon
from gateway.crypto.keys import AgentPrivateKey, AgentPublicKey

# The message header's version (2: the agent's ``ref`` instead of the event id).
WIRE_VERSION: Final = 2
ENVELOPE_VERSION: Final = 1
KINDS: Final = frozenset({"disclosure", "erasure_notice", "aggregate"})
# The gateway key also signs other things (e.g. log checkpoints); a fixed prefix keeps an
# envelope signature from ever being valid as a signature over anything else.
ENVELOPE_SIG_CONTEXT: Final = b"disclosure-gateway/key-envelope/v1\n"
# AES-256-GCM for the HPKE layer so the wrap is as strong as the AES-256 DEK it carries.
_SUITE: Final = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_DEK_BYTES: Final = 32
_NONCE_BYTES: Final = 12
_HEADER_FIELDS: Final = {
    1: frozenset({"v", "agent", "event_id", "disclosure_id", "key_id", "kind", "nonce"}),
    WIRE_VERSION: frozenset({"v", "agent", "ref", "disclosure_id", "key_id", "kind", "nonce"}),
}
_ENVELOPE_FIELDS: Final = frozenset({"v", "agent", "key_id", "created_at", "signer", "enc", "sig"})
# Optional envelope fields: "recipient" names the agent key the data key was sealed to (so a
# reader holding several picks the right one), "handover" carries the signed notes leading
# from earlier gateway keys to the signer (so a reader trusting an earlier key can follow).
_ENVELOPE_OPTIONAL: Final = frozenset({"recipient", "handover"})
# Bounds what a hostile envelope can make a reader verify.
MAX_HANDOVERS: Final = 16
_MESSAGE_FIELDS: Final = frozenset({"header", "envelope", "ciphertext"})


def _hpke_info(agent: str, key_id: str) -> bytes:
    # Canonical JSON rather than concatenation so no (agent, key_id) pair can collide.
    return _canon({"agent": agent, "key_id": key_id, "use": "dek", "v": ENVELOPE_VERSION})


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
